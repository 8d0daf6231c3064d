"""MQTT 5 properties (spec 2.2.2): one typed tuple for all 27, their parse and their encoding.

Parsing raises `PacketError` inside the codec only: the parser turns it into a ProtocolError
event, so a caller never sees an exception for bad input.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from robustmq.frontends.mqtt import reasons

# packet types (fixed header, high nibble); WILL is the will's property block inside CONNECT
WILL = 0
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15


class PacketError(Exception):
    """Internal to the codec: the packet is bad; `reason` is the v5 reason code to report."""

    def __init__(self, reason: int, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


class Properties(NamedTuple):
    """Every v5 property; None (or an empty tuple) when absent. Ordered as the spec numbers them."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_ids: tuple[int, ...] = ()  # repeatable in PUBLISH, at most one in SUBSCRIBE
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()  # ordered, a name may repeat
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __repr__(self) -> str:  # only what is set: 27 Nones hide the point of a failing test
        set_ = ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self) if v is not None and v != ())
        return f"Properties({set_})"


NO_PROPERTIES = Properties()

# value kinds
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
# value checks beyond the kind: a 0/1 flag, or a number that must not be 0 (spec 3.x "Protocol Error")
_ANY, _FLAG, _NONZERO = range(3)


def _mask(*types: int) -> int:
    m = 0
    for t in types:
        m |= 1 << t
    return m


_ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK)
_MSG = (PUBLISH, WILL)
# id -> (field index, kind, packets it may appear in, value check)
_SPEC: dict[int, tuple[int, int, int, int]] = {
    0x01: (0, _BYTE, _mask(*_MSG), _FLAG),
    0x02: (1, _U32, _mask(*_MSG), _ANY),
    0x03: (2, _STR, _mask(*_MSG), _ANY),
    0x08: (3, _STR, _mask(*_MSG), _ANY),
    0x09: (4, _BIN, _mask(*_MSG), _ANY),
    0x0B: (5, _VARINT, _mask(PUBLISH, SUBSCRIBE), _NONZERO),
    0x11: (6, _U32, _mask(CONNECT, CONNACK, DISCONNECT), _ANY),
    0x12: (7, _STR, _mask(CONNACK), _ANY),
    0x13: (8, _U16, _mask(CONNACK), _ANY),
    0x15: (9, _STR, _mask(CONNECT, CONNACK, AUTH), _ANY),
    0x16: (10, _BIN, _mask(CONNECT, CONNACK, AUTH), _ANY),
    0x17: (11, _BYTE, _mask(CONNECT), _FLAG),
    0x18: (12, _U32, _mask(WILL), _ANY),
    0x19: (13, _BYTE, _mask(CONNECT), _FLAG),
    0x1A: (14, _STR, _mask(CONNACK), _ANY),
    0x1C: (15, _STR, _mask(CONNACK, DISCONNECT), _ANY),
    0x1F: (16, _STR, _mask(CONNACK, DISCONNECT, AUTH, *_ACKS), _ANY),
    0x21: (17, _U16, _mask(CONNECT, CONNACK), _NONZERO),
    0x22: (18, _U16, _mask(CONNECT, CONNACK), _ANY),
    0x23: (19, _U16, _mask(PUBLISH), _NONZERO),
    0x24: (20, _BYTE, _mask(CONNACK), _FLAG),
    0x25: (21, _BYTE, _mask(CONNACK), _FLAG),
    0x26: (22, _PAIR, -1, _ANY),  # every packet that has properties
    0x27: (23, _U32, _mask(CONNECT, CONNACK), _NONZERO),
    0x28: (24, _BYTE, _mask(CONNACK), _FLAG),
    0x29: (25, _BYTE, _mask(CONNACK), _FLAG),
    0x2A: (26, _BYTE, _mask(CONNACK), _FLAG),
}
# field index -> (id, kind), in field order, for encoding
_BY_FIELD: list[tuple[int, int]] = [(0, 0)] * len(Properties._fields)
for _pid, (_idx, _kind, _m, _c) in _SPEC.items():
    _BY_FIELD[_idx] = (_pid, _kind)
_SUB_IDS = 5
_USER = 22
_FIELD_NAMES = Properties._fields

MAX_VARINT = 268_435_455  # 4 bytes of 7 bits


def malformed(text: str) -> PacketError:
    return PacketError(reasons.MALFORMED_PACKET, text)


def protocol_error(text: str) -> PacketError:
    return PacketError(reasons.PROTOCOL_ERROR, text)


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A variable byte integer (spec 1.5.5): at most 4 bytes, minimally encoded."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= end:
            raise malformed("truncated variable byte integer")
        b = buf[pos]
        pos += 1
        if b == 0 and i:
            raise malformed("variable byte integer not minimally encoded")
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise malformed("variable byte integer longer than 4 bytes")


