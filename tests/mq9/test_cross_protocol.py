"""SPEC §4 "Cross-protocol": an MQTT client publishing to `$mq9/AI/MAILBOX/MSG/<mail_id>[/urgent|/critical]`
sends into the mailbox exactly as a NATS publisher would.

The MQTT side is a minimal hand-written MQTT 3.1.1 client (CONNECT, PUBLISH QoS 0/1, PUBACK) so this
test needs no extra library."""

from __future__ import annotations

import asyncio
import struct

import pytest
from procs import RobustMQ, free_port, wait_port

from .helpers import collect, connect, create, list_mailbox, msg_id, msg_subject, priority, send

# SPEC §4 cross-protocol sends need the MQTT front-end (SPEC §5), which is a later issue.
pytestmark = pytest.mark.skip(reason="MQTT front-end not built yet: enable with the MQTT issue")


@pytest.fixture(scope="module")
def mqtt_server():
    port = free_port()
    s = RobustMQ(extra_args=["--mqtt-port", str(port)])
    s.mqtt_port = port
    s.start()
    try:
        wait_port(port, s.proc, timeout=5)
    except BaseException:
        s.cleanup()
        raise
    yield s
    s.cleanup()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class MqttClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pid = 0

    @classmethod
    async def connect(cls, port: int, client_id: str) -> MqttClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        c = cls(reader, writer)
        body = _str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30) + _str(client_id)
        writer.write(b"\x10" + _varint(len(body)) + body)
        await writer.drain()
        ptype, data = await c.read_packet()
        assert ptype == 0x20 and data == b"\x00\x00", (ptype, data)  # CONNACK, accepted
        return c

    async def read_packet(self, timeout: float = 5.0) -> tuple[int, bytes]:
        first = (await asyncio.wait_for(self.reader.readexactly(1), timeout))[0]
        mult, n = 1, 0
        while True:
            b = (await asyncio.wait_for(self.reader.readexactly(1), timeout))[0]
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        data = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        return first & 0xF0, data

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if qos == 0:
            body = _str(topic) + payload
            self.writer.write(b"\x30" + _varint(len(body)) + body)
            await self.writer.drain()
            return
        self.pid += 1
        body = _str(topic) + struct.pack("!H", self.pid) + payload
        self.writer.write(b"\x32" + _varint(len(body)) + body)
        await self.writer.drain()
        ptype, data = await self.read_packet()
        assert ptype == 0x40 and struct.unpack("!H", data[:2])[0] == self.pid, (ptype, data)

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")  # DISCONNECT
        await self.writer.drain()
        self.writer.close()


async def test_mqtt_publish_lands_in_mailbox_with_priority(mqtt_server) -> None:
    nc = await connect(mqtt_server.nats_url)
    mid = await create(nc, ttl=60)
    nats_id = await send(nc, mid, b"from nats")
    mq = await MqttClient.connect(mqtt_server.mqtt_port, "edge-device-1")
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}", b"mqtt normal", qos=1)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/urgent", b"mqtt urgent", qos=1)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/critical", bytes(range(256)), qos=1)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/critical", b"qos0 critical", qos=0)
    await mq.close()
    # QoS 1 was acknowledged; the QoS 0 one follows on the same connection: give it a moment
    for _ in range(40):
        if len(await list_mailbox(nc, mid)) == 5:
            break
        await asyncio.sleep(0.05)
    got = await collect(nc, msg_subject(mid, "*"), n=5)
    assert [(priority(m), m.data) for m in got] == [
        ("critical", bytes(range(256))), ("critical", b"qos0 critical"), ("urgent", b"mqtt urgent"),
        ("normal", b"from nats"), ("normal", b"mqtt normal")]
    assert got[3].headers["mq9-msg-id"] == str(nats_id)
    assert len({msg_id(m) for m in got}) == 5
    assert got[4].subject == msg_subject(mid) and got[2].subject == msg_subject(mid, "urgent")
    await nc.close()


async def test_mqtt_publish_reaches_live_nats_subscriber(mqtt_server) -> None:
    nc = await connect(mqtt_server.nats_url)
    mid = await create(nc, ttl=60)
    sub = await nc.subscribe(msg_subject(mid, "*"))
    mq = await MqttClient.connect(mqtt_server.mqtt_port, "edge-device-2")
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/urgent", b"live from mqtt", qos=1)
    m = await sub.next_msg(timeout=3)
    assert m.data == b"live from mqtt" and m.headers["mq9-priority"] == "urgent"
    await mq.close()
    await nc.close()
