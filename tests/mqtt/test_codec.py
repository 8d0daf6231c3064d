"""Sans-IO MQTT codec: round trips of every packet in both versions, every split point, the error
cases as values, a fuzz that never raises, and cross-checks against paho-mqtt and mqtt5."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustmq.frontends.mqtt import reasons
from robustmq.frontends.mqtt.codec import LocalProtocolError, MqttParser, encode_publish, serialize
from robustmq.frontends.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    AckRun,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Event,
    Packet,
    PingReq,
    PingResp,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PublishRun,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from robustmq.frontends.mqtt.properties import NO_PROPERTIES, Properties

V3 = MQTT_311
V5 = MQTT_5
UP = (("region", "eu"), ("region", "us"), ("ключ", "значение"))  # ordered, repeated, non-ASCII

CONNECT_V3 = Connect(V3, "dev-1", False, 30, "user", b"\x00pw", Will("dev/1/status", b"offline", 1, True))
CONNECT_V5 = Connect(
    V5, "dev-1", True, 45, "user", b"pw",
    Will("dev/1/status", b"offline", 2, False, Properties(
        payload_format_indicator=1, message_expiry_interval=60, content_type="text/plain",
        response_topic="dev/1/r", correlation_data=b"\x01\x02", will_delay_interval=5, user_properties=UP)),
    Properties(session_expiry_interval=3600, receive_maximum=20, maximum_packet_size=65536,
               topic_alias_maximum=10, request_response_information=1, request_problem_information=0,
               authentication_method="SCRAM-SHA-1", authentication_data=b"abc", user_properties=UP),
)
PUB_PROPS = Properties(payload_format_indicator=1, message_expiry_interval=120, content_type="application/json",
                       response_topic="reply/here", correlation_data=b"\xff\x00", topic_alias=4,
                       user_properties=UP)
ACK_PROPS = Properties(reason_string="why", user_properties=UP)

# (version, event): what a client sends, parsed by a server
CLIENT_PACKETS: list[tuple[int, Packet]] = [
    (V3, CONNECT_V3),
    (V3, Connect(V3, "", True, 0)),
    (V3, Publish("a/b", b"hello")),
    (V3, Publish("a/b", b"", 1, True, True, 1)),
    (V3, Publish("x" * 300, b"y" * 70000, 2, False, False, 65535)),
    (V3, PubAck(1)), (V3, PubRec(2)), (V3, PubRel(3)), (V3, PubComp(4)),
    (V3, Subscribe(10, (Subscription("a/+", 0), Subscription("b/#", 1), Subscription("$share/g/c", 2)))),
    (V3, Unsubscribe(11, ("a/+", "b/#"))),
    (V3, PingReq()),
    (V3, Disconnect()),
    (V5, CONNECT_V5),
    (V5, Connect(V5, "c", False, 10, None, b"pw-only")),  # v5 allows a password without a user name
    (V5, Publish("a/b", b"hello")),
    (V5, Publish("a/b", b"p", 1, True, False, 9, PUB_PROPS)),
    (V5, Publish("", b"p", 0, False, False, 0, Properties(topic_alias=4))),  # topic by alias
    (V5, PubAck(1)), (V5, PubAck(1, reasons.NO_MATCHING_SUBSCRIBERS)),
    (V5, PubAck(1, reasons.QUOTA_EXCEEDED, ACK_PROPS)), (V5, PubRec(2, 0x80, ACK_PROPS)),
    (V5, PubRel(3, reasons.PACKET_IDENTIFIER_NOT_FOUND)), (V5, PubComp(4, 0, ACK_PROPS)),
    (V5, Subscribe(10, (Subscription("a/+", 2, True, True, 2), Subscription("$share/g/b/#", 1, False, False, 1)),
                   Properties(subscription_ids=(268_435_455,), user_properties=UP))),
    (V5, Unsubscribe(11, ("a/+",), Properties(user_properties=UP))),
    (V5, PingReq()),
    (V5, Disconnect()), (V5, Disconnect(reasons.DISCONNECT_WITH_WILL)),
    (V5, Disconnect(0, Properties(session_expiry_interval=0, reason_string="bye", user_properties=UP))),
    (V5, Auth()), (V5, Auth(reasons.CONTINUE_AUTHENTICATION, Properties(authentication_method="M",
                                                                     authentication_data=b"d"))),
]
# what a server sends, parsed by a client
SERVER_PACKETS: list[tuple[int, Packet]] = [
    (V3, ConnAck(False, 0)), (V3, ConnAck(True, 0)), (V3, ConnAck(False, reasons.V3_NOT_AUTHORIZED)),
    (V3, Publish("a/b", b"m", 1, True, False, 7)),
    (V3, PubAck(7)), (V3, PubRec(7)), (V3, PubRel(7)), (V3, PubComp(7)),
    (V3, SubAck(10, (0, 1, 2, 0x80))), (V3, UnsubAck(11)), (V3, PingResp()),
    (V5, ConnAck(True, 0, Properties(
        session_expiry_interval=10, assigned_client_identifier="auto-1", server_keep_alive=20,
        response_information="ri", server_reference="other:1883", reason_string="ok", receive_maximum=100,
        topic_alias_maximum=8, maximum_qos=1, retain_available=1, maximum_packet_size=1 << 20,
        wildcard_subscription_available=1, subscription_identifier_available=0,
        shared_subscription_available=1, user_properties=UP))),
    (V5, ConnAck(False, reasons.BAD_USER_NAME_OR_PASSWORD)),
    (V5, Publish("a/b", b"m", 2, False, True, 7, Properties(subscription_ids=(1, 300, 70000)))),
    (V5, PubAck(7, 0, ACK_PROPS)), (V5, PubComp(7, reasons.PACKET_IDENTIFIER_NOT_FOUND)),
    (V5, SubAck(10, (0, 1, 2, reasons.TOPIC_FILTER_INVALID, reasons.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED), ACK_PROPS)),
    (V5, UnsubAck(11, (0, reasons.NO_SUBSCRIPTION_EXISTED))),
    (V5, UnsubAck(11, (0,), ACK_PROPS)),
    (V5, PingResp()),
    (V5, Disconnect(reasons.SESSION_TAKEN_OVER, Properties(server_reference="x", reason_string="r"))),
    (V5, Auth(reasons.RE_AUTHENTICATE)),
]


def connect_bytes(version: int) -> bytes:
    return serialize(Connect(version, "c"), version)


def server_stream(version: int, ev: Packet) -> tuple[bytes, list[Event]]:
    """The bytes a server reads (CONNECT first unless `ev` is one) and the events it should get."""
    if isinstance(ev, Connect):
        return serialize(ev, version), [ev]
    return connect_bytes(version) + serialize(ev, version), [Connect(version, "c"), ev]


def feed_all(p: MqttParser, chunks: list[bytes]) -> list[Event]:
    out: list[Event] = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def first_error(data: bytes, version: int | None = None, server: bool = True,
                max_packet_size: int = 1 << 20) -> ProtocolError:
    p = MqttParser(version, server=server, max_packet_size=max_packet_size)
    out = p.feed(data)
    assert out and isinstance(out[-1], ProtocolError), out
    assert p.dead and p.feed(b"\xc0\x00") == []
    return out[-1]


@pytest.mark.parametrize(("version", "ev"), CLIENT_PACKETS)
def test_client_packets_round_trip(version: int, ev: Packet) -> None:
    data, want = server_stream(version, ev)
    p = MqttParser()
    assert p.feed(data) == want
    assert p.version == version and p.idle


@pytest.mark.parametrize(("version", "ev"), SERVER_PACKETS)
def test_server_packets_round_trip(version: int, ev: Packet) -> None:
    p = MqttParser(version, server=False)
    assert p.feed(serialize(ev, version)) == [ev]


@pytest.mark.parametrize(("version", "ev"), CLIENT_PACKETS)
def test_every_split_point(version: int, ev: Packet) -> None:
    data, want = server_stream(version, ev)
    step = max(1, len(data) // 200)  # the 70 kB PUBLISH: every byte of its headers, then strides
    cuts = list(range(0, min(len(data), 400))) + list(range(400, len(data), step))
    for i in cuts:
        assert feed_all(MqttParser(), [data[:i], data[i:]]) == want, i
    if len(data) < 2000:
        assert feed_all(MqttParser(), [data[i:i + 1] for i in range(len(data))]) == want


@pytest.mark.parametrize(("version", "ev"), SERVER_PACKETS)
def test_every_split_point_client_side(version: int, ev: Packet) -> None:
    data = serialize(ev, version) * 2
    for i in range(len(data)):
        assert feed_all(MqttParser(version, server=False), [data[:i], data[i:]]) == [ev, ev], i


def test_many_packets_in_one_read() -> None:
    evs = [Publish(f"t/{i}", bytes([i]) * i, i % 3, bool(i & 1), False, i if i % 3 else 0) for i in range(1, 200)]
    for v in (V3, V5):
        p = MqttParser()
        assert p.feed(connect_bytes(v) + b"".join(serialize(e, v) for e in evs)) == [Connect(v, "c"), *evs]


def test_known_bytes() -> None:
    """Hand-built vectors from the spec's examples, both directions."""
    v3_connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1"
    assert serialize(Connect(V3, "dev1", True, 60), V3) == v3_connect
    assert MqttParser().feed(v3_connect) == [Connect(V3, "dev1", True, 60)]
    v5_connect = b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x04dev1"
    assert serialize(Connect(V5, "dev1", True, 60), V5) == v5_connect
    assert serialize(ConnAck(True, 0), V3) == b"\x20\x02\x01\x00"
    assert serialize(ConnAck(False, 0), V5) == b"\x20\x03\x00\x00\x00"
    assert serialize(Publish("a/b", b"hi", 1, packet_id=10), V3) == b"\x32\x09\x00\x03a/b\x00\x0ahi"
    assert serialize(Publish("a/b", b"hi", 1, packet_id=10), V5) == b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi"
    assert encode_publish("a", b"", retain=True) == b"\x31\x03\x00\x01a"
    assert serialize(PubAck(10), V5) == b"\x40\x02\x00\x0a"  # success without properties: short form
    assert serialize(PubAck(10, 0x10), V5) == b"\x40\x03\x00\x0a\x10"
    assert serialize(PubAck(10, 0x10), V3) == b"\x40\x02\x00\x0a"  # no reason codes in 3.1.1
    assert serialize(PubRel(10), V3) == b"\x62\x02\x00\x0a"
    assert serialize(SubAck(1, (0, 1, reasons.NOT_AUTHORIZED)), V3) == b"\x90\x05\x00\x01\x00\x01\x80"
    assert serialize(UnsubAck(1, (0,)), V3) == b"\xb0\x02\x00\x01"
    assert serialize(Disconnect(), V5) == b"\xe0\x00"
    assert serialize(Disconnect(reasons.PROTOCOL_ERROR), V5) == b"\xe0\x01\x82"
    assert serialize(Disconnect(reasons.PROTOCOL_ERROR), V3) == b"\xe0\x00"
    assert serialize(PingResp(), V3) == b"\xd0\x00"
    # a v5 refusal folds into 3.1.1's return codes
    assert serialize(ConnAck(False, reasons.BAD_USER_NAME_OR_PASSWORD), V3) == b"\x20\x02\x00\x04"
    assert serialize(ConnAck(False, reasons.UNSUPPORTED_PROTOCOL_VERSION), V3) == b"\x20\x02\x00\x01"
    # a 4-byte remaining length round trips
    big = Publish("t", b"x" * (2_097_152 - 3))
    data = serialize(big, V3)
    assert data[1:5] == b"\x80\x80\x80\x01"  # 2 097 152, the spec's first 4-byte length
    p = MqttParser(max_packet_size=4 << 20)
    p.feed(connect_bytes(V3))
    assert feed_all(p, [data[i:i + 1000] for i in range(0, len(data), 1000)]) == [big]


