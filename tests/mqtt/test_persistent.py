"""Persistent MQTT sessions (SPEC §2 "restart recovers ... MQTT sessions", §5) with paho-mqtt 2.x and
the raw codec client, both protocol versions: offline queue, resend with DUP, clean start, session
expiry, and survival of SIGTERM and kill -9."""

from __future__ import annotations

import socket
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from procs import RobustMQ

from robustmq.frontends.mqtt.packets import (
    ConnAck,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
)
from robustmq.frontends.mqtt.packets import Subscription as SubRequest
from robustmq.frontends.mqtt.properties import Properties

from .clients import MQTT_5, RAW_VERSIONS, V3, V5, WAIT, Paho, Raw, uniq

VERSIONS = [pytest.param(V3, id="v3.1.1"), pytest.param(V5, id="v5")]
EXPIRY = 300


@pytest.fixture(scope="module")
def srv():
    s = RobustMQ(mqtt=True).start()
    yield s
    s.cleanup()



def persistent(port: int, version: int, cid: str, expiry: int = EXPIRY) -> Paho:
    return Paho(port, version, cid, clean=False, session_expiry=expiry if version == V5 else None)


def nats_publish(port: int, subject: str, payloads: list[bytes]) -> None:
    """Plain NATS publishes, confirmed by a PONG (so they are routed before we go on)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.recv(4096)  # INFO
        data = b'CONNECT {"verbose":false}\r\n'
        for p in payloads:
            data += b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(p), p)
        s.sendall(data + b"PING\r\n")
        got = b""
        deadline = time.monotonic() + WAIT
        while b"PONG" not in got and time.monotonic() < deadline:
            got += s.recv(4096)
        assert b"PONG" in got


def raw_connect(port: int, version: int, cid: str, clean: bool = False) -> tuple[Raw, ConnAck]:
    r = Raw(port, version)
    props = Properties(session_expiry_interval=EXPIRY) if version == MQTT_5 else Properties()
    ack = r.connect(cid, clean_start=clean, properties=props)
    assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
    return r, ack


def collect(c: Paho, n: int) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in (c.next() for _ in range(n))]


# ------------------------------------------------------------------------------------ offline queue
@pytest.mark.parametrize("version", VERSIONS)
def test_offline_messages_arrive_once_in_order(srv: RobustMQ, version: int) -> None:
    cid, base = uniq("c"), uniq("po")
    sub = persistent(srv.mqtt_port, version, cid)
    assert sub.connack_flags.session_present is False
    assert sub.subscribe(f"{base}/+", 1)[0] == 1
    sub.close()
    pub = Paho(srv.mqtt_port, V5, uniq("pub"))
    try:
        pub.publish(f"{base}/a", b"m1", 1)
        pub.publish(f"{base}/b", b"m2", 2)
        pub.publish(f"{base}/a", b"q0", 0)  # QoS 0 is not kept for an offline client
        nats_publish(srv.nats_port, f"{base}.b", [b"n1", b"n2"])
        pub.publish(f"{base}/a", b"m3", 1)
        back = persistent(srv.mqtt_port, version, cid)
        try:
            assert back.connack_flags.session_present is True
            got = collect(back, 5)
            assert got == [(f"{base}/a", b"m1"), (f"{base}/b", b"m2"), (f"{base}/b", b"n1"),
                           (f"{base}/b", b"n2"), (f"{base}/a", b"m3")]
            pub.publish(f"{base}/b", b"live", 1)  # the subscription is still in place
            assert collect(back, 1) == [(f"{base}/b", b"live")]
            assert back.nothing(0.5)
        finally:
            back.close()
        again = persistent(srv.mqtt_port, version, cid)  # everything was acknowledged: nothing again
        try:
            assert again.connack_flags.session_present is True
            assert again.nothing(0.5)
        finally:
            again.close()
    finally:
        pub.close()


def test_backlog_larger_than_the_inflight_window(srv: RobustMQ) -> None:
    """A pipelined NATS burst (one router publish_many: references at consecutive offsets) bigger
    than the 1024-message window: sent as acknowledgements make room, in order, then live ones."""
    cid, base = uniq("c"), uniq("bk")
    sub = persistent(srv.mqtt_port, V5, cid)
    sub.subscribe(f"{base}/#", 1)
    sub.close()
    burst = [b"%d" % i for i in range(1500)]
    nats_publish(srv.nats_port, f"{base}.x", burst)
    back = persistent(srv.mqtt_port, V5, cid)
    try:
        assert back.connack_flags.session_present is True
        nats_publish(srv.nats_port, f"{base}.y", [b"live"])
        got = collect(back, len(burst) + 1)
        assert got == [(f"{base}/x", p) for p in burst] + [(f"{base}/y", b"live")]
        assert back.nothing(0.3)
    finally:
        back.close()


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_unacked_message_resent_with_dup_on_reconnect(srv: RobustMQ, version: int) -> None:
    cid, topic = uniq("c"), f"{uniq('dup')}/x"
    r, ack = raw_connect(srv.mqtt_port, version, cid)
    assert ack.session_present is False
    r.send(Subscribe(1, (SubRequest(topic, 1),)))
    assert isinstance(r.read(), SubAck)
    pub = Paho(srv.mqtt_port, V3, uniq("pub"))
    try:
        pub.publish(topic, b"first", 1)
        m = r.read()
        assert isinstance(m, Publish) and m.payload == b"first" and not m.dup
        r.close()  # no PUBACK
        time.sleep(0.3)
        r2, ack2 = raw_connect(srv.mqtt_port, version, cid)
        assert ack2.session_present is True
        again = r2.read()
        assert isinstance(again, Publish)
        assert (again.payload, again.dup, again.packet_id, again.qos) == (b"first", True, m.packet_id, 1)
        r2.send(PubAck(again.packet_id))
        time.sleep(0.2)
        r2.close()
        time.sleep(0.3)
        r3, ack3 = raw_connect(srv.mqtt_port, version, cid)
        assert ack3.session_present is True
        with pytest.raises(TimeoutError):
            r3.read(0.5)  # acknowledged: not sent again
        r3.close()
    finally:
        pub.close()


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_released_qos2_message_gets_its_pubrel_again(srv: RobustMQ, version: int) -> None:
    cid, topic = uniq("c"), f"{uniq('q2')}/x"
    r, _ = raw_connect(srv.mqtt_port, version, cid)
    r.send(Subscribe(1, (SubRequest(topic, 2),)))
    assert isinstance(r.read(), SubAck)
    pub = Paho(srv.mqtt_port, V3, uniq("pub"))
    try:
        pub.publish(topic, b"exactly once", 2)
        m = r.read()
        assert isinstance(m, Publish) and m.qos == 2
        r.send(PubRec(m.packet_id))
        rel = r.read()
        assert isinstance(rel, PubRel) and rel.packet_id == m.packet_id
        r.close()  # no PUBCOMP
        time.sleep(0.3)
        r2, ack = raw_connect(srv.mqtt_port, version, cid)
        assert ack.session_present is True
        again = r2.read()
        assert isinstance(again, PubRel) and again.packet_id == m.packet_id
        r2.send(PubComp(m.packet_id))
        with pytest.raises(TimeoutError):
            r2.read(0.5)
        r2.close()
    finally:
        pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_start_discards_the_session(srv: RobustMQ, version: int) -> None:
    cid, topic = uniq("c"), f"{uniq('cl')}/t"
    sub = persistent(srv.mqtt_port, version, cid)
    sub.subscribe(topic, 1)
    sub.close()
    pub = Paho(srv.mqtt_port, V3, uniq("pub"))
    try:
        pub.publish(topic, b"missed", 1)
        clean = Paho(srv.mqtt_port, version, cid)  # clean session / clean start = 1
        assert clean.connack_flags.session_present is False
        assert clean.nothing(0.5)
        clean.close()
        back = persistent(srv.mqtt_port, version, cid)
        try:
            assert back.connack_flags.session_present is False
            pub.publish(topic, b"unseen", 1)  # the subscription went with the session
            assert back.nothing(0.5)
        finally:
            back.close()
    finally:
        pub.close()


def test_v5_session_expiry_drops_the_session(srv: RobustMQ) -> None:
    cid, topic = uniq("c"), f"{uniq('ex')}/t"
    sub = persistent(srv.mqtt_port, V5, cid, expiry=1)
    sub.subscribe(topic, 1)
    sub.close()
    time.sleep(0.3)
    back = persistent(srv.mqtt_port, V5, cid, expiry=1)  # within the expiry: still there
    assert back.connack_flags.session_present is True
    back.close()
    time.sleep(2.0)  # expiry 1 s, checked every 0.25 s
    gone = persistent(srv.mqtt_port, V5, cid)
    try:
        assert gone.connack_flags.session_present is False
    finally:
        gone.close()


def test_v5_disconnect_with_expiry_zero_ends_the_session(srv: RobustMQ) -> None:
    cid, topic = uniq("c"), f"{uniq('dz')}/t"
    sub = persistent(srv.mqtt_port, V5, cid)
    sub.subscribe(topic, 1)
    props = PahoProperties(PacketTypes.DISCONNECT)
    props.SessionExpiryInterval = 0
    sub.c.disconnect(properties=props)
    sub.c.loop_stop()
    time.sleep(0.3)
    back = persistent(srv.mqtt_port, V5, cid)
    try:
        assert back.connack_flags.session_present is False
    finally:
        back.close()


def test_v5_clean_start_0_without_expiry_is_not_kept(srv: RobustMQ) -> None:
    cid = uniq("c")
    sub = persistent(srv.mqtt_port, V5, cid, expiry=0)
    sub.subscribe(f"{uniq('z')}/t", 1)
    sub.close()
    time.sleep(0.3)
    back = persistent(srv.mqtt_port, V5, cid, expiry=0)
    try:
        assert back.connack_flags.session_present is False
    finally:
        back.close()


# ------------------------------------------------------------------------------------ restart
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
@pytest.mark.parametrize("version", VERSIONS)
def test_session_survives_restart(fresh_server: RobustMQ, version: int, how: str) -> None:
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        cid = "keeper"
        sub = persistent(s.mqtt_port, version, cid)
        sub.subscribe("dev/+/temp", 1)
        sub.close()
        pub = Paho(s.mqtt_port, V5, "publisher")
        sent = [(f"dev/{i % 3}/temp", b"%d" % i) for i in range(20)]
        for topic, payload in sent:
            pub.publish(topic, payload, 1)  # each PUBACK promises the reference is on disk too
        pub.close()
        s.kill9() if how == "kill9" else s.stop()
        s.start()
        back = persistent(s.mqtt_port, version, cid)
        try:
            assert back.connack_flags.session_present is True
            assert collect(back, len(sent)) == sent
            pub2 = Paho(s.mqtt_port, V3, "publisher2")
            pub2.publish("dev/9/temp", b"live", 1)  # the restored subscription is live again
            assert collect(back, 1) == [("dev/9/temp", b"live")]
            pub2.close()
            assert back.nothing(0.5)
        finally:
            back.close()
    finally:
        s.stop()


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_inflight_message_resent_with_dup_after_kill9(fresh_server: RobustMQ, version: int) -> None:
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        r, _ = raw_connect(s.mqtt_port, version, "inflight")
        r.send(Subscribe(1, (SubRequest("job/+", 1),)))
        assert isinstance(r.read(), SubAck)
        pub = Paho(s.mqtt_port, V3, "publisher")
        pub.publish("job/1", b"work", 1)
        m = r.read()
        assert isinstance(m, Publish) and not m.dup
        pub.close()
        time.sleep(0.3)  # the in-flight record reaches the log's next batch
        s.kill9()
        r.close()
        s.start()
        r2, ack = raw_connect(s.mqtt_port, version, "inflight")
        assert ack.session_present is True
        again = r2.read()
        assert isinstance(again, Publish)
        assert (again.topic, again.payload, again.dup, again.packet_id) == ("job/1", b"work", True, m.packet_id)
        r2.close()
    finally:
        s.stop()
