"""Scenario 7 — agent A queries offline agent B: asynchronous request-reply.

A sends a request into B's mailbox with `reply_to` (A's own mailbox) and a correlation id in the
payload, then goes offline. B is offline too; the request waits. B comes online, answers every request
to its `reply_to`, and leaves. A comes back and finds the reply; it matches it by correlation id (and
could de-duplicate by msg_id). Nothing is lost although the two were never online at the same time.

    python examples/07_async_request_reply.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json

import nats
from _mq9 import URL, mq9


async def main():
    nc = await nats.connect(URL)
    b_box = (await mq9(nc, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60}))["mail_id"]
    await nc.close()
    print(f"agent B: mailbox {b_box}; offline")

    a = await nats.connect(URL)
    a_box = (await mq9(a, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60}))["mail_id"]
    questions = {"q1": "What is the capital of France?", "q2": "2 + 2 = ?"}
    for cid, q in questions.items():
        req = {"correlation_id": cid, "question": q, "reply_to": a_box}
        await mq9(a, f"$mq9.AI.MAILBOX.MSG.{b_box}", json.dumps(req).encode())
        print(f"agent A: asked {cid}: {q}")
    await a.close()
    print("agent A: offline")

    answers = {"What is the capital of France?": "Paris", "2 + 2 = ?": "4"}
    b = await nats.connect(URL)
    sub = await b.subscribe(f"$mq9.AI.MAILBOX.MSG.{b_box}.*")
    for _ in questions:
        req = json.loads((await sub.next_msg(timeout=3)).data)
        reply = {"correlation_id": req["correlation_id"], "answer": answers[req["question"]]}
        await mq9(b, f"$mq9.AI.MAILBOX.MSG.{req['reply_to']}", json.dumps(reply).encode())
        print(f"agent B: answered {req['correlation_id']}")
    await b.close()

    a = await nats.connect(URL)
    sub = await a.subscribe(f"$mq9.AI.MAILBOX.MSG.{a_box}.*")
    got = {}
    for _ in questions:
        msg = await sub.next_msg(timeout=3)
        r = json.loads(msg.data)
        got[r["correlation_id"]] = r["answer"]
        print(f"agent A: reply msg_id {msg.headers['mq9-msg-id']} for {r['correlation_id']}: {r['answer']}")
    assert got == {"q1": "Paris", "q2": "4"}, got
    await a.close()
    print("OK: request-reply completed with both agents offline in between")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
