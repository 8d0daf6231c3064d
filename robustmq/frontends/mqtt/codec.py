"""Sans-IO MQTT 3.1.1 / 5.0 codec: feed bytes, get typed events; serialise events to bytes.

`MqttParser(version=None)` on a server learns the protocol version from CONNECT (the first packet
it accepts); the version then governs how every later packet is parsed, and `serialize(event,
parser.version)` writes replies in the same dialect. Packets are framed by the fixed header's
remaining length, checked against `max_packet_size` as soon as the header is in (so the carry-over
is bounded by it); a packet whose header is in but whose body is still arriving is collected as a
list of chunks and joined once, never re-copied per read.

Bad input never raises: the parser emits one `ProtocolError(reason_code, text)` and then stops
producing events (the connection must close). Reason codes follow the v5 spec: 0x81 Malformed
Packet (bad lengths, bad flags, bad UTF-8, QoS 3, unknown properties, ...), 0x82 Protocol Error
(packet before CONNECT, second CONNECT, wildcards in a PUBLISH topic, packet id 0, duplicate
properties, ...), 0x95 Packet too large, 0x84 Unsupported protocol version. Topic filters are
passed through for the session to judge per subscription (v5 answers a bad one with SUBACK 0x8F).

`MqttParser(runs=True)` (the server session's) groups consecutive plain QoS 0/1 PUBLISHes to one
topic into a `PublishRun` and consecutive plain PUBACKs into an `AckRun`; every other packet, and
every error, is what the packet-by-packet parser yields.
"""

from __future__ import annotations

from collections.abc import Callable

from robustmq.frontends.mqtt import reasons
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
from robustmq.frontends.mqtt.properties import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    NO_PROPERTIES,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    WILL,
    PacketError,
    Properties,
    malformed,
    protocol_error,
    read_binary,
    read_properties,
    read_string,
    read_u16,
)

# the serialisers live in writer.py (h11's split); re-exported so a session imports one module
from robustmq.frontends.mqtt.writer import LocalProtocolError, encode_publish, serialize

DEFAULT_MAX_PACKET_SIZE = 1 << 20  # 1 MiB, nats-server's max payload; the spec allows 256 MiB
MAX_PACKET_SIZE_LIMIT = 268_435_455 + 5  # the largest remaining length plus its fixed header
_TOPIC_CACHE_SIZE = 1024  # validated PUBLISH topics per connection: devices repeat theirs

# which packets each side may receive; anything else is a protocol error
_SERVER_RECEIVES = frozenset({CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE,
                              PINGREQ, DISCONNECT, AUTH})
_CLIENT_RECEIVES = frozenset({CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
                              PINGRESP, DISCONNECT, AUTH})
# fixed-header flags each packet type must carry (spec 2.1.3); PUBLISH's are its own
_FLAGS = [0] * 16
_FLAGS[PUBREL] = _FLAGS[SUBSCRIBE] = _FLAGS[UNSUBSCRIBE] = 2
_NAMES = ("reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE",
          "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH")
_ACK_TYPES: dict[int, Callable[..., Packet]] = {PUBACK: PubAck, PUBREC: PubRec, PUBREL: PubRel,
                                                PUBCOMP: PubComp}
_ACK_CODES = {PUBACK: reasons.PUBACK_CODES, PUBREC: reasons.PUBACK_CODES, PUBREL: reasons.PUBREL_CODES,
              PUBCOMP: reasons.PUBREL_CODES}
_PINGREQ = PingReq()
_PINGRESP = PingResp()


