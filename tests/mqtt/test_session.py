"""The MQTT front-end against the real server with paho-mqtt 2.x, MQTT 3.1.1 and 5.0 (SPEC §5, §8)."""

from __future__ import annotations

import asyncio
import json
import queue
import time
import urllib.request

import nats
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from procs import RobustMQ

from robustmq.core_log import SegmentLog, Store
from robustmq.frontends.mqtt import reasons
from robustmq.frontends.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Will,
)
from robustmq.frontends.mqtt.writer import encode_publish

from .clients import MQTT_5, MQTT_311, RAW_VERSIONS, V3, V5, Paho, Raw, uniq

VERSIONS = [pytest.param(V3, id="v3.1.1"), pytest.param(V5, id="v5")]


@pytest.fixture(scope="module")
def srv():
    s = RobustMQ(mqtt=True, http=True).start()
    yield s
    s.cleanup()



# ------------------------------------------------------------------------------------ connect
@pytest.mark.parametrize("version", VERSIONS)
def test_connect_with_empty_client_id_gets_one(srv: RobustMQ, version: int) -> None:
    c = Paho(srv.mqtt_port, version, "")
    try:
        if version == V5:
            assigned = c.connack_props.AssignedClientIdentifier
            assert assigned.startswith("auto-")
        assert c.connack_flags.session_present is False
    finally:
        c.close()


def test_v3_empty_client_id_without_clean_session_is_refused(srv: RobustMQ) -> None:
    r = Raw(srv.mqtt_port, MQTT_311)
    ack = r.connect("", clean_start=False)
    assert isinstance(ack, ConnAck) and ack.reason_code == 2  # identifier rejected
    assert r.closed_within(3)[0]


# ------------------------------------------------------------------------------------ publish/subscribe
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip_at_each_qos(srv: RobustMQ, version: int, qos: int) -> None:
    topic = f"{uniq()}/room1/temp"
    sub = Paho(srv.mqtt_port, version, uniq("sub"))
    pub = Paho(srv.mqtt_port, version, uniq("pub"))
    try:
        assert [rc.value for rc in sub.subscribe(topic, 2)] == [2]
        pub.publish(topic, b"21.5", qos)
        m = sub.next()
        assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"21.5", qos, False)
        # granted QoS caps the delivery QoS
        low = f"{uniq()}/low"
        sub.subscribe(low, 0)
        pub.publish(low, b"x", qos)
        assert sub.next().qos == 0
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_many_qos1_messages_pass_the_inflight_window(srv: RobustMQ, version: int) -> None:
    topic = uniq("bulk/")
    sub = Paho(srv.mqtt_port, version, uniq("sub"))
    pub = Paho(srv.mqtt_port, version, uniq("pub"))
    try:
        sub.subscribe(topic, 1)
        for i in range(300):
            pub.c.publish(topic, b"%d" % i, 1)
        got = [sub.next().payload for _ in range(300)]
        assert got == [b"%d" % i for i in range(300)]
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_qos2_resent_publish_is_not_delivered_twice(srv: RobustMQ, version: int) -> None:
    topic = uniq("q2/")
    sub = Paho(srv.mqtt_port, V3, uniq("sub"))
    r = Raw(srv.mqtt_port, version)
    try:
        sub.subscribe(topic, 2)
        assert isinstance(r.connect(uniq("raw")), ConnAck)
        r.send(Publish(topic, b"once", 2, packet_id=7))
        assert r.read() == PubRec(7)
        r.send(Publish(topic, b"once", 2, dup=True, packet_id=7))
        assert r.read() == PubRec(7)
        r.send(PubRel(7))
        assert r.read() == PubComp(7)
        assert sub.next().payload == b"once"
        assert sub.nothing(0.5)
    finally:
        r.close()
        sub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards(srv: RobustMQ, version: int) -> None:
    root = uniq("w")
    sub = Paho(srv.mqtt_port, version, uniq("sub"))
    pub = Paho(srv.mqtt_port, version, uniq("pub"))
    try:
        sub.subscribe(f"{root}/+/t", 1)
        sub.subscribe(f"{root}/x/#", 1)
        for t in (f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}/a/b/t", f"{root}/a"):
            pub.publish(t, t.encode(), 1)
        got = sorted(sub.next().topic for _ in range(3))
        assert got == sorted([f"{root}/a/t", f"{root}/x", f"{root}/x/y/z"])
        assert sub.nothing()
        sub.unsubscribe(f"{root}/x/#")
        pub.publish(f"{root}/x/q", b"gone", 1)
        assert sub.nothing()
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_skip_leading_wildcards(srv: RobustMQ, version: int) -> None:
    name = uniq("$app")
    wide = Paho(srv.mqtt_port, version, uniq("sub"))
    exact = Paho(srv.mqtt_port, version, uniq("sub"))
    pub = Paho(srv.mqtt_port, version, uniq("pub"))
    try:
        wide.subscribe("#", 0)
        wide.subscribe("+/status", 0)
        exact.subscribe(f"{name}/#", 0)
        pub.publish(f"{name}/status", b"hidden", 1)
        assert exact.next().payload == b"hidden"
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                m = wide.next(0.1)
            except queue.Empty:
                continue
            assert not m.topic.startswith("$"), m.topic  # others' traffic may pass; never a $ topic
    finally:
        wide.close()
        exact.close()
        pub.close()


