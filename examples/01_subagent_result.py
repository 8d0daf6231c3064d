"""Scenario 1 — a sub-agent finishes a task and notifies the main agent asynchronously.

The main agent creates a private mailbox for the task and hands its mail_id to a sub-agent. It does not
block waiting: here it even disconnects. The sub-agent sends its result to the mailbox (store-first:
the broker acknowledges with a msg_id once the result is stored). When the main agent is ready it
subscribes and the stored result is delivered at once.

    python examples/01_subagent_result.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json

import nats
from _mq9 import URL, mq9


async def main():
    # main agent: one mailbox for this task, then it goes off to do other work
    main_nc = await nats.connect(URL)
    mail_id = (await mq9(main_nc, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60}))["mail_id"]
    print(f"main agent: created task mailbox {mail_id}")
    await main_nc.close()
    print("main agent: offline (not waiting for the sub-agent)")

    # sub-agent: does the work, sends the result to the main agent's mailbox
    sub_nc = await nats.connect(URL)
    result = {"task": "summarize report.pdf", "status": "done", "summary": "Revenue up 12%."}
    ack = await mq9(sub_nc, f"$mq9.AI.MAILBOX.MSG.{mail_id}", json.dumps(result).encode())
    print(f"sub-agent: result stored as msg_id {ack['msg_id']}, exiting")
    await sub_nc.close()

    # main agent, later: subscribes and picks the result up
    main_nc = await nats.connect(URL)
    sub = await main_nc.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.*")
    msg = await sub.next_msg(timeout=3)
    got = json.loads(msg.data)
    print(f"main agent: received msg_id {msg.headers['mq9-msg-id']}: {got}")
    assert got == result, got
    assert msg.headers["mq9-msg-id"] == str(ack["msg_id"])
    await main_nc.close()
    print("OK: result delivered although the main agent was offline when it was sent")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
