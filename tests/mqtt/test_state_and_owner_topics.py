"""Retained messages and subject owners (mq9), inbound QoS 2 as session state, expiry behind the
inflight window, Response Topic of wills and retained messages, mq9 refusals in PUBACK (SPEC §4, §5).

Where the behaviour is the spec's (not robustmq's own mq9), the test runs against mosquitto too."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from procs import RobustMQ

from robustmq.frontends.mqtt import reasons
from robustmq.frontends.mqtt.packets import (
    ConnAck,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from robustmq.frontends.mqtt.properties import Properties
from robustmq.frontends.mqtt.retained import RetainedMessage, _decode
from robustmq.frontends.mqtt.session import refusal_code
from robustmq.routing.contract import Refusal, RefusalKind

from .clients import MQTT_5, MQTT_311, RAW_VERSIONS, V5, Paho, Raw, uniq


def publishes(r: Raw, wait: float) -> list[Publish]:
    """The PUBLISHes `r` receives within `wait` seconds (other packets are dropped)."""
    out: list[Publish] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            ev = r.read(left)
        except TimeoutError:
            break
        if isinstance(ev, Publish):
            out.append(ev)
    return out


def raw(port: int, version: int, cid: str, **kw: Any) -> Raw:
    r = Raw(port, version)
    ack = r.connect(cid, **kw)
    assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
    return r


def create_mailbox(port: int) -> str:
    """A private mq9 mailbox, created from MQTT 5 (the Response Topic is the reply subject)."""
    c = Paho(port, V5, uniq("owner"))
    try:
        inbox = uniq("inbox/")
        c.subscribe(inbox, 1)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.ResponseTopic = inbox
        c.c.publish("$mq9/AI/MAILBOX/CREATE", b'{"ttl": 600}', 1, properties=props)
        return str(json.loads(c.next().payload)["mail_id"])
    finally:
        c.close()


# ------------------------------------------------------------------------------------ 1, 2: retained
SPY_FILTERS = ["$mq9/#", "$mq9/AI/+/MSG/+", "$mq9/AI/MAILBOX/#", "$mq9/AI/MAILBOX/MSG/+"]


def test_retained_copies_under_mq9_topics_left_by_an_older_version_are_dropped_at_start(tmp_path: Any) -> None:
    """A data directory from before owners' topics were kept out of the retained store: its copies
    under `$mq9/AI/` are deleted when the server starts; other retained topics stay."""
    from robustmq.core_log import SegmentLog, Store
    from robustmq.frontends.mqtt.retained import META_NAMESPACE

    data = str(tmp_path / "d")
    log = SegmentLog(Store(data), writer_thread=False)
    enc = msgspec.msgpack.Encoder()
    log.put_meta(META_NAMESPACE, "$mq9/AI/MAILBOX/MSG/mail-old-leak", enc.encode(RetainedMessage(b"secret")))
    log.put_meta(META_NAMESPACE, "home/lamp", enc.encode(RetainedMessage(b"lit")))
    log.flush()
    log.close()
    srv = RobustMQ(data_dir=data, mqtt=True).start()
    try:
        spy = Paho(srv.mqtt_port, V5, "spy")
        spy.subscribe("#", 0)
        spy.subscribe("$mq9/#", 0)
        m = spy.next()
        assert (m.topic, m.payload) == ("home/lamp", b"lit")
        assert spy.nothing(0.5)
        spy.close()
    finally:
        srv.stop()
    log = SegmentLog(Store(data), writer_thread=False)
    try:
        assert log.get_meta(META_NAMESPACE, "$mq9/AI/MAILBOX/MSG/mail-old-leak") is None
        assert log.get_meta(META_NAMESPACE, "home/lamp") is not None
    finally:
        log.close()
    srv.cleanup()


def test_retained_send_to_a_mailbox_never_leaks_its_mail_id(robustmq_port: int) -> None:
    """SPEC §4: the mail_id is a capability. A retained PUBLISH (or a retained will) to a mailbox
    topic is sent into the mailbox, and no retained copy exists for a `$mq9/…` wildcard to find."""
    port = robustmq_port
    mid = create_mailbox(port)
    topic = f"$mq9/AI/MAILBOX/MSG/{mid}"
    dev = raw(port, MQTT_5, uniq("dev"))
    dev.send(Publish(topic, b"secret task", 1, retain=True, packet_id=1))
    assert dev.read() == PubAck(1)
    dev.close()
    gone = Raw(port, MQTT_311)  # a retained will to the mailbox, on an abrupt close
    gone.connect(uniq("w"), will=Will(f"{topic}/urgent", b"secret will", 1, True))
    gone.close()
    time.sleep(0.3)
    for i, f in enumerate(SPY_FILTERS):
        spy = raw(port, (MQTT_311, MQTT_5)[i % 2], uniq("spy"))
        spy.send(Subscribe(1, (Subscription(f, 1),)))
        assert isinstance(spy.read(), SubAck)
        assert publishes(spy, 0.3) == [], f
        spy.close()
    # the mailbox itself has both, for the one who knows its id
    owner = raw(port, MQTT_5, uniq("own"))
    owner.send(Subscribe(1, (Subscription(f"{topic}/+", 0),)))
    assert isinstance(owner.read(), SubAck)
    assert sorted(p.payload for p in publishes(owner, 0.6)) == [b"secret task", b"secret will"]
    owner.close()


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_refused_retained_publish_is_not_stored(robustmq_port: int, version: int) -> None:
    """A retained PUBLISH the server refuses (`$mq9/AI/PUBLIC/LIST`: 0x87 on v5) neither sets nor
    clears the topic's retained message: a later subscriber gets only the broker's events."""
    port = robustmq_port
    forged = b'{"event":"created","mail_id":"evil.box","desc":"forged","ttl":0}'
    c = raw(port, version, uniq("forger"))
    c.send(Publish("$mq9/AI/PUBLIC/LIST", forged, 1, retain=True, packet_id=1))
    ack = c.read()
    assert isinstance(ack, PubAck)
    if version == MQTT_5:
        assert ack.reason_code == reasons.NOT_AUTHORIZED
    c.close()
    victim = raw(port, version, uniq("victim"))
    victim.send(Subscribe(1, (Subscription("$mq9/AI/PUBLIC/LIST", 1),)))
    assert isinstance(victim.read(), SubAck)
    got = publishes(victim, 0.5)
    assert forged not in [p.payload for p in got]
    assert not any(p.retain for p in got)
    victim.close()


# ------------------------------------------------------------------------------------ 3: QoS 2 state
@pytest.mark.parametrize("version", RAW_VERSIONS)
@pytest.mark.parametrize("how", ["reconnect", "takeover"])
def test_qos2_resent_after_reconnect_is_delivered_once(port: int, version: int, how: str) -> None:
    """MQTT 4.3.3 / 4.4: the inbound QoS 2 packet ids awaiting PUBREL are session state. A publisher
    that loses its connection after PUBREC, resumes its session and resends the PUBLISH with DUP
    gets PUBREC again, and the message is delivered once."""
    topic = uniq("q2s/")
    kw: dict[str, Any] = {"clean_start": False}
    if version == MQTT_5:
        kw["properties"] = Properties(session_expiry_interval=300)
    sub = raw(port, MQTT_5, uniq("sub"))
    sub.send(Subscribe(1, (Subscription(topic, 2),)))
    assert isinstance(sub.read(), SubAck)
    cid = uniq("pub")
    p = raw(port, version, cid, **kw)
    try:
        p.send(Publish(topic, b"once", 2, packet_id=7))
        assert p.read() == PubRec(7)
        if how == "reconnect":
            p.close()
            time.sleep(0.2)
        p2 = Raw(port, version)
        ack = p2.connect(cid, **kw)
        assert isinstance(ack, ConnAck) and ack.session_present
        p2.send(Publish(topic, b"once", 2, dup=True, packet_id=7))
        assert p2.read() == PubRec(7)
        p2.send(PubRel(7))
        assert p2.read() == PubComp(7)
        got = []
        for ev in publishes(sub, 0.5):
            got.append(ev.payload)
            sub.send(PubRec(ev.packet_id))
        assert got == [b"once"]
        p2.close()
    finally:
        p.close()
        sub.close()
        end = Raw(port, version)
        end.connect(cid)  # clean start: the session is gone
        end.close()


def test_qos2_awaiting_release_survives_a_restart(fresh_server: RobustMQ) -> None:
    """The packet ids awaiting PUBREL are stored with the persistent session (before PUBREC), so
    they survive even a kill -9."""
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        topic = "q2r/x"
        kw: dict[str, Any] = {"clean_start": False, "properties": Properties(session_expiry_interval=300)}
        sub = raw(s.mqtt_port, MQTT_5, "q2sub", **kw)
        sub.send(Subscribe(1, (Subscription(topic, 1),)))
        assert isinstance(sub.read(), SubAck)
        p = raw(s.mqtt_port, MQTT_5, "q2pub", **kw)
        p.send(Publish(topic, b"once", 2, packet_id=9))
        assert p.read() == PubRec(9)
        first = publishes(sub, 0.5)
        assert [m.payload for m in first] == [b"once"]
        sub.send(PubAck(first[0].packet_id))
        time.sleep(0.3)
        s.kill9()
        p.close()
        sub.close()
        s.start()
        sub = raw(s.mqtt_port, MQTT_5, "q2sub", **kw)
        p = raw(s.mqtt_port, MQTT_5, "q2pub", **kw)
        p.send(Publish(topic, b"once", 2, dup=True, packet_id=9))
        assert p.read() == PubRec(9)
        p.send(PubRel(9))
        assert p.read() == PubComp(9)
        # released: the packet id is free again, a new message with it is routed
        p.send(Publish(topic, b"next", 2, packet_id=9))
        assert p.read() == PubRec(9)
        assert [m.payload for m in publishes(sub, 0.6)] == [b"next"]
        p.close()
        sub.close()
    finally:
        s.stop()


def test_an_outbound_qos2_message_pubreced_before_a_kill9_gets_its_pubrel_not_the_publish_again(
        fresh_server: RobustMQ) -> None:
    """4.3.3: once the subscriber PUBRECs, the server owes only PUBREL. The release is stored before
    the PUBREL leaves, so after a kill -9 the reconnecting subscriber gets PUBREL again, never the
    PUBLISH (paho delivers a QoS 2 message at PUBREL and forgets it: a resent PUBLISH was delivered
    twice)."""
    s = RobustMQ(data_dir=fresh_server.data_dir, mqtt=True).start()
    try:
        kw: dict[str, Any] = {"clean_start": False}
        sub = raw(s.mqtt_port, MQTT_311, "q2out-sub", **kw)
        sub.send(Subscribe(1, (Subscription("q2out/#", 2),)))
        assert isinstance(sub.read(), SubAck)
        p = raw(s.mqtt_port, MQTT_311, "q2out-pub")
        p.send(Publish("q2out/x", b"exactly-once", 2, packet_id=3))
        assert p.read() == PubRec(3)
        p.send(PubRel(3))
        assert p.read() == PubComp(3)
        [m] = publishes(sub, 0.5)
        sub.send(PubRec(m.packet_id))
        assert sub.read() == PubRel(m.packet_id)  # (no PUBCOMP: the crash comes first)
        s.kill9()
        p.close()
        sub.close()
        s.start()
        sub = raw(s.mqtt_port, MQTT_311, "q2out-sub", **kw)
        got = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                got.append(sub.read(0.3))
            except TimeoutError:  # nothing more came
                break
        assert got == [PubRel(m.packet_id)], got
        sub.send(PubComp(m.packet_id))
        assert publishes(sub, 0.3) == []
        sub.close()
    finally:
        s.stop()


# ------------------------------------------------------------------------------------ 4: expiry
def test_message_expiring_behind_the_receive_maximum_is_not_delivered(broker: str, port: int) -> None:
    """MQTT 5 3.3.2.3.3: a message whose Message Expiry Interval passes while it waits for room in
    the subscriber's Receive Maximum window is deleted for that subscriber; one that waited less is
    sent with what is left of its interval. (Debian's mosquitto 2.0.11 deletes the expired one but
    then sends nothing more until some other message comes: it is asserted only not to deliver it.)"""
    topic = uniq("eq/")
    sub = raw(port, MQTT_5, uniq("sub"), properties=Properties(receive_maximum=1))
    sub.send(Subscribe(1, (Subscription(topic, 1),)))
    assert isinstance(sub.read(), SubAck)
    pub = raw(port, MQTT_5, uniq("pub"))
    try:
        pub.send(Publish(topic, b"first", 1, packet_id=1))
        pub.send(Publish(topic, b"short", 1, packet_id=2, properties=Properties(message_expiry_interval=1)))
        pub.send(Publish(topic, b"long", 1, packet_id=3, properties=Properties(message_expiry_interval=60)))
        first = publishes(sub, 0.4)
        assert [m.payload for m in first] == [b"first"]  # the window (1) is full
        time.sleep(1.6)
        sub.send(PubAck(first[0].packet_id))
        later = publishes(sub, 0.6)
        assert b"short" not in [m.payload for m in later]
        if broker == "mosquitto" and not later:
            return
        assert [m.payload for m in later] == [b"long"]
        expiry = later[0].properties.message_expiry_interval
        assert expiry is not None and 57 <= expiry <= 59, expiry
    finally:
        pub.close()
        sub.close()


# ------------------------------------------------------------------------------------ 5: Response Topic
def test_will_keeps_its_response_topic(port: int) -> None:
    """[MQTT-3.3.2-15]: the Response Topic is sent unaltered, a will's included."""
    topic = uniq("wrt/")
    sub = raw(port, MQTT_5, uniq("sub"))
    sub.send(Subscribe(1, (Subscription(topic, 1),)))
    assert isinstance(sub.read(), SubAck)
    props = Properties(content_type="ct", response_topic=f"{topic}/reply", correlation_data=b"cd")
    c = Raw(port, MQTT_5)
    c.connect(uniq("w"), will=Will(topic, b"bye", 1, False, props))
    c.close()
    got = publishes(sub, 0.6)
    sub.close()
    assert [m.payload for m in got] == [b"bye"]
    p = got[0].properties
    assert (p.content_type, p.response_topic, p.correlation_data) == ("ct", f"{topic}/reply", b"cd")