# ------------------------------------------------------------------------------------ retained
@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_deliver_clear(srv: RobustMQ, version: int) -> None:
    topic = f"{uniq('ret')}/state"
    pub = Paho(srv.mqtt_port, version, uniq("pub"))
    try:
        pub.publish(topic, b"on", 1, retain=True)
        sub = Paho(srv.mqtt_port, version, uniq("sub"))
        sub.subscribe(topic.split("/")[0] + "/#", 1)
        m = sub.next()
        assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"on", True, 1)
        pub.publish(topic, b"", 1, retain=True)  # clears it; delivered live as an empty message
        assert sub.next().payload == b""
        sub.close()
        again = Paho(srv.mqtt_port, version, uniq("sub"))
        again.subscribe(topic, 1)
        assert again.nothing(0.5)
        again.close()
    finally:
        pub.close()


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_many_retained_at_qos1_all_arrive_in_topic_order(srv: RobustMQ, clean: bool) -> None:
    """3,500 retained topics under one filter, QoS 1: more than one page of the paged retained
    burst and more than the inflight window, so pages wait for the client's PUBACKs (a queue
    behind the window, or the persistent session's stored queue) and none is lost or repeated."""
    root = uniq("many")
    n = 3500
    pub = Paho(srv.mqtt_port, V5, uniq("pub"))
    try:
        for i in range(n):
            pub.c.publish(f"{root}/{i:05d}", b"v%d" % i, 1, retain=True)
        pub.publish(f"{root}/zzz", b"last", 1, retain=True)  # its PUBACK: every one before is stored
    finally:
        pub.close()
    sub = Paho(srv.mqtt_port, V5, uniq("sub"), clean=clean, session_expiry=None if clean else 60)
    try:
        sub.subscribe(f"{root}/#", 1)
        got = [sub.next(10) for _ in range(n + 1)]
        assert [m.topic for m in got] == [f"{root}/{i:05d}" for i in range(n)] + [f"{root}/zzz"]
        assert all(m.retain and m.qos == 1 for m in got)
        assert got[1234].payload == b"v1234"
        assert sub.nothing(0.3)
    finally:
        sub.close()


def test_retained_survives_restart(fresh_server: RobustMQ) -> None:
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        pub = Paho(s.mqtt_port, V5, "keeper")
        pub.publish("home/lamp", b"lit", 1, retain=True, user_properties=[("unit", "lux")])
        pub.publish("home/door", b"open", 1, retain=True)
        pub.publish("home/door", b"", 1, retain=True)
        pub.close()
        s.kill9()
        s.start()
        sub = Paho(s.mqtt_port, V5, "reader")
        sub.subscribe("home/#", 1)
        m = sub.next()
        assert (m.topic, m.payload, m.retain) == ("home/lamp", b"lit", True)
        assert m.properties.UserProperty == [("unit", "lux")]
        assert sub.nothing(0.5)
        sub.close()
    finally:
        s.stop()


