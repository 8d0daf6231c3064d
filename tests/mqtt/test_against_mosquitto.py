"""The same MQTT behaviours against robustmq and a real mosquitto (Debian's package), with paho-mqtt:
each test is parametrized by broker and asserts one observable result for both, so a test that
passes only against robustmq is a test of robustmq's reading of the spec, not of the spec.

mosquitto is started by a fixture (conftest.py, brokers.py) on a free 127.0.0.1 port with a temporary
config; if it is not installed the fixture installs it with apt-get (CI runs as root) or fails — it
never skips.
"""

from __future__ import annotations

import queue
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from robustmq.frontends.mqtt.packets import (
    ConnAck,
    Disconnect,
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
from robustmq.frontends.mqtt.writer import encode_publish

from .clients import MQTT_5, MQTT_311, V3, V5, Paho, Raw, uniq

VERSIONS = [pytest.param(V3, id="v3.1.1"), pytest.param(V5, id="v5")]



def drain(c: Paho, wait: float = 0.4) -> list:
    """Every message that arrives within `wait` seconds."""
    got = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(c.next(left))
        except queue.Empty:
            break
    return got


# ------------------------------------------------------------------------------------ QoS
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_at_each_qos(port: int, version: int, qos: int) -> None:
    topic = f"{uniq('q')}/data"
    sub = Paho(port, version, uniq("sub"))
    pub = Paho(port, version, uniq("pub"))
    try:
        sub.subscribe(topic, 2)
        for i in range(5):
            pub.publish(topic, b"m%d" % i, qos)
        got = [sub.next() for _ in range(5)]
        assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == \
            [(topic, b"m%d" % i, qos, False) for i in range(5)]
        # granted QoS 0 caps delivery at 0
        low = Paho(port, version, uniq("low"))
        low.subscribe(topic, 0)
        pub.publish(topic, b"capped", qos)
        assert low.next().qos == 0
        assert sub.next().qos == qos
        low.close()
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------------------------ wildcards
@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards(port: int, version: int) -> None:
    root = uniq("w")
    sub = Paho(port, version, uniq("sub"))
    pub = Paho(port, version, uniq("pub"))
    try:
        sub.subscribe(f"{root}/+/t", 1)
        sub.subscribe(f"{root}/x/#", 1)
        for t in (f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}/a/b/t", f"{root}/a", f"{root}//t"):
            pub.publish(t, t.encode(), 1)
        got = sorted(m.topic for m in drain(sub))
        assert got == sorted([f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}//t"])
        sub.unsubscribe(f"{root}/x/#")
        pub.publish(f"{root}/x/q", b"gone", 1)
        assert sub.nothing()
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_skip_leading_wildcards(port: int, version: int) -> None:
    name = uniq("$app")
    wide = Paho(port, version, uniq("sub"))
    exact = Paho(port, version, uniq("sub"))
    pub = Paho(port, version, uniq("pub"))
    try:
        wide.subscribe("#", 0)
        wide.subscribe("+/status", 0)
        exact.subscribe(f"{name}/#", 0)
        exact.subscribe("$nosuch/+", 0)
        pub.publish(f"{name}/status", b"hidden", 1)
        assert exact.next().payload == b"hidden"
        # mosquitto publishes $SYS/...; neither broker may hand a $ topic to '#' or '+/...'
        assert [m.topic for m in drain(wide, 0.5) if m.topic.startswith("$")] == []
    finally:
        wide.close()
        exact.close()
        pub.close()


# ------------------------------------------------------------------------------------ retained
@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_deliver_clear(port: int, version: int) -> None:
    root = uniq("ret")
    topic = f"{root}/state"
    pub = Paho(port, version, uniq("pub"))
    try:
        pub.publish(topic, b"off", 1, retain=True)
        pub.publish(topic, b"on", 1, retain=True)  # replaces the first
        sub = Paho(port, version, uniq("sub"))
        sub.subscribe(f"{root}/#", 1)
        m = sub.next()
        assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"on", True, 1)
        assert sub.nothing()
        pub.publish(topic, b"live", 1, retain=True)  # a live copy goes out without the retain flag
        m = sub.next()
        assert (m.payload, m.retain) == (b"live", False)
        pub.publish(topic, b"", 1, retain=True)  # clears it; delivered live as an empty message
        m = sub.next()
        assert (m.payload, m.retain) == (b"", False)
        sub.close()
        again = Paho(port, version, uniq("sub"))
        again.subscribe(f"{root}/#", 1)
        assert again.nothing(0.5)
        again.close()
    finally:
        pub.close()


# ------------------------------------------------------------------------------------ will
@pytest.mark.parametrize("version", [pytest.param(MQTT_311, id="v3.1.1"), pytest.param(MQTT_5, id="v5")])
def test_will_on_abrupt_close_not_on_disconnect(port: int, version: int) -> None:
    topic = uniq("will/")
    sub = Paho(port, V5, uniq("sub"))
    try:
        sub.subscribe(topic, 1)
        polite = Raw(port, version)
        polite.connect(uniq("w"), will=Will(topic, b"polite", 1))
        polite.send(Disconnect())
        assert polite.closed_within(3)[0]
        assert sub.nothing(0.5)
        rude = Raw(port, version)
        rude.connect(uniq("w"), will=Will(topic, b"gone", 1))
        rude.close()
        m = sub.next()
        assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"gone", 1, False)
        assert sub.nothing()
    finally:
        sub.close()