def test_retained_message_keeps_its_response_topic(port: int) -> None:
    topic = uniq("rrt/")
    pub = raw(port, MQTT_5, uniq("pub"))
    props = Properties(content_type="ct", response_topic=f"{topic}/reply", correlation_data=b"cd")
    pub.send(Publish(topic, b"state", 1, retain=True, packet_id=1, properties=props))
    assert isinstance(pub.read(), PubAck)
    sub = raw(port, MQTT_5, uniq("sub"))
    sub.send(Subscribe(1, (Subscription(topic, 1),)))
    assert isinstance(sub.read(), SubAck)
    got = publishes(sub, 0.6)
    pub.send(Publish(topic, b"", 0, retain=True))
    pub.close()
    sub.close()
    assert [(m.payload, m.retain) for m in got] == [(b"state", True)]
    p = got[0].properties
    assert (p.content_type, p.response_topic, p.correlation_data) == ("ct", f"{topic}/reply", b"cd")


def test_retained_store_decodes_entries_without_a_response_topic() -> None:
    """An entry written before the Response Topic was stored (three fields) still decodes."""
    old = msgspec.msgpack.encode([b"state", 1, [[b"k", b"v"]]])
    assert _decode(old) == RetainedMessage(b"state", 1, [(b"k", b"v")], None)


