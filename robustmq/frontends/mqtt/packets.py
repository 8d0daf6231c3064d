"""The typed MQTT events: one small immutable tuple per packet, the same for 3.1.1 and 5.0.

What a 3.1.1 packet cannot carry is left at its default (`NO_PROPERTIES`, reason code 0) when
parsed and dropped when serialised for a 3.1.1 connection. A packet identifier of 0 means
"none" (QoS 0): the spec forbids 0 as a real identifier.
"""

from __future__ import annotations

from typing import NamedTuple

from robustmq.frontends.mqtt.properties import NO_PROPERTIES, Properties

MQTT_311 = 4  # the protocol level byte of CONNECT
MQTT_5 = 5


class Will(NamedTuple):
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES  # v5 will properties (will delay, expiry, ...)


class Connect(NamedTuple):
    version: int  # MQTT_311 or MQTT_5
    client_id: str
    clean_start: bool = True  # 3.1.1: clean session
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES


class ConnAck(NamedTuple):
    session_present: bool = False
    reason_code: int = 0  # 3.1.1: the return code (0-5)
    properties: Properties = NO_PROPERTIES


class Publish(NamedTuple):
    topic: str  # v5: may be "" when a topic alias stands for it
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = NO_PROPERTIES


class PubAck(NamedTuple):
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


class PubRec(NamedTuple):
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


class PubRel(NamedTuple):
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


class PubComp(NamedTuple):
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


class Subscription(NamedTuple):
    filter: str
    qos: int = 0  # the maximum QoS asked for
    no_local: bool = False  # v5 options from here on
    retain_as_published: bool = False
    retain_handling: int = 0  # 0 send retained, 1 only on a new subscription, 2 never


class Subscribe(NamedTuple):
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES  # subscription_ids: at most one


class SubAck(NamedTuple):
    packet_id: int
    reason_codes: tuple[int, ...]  # granted QoS or a refusal, one per subscription
    properties: Properties = NO_PROPERTIES


class Unsubscribe(NamedTuple):
    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


class UnsubAck(NamedTuple):
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # 3.1.1 has none
    properties: Properties = NO_PROPERTIES


class PingReq(NamedTuple):
    pass


class PingResp(NamedTuple):
    pass


class Disconnect(NamedTuple):
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


class Auth(NamedTuple):
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


class PublishRun(NamedTuple):
    """Consecutive PUBLISHes of one read to one topic at QoS 0 or 1, without retain and without
    properties: what a device streaming telemetry sends. Only a parser made with `runs=True` yields
    it (a server session: one route, one log append, one PUBACK write for the run); DUP is dropped
    (a QoS 1 resend is handled as any QoS 1 PUBLISH)."""

    topic: str
    qos: int  # 0 or 1
    payloads: list[bytes]
    packet_ids: list[bytes]  # QoS 1: each packet identifier as its two wire bytes, in order; else []


class AckRun(NamedTuple):
    """Consecutive PUBACKs of one read without reason code (`runs=True` parsers only)."""

    packet_ids: list[int]


class ProtocolError(NamedTuple):
    """The peer broke the protocol; the connection must close (after a CONNACK or DISCONNECT
    carrying `reason_code` on a v5 connection, or CONNACK 0x01 for an unsupported version)."""

    reason_code: int  # MALFORMED_PACKET, PROTOCOL_ERROR, PACKET_TOO_LARGE, UNSUPPORTED_PROTOCOL_VERSION
    text: str


Packet = (Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck
          | Unsubscribe | UnsubAck | PingReq | PingResp | Disconnect | Auth)
Event = Packet | ProtocolError | PublishRun | AckRun