# ------------------------------------------------------------------------------------ shared
@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription_each_message_once_per_group(port: int, version: int) -> None:
    topic = f"{uniq('jobs')}/x"
    a = Paho(port, version, uniq("a"))
    b = Paho(port, version, uniq("b"))
    plain = Paho(port, version, uniq("plain"))
    pub = Paho(port, version, uniq("pub"))
    try:
        a.subscribe(f"$share/g/{topic}", 1)
        b.subscribe(f"$share/g/{topic}", 1)
        plain.subscribe(topic, 1)
        n = 40
        for i in range(n):
            pub.publish(topic, b"%d" % i, 1)
        got_a, got_b = drain(a, 0.8), drain(b, 0.1)
        shared = sorted(int(m.payload) for m in got_a + got_b)
        assert shared == list(range(n))  # every message once across the group
        assert got_a and got_b  # and the group shares the work
        assert all(m.topic == topic for m in got_a + got_b)  # delivered on the real topic
        assert sorted(int(m.payload) for m in drain(plain, 0.2)) == list(range(n))
    finally:
        for c in (a, b, plain, pub):
            c.close()


# ------------------------------------------------------------------------------------ v5 properties
def test_v5_user_properties_round_trip(port: int) -> None:
    topic = f"{uniq('props')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    v3 = Paho(port, V3, uniq("v3"))
    try:
        sub.subscribe(topic, 1)
        v3.subscribe(topic, 1)
        props = [("unit", "lux"), ("zone", "a"), ("unit", "raw")]  # order and repeats are kept
        pub.publish(topic, b"42", 1, user_properties=props)
        m = sub.next()
        assert m.payload == b"42"
        assert getattr(m.properties, "UserProperty", None) == props
        assert v3.next().payload == b"42"  # a 3.1.1 subscriber gets the message without them
    finally:
        for c in (sub, pub, v3):
            c.close()


def test_v5_publish_properties_forwarded(broker: str, port: int) -> None:
    """MQTT 5 §3.3.2.3: Payload Format Indicator, Content Type, Response Topic and Correlation Data
    reach the subscriber unaltered; Message Expiry Interval is forwarded (less the time it waited)."""
    topic = f"{uniq('props')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    try:
        sub.subscribe(topic, 1)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        props.ContentType = "text/plain"
        props.ResponseTopic = f"{topic}/reply"
        props.CorrelationData = b"cid-1"
        props.MessageExpiryInterval = 60
        pub.c.publish(topic, b"x", 1, False, props).wait_for_publish(5)
        got = sub.next().properties
        seen = {k: getattr(got, k, None) for k in
                ("PayloadFormatIndicator", "ContentType", "ResponseTopic", "CorrelationData")}
        expiry = getattr(got, "MessageExpiryInterval", None)
        ok = seen == {"PayloadFormatIndicator": 1, "ContentType": "text/plain",
                      "ResponseTopic": f"{topic}/reply", "CorrelationData": b"cid-1"} \
            and expiry is not None and 58 <= expiry <= 60
        assert ok, (seen, expiry)
    finally:
        sub.close()
        pub.close()


def test_v5_expired_retained_message_is_not_delivered(broker: str, port: int) -> None:
    """MQTT 5 §3.3.2.3.3: a retained message whose Message Expiry Interval has passed is not sent to a
    new subscriber; one still within it is, with the remaining interval."""
    root = uniq("exp")
    pub = Paho(port, V5, uniq("pub"))
    try:
        for leaf, seconds in (("short", 1), ("long", 60)):
            props = PahoProperties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = seconds
            pub.c.publish(f"{root}/{leaf}", leaf.encode(), 1, True, props).wait_for_publish(5)
        time.sleep(2.2)
        sub = Paho(port, V5, uniq("sub"))
        sub.subscribe(f"{root}/#", 1)
        m = sub.next()
        assert (m.topic, m.payload, m.retain) == (f"{root}/long", b"long", True)
        assert 55 <= m.properties.MessageExpiryInterval <= 60
        assert sub.nothing(0.5)
        sub.close()
    finally:
        pub.close()