# ------------------------------------------------------------------------------------ 6: mq9 refusals
def test_refusal_codes() -> None:
    assert refusal_code(Refusal(RefusalKind.PERMISSION_PUBLISH, "$mq9.AI.PUBLIC.LIST")) == reasons.NOT_AUTHORIZED
    assert refusal_code(Refusal(RefusalKind.INVALID_SUBJECT, "x")) == reasons.TOPIC_NAME_INVALID
    # the kinds the mq9 owner reports for a send it cannot store (docs/mqtt.md)
    assert refusal_code(Refusal(RefusalKind.QUOTA_EXCEEDED, "x")) == reasons.QUOTA_EXCEEDED
    assert refusal_code(Refusal(RefusalKind.NO_DESTINATION, "x")) == reasons.TOPIC_NAME_INVALID


@pytest.fixture(scope="module")
def small_mailboxes() -> Any:
    s = RobustMQ(mqtt=True, extra_args=["--mq9-max-messages", "2"]).start()
    yield s
    s.cleanup()


def test_v5_send_to_a_full_or_missing_mailbox_is_refused_in_the_puback(small_mailboxes: RobustMQ) -> None:
    port = small_mailboxes.mqtt_port
    mid = create_mailbox(port)
    topic = f"$mq9/AI/MAILBOX/MSG/{mid}"
    c = raw(port, MQTT_5, uniq("dev"))
    try:
        codes = []
        for pid in range(1, 5):
            c.send(Publish(topic, b"m%d" % pid, 1, packet_id=pid))
            ack = c.read()
            assert isinstance(ack, PubAck)
            codes.append(ack.reason_code)
        assert codes == [0, 0, reasons.QUOTA_EXCEEDED, reasons.QUOTA_EXCEEDED]
        c.send(Publish(topic, b"q2", 2, packet_id=5))
        assert c.read() == PubRec(5, reasons.QUOTA_EXCEEDED)
        c.send(Publish("$mq9/AI/MAILBOX/MSG/mail-nosuchbox", b"x", 1, packet_id=6))
        assert c.read() == PubAck(6, reasons.TOPIC_NAME_INVALID)
        # 3.1.1 has no way to say it (3.3.5): a positive ack, the message dropped and counted
        v3 = raw(port, MQTT_311, uniq("v3"))
        v3.send(Publish(topic, b"v3", 1, packet_id=1))
        assert v3.read() == PubAck(1)
        v3.close()
    finally:
        c.close()


