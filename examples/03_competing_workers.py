"""Scenario 3 — broadcast tasks; several workers compete; results go back to the main agent.

The main agent creates a private mailbox for results and a public mailbox as the task queue. Workers
subscribe to the queue in the queue group "workers": each task goes to exactly one of them, and the
winner sends its result to the `reply_to` mailbox named in the task. The group's progress is kept by
the broker: after every worker went offline, tasks keep arriving, and a worker that comes online later
still receives exactly the (non-expired) tasks nobody in its group received.

    python examples/03_competing_workers.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json
import secrets
from collections import Counter

import nats
from _mq9 import URL, mq9, wait_for


async def start_worker(name, queue, handled):
    nc = await nats.connect(URL)

    async def on_task(msg):
        task = json.loads(msg.data)
        handled.append((name, task["task_id"]))
        result = {"task_id": task["task_id"], "worker": name, "result": task["n"] ** 2}
        await nc.publish(f"$mq9.AI.MAILBOX.MSG.{task['reply_to']}", json.dumps(result).encode())

    await nc.subscribe(f"$mq9.AI.MAILBOX.MSG.{queue}.*", queue="workers", cb=on_task)
    await nc.flush()
    print(f"{name}: online, competing on {queue}")
    return nc


async def main():
    main_nc = await nats.connect(URL)
    results_box = (await mq9(main_nc, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60}))["mail_id"]
    queue = f"task-{secrets.token_hex(3)}.queue"
    await mq9(main_nc, "$mq9.AI.MAILBOX.CREATE",
              {"ttl": 60, "public": True, "name": queue, "desc": "Task queue"})
    results = []

    async def on_result(msg):
        results.append(json.loads(msg.data))

    await main_nc.subscribe(f"$mq9.AI.MAILBOX.MSG.{results_box}.*", cb=on_result)
    handled = []

    async def send_task(i):
        task = {"task_id": i, "n": i, "reply_to": results_box}
        await mq9(main_nc, f"$mq9.AI.MAILBOX.MSG.{queue}", json.dumps(task).encode())

    w1 = await start_worker("worker-1", queue, handled)
    w2 = await start_worker("worker-2", queue, handled)
    for i in range(8):
        await send_task(i)
    assert await wait_for(lambda: len(results) >= 8, 5), results
    print(f"main: 8 results; split {dict(Counter(w for w, _ in handled))}")
    await w1.close()
    await w2.close()
    print("main: all workers offline; sending 4 more tasks")
    for i in range(8, 12):
        await send_task(i)
    w3 = await start_worker("worker-3", queue, handled)
    assert await wait_for(lambda: len(results) >= 12, 5), results
    await asyncio.sleep(0.3)
    await w3.close()

    per_task = Counter(t for _, t in handled)
    late = sorted(t for w, t in handled if w == "worker-3")
    print(f"main: {len(results)} results; worker-3 handled {late}")
    assert sorted(per_task) == list(range(12)) and set(per_task.values()) == {1}, per_task
    assert sorted(t for w, t in handled if w == "worker-3") == [8, 9, 10, 11]
    assert sorted(r["task_id"] for r in results) == list(range(12))
    assert all(r["result"] == r["task_id"] ** 2 for r in results)
    await main_nc.close()
    print("OK: every task handled exactly once; the late worker got exactly the unclaimed tasks")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