def read_u16(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise malformed("truncated two byte integer")
    return (buf[pos] << 8) | buf[pos + 1], pos + 2


def read_binary(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    n, pos = read_u16(buf, pos, end)
    e = pos + n
    if e > end:
        raise malformed("binary data runs past the packet")
    return buf[pos:e], e


def read_string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    """A UTF-8 string (spec 1.5.4): well-formed (no surrogates, no overlongs) and without U+0000."""
    n, pos = read_u16(buf, pos, end)
    e = pos + n
    if e > end:
        raise malformed("string runs past the packet")
    try:
        s = buf[pos:e].decode()
    except UnicodeDecodeError:
        raise malformed("string is not well-formed UTF-8") from None
    if "\x00" in s:
        raise malformed("string contains U+0000")
    return s, e


def read_properties(buf: bytes, pos: int, end: int, packet: int) -> tuple[Properties, int]:
    """The property length and the properties of a `packet` (a packet type, or WILL)."""
    if pos >= end:
        raise malformed("missing property length")
    if buf[pos] == 0:
        return NO_PROPERTIES, pos + 1
    length, pos = read_varint(buf, pos, end)
    pend = pos + length
    if pend > end:
        raise malformed("properties run past the packet")
    vals: list[object] = list(NO_PROPERTIES)
    bit = 1 << packet
    sub_ids: list[int] = []
    users: list[tuple[str, str]] = []
    while pos < pend:
        pid, pos = read_varint(buf, pos, pend)
        spec = _SPEC.get(pid)
        if spec is None:
            raise malformed(f"unknown property 0x{pid:02x}")
        idx, kind, allowed, check = spec
        if not allowed & bit:
            raise malformed(f"property {_FIELD_NAMES[idx]} not allowed in this packet")
        value: object
        if kind == _BYTE:
            if pos >= pend:
                raise malformed("truncated property")
            value = buf[pos]
            pos += 1
        elif kind == _U16:
            value, pos = read_u16(buf, pos, pend)
        elif kind == _U32:
            if pos + 4 > pend:
                raise malformed("truncated property")
            value = int.from_bytes(buf[pos:pos + 4], "big")
            pos += 4
        elif kind == _VARINT:
            value, pos = read_varint(buf, pos, pend)
        elif kind == _STR:
            value, pos = read_string(buf, pos, pend)
        elif kind == _BIN:
            value, pos = read_binary(buf, pos, pend)
        else:
            k, pos = read_string(buf, pos, pend)
            v, pos = read_string(buf, pos, pend)
            users.append((k, v))
            continue
        if check == _FLAG and value not in (0, 1):
            raise protocol_error(f"property {_FIELD_NAMES[idx]} must be 0 or 1")
        if check == _NONZERO and value == 0:
            raise protocol_error(f"property {_FIELD_NAMES[idx]} must not be 0")
        if idx == _SUB_IDS:
            if sub_ids and packet != PUBLISH:
                raise protocol_error("subscription identifier given twice")
            sub_ids.append(value)  # type: ignore[arg-type]
            continue
        if vals[idx] is not None:
            raise protocol_error(f"property {_FIELD_NAMES[idx]} given twice")
        vals[idx] = value
    if sub_ids:
        vals[_SUB_IDS] = tuple(sub_ids)
    if users:
        vals[_USER] = tuple(users)
    return Properties._make(vals), pend


def encode_varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    if n > MAX_VARINT:
        raise ValueError(f"{n} does not fit a variable byte integer")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


def encode_string(s: str) -> bytes:
    b = s.encode()
    if len(b) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def encode_binary(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def encode_properties(props: Properties) -> bytes:
    """The property length and the properties, in field order (user properties keep theirs)."""
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    value: Any
    for (pid, kind), value in zip(_BY_FIELD, props):
        if value is None or value == ():
            continue
        if kind == _PAIR:
            for k, v in value:
                parts.append(b"\x26" + encode_string(k) + encode_string(v))
            continue
        if kind == _VARINT:
            for sid in value:
                parts.append(b"\x0b" + encode_varint(sid))
            continue
        head = _SMALL[pid]
        if kind == _BYTE:
            parts.append(head + bytes((value,)))
        elif kind == _U16:
            parts.append(head + value.to_bytes(2, "big"))
        elif kind == _U32:
            parts.append(head + value.to_bytes(4, "big"))
        elif kind == _STR:
            parts.append(head + encode_string(value))
        else:
            parts.append(head + encode_binary(value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body
