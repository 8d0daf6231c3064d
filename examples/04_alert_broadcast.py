"""Scenario 4 — an agent detects an anomaly and broadcasts an alert.

A public mailbox `alerts-<run>.ops` carries anomaly events. Online handlers subscribe (plain
subscriptions, no queue group) and each one receives every alert as it is sent; they decide on their
own how to respond. A handler that was offline when the alerts were sent subscribes later and still
receives every non-expired alert, the critical one first.

    python examples/04_alert_broadcast.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json
import secrets

import nats
from _mq9 import URL, mq9, wait_for


async def handler(name, alerts, seen):
    nc = await nats.connect(URL)

    async def on_alert(msg):
        alert = json.loads(msg.data)
        seen.setdefault(name, []).append(alert["id"])
        print(f"{name}: [{msg.headers['mq9-priority']}] {alert['text']}")

    await nc.subscribe(f"$mq9.AI.MAILBOX.MSG.{alerts}.*", cb=on_alert)
    await nc.flush()
    return nc


async def main():
    alerts = f"alerts-{secrets.token_hex(3)}.ops"
    detector = await nats.connect(URL)
    await mq9(detector, "$mq9.AI.MAILBOX.CREATE",
              {"ttl": 60, "public": True, "name": alerts, "desc": "anomaly alerts"})
    seen = {}
    pager = await handler("pager", alerts, seen)
    scaler = await handler("autoscaler", alerts, seen)

    events = [("normal", {"id": 1, "text": "latency p99 above 800ms"}),
              ("critical", {"id": 2, "text": "error rate 35% on checkout"})]
    for prio, alert in events:
        await mq9(detector, f"$mq9.AI.MAILBOX.MSG.{alerts}.{prio}", json.dumps(alert).encode())
        print(f"detector: broadcast {prio} alert {alert['id']}")
    def both_have_both():
        return len(seen.get("pager", [])) == 2 and len(seen.get("autoscaler", [])) == 2

    assert await wait_for(both_have_both, 5), seen

    print("auditor: was offline, subscribing now")
    auditor = await handler("auditor", alerts, seen)
    assert await wait_for(lambda: len(seen.get("auditor", [])) == 2, 5), seen
    await asyncio.sleep(0.2)
    assert seen["pager"] == [1, 2] and seen["autoscaler"] == [1, 2], seen
    assert seen["auditor"] == [2, 1], seen  # replay: critical first
    for nc in (pager, scaler, auditor, detector):
        await nc.close()
    print("OK: every handler got every alert; the late one got them from the mailbox, critical first")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