# ------------------------------------------------------------------------------------ will
@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_will_on_abrupt_close_not_on_disconnect(srv: RobustMQ, version: int) -> None:
    topic = uniq("will/")
    sub = Paho(srv.mqtt_port, V5, uniq("sub"))
    try:
        sub.subscribe(topic, 1)
        polite = Raw(srv.mqtt_port, version)
        polite.connect(uniq("w"), will=Will(topic, b"polite", 1))
        polite.send(Disconnect())
        assert polite.closed_within(3)[0]
        assert sub.nothing(0.5)
        rude = Raw(srv.mqtt_port, version)
        rude.connect(uniq("w"), will=Will(topic, b"gone", 1))
        rude.close()
        m = sub.next()
        assert (m.payload, m.qos) == (b"gone", 1)
    finally:
        sub.close()


# ------------------------------------------------------------------------------------ keepalive, takeover
@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_keepalive_timeout_closes(srv: RobustMQ, version: int) -> None:
    def stale() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/varz", timeout=5) as resp:
            fes = json.loads(resp.read())["frontends"]
            return int(next(f for f in fes if f["protocol"] == "mqtt")["stale_connections"])

    before = stale()
    r = Raw(srv.mqtt_port, version)
    r.connect(uniq("ka"), keepalive=1)
    start = time.monotonic()
    r.send(PingReq())
    closed, got = r.closed_within(5)
    assert closed and 1.4 < time.monotonic() - start < 4
    if version == MQTT_5:
        assert Disconnect(reasons.KEEP_ALIVE_TIMEOUT) in got
    assert stale() == before + 1  # /varz counts it, as nats-server's stale_connections


@pytest.mark.parametrize("version", VERSIONS)
def test_client_id_takeover(srv: RobustMQ, version: int) -> None:
    cid = uniq("dup")
    first = Paho(srv.mqtt_port, version, cid)
    second = Paho(srv.mqtt_port, version, cid)
    try:
        rc = first.disconnects.get(timeout=5)
        if version == V5:
            assert rc.value == reasons.SESSION_TAKEN_OVER
        topic = uniq("tk/")
        second.subscribe(topic, 1)
        second.publish(topic, b"still here", 1)
        assert second.next().payload == b"still here"
    finally:
        first.c.loop_stop()
        second.close()


# ------------------------------------------------------------------------------------ auth
@pytest.fixture(scope="module")
def auth_srv():
    s = RobustMQ(mqtt=True, extra_args=["--user", "alice", "--password", "s3cret"]).start()
    yield s
    s.cleanup()


def test_auth_v5(auth_srv: RobustMQ) -> None:
    bad = Paho(auth_srv.mqtt_port, V5, uniq(), username="alice", password="nope", connect=False)
    assert bad.connect().value == reasons.BAD_USER_NAME_OR_PASSWORD
    bad.c.loop_stop()
    anon = Paho(auth_srv.mqtt_port, V5, uniq(), connect=False)
    assert anon.connect().value == reasons.NOT_AUTHORIZED
    anon.c.loop_stop()
    good = Paho(auth_srv.mqtt_port, V5, uniq(), username="alice", password="s3cret")
    good.close()


def test_auth_v3_return_codes(auth_srv: RobustMQ) -> None:
    r = Raw(auth_srv.mqtt_port, MQTT_311)
    assert r.connect(uniq(), username="alice", password=b"nope") == ConnAck(False, 4)
    assert r.closed_within(3)[0]
    r = Raw(auth_srv.mqtt_port, MQTT_311)
    assert r.connect(uniq()) == ConnAck(False, 5)
    r = Raw(auth_srv.mqtt_port, MQTT_311)
    assert r.connect(uniq(), username="alice", password=b"s3cret") == ConnAck(False, 0)
    r.close()


