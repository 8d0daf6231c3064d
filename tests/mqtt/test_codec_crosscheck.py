"""The codec against independent encoders/decoders: paho-mqtt (3.1.1 and 5.0, driven without a
network by capturing its packet queue and feeding its reader a fake socket) and mqtt5 (a Rust MQTT 5
codec), in both directions."""

from __future__ import annotations

from typing import Any

import mqtt5
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from robustmq.frontends.mqtt import reasons
from robustmq.frontends.mqtt.codec import MqttParser, serialize
from robustmq.frontends.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from robustmq.frontends.mqtt.properties import Properties

UP = [("k", "v"), ("k", "w"), ("ü", "ß")]
Q = mqtt5.QoS


# ---- paho-mqtt ----------------------------------------------------------------------------------

def _paho(version: int) -> tuple[paho.Client, list[bytes]]:
    cl = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="dev-7",
                     protocol=paho.MQTTProtocolVersion(version))
    sent: list[bytes] = []

    def capture(command: int, packet: bytes, mid: int, qos: int, info: Any = None) -> int:
        sent.append(bytes(packet))
        return 0

    cl._packet_queue = capture  # type: ignore[method-assign,assignment]
    return cl, sent


def _paho_props(ptype: int, **kw: Any) -> PahoProperties:
    p = PahoProperties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_paho_client_packets_parse(version: int) -> None:
    v5 = version == MQTT_5
    cl, sent = _paho(version)
    cl.username_pw_set("user", "secret")
    wprops = _paho_props(PacketTypes.WILLMESSAGE, WillDelayInterval=3, UserProperty=UP) if v5 else None
    cl.will_set("dev/7/status", b"gone", 1, True, properties=wprops)
    if v5:
        cl._connect_properties = _paho_props(PacketTypes.CONNECT, SessionExpiryInterval=60, ReceiveMaximum=10,
                                             UserProperty=UP)
    cl._send_connect(30)
    cl._sock = object()  # type: ignore[assignment]  # paho only checks that there is one
    pprops = _paho_props(PacketTypes.PUBLISH, MessageExpiryInterval=9, ContentType="text/plain",
                         CorrelationData=b"c", ResponseTopic="r/t", UserProperty=UP, TopicAlias=3,
                         PayloadFormatIndicator=1) if v5 else None
    cl._send_publish(5, b"sensors/room1/temp", b"21.5", 1, True, False, None, pprops)
    cl._send_publish(0, "ø/ü".encode(), b"", 0, False, False)
    opts1: Any = SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True, retainHandling=2) if v5 else 2
    opts2: Any = SubscribeOptions(qos=1) if v5 else 1
    sprops = _paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7) if v5 else None
    cl._send_subscribe(False, [(b"a/+", opts1), (b"$share/g/b/#", opts2)], sprops)
    cl._send_unsubscribe(False, [b"a/+", b"$share/g/b/#"])
    for send in (cl._send_puback, cl._send_pubrec, cl._send_pubrel, cl._send_pubcomp):
        send(5)
    cl._send_pingreq()
    cl._send_disconnect()
    cl._sock = None

    p = MqttParser()
    got = [ev for data in sent for ev in p.feed(data)]
    none = Properties()
    want: list[Packet] = [
        Connect(version, "dev-7", True, 30, "user", b"secret",
                Will("dev/7/status", b"gone", 1, True,
                     Properties(will_delay_interval=3, user_properties=tuple(UP)) if v5 else none),
                Properties(session_expiry_interval=60, receive_maximum=10, user_properties=tuple(UP))
                if v5 else none),
        Publish("sensors/room1/temp", b"21.5", 1, True, False, 5,
                Properties(payload_format_indicator=1, message_expiry_interval=9, content_type="text/plain",
                           response_topic="r/t", correlation_data=b"c", topic_alias=3,
                           user_properties=tuple(UP)) if v5 else none),
        Publish("ø/ü", b""),
        Subscribe(1, (Subscription("a/+", 2, v5, v5, 2 if v5 else 0), Subscription("$share/g/b/#", 1)),
                  Properties(subscription_ids=(7,)) if v5 else none),
        Unsubscribe(2, ("a/+", "$share/g/b/#")),
        PubAck(5), PubRec(5), PubRel(5), PubComp(5), PingReq(), Disconnect(),
    ]
    assert got == want