def test_v5_subscription_identifier_no_local_and_topic_alias(port: int) -> None:
    """paho v5: a Subscription Identifier comes back on the deliveries of its subscription; No Local
    keeps a client's own publishes from it; an inbound topic alias stands for its topic."""
    root = uniq("sid")
    me = Paho(port, V5, uniq("me"))
    other = Paho(port, V5, uniq("other"))
    try:
        sp = PahoProperties(PacketTypes.SUBSCRIBE)
        sp.SubscriptionIdentifier = 7
        me.c.subscribe(f"{root}/a/#", 1, properties=sp)
        me.subacks.get(timeout=5)
        me.c.subscribe(f"{root}/b", options=SubscribeOptions(qos=1, noLocal=True))
        me.subacks.get(timeout=5)
        alias = PahoProperties(PacketTypes.PUBLISH)
        alias.TopicAlias = 1
        other.c.publish(f"{root}/a/x", b"1", 1, properties=alias).wait_for_publish(5)
        other.c.publish("", b"2", 1, properties=alias).wait_for_publish(5)  # the alias alone
        got = [me.next(), me.next()]
        assert [(m.topic, m.payload) for m in got] == [(f"{root}/a/x", b"1"), (f"{root}/a/x", b"2")]
        assert all(m.properties.SubscriptionIdentifier == [7] for m in got)
        me.publish(f"{root}/b", b"mine", 1)
        other.publish(f"{root}/b", b"theirs", 1)
        m = me.next()
        assert m.payload == b"theirs" and not getattr(m.properties, "SubscriptionIdentifier", None)
        assert me.nothing(0.2)
    finally:
        me.close()
        other.close()


def test_v5_maximum_packet_size_of_the_client(port: int) -> None:
    """MQTT 5 3.1.2.25: a message larger than the client's Maximum Packet Size is not sent to it."""
    topic = f"{uniq('mps')}/t"
    sub = Paho(port, V5, uniq("sub"), connect_properties={"MaximumPacketSize": 200})
    pub = Paho(port, V5, uniq("pub"))
    try:
        sub.subscribe(topic, 1)
        for payload in (b"small", b"x" * 1000, b"after"):
            pub.publish(topic, payload, 1)
        assert [sub.next().payload, sub.next().payload] == [b"small", b"after"]
        assert sub.nothing(0.2)
    finally:
        sub.close()
        pub.close()


def test_v5_receive_maximum_of_the_client(port: int) -> None:
    """MQTT 5 3.3.4: with Receive Maximum 1 the broker has one QoS 1 message in flight to the client
    at a time; a burst still arrives whole and in order."""
    topic = f"{uniq('rm')}/t"
    sub = Paho(port, V5, uniq("sub"), connect_properties={"ReceiveMaximum": 1})
    pub = Paho(port, V5, uniq("pub"))
    try:
        sub.subscribe(topic, 1)
        infos = [pub.c.publish(topic, b"%d" % i, 1) for i in range(50)]
        for info in infos:
            info.wait_for_publish(5)
        assert [int(sub.next().payload) for _ in range(50)] == list(range(50))
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------------------------ pipelined bursts
# robustmq parses a run of plain QoS 0/1 PUBLISHes to one topic as one batch (one route, one log
# append, one PUBACK write, one frame build per subscriber); these pin what a client sees of that.

