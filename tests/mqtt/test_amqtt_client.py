"""The MQTT front-end with amqtt's client (`amqtt.client.MQTTClient`, 0.12): a pure-Python asyncio
MQTT implementation of its own, independent of paho and libmosquitto. It speaks MQTT 3.1.1 only
(its CONNECT carries protocol level 4), so v5 features are covered by the other clients.

The MQTT-only tests run against robustmq and mosquitto (`broker` / `port`, conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import pytest
from amqtt.client import MQTTClient
from amqtt.errors import ConnectError
from amqtt.session import ApplicationMessage
from procs import RobustMQ

from .brokers import PASSWORD, USER
from .clients import uniq

WAIT = 5.0



def make(cid: str | None = None, *, clean: bool = True, will: tuple[str, str, int, bool] | None = None
         ) -> MQTTClient:
    cfg: dict[str, Any] = {"keep_alive": 30, "ping_delay": 1, "auto_reconnect": False, "cleansession": clean,
                           "plugins": {}}
    if will is not None:
        topic, message, qos, retain = will
        cfg["will"] = {"topic": topic, "message": message, "qos": qos, "retain": retain}
    return MQTTClient(client_id=cid or uniq("amqtt"), config=cfg)


async def connect(port: int, cid: str | None = None, *, user: str | None = None, password: str | None = None,
                  **kw: Any) -> MQTTClient:
    c = make(cid, **kw)
    cred = f"{user}:{password}@" if user is not None else ""
    await asyncio.wait_for(c.connect(f"mqtt://{cred}127.0.0.1:{port}"), WAIT)
    return c


@asynccontextmanager
async def client(port: int, cid: str | None = None, **kw: Any) -> AsyncIterator[MQTTClient]:
    c = await connect(port, cid, **kw)
    try:
        yield c
    finally:
        if c.session is not None and c.session.transitions.is_connected():
            await asyncio.wait_for(c.disconnect(), WAIT)


async def next_msg(c: MQTTClient, timeout: float = WAIT) -> ApplicationMessage:
    m = await c.deliver_message(timeout)
    assert m is not None
    return m


async def nothing(c: MQTTClient, wait: float = 0.3) -> bool:
    try:
        await c.deliver_message(wait)
    except TimeoutError:
        return True
    return False


async def drain(c: MQTTClient, wait: float = 0.4) -> list[ApplicationMessage]:
    got = []
    while True:
        try:
            m = await c.deliver_message(wait)
        except TimeoutError:
            return got
        assert m is not None
        got.append(m)


def abort(c: MQTTClient) -> None:
    """Close the TCP connection without DISCONNECT (amqtt has no such call: its stream's transport)."""
    handler = c._handler
    assert handler is not None and handler.writer is not None
    handler.writer._writer.transport.abort()  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ QoS
async def test_qos_0_1_2_round_trip(port: int) -> None:
    topic = f"{uniq('q')}/data"
    async with client(port) as sub, client(port) as low, client(port) as pub:
        assert await sub.subscribe([(topic, 2)]) == [2]
        assert await low.subscribe([(topic, 1)]) == [1]
        for qos in (0, 1, 2):
            await pub.publish(topic, b"m%d" % qos, qos=qos)  # returns once PUBACK / PUBCOMP came
        got = [await next_msg(sub) for _ in range(3)]
        assert [(m.topic, bytes(m.data), m.qos, m.retain) for m in got] == \
            [(topic, b"m0", 0, False), (topic, b"m1", 1, False), (topic, b"m2", 2, False)]
        assert [(await next_msg(low)).qos for _ in range(3)] == [0, 1, 1]  # granted QoS caps delivery


# ------------------------------------------------------------------------------------ retained
async def test_retained_set_deliver_clear(port: int) -> None:
    root = uniq("ret")
    topic = f"{root}/state"
    async with client(port) as pub:
        await pub.publish(topic, b"off", qos=1, retain=True)
        await pub.publish(topic, b"on", qos=1, retain=True)
        async with client(port) as sub:
            await sub.subscribe([(f"{root}/#", 1)])
            m = await next_msg(sub)
            assert (m.topic, bytes(m.data), m.retain, m.qos) == (topic, b"on", True, 1)
            await pub.publish(topic, b"live", qos=1, retain=True)
            m = await next_msg(sub)
            assert (bytes(m.data), m.retain) == (b"live", False)  # live copies go without the flag
            await pub.publish(topic, b"", qos=1, retain=True)  # clears it
            assert bytes((await next_msg(sub)).data) == b""
        async with client(port) as again:
            await again.subscribe([(f"{root}/#", 1)])
            assert await nothing(again, 0.4)


# ------------------------------------------------------------------------------------ will
async def test_will_on_abrupt_close_not_on_disconnect(port: int) -> None:
    topic = uniq("will/")
    async with client(port) as watcher:
        await watcher.subscribe([(topic, 1)])
        polite = await connect(port, will=(topic, "polite", 1, False))
        await polite.disconnect()
        assert await nothing(watcher, 0.4)
        rude = await connect(port, will=(topic, "gone", 1, False))
        abort(rude)
        m = await next_msg(watcher)
        assert (m.topic, bytes(m.data), m.qos, m.retain) == (topic, b"gone", 1, False)
        await rude.cancel_tasks()


# ------------------------------------------------------------------------------------ persistent session
async def test_persistent_session_gets_offline_messages(port: int) -> None:
    cid, topic = uniq("ps"), f"{uniq('ps')}/t"
    c = await connect(port, cid, clean=False)
    await c.subscribe([(topic, 1)])
    await c.disconnect()
    async with client(port) as pub:
        for i in range(3):
            await pub.publish(topic, b"off%d" % i, qos=1)
        await pub.publish(topic, b"qos0", qos=0)  # not kept for an offline client
    back = await connect(port, cid, clean=False)
    try:
        got = [await next_msg(back) for _ in range(3)]
        assert [(bytes(m.data), m.qos) for m in got] == [(b"off0", 1), (b"off1", 1), (b"off2", 1)]
        assert await nothing(back, 0.3)
    finally:
        await back.disconnect()
        end = await connect(port, cid, clean=True)  # ends the stored session
        await end.disconnect()


# ------------------------------------------------------------------------------------ wildcards, $-topics
async def test_wildcards_and_dollar_topics(port: int) -> None:
    root, dollar = uniq("w"), uniq("$app")
    async with client(port) as sub, client(port) as wide, client(port) as exact, client(port) as pub:
        await sub.subscribe([(f"{root}/+/t", 1), (f"{root}/x/#", 1)])
        await wide.subscribe([("#", 0), ("+/status", 0)])
        await exact.subscribe([(f"{dollar}/#", 0)])
        for t in (f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}/a/b/t", f"{root}/a"):
            await pub.publish(t, t.encode(), qos=1)
        await pub.publish(f"{dollar}/status", b"hidden", qos=1)
        got = sorted(m.topic for m in await drain(sub))
        assert got == sorted([f"{root}/a/t", f"{root}/x", f"{root}/x/y/z"])
        assert (await next_msg(exact)).topic == f"{dollar}/status"
        seen = [m.topic for m in await drain(wide, 0.2)]
        assert f"{root}/a/t" in seen and [t for t in seen if t.startswith("$")] == []


# ------------------------------------------------------------------------------------ shared subscriptions
async def test_shared_subscription(port: int) -> None:
    topic = f"{uniq('jobs')}/x"
    async with client(port) as a, client(port) as b, client(port) as pub:
        await a.subscribe([(f"$share/g/{topic}", 1)])
        await b.subscribe([(f"$share/g/{topic}", 1)])
        n = 30
        for i in range(n):
            await pub.publish(topic, b"%d" % i, qos=1)
        got_a, got_b = await drain(a, 0.5), await drain(b, 0.1)
        assert sorted(int(m.data) for m in got_a + got_b) == list(range(n))
        assert got_a and got_b and all(m.topic == topic for m in got_a + got_b)


# ------------------------------------------------------------------------------------ auth
async def test_auth(auth_port: int, broker: str) -> None:
    topic = uniq("auth/")
    async with client(auth_port, user=USER, password=PASSWORD) as good:
        await good.subscribe([(topic, 1)])
        await good.publish(topic, b"in", qos=1)
        assert bytes((await next_msg(good)).data) == b"in"
    codes = []
    for user, password in ((USER, "nope"), (None, None)):
        with pytest.raises(ConnectError) as err:
            await connect(auth_port, user=user, password=password)
        codes.append(err.value.return_code)
    assert all(c in (4, 5) for c in codes), codes  # bad user name or password / not authorised
    if broker == "robustmq":
        assert codes == [4, 5]


# ------------------------------------------------------------------------------------ cross-protocol
async def test_amqtt_to_nats(robustmq_srv: RobustMQ) -> None:
    root = uniq("sensors")
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        sub = await nc.subscribe(f"{root}.room1.temp")
        await nc.flush()
        async with client(robustmq_srv.mqtt_port) as pub:
            await pub.publish(f"{root}/room1/temp", b"21.5", qos=1)
        m = await sub.next_msg(timeout=WAIT)
        assert (m.subject, m.data) == (f"{root}.room1.temp", b"21.5")
    finally:
        await nc.close()


async def test_nats_to_amqtt(robustmq_srv: RobustMQ) -> None:
    root = uniq("sensors")
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        async with client(robustmq_srv.mqtt_port) as sub:
            await sub.subscribe([(f"{root}/+/temp", 1)])
            await nc.publish(f"{root}.room2.temp", b"19", headers={"unit": "C"})
            await nc.flush()
            m = await next_msg(sub)
            assert (m.topic, bytes(m.data), m.qos) == (f"{root}/room2/temp", b"19", 1)
    finally:
        await nc.close()
