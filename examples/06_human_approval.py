"""Scenario 6 — human-in-the-loop approval.

An agent needs a human's approval before a risky action. It sends an approval request (urgent) to the
approver's mailbox, naming its own mailbox in `reply_to`, and goes offline. The human — using the same
protocol, e.g. `nats sub` or a small UI — sees the request when they look, and replies to the agent's
mailbox. The agent comes back, finds the decision waiting, and proceeds.

    python examples/06_human_approval.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json
import secrets

import nats
from _mq9 import URL, mq9


async def main():
    # the human's inbox: a public mailbox every agent in the team can find
    approvals = f"approvals-{secrets.token_hex(3)}.alice"
    human = await nats.connect(URL)
    await mq9(human, "$mq9.AI.MAILBOX.CREATE",
              {"ttl": 60, "public": True, "name": approvals, "desc": "Alice approves deployments"})
    await human.close()
    print(f"alice: inbox {approvals} ready; away from keyboard")

    agent = await nats.connect(URL)
    agent_box = (await mq9(agent, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60}))["mail_id"]
    request = {"request_id": secrets.token_hex(4), "action": "deploy v2.3 to production",
               "reply_to": agent_box}
    await mq9(agent, f"$mq9.AI.MAILBOX.MSG.{approvals}.urgent", json.dumps(request).encode())
    print(f"agent: asked for approval ({request['request_id']}); going offline")
    await agent.close()

    human = await nats.connect(URL)
    sub = await human.subscribe(f"$mq9.AI.MAILBOX.MSG.{approvals}.*")
    msg = await sub.next_msg(timeout=3)
    req = json.loads(msg.data)
    print(f"alice: [{msg.headers['mq9-priority']}] '{req['action']}' -> approve")
    decision = {"request_id": req["request_id"], "decision": "approved", "by": "alice"}
    await mq9(human, f"$mq9.AI.MAILBOX.MSG.{req['reply_to']}", json.dumps(decision).encode())
    await human.close()

    agent = await nats.connect(URL)
    sub = await agent.subscribe(f"$mq9.AI.MAILBOX.MSG.{agent_box}.*")
    got = json.loads((await sub.next_msg(timeout=3)).data)
    print(f"agent: back online, decision for {got['request_id']}: {got['decision']} by {got['by']}")
    assert got == decision, got
    await agent.close()
    print("OK: request and approval crossed while each side was offline")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
