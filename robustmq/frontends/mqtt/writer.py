"""Serialising MQTT events to bytes for a connection of a given protocol level (3.1.1 or 5.0).

Fields a 3.1.1 packet cannot carry are dropped (properties, PUBACK reason codes) and v5 refusals
fold into 3.1.1's return codes (reasons.connack_v3 / suback_v3), so a session writes one event for
both dialects. Acks use the spec's short forms when they carry nothing beyond success.
"""

from __future__ import annotations

from collections.abc import Callable

from robustmq.frontends.mqtt import reasons
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
    UnsubAck,
    Unsubscribe,
)
from robustmq.frontends.mqtt.properties import (
    NO_PROPERTIES,
    Properties,
    encode_binary,
    encode_properties,
    encode_string,
    encode_varint,
)


class LocalProtocolError(ValueError):
    """We asked for a packet that cannot be written (a value out of range): a bug in the caller."""


def _frame(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((first, n)) + body
    return bytes((first,)) + _length(n) + body


def encode_publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False, dup: bool = False,
                   packet_id: int = 0, properties: Properties = NO_PROPERTIES,
                   version: int = MQTT_311) -> bytes:
    """PUBLISH, the hot packet, without building an event first."""
    if not 0 <= qos <= 2:
        raise LocalProtocolError(f"QoS {qos}")
    tb = topic.encode()
    tl = len(tb)
    if tl > 0xFFFF:
        raise LocalProtocolError("topic longer than 65535 bytes")
    pid = b""
    if qos:
        if not 0 < packet_id <= 0xFFFF:
            raise LocalProtocolError(f"packet identifier {packet_id}")
        pid = packet_id.to_bytes(2, "big")
    props = (b"\x00" if properties is NO_PROPERTIES else encode_properties(properties)) if version == MQTT_5 \
        else b""
    n = 2 + tl + len(pid) + len(props) + len(payload)
    head = fixed_header(0x30 | (dup << 3) | (qos << 1) | retain, n)
    return b"".join((head, tl.to_bytes(2, "big"), tb, pid, props, payload))


def fixed_header(first: int, remaining: int) -> bytes:
    """A packet's fixed header: the first byte and the remaining length (short forms inline)."""
    if remaining < 0x80:
        return bytes((first, remaining))
    if remaining < 0x4000:
        return bytes((first, (remaining & 0x7F) | 0x80, remaining >> 7))
    return bytes((first,)) + _length(remaining)


def _length(n: int) -> bytes:
    if n > 268_435_455:
        raise LocalProtocolError("packet larger than 256 MiB")
    return encode_varint(n)


def _ack(first: int, pid: int, code: int, props: Properties, version: int) -> bytes:
    if not 0 < pid <= 0xFFFF:
        raise LocalProtocolError(f"packet identifier {pid}")
    if version != MQTT_5 or (code == 0 and props is NO_PROPERTIES):
        return bytes((first, 2, pid >> 8, pid & 0xFF))  # the short form (spec 3.4.2.1)
    if props is NO_PROPERTIES:
        return bytes((first, 3, pid >> 8, pid & 0xFF, code))
    return _frame(first, bytes((pid >> 8, pid & 0xFF, code)) + encode_properties(props))


