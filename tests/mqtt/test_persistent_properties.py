"""MQTT 5 message properties of the copies a persistent session keeps (SPEC §5 "user properties,
message expiry", MQTT 5 3.3.2.3): messages that are not in the log (an ephemeral subject such as
`_INBOX.>`, a retained message sent on subscribe) are queued as copies, and a copy must come back
with its Content Type, Correlation Data, Payload Format Indicator, user properties and what is left
of its Message Expiry Interval — after a reconnect and after a kill -9 — and an expired one must not
come back at all. paho-mqtt v5 on both sides; the raw codec client only to hold a message unacked."""

from __future__ import annotations

import time
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from procs import RobustMQ

from robustmq.frontends.mqtt.packets import ConnAck, Publish, SubAck, Subscribe
from robustmq.frontends.mqtt.packets import Subscription as SubRequest
from robustmq.frontends.mqtt.properties import Properties

from .clients import MQTT_5, V5, WAIT, Paho, Raw, uniq

EXPIRY = 300
USER_PROPS = [("k1", "v1"), ("mqtt-odd", "x"), ("k1", "again")]


@pytest.fixture(scope="module")
def srv():
    s = RobustMQ(mqtt=True).start()
    yield s
    s.cleanup()



def persistent(port: int, cid: str, **connect_properties: Any) -> Paho:
    return Paho(port, V5, cid, clean=False, session_expiry=EXPIRY, connect_properties=connect_properties)


def publish_with_properties(pub: Paho, topic: str, payload: bytes, expiry: int | None, retain: bool = False
                            ) -> None:
    props = PahoProperties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.CorrelationData = b"\x00corr\xff" + payload
    props.PayloadFormatIndicator = 1
    props.UserProperty = USER_PROPS
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    info = pub.c.publish(topic, payload, 1, retain, props)
    info.wait_for_publish(WAIT)
    assert info.is_published(), topic


def assert_intact(m: Any, payload: bytes, max_expiry: int | None) -> None:
    p = m.properties
    assert m.payload == payload
    assert getattr(p, "ContentType", None) == "application/json"
    assert getattr(p, "CorrelationData", None) == b"\x00corr\xff" + payload
    assert getattr(p, "PayloadFormatIndicator", None) == 1
    assert getattr(p, "UserProperty", None) == USER_PROPS
    if max_expiry is None:
        assert not hasattr(p, "MessageExpiryInterval")
    else:  # what is left of it, not the original interval
        assert 0 < p.MessageExpiryInterval <= max_expiry


def send_while_offline(port: int, topic: str) -> None:
    pub = Paho(port, V5, uniq("pub"))
    try:
        publish_with_properties(pub, topic, b"short", 1)  # expires while the subscriber is away
        publish_with_properties(pub, topic, b"long", 100)
        publish_with_properties(pub, topic, b"forever", None)
    finally:
        pub.close()


def test_offline_copies_keep_their_properties(srv: RobustMQ) -> None:
    cid, topic = uniq("pp"), f"_INBOX/{uniq('t')}"  # `_INBOX.>` is ephemeral: queued as copies
    sub = persistent(srv.mqtt_port, cid)
    assert sub.subscribe(topic, 1)[0].value == 1
    sub.close()
    send_while_offline(srv.mqtt_port, topic)
    time.sleep(1.6)  # "short" (1 s) expires; "long" has 98 s or so left
    back = persistent(srv.mqtt_port, cid)
    try:
        assert back.connack_flags.session_present is True
        m1, m2 = back.next(), back.next()
        assert_intact(m1, b"long", 99)
        assert_intact(m2, b"forever", None)
        assert back.nothing(0.5)  # the expired one never comes
    finally:
        back.close()


def test_offline_copies_keep_their_properties_across_kill9(fresh_server: RobustMQ) -> None:
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        cid, topic = "props-keeper", "_INBOX/props/k9"
        sub = persistent(s.mqtt_port, cid)
        sub.subscribe(topic, 1)
        sub.close()
        send_while_offline(s.mqtt_port, topic)  # each PUBACK covers the queued copy
        s.kill9()
        time.sleep(1.1)
        s.start()
        back = persistent(s.mqtt_port, cid)
        try:
            assert back.connack_flags.session_present is True
            assert_intact(back.next(), b"long", 99)
            assert_intact(back.next(), b"forever", None)
            assert back.nothing(0.5)
        finally:
            back.close()
    finally:
        s.stop()


