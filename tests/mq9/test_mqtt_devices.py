"""MQTT devices on mq9 mailboxes with persistent sessions (the seed's offline edge agent, scenario
5), and NATS subjects that no MQTT topic can name, with a stock asyncio client (aiomqtt)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt
import nats
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from procs import RobustMQ

VERSIONS = [pytest.param(aiomqtt.ProtocolVersion.V311, id="v3.1.1"),
            pytest.param(aiomqtt.ProtocolVersion.V5, id="v5")]


@pytest.fixture(scope="module")
def srv():
    s = RobustMQ(mqtt=True).start()
    yield s
    s.cleanup()


def persistent(version: aiomqtt.ProtocolVersion) -> dict[str, Any]:
    if version == aiomqtt.ProtocolVersion.V5:
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = 300
        return {"protocol": version, "clean_start": False, "properties": p}
    return {"protocol": version, "clean_session": False}


async def drain(c: aiomqtt.Client, quiet: float = 0.8) -> list[str]:
    got: list[str] = []
    try:
        async with asyncio.timeout(quiet):
            async for m in c.messages:
                got.append(bytes(m.payload).decode())  # type: ignore[arg-type]
    except TimeoutError:
        pass
    return got


async def request(nc: Any, subject: str, body: bytes) -> dict[str, Any]:
    return json.loads((await nc.request(subject, body, timeout=5)).data)


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_offline_device_gets_its_mailbox_by_priority_and_not_what_was_deleted(
        srv: RobustMQ, version: aiomqtt.ProtocolVersion) -> None:
    """The device subscribes `…/<id>/+` with a persistent session and goes offline; the cloud sends
    normal, urgent, critical and deletes one more. On reconnect the device gets critical, urgent,
    normal (the mailbox's replay), not arrival order, and never the deleted one."""
    nc = await nats.connect(srv.nats_url)
    mid = (await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 120}'))["mail_id"]
    cid = f"edge-{mid[-6:]}-{version.value}"
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier=cid, **persistent(version)) as c:
        await c.subscribe(f"$mq9/AI/MAILBOX/MSG/{mid}/+", qos=1)
        assert await drain(c, 0.3) == []
    await request(nc, f"$mq9.AI.MAILBOX.MSG.{mid}", b"normal: config update")
    stale = (await request(nc, f"$mq9.AI.MAILBOX.MSG.{mid}", b"stale command"))["msg_id"]
    await request(nc, f"$mq9.AI.MAILBOX.MSG.{mid}.urgent", b"urgent: pause")
    await request(nc, f"$mq9.AI.MAILBOX.MSG.{mid}.critical", b"critical: shut down")
    assert (await request(nc, f"$mq9.AI.MAILBOX.DELETE.{mid}.{stale}", b""))["deleted"] is True
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier=cid, **persistent(version)) as c:
        assert await drain(c) == ["critical: shut down", "urgent: pause", "normal: config update"]
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier=cid, protocol=version):
        pass  # a clean session ends the persistent one
    await nc.close()


async def test_an_offline_device_gets_nothing_from_a_mailbox_that_expired(srv: RobustMQ) -> None:
    nc = await nats.connect(srv.nats_url)
    mid = (await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 1}'))["mail_id"]
    v = aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier=f"exp-{mid[-6:]}", **persistent(v)) as c:
        await c.subscribe(f"$mq9/AI/MAILBOX/MSG/{mid}/+", qos=1)
    await request(nc, f"$mq9.AI.MAILBOX.MSG.{mid}", b"stale command")
    await asyncio.sleep(1.6)
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier=f"exp-{mid[-6:]}", **persistent(v)) as c:
        assert await drain(c) == []
    await nc.close()


async def test_an_offline_device_gets_each_message_once_after_a_restart() -> None:
    """Restarts while the device is away: no queued copy beside the mailbox's replay."""
    s = RobustMQ(mqtt=True).start()
    try:
        nc = await nats.connect(s.nats_url)
        mid = (await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 120}'))["mail_id"]
        v = aiomqtt.ProtocolVersion.V311
        async with aiomqtt.Client("127.0.0.1", s.mqtt_port, identifier="edge-r", **persistent(v)) as c:
            await c.subscribe(f"$mq9/AI/MAILBOX/MSG/{mid}/+", qos=1)
        await request(nc, f"$mq9.AI.MAILBOX.MSG.{mid}", b"sent-while-offline")
        await nc.close()
        s.kill9()
        s.start()
        async with aiomqtt.Client("127.0.0.1", s.mqtt_port, identifier="edge-r", **persistent(v)) as c:
            assert await drain(c) == ["sent-while-offline"]
    finally:
        s.cleanup()


async def test_a_subject_no_mqtt_topic_can_name_is_not_sent_to_mqtt(srv: RobustMQ) -> None:
    """NATS may publish `wt.a+b`; MQTT forbids wildcards in a topic name (3.3.2-2), and a stock
    client disconnects on one. The MQTT `#` subscriber skips it and keeps receiving."""
    nc = await nats.connect(srv.nats_url)
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier="wild-sub") as c:
        await c.subscribe("wt/#", qos=0)
        await asyncio.sleep(0.1)
        await nc.publish("wt.a+b", b"bad")
        await nc.publish("wt.c#", b"bad")
        await nc.publish("wt.after", b"good")
        await nc.flush()
        assert await drain(c, 0.8) == ["good"]
    await nc.close()


async def test_an_mqtt_message_expiry_is_the_message_s_expiry_in_the_mailbox(srv: RobustMQ) -> None:
    """An MQTT 5 send with Message Expiry Interval 1 s: once past, no reader of the mailbox gets it
    (NATS replay, upstream FETCH), as with upstream's `mq9-ttl`; the one without an expiry stays."""
    nc = await nats.connect(srv.nats_url)
    mid = (await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 120}'))["mail_id"]
    async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, protocol=aiomqtt.ProtocolVersion.V5,
                              identifier=f"exp-{mid[-6:]}") as c:
        p = Properties(PacketTypes.PUBLISH)
        p.MessageExpiryInterval = 1
        await c.publish(f"$mq9/AI/MAILBOX/MSG/{mid}", b"expires-in-1s", qos=1, properties=p)
        await c.publish(f"$mq9/AI/MAILBOX/MSG/{mid}", b"no-expiry", qos=1)
    await asyncio.sleep(1.6)
    sub = await nc.subscribe(f"$mq9.AI.MAILBOX.MSG.{mid}.*")
    got = []
    try:
        while True:
            got.append((await sub.next_msg(timeout=0.5)).data)
    except nats.errors.TimeoutError:
        pass
    assert got == [b"no-expiry"]
    fetched = await request(nc, f"$mq9.AI.MSG.FETCH.{mid}", b'{"deliver": "earliest", "config": {"max_wait_ms": 0}}')
    assert len(fetched["messages"]) == 1
    await nc.close()