def _connect(ev: Connect, version: int) -> bytes:
    v5 = ev.version == MQTT_5
    will = ev.will
    flags = (ev.clean_start << 1) | ((ev.username is not None) << 7) | ((ev.password is not None) << 6)
    if will is not None:
        if not 0 <= will.qos <= 2:
            raise LocalProtocolError(f"will QoS {will.qos}")
        flags |= 0x04 | (will.qos << 3) | (will.retain << 5)
    parts = [b"\x00\x04MQTT", bytes((ev.version, flags, ev.keepalive >> 8, ev.keepalive & 0xFF))]
    if v5:
        parts.append(encode_properties(ev.properties))
    parts.append(encode_string(ev.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if ev.username is not None:
        parts.append(encode_string(ev.username))
    if ev.password is not None:
        parts.append(encode_binary(ev.password))
    return _frame(0x10, b"".join(parts))


def _connack(ev: ConnAck, version: int) -> bytes:
    if version != MQTT_5:
        return bytes((0x20, 2, ev.session_present, reasons.connack_v3(ev.reason_code)))
    return _frame(0x20, bytes((ev.session_present, ev.reason_code)) + encode_properties(ev.properties))


def _subscribe(ev: Subscribe, version: int) -> bytes:
    parts = [ev.packet_id.to_bytes(2, "big")]
    v5 = version == MQTT_5
    if v5:
        parts.append(encode_properties(ev.properties))
    for s in ev.subscriptions:
        opts = s.qos
        if v5:
            opts |= (s.no_local << 2) | (s.retain_as_published << 3) | (s.retain_handling << 4)
        parts.append(encode_string(s.filter) + bytes((opts,)))
    return _frame(0x82, b"".join(parts))


def _suback(ev: SubAck, version: int) -> bytes:
    pid = ev.packet_id.to_bytes(2, "big")
    if version != MQTT_5:
        return _frame(0x90, pid + bytes(reasons.suback_v3(c) for c in ev.reason_codes))
    return _frame(0x90, pid + encode_properties(ev.properties) + bytes(ev.reason_codes))


def _unsubscribe(ev: Unsubscribe, version: int) -> bytes:
    body = ev.packet_id.to_bytes(2, "big")
    if version == MQTT_5:
        body += encode_properties(ev.properties)
    return _frame(0xA2, body + b"".join(encode_string(f) for f in ev.filters))


def _unsuback(ev: UnsubAck, version: int) -> bytes:
    pid = ev.packet_id.to_bytes(2, "big")
    if version != MQTT_5:
        return b"\xb0\x02" + pid
    return _frame(0xB0, pid + encode_properties(ev.properties) + bytes(ev.reason_codes))


def _disconnect_or_auth(first: int, code: int, props: Properties, version: int) -> bytes:
    if version != MQTT_5 or (code == 0 and props is NO_PROPERTIES):
        return bytes((first, 0))
    if props is NO_PROPERTIES:
        return bytes((first, 1, code))
    return _frame(first, bytes((code,)) + encode_properties(props))


_WRITERS: dict[type, Callable[[object, int], bytes]] = {
    Connect: _connect,  # type: ignore[dict-item]
    ConnAck: _connack,  # type: ignore[dict-item]
    Publish: lambda ev, v: encode_publish(*ev, version=v),  # type: ignore[misc]
    PubAck: lambda ev, v: _ack(0x40, *ev, version=v),  # type: ignore[misc]
    PubRec: lambda ev, v: _ack(0x50, *ev, version=v),  # type: ignore[misc]
    PubRel: lambda ev, v: _ack(0x62, *ev, version=v),  # type: ignore[misc]
    PubComp: lambda ev, v: _ack(0x70, *ev, version=v),  # type: ignore[misc]
    Subscribe: _subscribe,  # type: ignore[dict-item]
    SubAck: _suback,  # type: ignore[dict-item]
    Unsubscribe: _unsubscribe,  # type: ignore[dict-item]
    UnsubAck: _unsuback,  # type: ignore[dict-item]
    PingReq: lambda ev, v: b"\xc0\x00",
    PingResp: lambda ev, v: b"\xd0\x00",
    Disconnect: lambda ev, v: _disconnect_or_auth(0xE0, *ev, version=v),  # type: ignore[misc]
    Auth: lambda ev, v: _disconnect_or_auth(0xF0, *ev, version=v),  # type: ignore[misc]
}


def serialize(event: Packet, version: int) -> bytes:
    """The bytes of `event` on a connection of protocol level `version` (v5 fields dropped on 3.1.1)."""
    try:
        writer = _WRITERS[type(event)]
    except KeyError:
        raise LocalProtocolError(f"cannot serialise {type(event).__name__}") from None
    try:
        return writer(event, version)
    except LocalProtocolError:
        raise
    except (ValueError, OverflowError) as e:
        raise LocalProtocolError(str(e)) from None
