"""Scenario 5 — the cloud sends commands to an offline edge agent; priority on reconnect.

The edge agent owns a private mailbox and goes offline. Meanwhile the cloud sends a routine config
update, an urgent instruction, a critical shutdown command and another routine message. The messages
wait in the broker. When the edge agent reconnects and subscribes to all priorities it receives them
critical first, then urgent, then normal (FIFO within a priority) — no sorting on the device.

    python examples/05_offline_edge_priority.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio

import nats
from _mq9 import URL, mq9


async def main():
    edge = await nats.connect(URL)
    mail_id = (await mq9(edge, "$mq9.AI.MAILBOX.CREATE", {"ttl": 120}))["mail_id"]
    print(f"edge agent: mailbox {mail_id}; going offline")
    await edge.close()

    cloud = await nats.connect(URL)
    commands = [
        ("normal", b"config update v42"),
        ("urgent", b"rotate credentials within 5 minutes"),
        ("critical", b"SHUTDOWN: thermal alarm"),
        ("normal", b"new dashboard layout"),
    ]
    for prio, payload in commands:
        suffix = "" if prio == "normal" else f".{prio}"
        ack = await mq9(cloud, f"$mq9.AI.MAILBOX.MSG.{mail_id}{suffix}", payload)
        print(f"cloud: sent {prio:8} msg_id {ack['msg_id']}: {payload.decode()}")
    await cloud.close()

    print("edge agent: back online after 8 hours, subscribing to all priorities")
    edge = await nats.connect(URL)
    sub = await edge.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.*")
    received = []
    for _ in commands:
        msg = await sub.next_msg(timeout=3)
        received.append((msg.headers["mq9-priority"], msg.data))
        print(f"edge agent: {msg.headers['mq9-priority']:8} {msg.data.decode()}")
    await edge.close()
    expected = [commands[2], commands[1], commands[0], commands[3]]
    assert received == expected, received
    print("OK: critical before urgent before normal, FIFO within a priority")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