class MqttParser:
    """One connection's inbound bytes -> events. `server=False` parses what a server sends."""

    __slots__ = ("_buf", "_chunks", "_have", "_need", "_topics", "dead", "max_packet_size", "runs", "server",
                 "version")

    def __init__(self, version: int | None = None, *, server: bool = True,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, runs: bool = False) -> None:
        if version not in (None, MQTT_311, MQTT_5):
            raise ValueError(f"unsupported MQTT protocol level {version}")
        if version is None and not server:
            raise ValueError("a client parser needs the version its CONNECT asked for")
        if not 2 <= max_packet_size <= MAX_PACKET_SIZE_LIMIT:
            raise ValueError("max_packet_size out of range")
        self.version = version
        self.server = server
        self.max_packet_size = max_packet_size
        self.dead = False
        self._buf = b""  # an incomplete fixed header (at most 4 bytes)
        self._chunks: list[bytes] = []  # a packet whose header is in and whose body is arriving
        self._have = 0
        self._need = 0
        self._topics: dict[bytes, str] = {}
        # yield PublishRun / AckRun for runs of plain QoS 0/1 PUBLISHes and plain PUBACKs (a server
        # session's hot path); False: one Publish / PubAck event per packet (clients, tools)
        self.runs = runs

    @property
    def idle(self) -> bool:
        """No partial packet is waiting for more bytes."""
        return not self._buf and not self._chunks

    def feed(self, data: bytes) -> list[Event]:
        """The events of every packet completed by `data`; a ProtocolError is the last one ever."""
        if self.dead or not data:
            return []
        if self._chunks:
            self._chunks.append(bytes(data))  # the caller may reuse its buffer
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
        else:
            buf = self._buf + data if self._buf else bytes(data)
        self._buf = b""
        if self.version is None and self.server and buf[0] != 0x10:
            # the first packet must be a CONNECT (3.1.0-1): say so from its first byte, not once the
            # body that byte and the next happen to announce has arrived (an HTTP "GET" announces
            # 69 bytes), so a stray client is closed at once
            b0 = buf[0]
            if b0 >> 4 == CONNECT:
                return self._fatal([], reasons.MALFORMED_PACKET,
                                   f"CONNECT with fixed-header flags 0x{b0 & 15:x}")
            return self._fatal([], reasons.PROTOCOL_ERROR, f"{_NAMES[b0 >> 4]} before CONNECT")
        out: list[Event] = []
        pos = 0
        n = len(buf)
        maxp = self.max_packet_size
        receives = _SERVER_RECEIVES if self.server else _CLIENT_RECEIVES
        need = 0  # the size of a packet whose header is in and whose body is not
        # runs (self.runs): the PublishRun / AckRun the next packet may join. `prefix` is the run's
        # last packet up to its packet id (QoS 1) or payload: fixed header (so the same size) and
        # topic; a packet that starts with it joins the run after two checks, without being framed.
        run: PublishRun | None = None
        run_payloads: list[bytes] = []
        run_pids: list[bytes] | None = None
        run_tb = b""
        run_b0 = 0
        prefix = b""
        plen = hlen = 0
        acks: list[int] | None = None
        fast = self.runs and self.version is not None
        v5 = self.version == MQTT_5
        topics = self._topics
        try:
            while n - pos >= 2:
                if prefix and buf.startswith(prefix, pos) and pos + plen <= n:
                    q = pos + hlen
                    if run_pids is not None:
                        if (buf[q] or buf[q + 1]) and (not v5 or buf[q + 2] == 0):
                            run_pids.append(buf[q:q + 2])
                            pos += plen
                            run_payloads.append(buf[q + 2 + v5:pos])
                            continue
                    elif not v5 or buf[q] == 0:
                        pos += plen
                        run_payloads.append(buf[q + v5:pos])
                        continue
                elif acks is not None and buf.startswith(b"\x40\x02", pos) and pos + 4 <= n \
                        and (buf[pos + 2] or buf[pos + 3]):
                    acks.append((buf[pos + 2] << 8) | buf[pos + 3])
                    pos += 4
                    continue
                b0 = buf[pos]
                rl = buf[pos + 1]
                if rl < 0x80:
                    body = pos + 2
                elif n - pos > 2 and 0 < buf[pos + 2] < 0x80:  # two bytes: 128 to 16383
                    rl = (rl & 0x7F) | (buf[pos + 2] << 7)
                    body = pos + 3
                else:
                    rl, body = _long_length(buf, pos + 1, n)
                    if body < 0:
                        break
                end = body + rl
                if end - pos > maxp:
                    raise PacketError(reasons.PACKET_TOO_LARGE,
                                      f"packet of {end - pos} bytes exceeds the maximum of {maxp}")
                if end > n:
                    need = end - pos
                    break
                if fast:
                    # QoS 0 (0x30), QoS 1 (0x32), QoS 1 DUP (0x3A): no retain; a non-empty topic, a
                    # packet id that is not 0 and (v5) no properties. Anything else, a bad packet
                    # included, takes the general path below, which says what is wrong with it.
                    if b0 == 0x30 or b0 == 0x32 or b0 == 0x3A:
                        te = body + 2 + ((buf[body] << 8) | buf[body + 1]) if rl >= 2 else 0
                        q = te + 2 if b0 != 0x30 else te
                        if body + 2 < te and q + v5 <= end and (b0 == 0x30 or buf[te] or buf[te + 1]) \
                                and (not v5 or buf[q] == 0):
                            tb = buf[body + 2:te]
                            if run is None or b0 & 0xF7 != run_b0 or tb != run_tb:
                                topic = topics.get(tb)
                                if topic is None:
                                    topic = self._topic(tb)
                                run_payloads = []
                                run_pids = None if b0 == 0x30 else []
                                run = PublishRun(topic, 0 if b0 == 0x30 else 1, run_payloads,
                                                 run_pids if run_pids is not None else [])
                                run_tb, run_b0 = tb, b0 & 0xF7
                                out.append(run)
                                acks = None
                            if run_pids is not None:
                                run_pids.append(buf[te:q])
                            run_payloads.append(buf[q + v5:end])
                            prefix, plen, hlen = buf[pos:te], end - pos, te - pos
                            pos = end
                            continue
                    elif b0 == 0x40 and rl == 2 and (buf[body] or buf[body + 1]):  # PUBACK, success
                        pid = (buf[body] << 8) | buf[body + 1]
                        if acks is None:
                            acks = [pid]
                            out.append(AckRun(acks))
                        else:
                            acks.append(pid)
                        run = None
                        prefix = b""
                        pos = end
                        continue
                    run = None
                    prefix = b""
                    acks = None
                ptype = b0 >> 4
                if ptype == PUBLISH and self.version is not None:
                    out.append(self._publish(buf, body, end, b0 & 0x0F))
                else:
                    out.append(self._packet(buf, body, end, ptype, b0 & 0x0F, receives))
                    if ptype == CONNECT and self.runs:  # the version is known from here on
                        fast = True
                        v5 = self.version == MQTT_5
                pos = end
        except PacketError as e:
            return self._fatal(out, e.reason, e.text)
        if need:  # collect the body as chunks, joined once all `need` bytes are here
            self._chunks = [buf[pos:]]
            self._have = n - pos
            self._need = need
        elif pos < n:
            self._buf = buf[pos:]  # at most a fixed header
        return out

    def _fatal(self, out: list[Event], reason: int, text: str) -> list[Event]:
        self.dead = True
        self._buf = b""
        self._chunks = []
        out.append(ProtocolError(reason, text))
        return out

    def _publish(self, buf: bytes, p: int, end: int, flags: int) -> Publish:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise malformed("PUBLISH with QoS 3")
        if qos == 0 and flags & 8:
            raise malformed("PUBLISH with DUP set at QoS 0")
        if p + 2 > end:
            raise malformed("PUBLISH without a topic")
        te = p + 2 + ((buf[p] << 8) | buf[p + 1])
        if te > end:
            raise malformed("PUBLISH topic runs past the packet")
        tb = buf[p + 2:te]
        topic = self._topics.get(tb)
        if topic is None:
            topic = self._topic(tb)
        p = te
        pid = 0
        if qos:
            if p + 2 > end:
                raise malformed("PUBLISH without a packet identifier")
            pid = (buf[p] << 8) | buf[p + 1]
            if not pid:
                raise protocol_error("PUBLISH with packet identifier 0")
            p += 2
        props = NO_PROPERTIES
        if self.version == MQTT_5:
            if p < end and buf[p] == 0:
                p += 1
            else:
                props, p = read_properties(buf, p, end, PUBLISH)
                if props.subscription_ids and self.server:
                    raise protocol_error("PUBLISH from a client with a subscription identifier")
            if not topic and props.topic_alias is None:
                raise protocol_error("PUBLISH with an empty topic and no topic alias")
        elif not topic:
            raise protocol_error("PUBLISH with an empty topic")
        return Publish(topic, buf[p:end], qos, bool(flags & 1), bool(flags & 8), pid, props)

    def _topic(self, tb: bytes) -> str:
        try:
            topic = tb.decode()
        except UnicodeDecodeError:
            raise malformed("PUBLISH topic is not well-formed UTF-8") from None
        if "\x00" in topic:
            raise malformed("PUBLISH topic contains U+0000")
        if "+" in topic or "#" in topic:
            raise protocol_error("PUBLISH topic contains a wildcard")
        if len(self._topics) >= _TOPIC_CACHE_SIZE:
            self._topics.clear()
        self._topics[tb] = topic
        return topic

    def _packet(self, buf: bytes, p: int, end: int, ptype: int, flags: int,
                receives: frozenset[int]) -> Packet:
        if ptype == 0 or (ptype == AUTH and self.version == MQTT_311):
            raise malformed(f"reserved packet type {ptype}")
        name = _NAMES[ptype]
        if ptype not in receives:
            raise protocol_error(f"{name} is not sent to a {'server' if self.server else 'client'}")
        if ptype != PUBLISH and flags != _FLAGS[ptype]:
            raise malformed(f"{name} with fixed-header flags 0x{flags:x}")
        if ptype == CONNECT:
            if self.version is not None:
                raise protocol_error("a second CONNECT")
            return self._connect(buf, p, end)
        if self.version is None:
            raise protocol_error(f"{name} before CONNECT")
        v5 = self.version == MQTT_5
        if ptype in _ACK_TYPES:
            pid, q = read_u16(buf, p, end)
            if not pid:
                raise protocol_error(f"{name} with packet identifier 0")
            if q == end:
                return _ACK_TYPES[ptype](pid)
            if not v5:
                raise malformed(f"{name} longer than 2 bytes")
            code = buf[q]
            if code not in _ACK_CODES[ptype]:
                raise malformed(f"{name} with reason code 0x{code:02x}")
            props = NO_PROPERTIES
            if q + 1 < end:
                props = self._props_to_end(buf, q + 1, end, ptype)
            return _ACK_TYPES[ptype](pid, code, props)
        if ptype == PUBLISH:  # reached only before CONNECT
            raise protocol_error("PUBLISH before CONNECT")
        if ptype in (PINGREQ, PINGRESP):
            if p != end:
                raise malformed(f"{name} with a body")
            return _PINGREQ if ptype == PINGREQ else _PINGRESP
        if ptype == SUBSCRIBE:
            return self._subscribe(buf, p, end, v5)
        if ptype == UNSUBSCRIBE:
            pid, p = self._packet_id(buf, p, end, name)
            props = NO_PROPERTIES
            if v5:
                props, p = read_properties(buf, p, end, UNSUBSCRIBE)
            filters: list[str] = []
            while p < end:
                f, p = read_string(buf, p, end)
                filters.append(f)
            if not filters:
                raise protocol_error("UNSUBSCRIBE without a topic filter")
            return Unsubscribe(pid, tuple(filters), props)
        if ptype in (DISCONNECT, AUTH):
            if p == end:
                return Disconnect() if ptype == DISCONNECT else Auth()
            if not v5:
                raise malformed("DISCONNECT with a body")
            code = buf[p]
            if code not in (reasons.DISCONNECT_CODES if ptype == DISCONNECT else reasons.AUTH_CODES):
                raise malformed(f"{name} with reason code 0x{code:02x}")
            props = self._props_to_end(buf, p + 1, end, ptype) if p + 1 < end else NO_PROPERTIES
            return Disconnect(code, props) if ptype == DISCONNECT else Auth(code, props)
        if ptype == CONNACK:
            return self._connack(buf, p, end, v5)
        # SUBACK, UNSUBACK
        pid, p = self._packet_id(buf, p, end, name)
        if ptype == UNSUBACK and not v5:
            if p != end:
                raise malformed("UNSUBACK longer than 2 bytes")
            return UnsubAck(pid)
        props = NO_PROPERTIES
        if v5:
            props, p = read_properties(buf, p, end, ptype)
        codes = tuple(buf[p:end])
        valid = (reasons.SUBACK_CODES if v5 else reasons.V3_SUBACK_CODES) if ptype == SUBACK \
            else reasons.UNSUBACK_CODES
        if not codes or not valid.issuperset(codes):
            raise malformed(f"{name} without valid reason codes")
        return SubAck(pid, codes, props) if ptype == SUBACK else UnsubAck(pid, codes, props)

    @staticmethod
    def _packet_id(buf: bytes, p: int, end: int, name: str) -> tuple[int, int]:
        pid, p = read_u16(buf, p, end)
        if not pid:
            raise protocol_error(f"{name} with packet identifier 0")
        return pid, p

    @staticmethod
    def _props_to_end(buf: bytes, p: int, end: int, ptype: int) -> Properties:
        props, p = read_properties(buf, p, end, ptype)
        if p != end:
            raise malformed(f"{_NAMES[ptype]} has bytes after its properties")
        return props

    def _connect(self, buf: bytes, p: int, end: int) -> Connect:
        name, p = read_string(buf, p, end)
        if p >= end:
            raise malformed("CONNECT without a protocol level")
        level = buf[p]
        if name != "MQTT":
            if name == "MQIsdp":  # MQTT 3.1: refused with the "unacceptable protocol version" answer
                raise PacketError(reasons.UNSUPPORTED_PROTOCOL_VERSION, "MQTT 3.1 is not supported")
            raise protocol_error(f"CONNECT with protocol name {name!r}")
        if level not in (MQTT_311, MQTT_5):
            raise PacketError(reasons.UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol level {level}")
        # known from here on, so the session can refuse even a malformed CONNECT in its dialect
        self.version = level
        v5 = level == MQTT_5
        if p + 4 > end:
            raise malformed("CONNECT truncated")
        flags = buf[p + 1]
        keepalive = (buf[p + 2] << 8) | buf[p + 3]
        p += 4
        if flags & 0x01:
            raise malformed("CONNECT reserved flag set")
        has_will = flags & 0x04
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        if will_qos == 3:
            raise malformed("CONNECT will QoS 3")
        if not has_will and (will_qos or will_retain):
            raise malformed("CONNECT will QoS or retain without a will")
        if not v5 and flags & 0x40 and not flags & 0x80:
            raise malformed("CONNECT password without a user name")
        props = NO_PROPERTIES
        if v5:
            props, p = read_properties(buf, p, end, CONNECT)
        client_id, p = read_string(buf, p, end)
        will = None
        if has_will:
            wprops = NO_PROPERTIES
            if v5:
                wprops, p = read_properties(buf, p, end, WILL)
            wtopic, p = read_string(buf, p, end)
            if not wtopic:
                raise protocol_error("CONNECT will topic is empty")
            if "+" in wtopic or "#" in wtopic:
                raise protocol_error("CONNECT will topic contains a wildcard")
            wpayload, p = read_binary(buf, p, end)
            will = Will(wtopic, wpayload, will_qos, will_retain, wprops)
        username = password = None
        if flags & 0x80:
            username, p = read_string(buf, p, end)
        if flags & 0x40:
            password, p = read_binary(buf, p, end)
        if p != end:
            raise malformed("CONNECT has bytes after its payload")
        return Connect(level, client_id, bool(flags & 0x02), keepalive, username, password, will, props)

    def _connack(self, buf: bytes, p: int, end: int, v5: bool) -> ConnAck:
        if p + 2 > end:
            raise malformed("CONNACK truncated")
        ack, code = buf[p], buf[p + 1]
        if ack & 0xFE:
            raise malformed("CONNACK reserved flags set")
        if code not in (reasons.CONNACK_CODES if v5 else reasons.V3_CONNACK_CODES):
            raise malformed(f"CONNACK with reason code 0x{code:02x}")
        props = NO_PROPERTIES
        if v5:
            props = self._props_to_end(buf, p + 2, end, CONNACK)
        elif p + 2 != end:
            raise malformed("CONNACK longer than 2 bytes")
        return ConnAck(bool(ack), code, props)

    def _subscribe(self, buf: bytes, p: int, end: int, v5: bool) -> Subscribe:
        pid, p = self._packet_id(buf, p, end, "SUBSCRIBE")
        props = NO_PROPERTIES
        if v5:
            props, p = read_properties(buf, p, end, SUBSCRIBE)
        subs: list[Subscription] = []
        while p < end:
            f, p = read_string(buf, p, end)
            if p >= end:
                raise malformed("SUBSCRIBE filter without options")
            opts = buf[p]
            p += 1
            qos = opts & 3
            if qos == 3:
                raise malformed("SUBSCRIBE with QoS 3")
            if not v5:
                if opts & 0xFC:
                    raise malformed("SUBSCRIBE reserved option bits set")
                subs.append(Subscription(f, qos))
                continue
            if opts & 0xC0:
                raise malformed("SUBSCRIBE reserved option bits set")
            rh = (opts >> 4) & 3
            if rh == 3:
                raise protocol_error("SUBSCRIBE with retain handling 3")
            no_local = bool(opts & 0x04)
            if no_local and f.startswith("$share/"):
                raise protocol_error("SUBSCRIBE with no-local on a shared subscription")
            subs.append(Subscription(f, qos, no_local, bool(opts & 0x08), rh))
        if not subs:
            raise protocol_error("SUBSCRIBE without a topic filter")
        return Subscribe(pid, tuple(subs), props)


def _long_length(buf: bytes, p: int, n: int) -> tuple[int, int]:
    """A remaining length of 2-4 bytes at buf[p:]: (length, body start), or (0, -1) if not all in."""
    value = 0
    shift = 0
    for i in range(4):
        if p + i >= n:
            return 0, -1
        b = buf[p + i]
        if b == 0 and i:
            raise malformed("remaining length not minimally encoded")
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, p + i + 1
        shift += 7
    raise malformed("remaining length longer than 4 bytes")

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "LocalProtocolError", "MqttParser", "encode_publish", "serialize"]