def test_inflight_copy_resent_with_its_properties_after_kill9(fresh_server: RobustMQ) -> None:
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        r = Raw(s.mqtt_port, MQTT_5)  # does not acknowledge: the copy stays in flight
        ack = r.connect("props-inflight", clean_start=False, properties=Properties(session_expiry_interval=EXPIRY))
        assert isinstance(ack, ConnAck) and ack.reason_code == 0
        r.send(Subscribe(1, (SubRequest("_INBOX/inflight", 1),)))
        assert isinstance(r.read(), SubAck)
        pub = Paho(s.mqtt_port, V5, "props-pub")
        publish_with_properties(pub, "_INBOX/inflight", b"held", 100)
        pub.close()
        first = r.read()
        assert isinstance(first, Publish) and first.properties.content_type == "application/json"
        time.sleep(0.3)  # the entry's packet id reaches the log's next batch
        s.kill9()
        r.close()
        s.start()
        back = persistent(s.mqtt_port, "props-inflight")
        try:
            m = back.next()
            assert m.dup and m.mid == first.packet_id
            assert_intact(m, b"held", 100)
        finally:
            back.close()
    finally:
        s.stop()


def test_retained_copies_behind_receive_maximum_keep_their_properties(srv: RobustMQ) -> None:
    base = uniq("ret")
    pub = Paho(srv.mqtt_port, V5, uniq("pub"))
    try:
        for i in range(3):
            publish_with_properties(pub, f"{base}/{i}", b"r%d" % i, 100, retain=True)
    finally:
        pub.close()
    # a window of 1: the second and third retained messages wait in the session's queue as copies
    sub = persistent(srv.mqtt_port, uniq("rm"), ReceiveMaximum=1)
    try:
        sub.subscribe(f"{base}/+", 1)
        got = sorted((sub.next() for _ in range(3)), key=lambda m: m.payload)
        for i, m in enumerate(got):
            assert m.retain
            assert_intact(m, b"r%d" % i, 100)
    finally:
        for i in range(3):  # clear them
            sub.c.publish(f"{base}/{i}", b"", 1, True).wait_for_publish(WAIT)
        sub.close()


def test_inflight_copy_resent_on_reconnect_with_what_is_left_of_its_expiry(srv: RobustMQ) -> None:
    cid, topic = uniq("pr"), f"_INBOX/{uniq('r')}"
    r = Raw(srv.mqtt_port, MQTT_5)  # does not acknowledge: both stay in flight
    ack = r.connect(cid, clean_start=False, properties=Properties(session_expiry_interval=EXPIRY))
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    r.send(Subscribe(1, (SubRequest(topic, 1),)))
    assert isinstance(r.read(), SubAck)
    pub = Paho(srv.mqtt_port, V5, uniq("pub"))
    publish_with_properties(pub, topic, b"short", 1)
    publish_with_properties(pub, topic, b"long", 100)
    pub.close()
    sent = [r.read(), r.read()]
    assert [m.payload for m in sent if isinstance(m, Publish)] == [b"short", b"long"]
    r.close()
    time.sleep(1.6)
    back = persistent(srv.mqtt_port, cid)
    try:
        m = back.next()
        assert m.dup
        assert_intact(m, b"long", 99)
        assert back.nothing(0.5)  # the expired one is not resent (mosquitto drops it too)
    finally:
        back.close()


def test_queue_entries_of_the_previous_format_still_decode() -> None:
    import msgspec

    from robustmq.frontends.mqtt import persistent as p

    # an entry as the previous version wrote it: the fields up to `released`, no `headers`
    old = msgspec.msgpack.encode(["a/b", 1, None, -1, b"x", [["mqtt-content-type", "t"]], False, [7],
                                  None, 3, False])
    e = p._dec_entry.decode(old)
    assert (e.topic, e.payload, e.user, e.sub_ids, e.pid, e.headers) == (
        "a/b", b"x", [("mqtt-content-type", "t")], [7], 3, None)
    new = p._dec_entry.decode(p._enc.encode(p.Entry("a/b", 1, payload=b"x", headers=[(b"k", b"v")])))
    assert new.headers == [(b"k", b"v")]