@pytest.mark.parametrize("version", [pytest.param(MQTT_311, id="v3.1.1"), pytest.param(MQTT_5, id="v5")])
def test_pipelined_burst_acked_and_delivered_in_order(port: int, version: int) -> None:
    """A burst of PUBLISHes in one write, runs to two topics with QoS 0, QoS 2 and a retained one in
    between: PUBACK / PUBREC in the order of the PUBLISHes, every message delivered exactly once, in
    order per topic and QoS."""
    root = uniq("burst")
    sub = Paho(port, V5 if version == MQTT_5 else V3, uniq("sub"))
    pub = Raw(port, version)
    try:
        sub.subscribe(f"{root}/#", 2)
        assert isinstance(pub.connect(uniq("pub")), ConnAck)
        sent: list[tuple[str, bytes, int, int]] = []
        frames = []
        for i in range(300):
            topic = f"{root}/a" if i % 50 < 40 else f"{root}/b"
            qos = 2 if i % 37 == 36 else 0 if i % 23 == 22 else 1
            payload = b"%d" % i + (b"x" * 300 if i % 10 == 9 else b"")  # two sizes
            frames.append(encode_publish(topic, payload, qos, i == 150, packet_id=i + 1 if qos else 0,
                                         version=version))
            sent.append((topic, payload, qos, i + 1))
        pub.sock.sendall(b"".join(frames))
        expected = [(PubAck if qos == 1 else PubRec, pid) for _, _, qos, pid in sent if qos]
        got = []
        for _ in expected:
            ev = pub.read()
            got.append((type(ev), ev.packet_id))  # type: ignore[union-attr]
        assert got == expected
        for _, _, qos, pid in sent:
            if qos == 2:
                pub.send(PubRel(pid))
                assert pub.read() == PubComp(pid)
        msgs = [sub.next() for _ in sent]
        for topic in (f"{root}/a", f"{root}/b"):
            for qos in (0, 1, 2):
                assert [m.payload for m in msgs if m.topic == topic and m.qos == qos] == \
                    [p for t, p, q, _ in sent if t == topic and q == qos]
        assert sub.nothing(0.3)
        pub.sock.sendall(encode_publish(f"{root}/a", b"", 1, True, packet_id=1, version=version))  # clear it
        assert pub.read() == PubAck(1)
    finally:
        sub.close()
        pub.close()


def test_pipelined_burst_to_subscribers_with_v5_options(port: int) -> None:
    """One burst to one topic reaches, each as its options say: a 3.1.1 subscriber, a v5 QoS 0 one,
    one with a Subscription Identifier (on every message), one with a Maximum Packet Size (only the
    small messages), one with Receive Maximum 3 and a Subscription Identifier (all, in order, never more
    than 3 unacknowledged); the publisher's own No Local subscription gets nothing."""
    root = uniq("opts")
    topic = f"{root}/t"
    plain = Paho(port, V3, uniq("plain"))
    q0 = Paho(port, V5, uniq("q0"))
    sid = Paho(port, V5, uniq("sid"))
    small = Paho(port, V5, uniq("small"), connect_properties={"MaximumPacketSize": 100})
    slow = Raw(port, MQTT_5)  # Receive Maximum 3, acks only when it has all three; subscription id 11
    pub = Raw(port, MQTT_5)
    clients = [plain, q0, sid, small]
    try:
        plain.subscribe(topic, 1)
        q0.subscribe(topic, 0)
        sp = PahoProperties(PacketTypes.SUBSCRIBE)
        sp.SubscriptionIdentifier = 9
        sid.c.subscribe(topic, 1, properties=sp)
        sid.subacks.get(timeout=5)
        small.subscribe(topic, 1)
        assert isinstance(slow.connect(uniq("slow"), properties=Properties(receive_maximum=3)), ConnAck)
        slow.send(Subscribe(1, (Subscription(topic, 1),), Properties(subscription_ids=(11,))))
        assert isinstance(slow.read(), SubAck)
        assert isinstance(pub.connect(uniq("pub")), ConnAck)
        pub.send(Subscribe(1, (Subscription(topic, 1, no_local=True),)))
        assert isinstance(pub.read(), SubAck)
        payloads = [b"%03d" % i + (b"y" * 150 if i % 10 == 9 else b"") for i in range(200)]
        pub.sock.sendall(b"".join(encode_publish(topic, p, 1, packet_id=i + 1, version=MQTT_5)
                                  for i, p in enumerate(payloads)))
        assert [pub.read() for _ in payloads] == [PubAck(i + 1) for i in range(200)]
        for c in (plain, q0):
            assert [c.next().payload for _ in payloads] == payloads
        window: list[Publish] = []
        for i in range(len(payloads)):
            window.append(slow.read())  # type: ignore[arg-type]
            if len(window) == 3 or i == len(payloads) - 1:
                if i < 3:  # never more than 3 unacknowledged
                    assert slow.closed_within(0.2) == (False, [])
                for m in window:
                    slow.send(PubAck(m.packet_id))
                assert [m.payload for m in window] == payloads[i + 1 - len(window):i + 1]
                assert all(m.properties.subscription_ids == (11,) for m in window)
                window.clear()
        got = [sid.next() for _ in payloads]
        assert [m.payload for m in got] == payloads
        assert all(m.properties.SubscriptionIdentifier == [9] for m in got)
        fits = [p for p in payloads if len(p) < 50]
        assert [small.next().payload for _ in fits] == fits
        for c in clients:
            assert c.nothing(0.2)
        assert pub.closed_within(0.3) == (False, [])  # No Local: not even one of its own
    finally:
        for c in clients:
            c.close()
        slow.close()
        pub.close()