def test_version_is_learned_and_governs_parsing() -> None:
    body = b"\x00\x03a/b\x00hi"  # a v5 PUBLISH with an empty property block...
    pkt = b"\x30" + bytes((len(body),)) + body
    p = MqttParser()
    p.feed(connect_bytes(V3))
    assert p.feed(pkt) == [Publish("a/b", b"\x00hi")]  # ...is payload to a 3.1.1 connection
    p = MqttParser()
    p.feed(connect_bytes(V5))
    assert p.feed(pkt) == [Publish("a/b", b"hi")]


# (name, bytes after a CONNECT of `version` (None: no CONNECT first), version, expected reason)
ERRORS: list[tuple[str, bytes, int | None, int]] = [
    ("publish before connect", b"\x30\x05\x00\x01ahi", None, 0x82),
    ("subscribe before connect", b"\x82\x06\x00\x01\x00\x01a\x00", None, 0x82),
    ("pingreq before connect", b"\xc0\x00", None, 0x82),
    ("second connect", b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c", V3, 0x82),
    ("unsupported level", b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c", None, 0x84),
    ("mqtt 3.1", b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c", None, 0x84),
    ("bad protocol name", b"\x10\x0d\x00\x04MQTX\x04\x02\x00\x3c\x00\x01c", None, 0x82),
    ("connect reserved flag", b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01c", None, 0x81),
    ("connect will qos 3", b"\x10\x0d\x00\x04MQTT\x04\x1e\x00\x3c\x00\x01c", None, 0x81),
    ("connect will retain without will", b"\x10\x0d\x00\x04MQTT\x04\x22\x00\x3c\x00\x01c", None, 0x81),
    ("v3 password without user", b"\x10\x10\x00\x04MQTT\x04\x42\x00\x3c\x00\x01c\x00\x01p", None, 0x81),
    ("connect trailing bytes", b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x01cX", None, 0x81),
    ("connect truncated client id", b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x05c", None, 0x81),
    ("connect flags 1", b"\x11\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c", None, 0x81),
    ("client id not utf-8", b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\xff", None, 0x81),
    ("will topic wildcard", b"\x10\x13\x00\x04MQTT\x04\x06\x00\x3c\x00\x01c\x00\x01#\x00\x01x", None, 0x82),
    ("qos 3", b"\x36\x07\x00\x01a\x00\x01hi", V3, 0x81),
    ("dup at qos 0", b"\x38\x05\x00\x01ahi", V3, 0x81),
    ("topic +", b"\x30\x07\x00\x03a/+hi", V3, 0x82),
    ("topic #", b"\x30\x07\x00\x03a/#hi", V5, 0x82),
    ("topic U+0000", b"\x30\x07\x00\x03a\x00bhi", V3, 0x81),
    ("topic surrogate", b"\x30\x07\x00\x03\xed\xa0\x80hi", V3, 0x81),
    ("topic overlong", b"\x30\x06\x00\x02\xc0\xafhi", V3, 0x81),
    ("topic not utf-8", b"\x30\x05\x00\x01\xffhi", V5, 0x81),
    ("topic runs past packet", b"\x30\x03\x00\x05a", V3, 0x81),
    ("publish one byte", b"\x30\x01\x00", V3, 0x81),
    ("publish packet id 0", b"\x32\x05\x00\x01a\x00\x00", V3, 0x82),
    ("publish missing packet id", b"\x32\x04\x00\x01a\x00", V3, 0x81),
    ("empty topic v3", b"\x30\x04\x00\x00hi", V3, 0x82),
    ("empty topic no alias v5", b"\x30\x03\x00\x00\x00", V5, 0x82),
    ("topic alias 0", b"\x30\x07\x00\x01a\x03\x23\x00\x00", V5, 0x82),
    ("publish missing property length", b"\x30\x03\x00\x01a", V5, 0x81),
    ("subscription id from a client", b"\x30\x06\x00\x01a\x02\x0b\x01", V5, 0x82),
    ("unknown property", b"\x30\x06\x00\x01a\x02\x7f\x01", V5, 0x81),
    ("property not for publish", b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01", V5, 0x81),
    ("duplicate property", b"\x30\x0a\x00\x01a\x06\x02\x00\x00\x00\x01\x02", V5, 0x81),
    ("duplicate message expiry", b"\x30\x0e\x00\x01a\x0a\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02", V5, 0x82),
    ("payload format 2", b"\x30\x06\x00\x01a\x02\x01\x02", V5, 0x82),
    ("properties past packet", b"\x30\x05\x00\x01a\x09\x01", V5, 0x81),
    ("user property not utf-8", b"\x30\x0b\x00\x01a\x07\x26\x00\x01\xff\x00\x01v", V5, 0x81),
    ("pubrel flags 0", b"\x60\x02\x00\x01", V3, 0x81),
    ("puback flags 2", b"\x42\x02\x00\x01", V3, 0x81),
    ("subscribe flags 0", b"\x80\x06\x00\x01\x00\x01a\x00", V3, 0x81),
    ("unsubscribe flags 0", b"\xa0\x05\x00\x01\x00\x01a", V3, 0x81),
    ("puback id 0", b"\x40\x02\x00\x00", V3, 0x82),
    ("puback v3 long", b"\x40\x03\x00\x01\x00", V3, 0x81),
    ("puback truncated", b"\x40\x01\x00", V5, 0x81),
    ("puback bad reason", b"\x40\x03\x00\x01\x05", V5, 0x81),
    ("pubrel reason only for pubrel", b"\x62\x03\x00\x01\x10", V5, 0x81),
    ("subscribe no filters", b"\x82\x02\x00\x01", V3, 0x82),
    ("subscribe no filters v5", b"\x82\x03\x00\x01\x00", V5, 0x82),
    ("subscribe qos 3", b"\x82\x06\x00\x01\x00\x01a\x03", V3, 0x81),
    ("subscribe v3 reserved option", b"\x82\x06\x00\x01\x00\x01a\x04", V3, 0x81),
    ("subscribe v5 reserved option", b"\x82\x07\x00\x01\x00\x00\x01a\x40", V5, 0x81),
    ("subscribe retain handling 3", b"\x82\x07\x00\x01\x00\x00\x01a\x30", V5, 0x82),
    ("subscribe missing options", b"\x82\x05\x00\x01\x00\x01a", V3, 0x81),
    ("no-local on shared", b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04", V5, 0x82),
    ("subscription id 0", b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", V5, 0x82),
    ("two subscription ids", b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00", V5, 0x82),
    ("subscribe filter U+0000", b"\x82\x06\x00\x01\x00\x01\x00\x00", V3, 0x81),
    ("subscribe id 0", b"\x82\x06\x00\x00\x00\x01a\x00", V3, 0x82),
    ("unsubscribe no filters", b"\xa2\x02\x00\x01", V3, 0x82),
    ("pingreq with body", b"\xc0\x01\x00", V3, 0x81),
    ("disconnect v3 with body", b"\xe0\x01\x00", V3, 0x81),
    ("disconnect bad reason", b"\xe0\x01\x03", V5, 0x81),
    ("auth in v3", b"\xf0\x00", V3, 0x81),
    ("auth bad reason", b"\xf0\x01\x01", V5, 0x81),
    ("reserved type 0", b"\x00\x00", V3, 0x81),
    ("connack to a server", b"\x20\x02\x00\x00", V3, 0x82),
    ("suback to a server", b"\x90\x03\x00\x01\x00", V3, 0x82),
    ("pingresp to a server", b"\xd0\x00", V3, 0x82),
    ("remaining length 5 bytes", b"\x30\xff\xff\xff\xff\x01", V3, 0x81),
    ("remaining length not minimal", b"\xc0\x80\x00", V3, 0x81),
    ("property length not minimal", b"\x30\x05\x00\x01a\x80\x00", V5, 0x81),
]


@pytest.mark.parametrize(("name", "data", "version", "reason"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_values(name: str, data: bytes, version: int | None, reason: int) -> None:
    stream = (connect_bytes(version) if version else b"") + data
    err = first_error(stream)
    assert err.reason_code == reason, err
    # split anywhere, the same error (or nothing yet, for a prefix)
    for i in range(1, len(stream)):
        p = MqttParser()
        out = p.feed(stream[:i]) + p.feed(stream[i:])
        assert out[-1] == err, (i, out)


CLIENT_SIDE_ERRORS: list[tuple[str, bytes, int, int]] = [
    ("connect to a client", b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c", V3, 0x82),
    ("subscribe to a client", b"\x82\x06\x00\x01\x00\x01a\x00", V3, 0x82),
    ("connack reserved flags", b"\x20\x02\x02\x00", V3, 0x81),
    ("connack v3 code 6", b"\x20\x02\x00\x06", V3, 0x81),
    ("connack v5 bad code", b"\x20\x03\x00\x01\x00", V5, 0x81),
    ("connack v3 long", b"\x20\x03\x00\x00\x00", V3, 0x81),
    ("connack v5 missing properties", b"\x20\x02\x00\x00", V5, 0x81),
    ("connack maximum qos 2", b"\x20\x05\x00\x00\x02\x24\x02", V5, 0x82),
    ("connack receive maximum 0", b"\x20\x06\x00\x00\x03\x21\x00\x00", V5, 0x82),
    ("suback v3 bad code", b"\x90\x03\x00\x01\x03", V3, 0x81),
    ("suback empty", b"\x90\x02\x00\x01", V3, 0x81),
    ("unsuback v3 long", b"\xb0\x03\x00\x01\x00", V3, 0x81),
    ("unsuback v5 bad code", b"\xb0\x04\x00\x01\x00\x01", V5, 0x81),
]


@pytest.mark.parametrize(("name", "data", "version", "reason"), CLIENT_SIDE_ERRORS,
                         ids=[e[0] for e in CLIENT_SIDE_ERRORS])
def test_client_side_errors(name: str, data: bytes, version: int, reason: int) -> None:
    assert first_error(data, version, server=False).reason_code == reason


def test_packet_too_large_is_refused_from_the_header() -> None:
    p = MqttParser(max_packet_size=100)
    p.feed(connect_bytes(V5))
    ok = serialize(Publish("t", b"x" * 94), V5)  # exactly 100 bytes
    assert len(ok) == 100 and p.feed(ok) == [Publish("t", b"x" * 94)]
    # the header alone (2 of 101 bytes) is enough to refuse: nothing more is buffered
    out = p.feed(serialize(Publish("t", b"x" * 95), V5)[:2])
    assert out == [ProtocolError(reasons.PACKET_TOO_LARGE, "packet of 101 bytes exceeds the maximum of 100")]
    assert p.dead and p.idle
    # a CONNECT too large is refused before the version is known
    err = first_error(serialize(Connect(V3, "c" * 200), V3)[:3], max_packet_size=100)
    assert err.reason_code == reasons.PACKET_TOO_LARGE


def test_buffers_stay_bounded_while_a_packet_arrives() -> None:
    p = MqttParser(max_packet_size=1 << 20)
    p.feed(connect_bytes(V3))
    data = serialize(Publish("t", b"z" * 500_000), V3)
    for i in range(0, len(data) - 1, 4096):
        assert p.feed(data[i:min(i + 4096, len(data) - 1)]) == []
    assert not p.idle
    assert p.feed(data[-1:]) == [Publish("t", b"z" * 500_000)]
    assert p.idle


def test_connect_errors_leave_the_version_for_the_reply() -> None:
    # a v5 CONNECT with a bad property: the session refuses it with a v5 CONNACK 0x81
    bad = b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x02\x7f\x00\x00\x01c"
    p = MqttParser()
    assert p.feed(bad)[-1].reason_code == reasons.MALFORMED_PACKET  # type: ignore[union-attr]
    assert p.version == V5


def test_serialize_misuse_raises_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        serialize(Publish("t", b"", 3), V3)
    with pytest.raises(LocalProtocolError):
        serialize(Publish("t", b"", 1, packet_id=0), V3)
    with pytest.raises(LocalProtocolError):
        serialize(PubAck(70000), V5)
    with pytest.raises(LocalProtocolError):
        serialize(Publish("t" * 70000, b""), V3)
    with pytest.raises(LocalProtocolError):
        serialize(Connect(V3, "c", will=Will("t", b"", 3)), V3)
    with pytest.raises(LocalProtocolError):
        serialize(ProtocolError(0x81, "x"), V3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MqttParser(version=3)
    with pytest.raises(ValueError):
        MqttParser(server=False)


# ---- fuzz: never raises, errors are values ------------------------------------------------------

SEEDS = [serialize(ev, v) for v, ev in CLIENT_PACKETS if not isinstance(ev, Connect)]


def _check_never_raises(chunks: list[bytes], version: int | None, server: bool) -> None:
    p = MqttParser(version, server=server, max_packet_size=1 << 16) if version or server else MqttParser()
    seen_error = False
    for c in chunks:
        out = p.feed(c)
        for ev in out:
            assert not seen_error, "events after a ProtocolError"
            if isinstance(ev, ProtocolError):
                seen_error = True
                assert isinstance(ev.reason_code, int) and ev.text
    if seen_error:
        assert p.dead


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, V3, V5]), st.booleans())
def test_fuzz_garbage(data: bytes, version: int | None, server: bool) -> None:
    prefix = connect_bytes(version) if version and server else b""
    _check_never_raises([prefix + data], version, server)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([V3, V5]), st.integers(0, len(CLIENT_PACKETS) - 1), st.data())
def test_fuzz_mutations_and_truncations(version: int, idx: int, data: st.DataObject) -> None:
    v, ev = CLIENT_PACKETS[idx]
    pkt = bytearray(serialize(ev, v))
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(pkt) - 1))
        pkt[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(pkt)))
    body = bytes(pkt[:cut]) + data.draw(st.binary(max_size=20))
    stream = (b"" if isinstance(ev, Connect) else connect_bytes(v)) + body
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    chunks = [stream[a:b] for a, b in zip([0, *splits], [*splits, len(stream)])]
    _check_never_raises(chunks, None, True)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([V3, V5]),
       st.text(st.characters(codec="utf-8", exclude_characters="+#\x00"), min_size=1, max_size=30),
       st.binary(max_size=200), st.integers(0, 2), st.booleans(), st.integers(1, 65535),
       st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3))
def test_fuzz_publish_round_trip(version: int, topic: str, payload: bytes, qos: int, retain: bool, pid: int,
                                 users: list[tuple[str, str]]) -> None:
    users = [(k.replace("\x00", ""), v.replace("\x00", "")) for k, v in users]
    props = Properties(user_properties=tuple(users)) if users and version == V5 else NO_PROPERTIES
    ev = Publish(topic, payload, qos, retain, bool(qos) and retain, pid if qos else 0, props)
    p = MqttParser()
    assert p.feed(connect_bytes(version) + serialize(ev, version)) == [Connect(version, "c"), ev]


# ---- runs (`MqttParser(runs=True)`, the server session's parser) ---------------------------------

def _expand(events: list[Event]) -> list[object]:
    """Runs back into one (Publish, PubAck) per packet, DUP dropped (runs do not carry it)."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, PublishRun):
            pids = ev.packet_ids or [b"\x00\x00"] * len(ev.payloads)
            out.extend(Publish(ev.topic, p, ev.qos, False, False, int.from_bytes(pid, "big"))
                       for p, pid in zip(ev.payloads, pids, strict=True))
        elif isinstance(ev, AckRun):
            out.extend(PubAck(pid) for pid in ev.packet_ids)
        elif isinstance(ev, Publish):
            out.append(ev._replace(dup=False))
        else:
            out.append(ev)
    return out


def test_runs_group_plain_publishes_and_acks() -> None:
    for v in (V3, V5):
        p = MqttParser(runs=True)
        stream = connect_bytes(v) + b"".join([
            encode_publish("a/b", b"1", 1, packet_id=1, version=v),
            encode_publish("a/b", b"2" * 300, 1, dup=True, packet_id=2, version=v),  # another size, DUP
            encode_publish("a/b", b"3", 1, packet_id=3, version=v),
            encode_publish("a/b", b"4", 0, version=v),  # another QoS: a new run
            encode_publish("a/c", b"5", 0, version=v),  # another topic: a new run
            encode_publish("a/c", b"6", 0, retain=True, version=v),  # retained: on its own
            serialize(PubAck(7), v), serialize(PubAck(8), v),
            encode_publish("a/c", b"9", 2, packet_id=9, version=v),  # QoS 2: on its own
            serialize(PubAck(10), v), b"\xc0\x00", serialize(PubAck(11), v),
        ])
        assert p.feed(stream) == [
            Connect(v, "c"),
            PublishRun("a/b", 1, [b"1", b"2" * 300, b"3"], [b"\x00\x01", b"\x00\x02", b"\x00\x03"]),
            PublishRun("a/b", 0, [b"4"], []),
            PublishRun("a/c", 0, [b"5"], []),
            Publish("a/c", b"6", 0, True),
            AckRun([7, 8]),
            Publish("a/c", b"9", 2, packet_id=9),
            AckRun([10]), PingReq(), AckRun([11]),
        ]
    # v5: a PUBLISH with properties, or a PUBACK with a reason code, is not part of a run
    p = MqttParser(runs=True)
    props = Properties(user_properties=(("k", "v"),))
    out = p.feed(connect_bytes(V5) + encode_publish("t", b"x", 1, packet_id=1, version=V5)
                 + encode_publish("t", b"y", 1, packet_id=2, properties=props, version=V5)
                 + serialize(PubAck(3), V5) + serialize(PubAck(4, 0x10), V5))
    assert out[1:] == [PublishRun("t", 1, [b"x"], [b"\x00\x01"]), Publish("t", b"y", 1, packet_id=2, properties=props),
                       AckRun([3]), PubAck(4, 0x10)]


@pytest.mark.parametrize(("name", "data", "version", "reason"), ERRORS, ids=[e[0] for e in ERRORS])
def test_runs_report_the_same_errors(name: str, data: bytes, version: int | None, reason: int) -> None:
    # after a run has started, so a bad packet meets the run's fast checks first
    good = encode_publish("a", b"p", 1, packet_id=1, version=version) + encode_publish("a", b"q", 1, packet_id=2,
                                                                                    version=version) if version else b""
    stream = (connect_bytes(version) if version else b"") + good + data
    ref = MqttParser().feed(stream)
    for i in range(len(stream) + 1):
        p = MqttParser(runs=True)
        out = p.feed(stream[:i]) + p.feed(stream[i:])
        assert _expand(out) == _expand(ref), (i, out)
        assert out[-1].reason_code == reason and p.dead  # type: ignore[union-attr]


def _run_pool(v: int) -> tuple[list[bytes], list[bytes]]:
    """Packets for the runs fuzz: well-formed ones, and bad ones (each ends the stream)."""
    good = [
        *(encode_publish("a/b", bytes([i]) * 130, 1, packet_id=i + 1, version=v) for i in range(3)),
        encode_publish("a/b", b"s", 1, packet_id=9, version=v),
        encode_publish("a/b", b"s", 1, dup=True, packet_id=9, version=v),
        encode_publish("a/b", b"z" * 130, 0, version=v), encode_publish("a/b", b"z", 0, version=v),
        encode_publish("c", b"z", 0, version=v), encode_publish("a/b", b"r", 0, retain=True, version=v),
        encode_publish("a/b", b"q2", 2, packet_id=4, version=v), encode_publish("a", b"x", 1, packet_id=1, version=v),
        encode_publish("a/b", b"u", 1, packet_id=7, version=v,
                       properties=Properties(user_properties=(("k", "v"),))),
        b"\x40\x02\x00\x05", b"\x40\x02\x01\x00", b"\xc0\x00", b"\x62\x02\x00\x01",
    ]
    bad = [
        b"\x32\x06\x00\x01a\x00\x00x" if v == V3 else b"\x32\x07\x00\x01a\x00\x00\x00x",  # packet id 0
        b"\x40\x02\x00\x00",  # PUBACK packet id 0
        b"\x30\x04\x00\x01+x" if v == V3 else b"\x30\x05\x00\x01+\x00x",  # a wildcard in the topic
        b"\x32\x03\x00\x01a",  # no room for the packet id
    ]
    if v == V5:
        bad.append(b"\x32\x07\x00\x01a\x00\x01\x05x")  # a property length past the end of the packet
        bad.append(b"\x30\x05\x00\x01c\x01z")  # QoS 0 with property 0x7a, which does not exist
    return good, bad


@pytest.mark.parametrize("version", [V3, V5])
def test_runs_check_each_packet_that_looks_like_the_last(version: int) -> None:
    """A packet that starts like the run's last one (same fixed header and topic) still gets its
    packet id and property length checked: the same error as the packet-by-packet parser, at any split."""
    good, bad = _run_pool(version)
    for pkt in bad:
        for before in good:
            stream = connect_bytes(version) + before * 2 + pkt
            ref = MqttParser().feed(stream)
            for i in range(len(stream) - len(pkt) - 3, len(stream) + 1):
                p = MqttParser(runs=True)
                out = p.feed(stream[:i]) + p.feed(stream[i:])
                assert _expand(out) == _expand(ref), (pkt, before, i)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([V3, V5]), st.lists(st.integers(0, 199), max_size=40), st.data())
def test_runs_mode_parses_as_packet_mode(version: int, picks: list[int], data: st.DataObject) -> None:
    """Any stream, any split: a `runs=True` parser yields what the packet-by-packet one does, grouped."""
    good, bad = _run_pool(version)
    # one pick in twenty is a bad packet (which ends the stream)
    stream = connect_bytes(version) + b"".join(good[i % len(good)] if i >= 10 else bad[i % len(bad)] for i in picks)
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *splits], [*splits, len(stream)], strict=True)]
    ref, runs = MqttParser(), MqttParser(runs=True)
    got_ref: list[Event] = []
    got_runs: list[Event] = []
    for c in chunks:
        got_ref += ref.feed(c)
        got_runs += runs.feed(c)
    assert _expand(got_runs) == _expand(got_ref)
