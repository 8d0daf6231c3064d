"""MQTT 5 features a stranger with stock clients (paho-mqtt v5) relies on, differential against
Debian's mosquitto where both brokers must agree (the `port` fixture runs each test on both), and
robustmq alone where the spec asks for more than mosquitto does (the test says which clause).

Found by a differential audit; each test failed on the code before its fix:
- a Message Expiry Interval of 0 dropped the message even for subscribers connected at the time;
- a user property named `mqtt-...` (such as `mqtt-content-type`) was dropped on the way through;
- a persistent session resumed with a smaller Receive Maximum got every unacknowledged message
  resent at once, more than the Receive Maximum it had just announced.
"""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from robustmq.frontends.mqtt.packets import (
    ConnAck,
    Disconnect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from robustmq.frontends.mqtt.properties import Properties

from .clients import MQTT_5, V5, Paho, Raw, uniq


def _expiry(seconds: int) -> PahoProperties:
    props = PahoProperties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


# ------------------------------------------------------------------------------------ message expiry
@pytest.mark.parametrize("qos", [0, 1])
def test_v5_message_expiry_interval_0_reaches_connected_subscribers(port: int, qos: int) -> None:
    """MQTT 5 3.3.2.3.3: a message is deleted for a subscriber only when its Message Expiry Interval
    has passed *before onward delivery started*. A subscriber connected when the message arrives is
    sent it at once, so a lifetime of 0 seconds (some clients send 0 for "no expiry") still reaches
    it; robustmq used to drop it for everyone."""
    topic = f"{uniq('mei0')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    try:
        sub.subscribe(topic, 1)
        pub.c.publish(topic, b"now", qos, False, _expiry(0)).wait_for_publish(5)
        pub.c.publish(topic, b"after", qos, False).wait_for_publish(5)
        got = [sub.next(), sub.next()]
        assert [m.payload for m in got] == [b"now", b"after"]
        assert getattr(got[0].properties, "MessageExpiryInterval", 0) == 0
    finally:
        sub.close()
        pub.close()


def test_v5_message_expiry_interval_0_is_not_kept(robustmq_port: int) -> None:
    """robustmq's reading of 3.3.2.3.3 for what waits: a retained copy, or one queued for an offline
    persistent session, of a message whose lifetime is 0 s is never delivered later (mosquitto
    treats 0 as "no expiry" and keeps both)."""
    root = uniq("mei0k")
    cid = uniq("off")
    away = Paho(robustmq_port, V5, cid, clean=False, session_expiry=60)
    pub = Paho(robustmq_port, V5, uniq("pub"))
    try:
        away.subscribe(f"{root}/q", 1)
        away.close()
        time.sleep(0.2)
        pub.c.publish(f"{root}/r", b"retained", 1, True, _expiry(0)).wait_for_publish(5)
        pub.c.publish(f"{root}/q", b"queued", 1, False, _expiry(0)).wait_for_publish(5)
        pub.c.publish(f"{root}/q", b"kept", 1, False).wait_for_publish(5)
        back = Paho(robustmq_port, V5, cid, clean=False, session_expiry=60)
        try:
            assert back.next().payload == b"kept"
            back.subscribe(f"{root}/r", 1)
            assert back.nothing(0.4)
        finally:
            back.close()
    finally:
        pub.publish(f"{root}/r", b"", 1, retain=True)
        pub.close()
        cleaner = Paho(robustmq_port, V5, cid, clean=True)
        cleaner.close()


# ------------------------------------------------------------------------------------ user properties
def test_v5_user_properties_with_reserved_looking_names_pass_unaltered(port: int) -> None:
    """MQTT 5 3.3.2.3.7 [MQTT-3.3.2-17/18]: the server sends every User Property unaltered and in
    order. robustmq carries MQTT 5 message properties as headers named `mqtt-...`; a user property
    of such a name used to be dropped (and `mqtt-expires-ms` could never pose as an expiry)."""
    topic = f"{uniq('up')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    props = [("mqtt-content-type", "text/x"), ("k", "v"), ("mqtt-expires-ms", "1"),
             ("MQTT-Correlation-Data", "!!"), ("mqtt-user-a", "b"), ("mqtt-payload-format", "7"), ("k", "w")]
    try:
        sub.subscribe(topic, 1)
        pub.publish(topic, b"x", 1, user_properties=props)
        m = sub.next()
        assert m.payload == b"x"
        assert getattr(m.properties, "UserProperty", None) == props
        assert getattr(m.properties, "ContentType", None) is None
        assert getattr(m.properties, "MessageExpiryInterval", None) is None
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------------------------ receive maximum
def test_v5_resumed_session_resends_within_the_new_receive_maximum(robustmq_port: int) -> None:
    """MQTT 5 3.3.4 [MQTT-3.3.4-9] and 4.9: the server never has more unacknowledged QoS 1/2
    PUBLISHes towards a client than the Receive Maximum of its current connection, resends after a
    reconnect (4.4) included. A session left with 5 unacknowledged messages that comes back with
    Receive Maximum 2 gets 2 at a time, with DUP, then the rest, in order. (mosquitto 2.0 resends
    all 5 at once; a raw client is used because paho acknowledges by itself.)"""
    topic = f"{uniq('rmr')}/t"
    cid = uniq("rmr")
    pub = Paho(robustmq_port, V5, uniq("pub"))
    r = Raw(robustmq_port, MQTT_5)
    try:
        ack = r.connect(cid, properties=Properties(session_expiry_interval=60, receive_maximum=10))
        assert isinstance(ack, ConnAck) and ack.reason_code == 0
        r.send(Subscribe(1, (Subscription(topic, 1),)))
        assert isinstance(r.read(), SubAck)
        for i in range(5):
            pub.publish(topic, b"m%d" % i, 1)
        first = [r.read() for _ in range(5)]
        assert [e.payload for e in first if isinstance(e, Publish)] == [b"m%d" % i for i in range(5)]
        r.close()  # no PUBACK: all 5 stay owed to the session
        time.sleep(0.3)
        pub.publish(topic, b"m5", 1)

        r = Raw(robustmq_port, MQTT_5)
        ack = r.connect(cid, clean_start=False,
                        properties=Properties(session_expiry_interval=60, receive_maximum=2))
        assert isinstance(ack, ConnAck) and ack.session_present
        got: list[Publish] = []
        for _ in range(6):
            closed, evs = r.closed_within(0.4)
            assert not closed
            pubs = [e for e in evs if isinstance(e, Publish)]
            assert len(pubs) <= 2, [e.payload for e in pubs]  # never more than the Receive Maximum
            if not pubs:
                break
            got += pubs
            for e in pubs:
                r.send(PubAck(e.packet_id))
        assert [e.payload for e in got] == [b"m%d" % i for i in range(6)]
        assert [e.dup for e in got] == [True] * 5 + [False]
        r.send(Disconnect(0, Properties(session_expiry_interval=0)))
    finally:
        r.close()
        pub.close()


# ------------------------------------------------------------------------------------ response topic
def test_v5_response_topic_is_forwarded_unaltered(port: int) -> None:
    """MQTT 5 3.3.2.3.5 [MQTT-3.3.2-15]: the server sends the Response Topic unaltered to every
    subscriber. robustmq carries it as the reply subject; one the subject mapping cannot give back as
    written (whitespace: no subject at all; a dotted level under `$mq9/`) used to arrive dropped or
    with its dots turned into levels."""
    topic = f"{uniq('rt')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    responses = [f"{topic}/reply to/me", f"{topic}/a.b//c/", "$mq9/replies/x.y", f"{topic}/ok"]
    try:
        sub.subscribe(topic, 1)
        for i, rt in enumerate(responses):
            props = PahoProperties(PacketTypes.PUBLISH)
            props.ResponseTopic = rt
            props.CorrelationData = b"%d" % i
            pub.c.publish(topic, b"%d" % i, 1, False, props).wait_for_publish(5)
        got = [sub.next() for _ in responses]
        assert [(m.payload, m.properties.ResponseTopic, m.properties.CorrelationData) for m in got] == \
            [(b"%d" % i, rt, b"%d" % i) for i, rt in enumerate(responses)]
    finally:
        sub.close()
        pub.close()