def test_offline_queues_are_bounded_in_total(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §8, bounded in total: past MAX_QUEUED_TOTAL entries over all sessions, new messages for
    offline sessions are dropped and counted; a session that ends gives its share back."""
    from types import SimpleNamespace

    from robustmq.core_log import SegmentLog, Store
    from robustmq.frontends.mqtt import persistent

    monkeypatch.setattr(persistent, "MAX_QUEUED_TOTAL", 3)
    log = SegmentLog(Store(str(tmp_path / "d")), writer_thread=False)
    try:
        srv: Any = SimpleNamespace(router=SimpleNamespace(log=log), queued_total=0)
        a = persistent.SessionState(srv, "a", MQTT_311, 300)
        b = persistent.SessionState(srv, "b", MQTT_311, 300)
        results = [st.push(persistent.Entry("t", 1, payload=b"x")) for st in (a, b, a, b, a)]
        assert results == [True, True, True, False, False]
        assert srv.queued_total == 3 and (a.dropped, b.dropped) == (1, 1)
        a.drop()  # its two entries leave the total
        assert srv.queued_total == 1
        assert b.push(persistent.Entry("t", 1, payload=b"y"))
    finally:
        log.close()


@pytest.mark.parametrize("version", RAW_VERSIONS)
def test_a_publish_over_the_maximum_packet_size_closes_only_that_connection(
        robustmq_port: int, version: int) -> None:
    """docs/mqtt.md: past `--max-payload` + 128 KiB (1,179,648 bytes by default) a v5 client gets
    DISCONNECT 0x95 Packet too large, a 3.1.1 client (no reason codes) is closed; others go on."""
    from robustmq.frontends.mqtt.packets import Disconnect, PingReq, PingResp

    other = raw(robustmq_port, MQTT_311, uniq("bystander"))
    big = raw(robustmq_port, version, uniq("big"))
    big.send(Publish("big/x", b"x" * 1_200_000))
    closed, events = big.closed_within(5)
    assert closed
    if version == MQTT_5:
        assert any(isinstance(e, Disconnect) and e.reason_code == reasons.PACKET_TOO_LARGE for e in events), events
    other.send(PingReq())
    assert isinstance(other.read(), PingResp)
    other.close()