# ------------------------------------------------------------------------------------ cross-protocol
@pytest.mark.parametrize("version", VERSIONS)
async def test_mqtt_to_nats_subscriber(srv: RobustMQ, version: int) -> None:
    root = uniq("sensors")
    nc = await nats.connect(srv.nats_url, allow_reconnect=False)
    try:
        sub = await nc.subscribe(f"{root}.room1.temp")
        await nc.flush()
        pub = Paho(srv.mqtt_port, version, uniq("pub"))
        props = [("unit", "C"), ("unit", "K")] if version == V5 else None
        await asyncio.to_thread(pub.publish, f"{root}/room1/temp", b"21.5", 1, False, props)
        m = await sub.next_msg(timeout=5)
        assert m.subject == f"{root}.room1.temp" and m.data == b"21.5"
        if version == V5:
            assert m.headers is not None and m.headers.get("unit") in ("C", "K")
        pub.close()
    finally:
        await nc.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_nats_to_mqtt_subscriber(srv: RobustMQ, version: int) -> None:
    root = uniq("sensors")
    sub = Paho(srv.mqtt_port, version, uniq("sub"))
    nc = await nats.connect(srv.nats_url, allow_reconnect=False)
    try:
        sub.subscribe(f"{root}/+/temp", 1)
        await nc.publish(f"{root}.room2.temp", b"19", headers={"unit": "C"})
        await nc.flush()
        m = await asyncio.to_thread(sub.next)
        assert (m.topic, m.payload, m.qos) == (f"{root}/room2/temp", b"19", 1)
        if version == V5:
            assert m.properties.UserProperty == [("unit", "C")]
    finally:
        await nc.close()
        sub.close()


async def test_shared_subscription_with_nats_queue_group(srv: RobustMQ) -> None:
    group, root = uniq("g"), uniq("jobs")
    m3 = Paho(srv.mqtt_port, V3, uniq("w"))
    m5 = Paho(srv.mqtt_port, V5, uniq("w"))
    nc = await nats.connect(srv.nats_url, allow_reconnect=False)
    try:
        nats_got: list[bytes] = []

        async def take(msg: nats.aio.msg.Msg) -> None:
            nats_got.append(msg.data)

        await nc.subscribe(f"{root}.x", queue=group, cb=take)
        m3.subscribe(f"$share/{group}/{root}/x", 1)
        m5.subscribe(f"$share/{group}/{root}/+", 1)
        n = 60
        for i in range(n):
            await nc.publish(f"{root}.x", b"%d" % i)
        await nc.flush()
        await asyncio.sleep(1.0)
        mqtt_got = []
        for c in (m3, m5):
            while not c.msgs.empty():
                mqtt_got.append(c.msgs.get_nowait().payload)
        assert sorted(nats_got + mqtt_got) == sorted(b"%d" % i for i in range(n))  # each once
        assert nats_got and not m3.msgs.qsize() and mqtt_got
    finally:
        await nc.close()
        m3.close()
        m5.close()


# ------------------------------------------------------------------------------------ durability
def test_kill9_after_puback_keeps_every_message(fresh_server: RobustMQ) -> None:
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    pub = Paho(s.mqtt_port, V3, "durable")
    infos = [pub.c.publish("durable/mqtt", b"m%d" % i, 1) for i in range(500)]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    s.kill9()
    pub.c.loop_stop()
    log = SegmentLog(Store(s.data_dir))
    try:
        stream = log.get_stream("durable.mqtt")
        assert stream is not None
        assert [r.payload for _, r in log.read(stream)] == [b"m%d" % i for i in range(500)]
    finally:
        log.close()


