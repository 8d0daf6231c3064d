"""Scenario 2 — the main agent tracks all sub-agent (worker) status; TTL expiry signals death.

Each worker creates a public mailbox `worker-<run>.<name>` (auto-registered on $mq9.AI.PUBLIC.LIST)
and reports its status there periodically. The main agent subscribes to PUBLIC.LIST, discovers the
workers as they appear, and subscribes to each one's status mailbox. Nobody deregisters anything:
worker "w1" has a 2 s TTL and stops reporting (it died); when its mailbox expires the main agent gets
an `expired` event and marks it dead. Worker "w2" (longer TTL) stays alive.

    python examples/02_worker_status_public.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json
import secrets
import time

import nats
from _mq9 import URL, mq9


async def worker(name, mailbox, ttl, reports):
    nc = await nats.connect(URL)
    await mq9(nc, "$mq9.AI.MAILBOX.CREATE",
              {"ttl": ttl, "public": True, "name": mailbox, "desc": f"status of worker {name}"})
    for n in range(reports):
        status = {"worker": name, "state": "running", "progress": n}
        await mq9(nc, f"$mq9.AI.MAILBOX.MSG.{mailbox}", json.dumps(status).encode())
        await asyncio.sleep(0.2)
    print(f"{name}: stops reporting (crashes)" if ttl < 10 else f"{name}: still working")
    await nc.close()


async def main():
    run = secrets.token_hex(3)
    prefix = f"worker-{run}."
    main_nc = await nats.connect(URL)
    alive, dead, statuses = set(), set(), {}
    status_subs = []

    async def on_status(msg):
        s = json.loads(msg.data)
        statuses.setdefault(s["worker"], []).append(s["progress"])

    async def on_public(msg):
        ev = json.loads(msg.data)
        if not ev["mail_id"].startswith(prefix):
            return
        if ev["event"] == "created":
            alive.add(ev["mail_id"])
            print(f"main: discovered {ev['mail_id']} ({ev['desc']}, ttl {ev['ttl']}s)")
            subject = f"$mq9.AI.MAILBOX.MSG.{ev['mail_id']}.*"
            status_subs.append(await main_nc.subscribe(subject, cb=on_status))
        elif ev["event"] == "expired":
            alive.discard(ev["mail_id"])
            dead.add(ev["mail_id"])
            print(f"main: {ev['mail_id']} expired -> worker is dead")

    await main_nc.subscribe("$mq9.AI.PUBLIC.LIST", cb=on_public)
    await main_nc.flush()

    w1, w2 = prefix + "w1", prefix + "w2"
    t0 = time.monotonic()
    await asyncio.gather(worker("w1", w1, 2, 3), worker("w2", w2, 60, 3))

    deadline = t0 + 6
    while w1 not in dead and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    print(f"main: status reports {statuses}")
    print(f"main: alive={sorted(alive)} dead={sorted(dead)}")
    assert dead == {w1}, dead
    assert alive == {w2}, alive
    assert statuses.get("w1") == [0, 1, 2] and statuses.get("w2") == [0, 1, 2], statuses
    await main_nc.close()
    print("OK: workers discovered via PUBLIC.LIST; TTL expiry reported w1's death")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
