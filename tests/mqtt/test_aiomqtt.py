"""The MQTT front-end with aiomqtt 2.5 (asyncio; paho's protocol core under its own API), MQTT 3.1.1
and 5.0, including the v5 features: user properties, message expiry, topic aliases, subscription
identifiers, no local, request/response, and cross-protocol with NATS.

The MQTT-only tests run against robustmq and mosquitto (`broker` / `port`, conftest.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import nats
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from procs import RobustMQ

from .brokers import PASSWORD, USER
from .clients import uniq

WAIT = 5.0
V3, V5 = aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5
VERSIONS = [pytest.param(V3, id="v3.1.1"), pytest.param(V5, id="v5")]



def props(packet: int, **values: Any) -> Properties:
    p = Properties(packet)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def make(port: int, version: aiomqtt.ProtocolVersion, cid: str | None = None, *, clean: bool = True,
         expiry: int | None = None, **kw: Any) -> aiomqtt.Client:
    if version == V5:
        kw["clean_start"] = clean
        if expiry is not None:
            kw["properties"] = props(PacketTypes.CONNECT, SessionExpiryInterval=expiry)
    else:
        kw["clean_session"] = clean
    return aiomqtt.Client("127.0.0.1", port, identifier=cid or uniq("aio"), protocol=version, timeout=WAIT, **kw)


@asynccontextmanager
async def client(port: int, version: aiomqtt.ProtocolVersion, cid: str | None = None, **kw: Any
                 ) -> AsyncIterator[aiomqtt.Client]:
    async with make(port, version, cid, **kw) as c:
        yield c


async def next_msg(c: aiomqtt.Client, timeout: float = WAIT) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(c.messages), timeout)


async def drain(c: aiomqtt.Client, wait: float = 0.4) -> list[aiomqtt.Message]:
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(anext(c.messages), wait))
        except TimeoutError:
            return got


async def nothing(c: aiomqtt.Client, wait: float = 0.3) -> bool:
    return await drain(c, wait) == []


def user_props(m: aiomqtt.Message) -> list[tuple[str, str]] | None:
    return getattr(m.properties, "UserProperty", None) if m.properties is not None else None


# ------------------------------------------------------------------------------------ QoS
@pytest.mark.parametrize("version", VERSIONS)
async def test_qos_0_1_2_round_trip(port: int, version: aiomqtt.ProtocolVersion) -> None:
    topic = f"{uniq('q')}/data"
    async with client(port, version) as sub, client(port, version) as low, client(port, version) as pub:
        await sub.subscribe(topic, 2)
        await low.subscribe(topic, 1)
        for qos in (0, 1, 2):
            await pub.publish(topic, b"m%d" % qos, qos=qos)  # returns once acknowledged
        got = [await next_msg(sub) for _ in range(3)]
        assert [(m.topic.value, m.payload, m.qos, m.retain) for m in got] == \
            [(topic, b"m0", 0, False), (topic, b"m1", 1, False), (topic, b"m2", 2, False)]
        assert [(await next_msg(low)).qos for _ in range(3)] == [0, 1, 1]


# ------------------------------------------------------------------------------------ retained
@pytest.mark.parametrize("version", VERSIONS)
async def test_retained_set_deliver_clear(port: int, version: aiomqtt.ProtocolVersion) -> None:
    root = uniq("ret")
    topic = f"{root}/state"
    async with client(port, version) as pub:
        await pub.publish(topic, b"on", qos=1, retain=True)
        async with client(port, version) as sub:
            await sub.subscribe(f"{root}/#", 1)
            m = await next_msg(sub)
            assert (m.topic.value, m.payload, m.retain) == (topic, b"on", True)
            await pub.publish(topic, b"", qos=1, retain=True)
            m = await next_msg(sub)
            assert (m.payload, m.retain) == (b"", False)
        async with client(port, version) as again:
            await again.subscribe(f"{root}/#", 1)
            assert await nothing(again, 0.4)


# ------------------------------------------------------------------------------------ will
@pytest.mark.parametrize("version", VERSIONS)
async def test_will_on_abrupt_close_not_on_disconnect(port: int, version: aiomqtt.ProtocolVersion) -> None:
    topic = uniq("will/")
    async with client(port, version) as watcher:
        await watcher.subscribe(topic, 1)
        async with client(port, version, will=aiomqtt.Will(topic, b"polite", 1)):
            pass  # a normal DISCONNECT discards the will
        assert await nothing(watcher, 0.4)
        rude = make(port, version, will=aiomqtt.Will(topic, b"gone", 1))
        await rude.__aenter__()
        sock = rude._client.socket()
        assert sock is not None
        sock.shutdown(2)  # the TCP connection ends without DISCONNECT
        m = await next_msg(watcher)
        assert (m.topic.value, m.payload, m.qos) == (topic, b"gone", 1)
        try:
            await rude.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass


# ------------------------------------------------------------------------------------ persistent session
@pytest.mark.parametrize("version", VERSIONS)
async def test_persistent_session_gets_offline_messages(port: int, version: aiomqtt.ProtocolVersion) -> None:
    cid, topic = uniq("ps"), f"{uniq('ps')}/t"
    async with client(port, version, cid, clean=False, expiry=300) as c:
        await c.subscribe(topic, 1)
    async with client(port, version) as pub:
        for i in range(3):
            await pub.publish(topic, b"off%d" % i, qos=1)
    try:
        async with client(port, version, cid, clean=False, expiry=300) as back:
            got = [await next_msg(back) for _ in range(3)]
            assert [(m.payload, m.qos) for m in got] == [(b"off0", 1), (b"off1", 1), (b"off2", 1)]
    finally:
        async with client(port, version, cid, clean=True):
            pass  # ends the stored session


# ------------------------------------------------------------------------------------ wildcards, $-topics
@pytest.mark.parametrize("version", VERSIONS)
async def test_wildcards_and_dollar_topics(port: int, version: aiomqtt.ProtocolVersion) -> None:
    root, dollar = uniq("w"), uniq("$app")
    async with client(port, version) as sub, client(port, version) as wide, client(port, version) as pub:
        await sub.subscribe([(f"{root}/+/t", 1), (f"{root}/x/#", 1), (f"{dollar}/#", 1)])
        await wide.subscribe([("#", 0), ("+/status", 0)])
        for t in (f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}/a/b/t", f"{dollar}/status"):
            await pub.publish(t, t.encode(), qos=1)
        got = sorted(m.topic.value for m in await drain(sub))
        assert got == sorted([f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{dollar}/status"])
        seen = [m.topic.value for m in await drain(wide, 0.2)]
        assert f"{root}/a/t" in seen and [t for t in seen if t.startswith("$")] == []


# ------------------------------------------------------------------------------------ shared subscriptions
@pytest.mark.parametrize("version", VERSIONS)
async def test_shared_subscription(port: int, version: aiomqtt.ProtocolVersion) -> None:
    topic = f"{uniq('jobs')}/x"
    async with client(port, version) as a, client(port, version) as b, client(port, version) as pub:
        await a.subscribe(f"$share/g/{topic}", 1)
        await b.subscribe(f"$share/g/{topic}", 1)
        n = 30
        for i in range(n):
            await pub.publish(topic, b"%d" % i, qos=1)
        got_a, got_b = await drain(a, 0.5), await drain(b, 0.1)
        assert sorted(int(m.payload) for m in got_a + got_b) == list(range(n))
        assert got_a and got_b and all(m.topic.value == topic for m in got_a + got_b)


# ------------------------------------------------------------------------------------ v5 features
async def test_v5_user_properties_and_message_expiry(port: int) -> None:
    """User properties (order and repeats kept) and the Message Expiry Interval reach a v5 subscriber
    (expired messages: test_mosquitto_cli.py and test_against_mosquitto.py)."""
    topic = f"{uniq('props')}/t"
    async with client(port, V5) as sub, client(port, V3) as v3, client(port, V5) as pub:
        await sub.subscribe(topic, 1)
        await v3.subscribe(topic, 1)
        up = [("unit", "lux"), ("zone", "a"), ("unit", "raw")]
        await pub.publish(topic, b"42", qos=1, properties=props(PacketTypes.PUBLISH, UserProperty=up,
                                                                 MessageExpiryInterval=60))
        m = await next_msg(sub)
        assert m.payload == b"42" and user_props(m) == up
        assert m.properties is not None and m.properties.MessageExpiryInterval in (59, 60)
        m3 = await next_msg(v3)
        assert m3.payload == b"42" and user_props(m3) is None


async def test_v5_topic_alias(port: int) -> None:
    """The first PUBLISH sets alias 1 for the topic; later ones carry only the alias (empty topic)."""
    topic = f"{uniq('alias')}/t"
    async with client(port, V5) as sub, client(port, V5) as pub:
        await sub.subscribe(topic, 1)
        await pub.publish(topic, b"a", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
        for p in (b"b", b"c"):
            await pub.publish("", p, qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
        assert [(m.topic.value, m.payload) for m in [await next_msg(sub) for _ in range(3)]] == \
            [(topic, b"a"), (topic, b"b"), (topic, b"c")]


async def test_v5_subscription_identifiers_and_no_local(port: int) -> None:
    root = uniq("sid")
    async with client(port, V5) as me, client(port, V5) as other:
        await me.subscribe(f"{root}/a/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
        await me.subscribe(f"{root}/b", options=SubscribeOptions(qos=1, noLocal=True))
        await other.publish(f"{root}/a/x", b"1", qos=1)
        m = await next_msg(me)
        assert m.properties is not None and m.properties.SubscriptionIdentifier == [7]
        await me.publish(f"{root}/b", b"mine", qos=1)  # no local: not sent back to me
        await other.publish(f"{root}/b", b"theirs", qos=1)
        m = await next_msg(me)
        assert m.payload == b"theirs"
        assert not getattr(m.properties, "SubscriptionIdentifier", None)
        assert await nothing(me, 0.2)


async def test_v5_request_response(port: int) -> None:
    """Response Topic and Correlation Data reach the responder, whose answer reaches the requester."""
    svc = f"{uniq('svc')}/echo"
    reply = f"{svc}/reply/{uniq()}"
    async with client(port, V5) as responder, client(port, V5) as requester:
        await responder.subscribe(svc, 1)
        await requester.subscribe(reply, 1)
        await requester.publish(svc, b"ping", qos=1, properties=props(
            PacketTypes.PUBLISH, ResponseTopic=reply, CorrelationData=b"c1"))
        req = await next_msg(responder)
        assert req.properties is not None
        assert (req.properties.ResponseTopic, req.properties.CorrelationData) == (reply, b"c1")
        await responder.publish(req.properties.ResponseTopic, b"re:" + req.payload, qos=1,
                                properties=props(PacketTypes.PUBLISH, CorrelationData=req.properties.CorrelationData))
        ans = await next_msg(requester)
        assert (ans.topic.value, ans.payload) == (reply, b"re:ping")
        assert ans.properties is not None and ans.properties.CorrelationData == b"c1"


# ------------------------------------------------------------------------------------ auth
@pytest.mark.parametrize("version", VERSIONS)
async def test_auth(auth_port: int, broker: str, version: aiomqtt.ProtocolVersion) -> None:
    async with client(auth_port, version, username=USER, password=PASSWORD) as good:
        topic = uniq("auth/")
        await good.subscribe(topic, 1)
        await good.publish(topic, b"in", qos=1)
        assert (await next_msg(good)).payload == b"in"
    codes = []
    for kw in ({"username": USER, "password": "nope"}, {}):
        with pytest.raises(aiomqtt.MqttCodeError) as err:
            async with client(auth_port, version, **kw):
                pass
        rc = err.value.rc
        codes.append(rc if isinstance(rc, int) else rc.value)
    refused = (0x86, 0x87)  # paho reports 3.1.1 return codes 4 and 5 as these reason codes too
    assert all(c in refused for c in codes), codes
    if broker == "robustmq":
        assert codes == list(refused)


# ------------------------------------------------------------------------------------ cross-protocol
@pytest.mark.parametrize("version", VERSIONS)
async def test_aiomqtt_to_nats(robustmq_srv: RobustMQ, version: aiomqtt.ProtocolVersion) -> None:
    root = uniq("sensors")
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        sub = await nc.subscribe(f"{root}.room1.temp")
        await nc.flush()
        async with client(robustmq_srv.mqtt_port, version) as pub:
            p = props(PacketTypes.PUBLISH, UserProperty=[("unit", "C")]) if version == V5 else None
            await pub.publish(f"{root}/room1/temp", b"21.5", qos=1, properties=p)
        m = await sub.next_msg(timeout=WAIT)
        assert (m.subject, m.data) == (f"{root}.room1.temp", b"21.5")
        assert m.headers == ({"unit": "C"} if version == V5 else None)
    finally:
        await nc.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_nats_to_aiomqtt(robustmq_srv: RobustMQ, version: aiomqtt.ProtocolVersion) -> None:
    root = uniq("sensors")
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        async with client(robustmq_srv.mqtt_port, version) as sub:
            await sub.subscribe(f"{root}/+/temp", 1)
            await nc.publish(f"{root}.room2.temp", b"19", headers={"unit": "C"})
            await nc.flush()
            m = await next_msg(sub)
            assert (m.topic.value, m.payload, m.qos) == (f"{root}/room2/temp", b"19", 1)
            assert user_props(m) == ([("unit", "C")] if version == V5 else None)
    finally:
        await nc.close()


async def test_nats_service_answers_a_v5_request(robustmq_srv: RobustMQ) -> None:
    """A v5 Response Topic is the NATS reply subject: a NATS service's answer reaches the MQTT client."""
    svc = uniq("svc")
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        async def serve(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(b"re:" + msg.data)

        await nc.subscribe(f"{svc}.echo", cb=serve)
        await nc.flush()
        reply = f"{svc}/replies/{uniq()}"
        async with client(robustmq_srv.mqtt_port, V5) as c:
            await c.subscribe(reply, 1)
            await c.publish(f"{svc}/echo", b"ping", qos=1, properties=props(PacketTypes.PUBLISH, ResponseTopic=reply))
            m = await next_msg(c)
            assert (m.topic.value, m.payload) == (reply, b"re:ping")
            # and an mq9 request the same way
            await c.publish("$mq9/AI/MAILBOX/CREATE", b'{"ttl": 60}', qos=1,
                            properties=props(PacketTypes.PUBLISH, ResponseTopic=reply))
            m = await next_msg(c)
            assert json.loads(m.payload)["mail_id"].startswith("mail-")
    finally:
        await nc.close()