def test_kill9_after_pipelined_pubacks_keeps_every_message(fresh_server: RobustMQ) -> None:
    """Thousands of QoS 1 PUBLISHes in one write (parsed as runs: one append and one PUBACK write per
    run): each PUBACK only once its message is on disk."""
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    n = 3000
    r = Raw(s.mqtt_port, MQTT_311)
    r.connect("burst")
    r.sock.sendall(b"".join(encode_publish("durable/burst", b"m%d" % i, 1, packet_id=i + 1) for i in range(n)))
    assert [r.read() for _ in range(n)] == [PubAck(i + 1) for i in range(n)]
    s.kill9()
    r.close()
    log = SegmentLog(Store(s.data_dir))
    try:
        stream = log.get_stream("durable.burst")
        assert stream is not None
        assert [r.payload for _, r in log.read(stream)] == [b"m%d" % i for i in range(n)]
    finally:
        log.close()


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_malformed_packet_closes_only_that_connection(srv: RobustMQ, version: int) -> None:
    topic = uniq("ok/")
    other = Paho(srv.mqtt_port, V5, uniq("other"))
    try:
        other.subscribe(topic, 1)
        r = Raw(srv.mqtt_port, version)
        r.connect(uniq("bad"))
        r.sock.sendall(b"\x30\x04\x00\x09ab")  # topic length runs past the packet
        closed, got = r.closed_within(3)
        assert closed
        if version == MQTT_5:
            assert got == [Disconnect(reasons.MALFORMED_PACKET)]
        other.publish(topic, b"unaffected", 1)
        assert other.next().payload == b"unaffected"
    finally:
        other.close()


def test_packet_before_connect_and_second_connect_close(srv: RobustMQ) -> None:
    r = Raw(srv.mqtt_port, MQTT_311)
    r.send(PingReq())
    assert r.closed_within(3)[0]
    r = Raw(srv.mqtt_port, MQTT_5)
    r.connect(uniq("twice"))
    r.send(Connect(MQTT_5, "x"))
    closed, got = r.closed_within(3)
    assert closed and got == [Disconnect(reasons.PROTOCOL_ERROR)]


# ------------------------------------------------------------------------------------ monitoring, v5 requests
def test_varz_and_connz_show_mqtt() -> None:
    s = RobustMQ(mqtt=True, http=True).start()
    try:
        c = Paho(s.mqtt_port, V5, "monitored")
        c.subscribe("mon/#", 1)
        c.publish("mon/x", b"1", 1)
        c.next()
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/varz", timeout=5) as r:
            varz = json.load(r)
        fe = next(f for f in varz["frontends"] if f["protocol"] == "mqtt")
        assert fe["port"] == s.mqtt_port and fe["connections"] == 1 and fe["subscriptions"] == 2
        assert fe["in_msgs"] == 1 and fe["out_msgs"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/connz", timeout=5) as r:
            connz = json.load(r)
        assert any(c["type"] == "mqtt" and c["name"] == "monitored" for c in connz["connections"])
        c.close()
    finally:
        s.cleanup()


async def test_v5_request_to_mq9_gets_its_reply_on_the_response_topic(srv: RobustMQ) -> None:
    """A v5 Response Topic is the request's reply subject: mq9 answers that connection only."""
    c = Paho(srv.mqtt_port, V5, uniq("agent"))
    spy = Paho(srv.mqtt_port, V5, uniq("spy"))
    try:
        inbox = uniq("replies/")
        c.subscribe(inbox, 1)
        spy.subscribe(f"{inbox.split('/')[0]}/#", 0)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.ResponseTopic = inbox
        c.c.publish("$mq9/AI/MAILBOX/CREATE", b'{"ttl": 60}', 1, properties=props)
        m = await asyncio.to_thread(c.next)
        assert m.topic == inbox and json.loads(m.payload)["mail_id"].startswith("mail-")
        assert spy.nothing(0.3)
    finally:
        c.close()
        spy.close()


def test_v5_topic_without_subject_gets_puback_0x90(srv: RobustMQ) -> None:
    c = Paho(srv.mqtt_port, V5, uniq("p"))
    try:
        assert c.publish("a/*/b", b"x", 1).value == reasons.TOPIC_NAME_INVALID
        assert c.publish("a/ok/b", b"x", 1).value == reasons.SUCCESS  # the connection stays
    finally:
        c.close()