class _FakeSocket:
    """What paho's reader needs of a socket: recv() from a buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, n: int) -> bytes:
        if not self.data:
            raise BlockingIOError
        out, self.data = self.data[:n], self.data[n:]
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_paho_reads_server_packets(version: int) -> None:
    v5 = version == MQTT_5
    cl, _ = _paho(version)
    got: list[tuple[Any, ...]] = []
    cl.on_connect = lambda c, u, flags, rc, props: got.append(
        ("connack", flags.session_present, rc.value, getattr(props, "AssignedClientIdentifier", None),
         getattr(props, "UserProperty", None)))
    cl.on_message = lambda c, u, m: got.append(
        ("publish", m.topic, m.payload, m.qos, m.retain, m.mid,
         getattr(m.properties, "MessageExpiryInterval", None), getattr(m.properties, "UserProperty", None),
         getattr(m.properties, "SubscriptionIdentifier", None)))
    cl.on_subscribe = lambda c, u, mid, rcs, props: got.append(("suback", mid, [r.value for r in rcs]))
    cl.on_unsubscribe = lambda c, u, mid, rcs, props: got.append(("unsuback", mid, [r.value for r in rcs]))
    events: list[Packet] = [
        ConnAck(True, 0, Properties(assigned_client_identifier="auto-1", user_properties=tuple(UP))),
        Publish("a/b", b"hi", 1, True, False, 3,
                Properties(message_expiry_interval=5, subscription_ids=(4, 400), user_properties=tuple(UP))),
        SubAck(1, (0, 1, reasons.NOT_AUTHORIZED)),
        UnsubAck(2, (reasons.NO_SUBSCRIPTION_EXISTED,)),
        PingResp(),
    ]
    cl._sock = _FakeSocket(b"".join(serialize(ev, version) for ev in events))  # type: ignore[assignment]
    cl._state = paho._ConnectionState.MQTT_CS_CONNECT_ASYNC
    for _ in events:
        assert cl._packet_read() == paho.MQTT_ERR_SUCCESS
    cl._sock = None
    assert got == [
        ("connack", True, 0, "auto-1" if v5 else None, UP if v5 else None),
        ("publish", "a/b", b"hi", 1, True, 3, 5 if v5 else None, UP if v5 else None, [4, 400] if v5 else None),
        ("suback", 1, [0, 1, 0x87 if v5 else 0x80]),
        ("unsuback", 2, [0x11] if v5 else []),
    ]


# ---- mqtt5 (v5 only) ----------------------------------------------------------------------------

WILL5 = Will("w/t", b"bye", 1, True, Properties(
    payload_format_indicator=1, message_expiry_interval=30, content_type="ct", response_topic="rt",
    correlation_data=b"cd", will_delay_interval=4, user_properties=tuple(UP)))
# (our event, the same packet as mqtt5 builds it, True if a client sends it)
PAIRS: list[tuple[Packet, Any, bool]] = [
    (Connect(MQTT_5, "dev", True, 20, "u", b"p", WILL5, Properties(
        session_expiry_interval=99, authentication_method="m", authentication_data=b"ad",
        request_problem_information=0, request_response_information=1, receive_maximum=12,
        topic_alias_maximum=5, maximum_packet_size=4096, user_properties=tuple(UP))),
     mqtt5.ConnectPacket("dev", username="u", password=b"p", clean_start=True, keep_alive=20,
                         will=mqtt5.Will("w/t", payload=b"bye", qos=Q.AT_LEAST_ONCE, retain=True,
                                         payload_format_indicator=1, message_expiry_interval=30,
                                         content_type="ct", response_topic="rt", correlation_data=b"cd",
                                         will_delay_interval=4, user_properties=UP),
                         session_expiry_interval=99, authentication_method="m", authentication_data=b"ad",
                         request_problem_info=False, request_response_info=True, receive_max=12,
                         topic_alias_max=5, max_packet_size=4096, user_properties=UP), True),
    (ConnAck(True, 0, Properties(session_expiry_interval=7, assigned_client_identifier="a",
                                 server_keep_alive=15, reason_string="rs", receive_maximum=50,
                                 topic_alias_maximum=9, maximum_qos=1, retain_available=0,
                                 maximum_packet_size=1000, wildcard_subscription_available=0,
                                 subscription_identifier_available=0, shared_subscription_available=0,
                                 user_properties=tuple(UP))),
     mqtt5.ConnAckPacket(session_present=True, session_expiry_interval=7, assigned_client_id="a",
                         server_keep_alive=15, reason_str="rs", receive_max=50, topic_alias_max=9,
                         max_qos=Q.AT_LEAST_ONCE, retain_available=False, max_packet_size=1000,
                         wildcard_subscription_available=False, subscription_id_available=False,
                         shared_subscription_available=False, user_properties=UP), False),
    (ConnAck(False, reasons.NOT_AUTHORIZED),
     mqtt5.ConnAckPacket(reason_code=mqtt5.ConnAckReasonCode.NOT_AUTHORIZED), False),
    (Publish("a/b", b"data", 2, True, True, 77, Properties(
        payload_format_indicator=1, message_expiry_interval=3, content_type="c", response_topic="r",
        correlation_data=b"x", topic_alias=2, user_properties=tuple(UP))),
     mqtt5.PublishPacket("a/b", b"data", qos=Q.EXACTLY_ONCE, retain=True, duplicate=True, packet_id=77,
                         payload_format_indicator=1, message_expiry_interval=3, content_type="c",
                         response_topic="r", correlation_data=b"x", topic_alias=2, user_properties=UP), True),
    (Publish("a/b", b"", 0, False, False, 0, Properties(subscription_ids=(1, 2))),
     mqtt5.PublishPacket("a/b", b"", subscription_ids=[1, 2]), False),
    (PubAck(9), mqtt5.PubAckPacket(9), True),
    (PubAck(9, reasons.QUOTA_EXCEEDED, Properties(reason_string="q", user_properties=tuple(UP))),
     mqtt5.PubAckPacket(9, reason_code=mqtt5.PubAckReasonCode.QUOTA_EXCEEDED, reason_str="q",
                        user_properties=UP), True),
    (PubRec(9, reasons.NO_MATCHING_SUBSCRIBERS),
     mqtt5.PubRecPacket(9, reason_code=mqtt5.PubRecReasonCode.NO_MATCHING_SUBSCRIBERS), True),
    (PubRel(9, reasons.PACKET_IDENTIFIER_NOT_FOUND),
     mqtt5.PubRelPacket(9, reason_code=mqtt5.PubRelReasonCode.PACKET_ID_NOT_FOUND), True),
    (PubComp(9, 0, Properties(reason_string="ok")), mqtt5.PubCompPacket(9, reason_str="ok"), True),
    (Subscribe(3, (Subscription("a/#", 1, True, False, 1), Subscription("+/x", 2, False, True, 2)),
               Properties(subscription_ids=(12,), user_properties=tuple(UP))),
     mqtt5.SubscribePacket(3, [
         mqtt5.TopicFilter("a/#", max_qos=Q.AT_LEAST_ONCE, no_local=True, retain_as_published=False,
                           retain_handling=mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS),
         mqtt5.TopicFilter("+/x", max_qos=Q.EXACTLY_ONCE, retain_as_published=True,
                           retain_handling=mqtt5.RetainHandling.SEND_NEVER)],
         subscription_id=12, user_properties=UP), True),
    (SubAck(3, (1, reasons.TOPIC_FILTER_INVALID), Properties(reason_string="r")),
     mqtt5.SubAckPacket(3, [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
                            mqtt5.SubAckReasonCode.TOPIC_FILTER_INVALID], reason_str="r"), False),
    (Unsubscribe(4, ("a/#", "b"), Properties(user_properties=tuple(UP))),
     mqtt5.UnsubscribePacket(4, ["a/#", "b"], user_properties=UP), True),
    (UnsubAck(4, (0, reasons.NO_SUBSCRIPTION_EXISTED)),
     mqtt5.UnsubAckPacket(4, [mqtt5.UnsubAckReasonCode.SUCCESS,
                              mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED]), False),
    (PingReq(), mqtt5.PingReqPacket(), True),
    (PingResp(), mqtt5.PingRespPacket(), False),
    (Disconnect(), mqtt5.DisconnectPacket(), True),
    (Disconnect(reasons.SERVER_MOVED, Properties(server_reference="s", reason_string="r")),
     mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.SERVER_MOVED, server_reference="s",
                            reason_str="r"), False),
    (Auth(reasons.CONTINUE_AUTHENTICATION, Properties(authentication_method="m", authentication_data=b"d")),
     mqtt5.AuthPacket(reason_code=mqtt5.AuthReasonCode.CONTINUE_AUTHENTICATION, authentication_method="m",
                      authentication_data=b"d"), True),
]


def _parse_as_receiver(data: bytes, from_client: bool) -> list[Any]:
    if not from_client:
        return MqttParser(MQTT_5, server=False).feed(data)
    p = MqttParser()
    if data[0] >> 4 == 1:
        return p.feed(data)
    return p.feed(serialize(Connect(MQTT_5, "c"), MQTT_5) + data)[1:]


@pytest.mark.parametrize(("ours", "theirs", "from_client"), PAIRS,
                         ids=[type(p[0]).__name__ + str(i) for i, p in enumerate(PAIRS)])
def test_mqtt5_both_ways(ours: Packet, theirs: Any, from_client: bool) -> None:
    assert _parse_as_receiver(theirs.write(), from_client) == [ours]
    data = serialize(ours, MQTT_5)
    back, used = mqtt5.read(memoryview(data))
    assert used == len(data)
    assert back == theirs
