"""One MQTT client connection on asyncio: bytes -> MqttParser events -> router; router -> PUBLISH.

To the router a session is a `routing.contract.Connection` and each (filter, subject) pair of its
subscriptions a `routing.contract.Subscription`. The session is the same for 3.1.1 and 5.0: it
writes one event and the writer drops what a 3.1.1 packet cannot carry.

Acknowledgements promise durability: PUBACK (QoS 1) and PUBREC (QoS 2) are written only once the log
batch holding the message (and its retained copy) is on disk; the acks of one read go out in one
write from the commit's callbacks. A run of plain PUBLISHes to one topic (codec `PublishRun`) is one
`Router.publish_many`, and each subscriber's frames for it are built in one pass (`deliver_many`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from robustmq.frontends.inbound import ReadTurns
from robustmq.frontends.mqtt import reasons
from robustmq.frontends.mqtt.codec import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_PACKET_SIZE_LIMIT,
    MqttParser,
    serialize,
)
from robustmq.frontends.mqtt.mapping import (
    H_CORRELATION,
    NO_MESSAGE_PROPERTIES,
    delivery_topic,
    filter_subjects,
    headers_to_properties,
    properties_to_headers,
    publish_subject,
)
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
    UnsubAck,
    Unsubscribe,
    Will,
)
from robustmq.frontends.mqtt.packets import Subscription as SubRequest
from robustmq.frontends.mqtt.persistent import MAX_QUEUED, MAX_SESSION_EXPIRY_S, Entry, SessionState
from robustmq.frontends.mqtt.properties import NO_PROPERTIES, Properties, encode_properties
from robustmq.frontends.mqtt.subscriptions import MqttSubscription, Outgoing
from robustmq.frontends.mqtt.topics import SHARE_PREFIX, split_shared, valid_topic_filter
from robustmq.frontends.mqtt.writer import encode_publish, fixed_header
from robustmq.frontends.outbound import BufferedConnection
from robustmq.routing.contract import Headers, Receipt, Refusal, RefusalKind
from robustmq.routing.subjects import subject_matches

if TYPE_CHECKING:
    from robustmq.frontends.mqtt.server import MqttServer

log = logging.getLogger("robustmq.mqtt")

MAX_INFLIGHT = 1024  # unacknowledged QoS 1/2 messages towards one client (less if its Receive Maximum is)
# and their payload bytes: a message enters the window only while less than this is unacknowledged
# (at least one always can), so a client that reads but never acknowledges holds at most about this
# much; what waits behind the window is counted against --max-pending and --max-pending-total, as
# mosquitto's max_inflight_bytes bounds its window
INFLIGHT_MAX_BYTES = 1 << 20
MAX_REQUESTS = 1024  # v5 requests to mq9 with Correlation Data awaiting their answer, per connection
# why the server closed a connection, in nats-server's words (its ClosedState names), as
# /connz?state=closed shows the closed connections of every protocol
_CLOSE_REASONS = {
    reasons.KEEP_ALIVE_TIMEOUT: "Stale Connection",
    reasons.SESSION_TAKEN_OVER: "Duplicate Client ID",
    reasons.SERVER_SHUTTING_DOWN: "Server Shutdown",
}
INBOUND_RECEIVE_MAXIMUM = 1024  # QoS 1/2 publishes a v5 client may have unacknowledged towards us
TOPIC_ALIAS_MAXIMUM = 64  # inbound topic aliases a v5 client may use
RETRY_S = 20.0  # a 3.1.1 QoS 1/2 message unacknowledged this long is sent again with DUP
KEEPALIVE_GRACE = 1.5  # spec 3.1.2.10: no packet for 1.5 x keepalive closes the connection
CONNECT_TIMEOUT_S = 10.0  # an accepted socket that sends no CONNECT in this time is closed
# after a protocol error, what the client still sends is read and dropped for at most this long
# before the socket closes (see _linger)
LINGER_S = 1.0
# a message that did not come from MQTT (NATS, mq9) has no QoS of its own: it is in the log, so it is
# delivered at least once to a subscriber that asked for QoS 1 or 2
FOREIGN_QOS = 1
# retained messages a wildcard SUBSCRIBE matches go out a page per loop turn, and wait while the
# client is behind (its socket backlog over RETAINED_PAUSE_BYTES, or publishes queued behind its
# inflight window): a filter matching a million retained topics neither stalls other clients nor
# piles up the client's backlog until it is cut as a slow consumer
RETAINED_PAGE = 1000
RETAINED_PAUSE_BYTES = 256 * 1024
RETAINED_WAIT_S = 0.01
ROUTE_CACHE_SIZE = 1024  # topic -> subject mappings kept per connection (devices repeat their topics)
_PUBACK = b"\x40\x02"  # a PUBACK's fixed header; the packet id follows
ASSIGNED_ID_PREFIX = "auto-"


class MqttSession(ReadTurns, BufferedConnection):
    """One MQTT client connection; to the router, a `routing.contract.Connection`."""

    protocol = "mqtt"
    no_echo = False  # v5 no-local is per subscription: see deliver()

    def __init__(self, server: MqttServer) -> None:
        self.server = server
        self.router = server.router
        cfg = server.cfg
        self.parser = MqttParser(max_packet_size=min(MAX_PACKET_SIZE_LIMIT,
                                                     max(DEFAULT_MAX_PACKET_SIZE, cfg.max_payload + 0x20000)),
                                 runs=True)
        self._init_outbound(server.budget, cfg.max_pending)
        self._init_read_turns()
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop  # set in connection_made
        self.cid = 0
        self.name = ""  # the client id
        self.lang = ""
        self.version = ""  # "3.1.1" or "5.0", for /connz
        self.proto = MQTT_311
        self.connected = False
        self.closed = False
        self.close_reason = ""  # why it closed (/connz?state=closed)
        self.keepalive = 0
        self.will: Will | None = None
        self.subs: dict[str, MqttSubscription] = {}  # sid -> subscription (monitoring reads this)
        self._filters: dict[str, list[MqttSubscription]] = {}  # filter as written -> its subscriptions
        self._aliases: dict[int, str] = {}
        self._qos2_in: set[int] = set()  # QoS 2 packet ids received and not yet released
        self._inflight: dict[int, Outgoing] = {}
        # packet ids in _inflight whose resend (on reconnect) waits for room in the client's Receive
        # Maximum: a resumed session may owe more than its new connection allows in flight (4.9)
        self._unsent: dict[int, None] = {}
        self._queue: deque[Outgoing] = deque()  # waiting for room in the inflight window
        self._queued_bytes = 0
        self._inflight_bytes = 0  # payload bytes in _inflight (INFLIGHT_MAX_BYTES)
        self._window = MAX_INFLIGHT
        self._max_out_packet = MAX_PACKET_SIZE_LIMIT
        self._next_pid = 1
        # topic -> (subject or None, whether a run of PUBLISHes to it can go as one publish_many)
        self._routes: dict[str, tuple[str | None, bool]] = {}
        # v5 requests to a subject owner (mq9) that carry Correlation Data: the owner answers each on
        # a reply subject of its own (the key), which `reply` turns back into the Response Topic's
        # subject with the request's Correlation Data (MQTT 5 4.10), however the answers are ordered
        self._requests: dict[str, tuple[str, Headers]] = {}
        self._request_seq = 0
        # this read's acks (PUBACK / PUBREC bytes), each with the receipt it waits for: written once
        # durable, in the commit's own callbacks, one write per read (see _ack_when_durable_all)
        self._acks: list[tuple[Receipt | None, bytes]] = []
        self._refused: Refusal | None = None  # set by refuse() while our own publish is routed
        self._shutting_down = False
        self.state: SessionState | None = None  # a persistent session's state, while connected
        self._drain_waiting = False
        self._ended = False  # _end ran
        self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0
        self.peer: tuple[Any, ...] = ("", 0)
        self.start_time = 0.0
        self._accepted = self.last_rx = time.monotonic()

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.peer = transport.get_extra_info("peername") or ("", 0)
        self.start_time = time.time()
        self.cid = self.server.register(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.close_reason:
            self.close_reason = "Client Closed"
        self._end()

    @property
    def last_activity(self) -> float:
        """Wall clock of the last read from the client (/connz last_activity, idle)."""
        return time.time() - (time.monotonic() - self.last_rx)

    def _end(self) -> None:
        """The connection is over (the socket closed, or a protocol error closes it, _linger):
        its session goes offline or ends, its subscriptions leave the router, the will is due."""
        if self._ended:
            return
        self._ended = True
        session_expiry = 0  # the session ends with the connection unless it is persistent
        if self.state is not None:
            session_expiry = self.state.expiry
            self.detach()
        for sub in list(self.subs.values()):
            self.router.unsubscribe(sub)
        self.subs.clear()
        self.router.connection_closed(self)
        self._filters.clear()
        self._out.clear()
        self._queue.clear()
        self._queued_bytes = 0
        self._inflight.clear()
        self.budget.account(self, 0)
        will, self.will = self.will, None
        if will is not None and self.connected and not self._shutting_down:
            self.server.will_on_close(self, will, session_expiry)
        self.server.unregister(self)

    # flow control: asyncio says when the transport's buffer crosses its high/low water marks; a
    # connection between the two (or with publishes queued behind a full inflight window) counts
    # against the server-wide outbound budget, which cuts the largest backlogs of any protocol first
    def pause_writing(self) -> None:
        if not self.closed:
            self.budget.account(self, self.backlog_size())

    def resume_writing(self) -> None:
        if not self.closed:
            self.budget.account(self, self._queued_bytes)

    def backlog_size(self) -> int:
        """The socket's unsent bytes and queued frames, and the publishes behind the inflight window."""
        return super().backlog_size() + (0 if self.closed else self._queued_bytes)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_in += len(data)
        self.last_rx = time.monotonic()
        try:
            for ev in self.parser.feed(data):
                if self.closed:
                    return
                if type(ev) is PublishRun:
                    self._on_publish_run(ev)
                elif type(ev) is AckRun:
                    self._on_acks(ev.packet_ids)
                else:
                    self._on_packet(ev)
        finally:
            if self._acks:
                self._ack_when_durable_all()
        if not self.closed:
            self.count_read(len(data))

    def _on_packet(self, ev: Event) -> None:
        """Every packet but the hot runs (PublishRun, AckRun: data_received takes those)."""
        if isinstance(ev, Publish):
            self._on_publish(ev)
        elif isinstance(ev, PubAck):
            self._on_ack(ev.packet_id, 1)
        elif isinstance(ev, PubRec):
            self._on_pubrec(ev)
        elif isinstance(ev, PubRel):
            self._on_pubrel(ev.packet_id)
        elif isinstance(ev, PubComp):
            self._on_ack(ev.packet_id, 2)
        elif isinstance(ev, PingReq):
            self.write(b"\xd0\x00")
        elif isinstance(ev, Subscribe):
            self._on_subscribe(ev)
        elif isinstance(ev, Unsubscribe):
            self._on_unsubscribe(ev)
        elif isinstance(ev, Connect):
            self._on_connect(ev)
        elif isinstance(ev, Disconnect):
            if ev.properties.session_expiry_interval and self.state is None and self.proto == MQTT_5:
                # 3.14.2.2.2: a session that had expiry 0 cannot be given one now; as any protocol
                # error this keeps the will (mosquitto does the same)
                self._protocol_error(reasons.PROTOCOL_ERROR, "DISCONNECT sets a session expiry after 0")
                return
            if ev.reason_code != reasons.DISCONNECT_WITH_WILL:
                self.will = None  # a normal disconnect discards the will (spec 3.14.4)
            sei = ev.properties.session_expiry_interval
            if sei is not None and self.state is not None:  # v5: the client changes its expiry
                self.state.expiry = min(sei, MAX_SESSION_EXPIRY_S)
            self.close_reason = "Client Closed"
            self._close(None)
        elif isinstance(ev, ProtocolError):
            self._protocol_error(ev.reason_code, ev.text)
        elif isinstance(ev, Auth):  # enhanced authentication is not offered in CONNACK
            self._protocol_error(reasons.PROTOCOL_ERROR, "AUTH without an authentication method")
        elif isinstance(ev, PingResp):  # pragma: no cover - the server parser never yields it
            pass

    # ------------------------------------------------------------------ connect
    def _on_connect(self, ev: Connect) -> None:
        self.proto = ev.version
        self.version = "5.0" if ev.version == MQTT_5 else "3.1.1"
        v5 = ev.version == MQTT_5
        srv = self.server
        if ev.properties.authentication_method is not None:
            self._refuse_connect(reasons.BAD_AUTHENTICATION_METHOD)
            return
        if srv.auth_required and not srv.check_auth(ev.username, ev.password):
            anonymous = ev.username is None and ev.password is None
            self._refuse_connect(reasons.NOT_AUTHORIZED if anonymous else reasons.BAD_USER_NAME_OR_PASSWORD)
            return
        client_id = ev.client_id
        assigned: str | None = None
        if not client_id:
            if not v5 and not ev.clean_start:  # spec 3.1.3.1: 3.1.1 needs an id to keep a session by
                self._refuse_connect(reasons.CLIENT_IDENTIFIER_NOT_VALID)
                return
            client_id = assigned = ASSIGNED_ID_PREFIX + secrets.token_hex(10)
        self.name = client_id
        self.keepalive = ev.keepalive
        self.will = ev.will
        self.connected = True
        props = NO_PROPERTIES
        if v5:
            p = ev.properties
            if p.receive_maximum:
                self._window = min(p.receive_maximum, MAX_INFLIGHT)
            if p.maximum_packet_size:
                self._max_out_packet = p.maximum_packet_size
            props = Properties(assigned_client_identifier=assigned, receive_maximum=INBOUND_RECEIVE_MAXIMUM,
                               topic_alias_maximum=TOPIC_ALIAS_MAXIMUM,
                               maximum_packet_size=self.parser.max_packet_size)
        srv.cancel_will(client_id)  # a new connection before the Will Delay Interval passed (3.1.3-9)
        present = self._take_session(client_id, ev)
        srv.claim(client_id, self)
        self.send(ConnAck(present, reasons.SUCCESS, props))
        if self.state is not None:
            self._resend()

    def _take_session(self, client_id: str, ev: Connect) -> bool:
        """Find, discard or make this client's persistent session; whether one was present."""
        srv = self.server
        st = srv.sessions.get(client_id)
        if st is not None and st.live is not None and st.live is not self:
            st.live.detach()  # the connection being taken over leaves the session offline
            st = srv.sessions.get(client_id)
        if ev.version == MQTT_5:
            expiry = ev.properties.session_expiry_interval or 0
        else:
            expiry = 0 if ev.clean_start else MAX_SESSION_EXPIRY_S
        if st is not None and ev.clean_start:  # clean start discards the stored session
            del srv.sessions[client_id]
            st.drop()
            st = None
        present = st is not None
        if st is None:
            if expiry <= 0:
                return False
            st = SessionState(srv, client_id, ev.version, expiry)
            srv.sessions[client_id] = st
        st.version = ev.version
        st.expiry = min(expiry, MAX_SESSION_EXPIRY_S)
        self.attach(st)
        return present

    def attach(self, st: SessionState) -> None:
        """Take over the session's subscriptions (they stay in the router; only their owner
        changes) and its queue."""
        self.state = st
        st.live = self
        self.subs = st.subs
        self._filters = st.filters
        self._qos2_in = st.qos2_in  # inbound QoS 2 awaiting PUBREL is session state (4.3.3)
        owned = []
        for sub in st.subs.values():
            sub.conn = self
            if self.router.owned(sub.subject):
                owned.append(sub)
        st.expires_at = 0.0
        st.save()
        for sub in owned:
            # a mailbox subscription (mq9): nothing was queued for it while the client was away;
            # subscribing again replays the mailbox (critical, urgent, normal, low; no deleted or
            # expired message), as every mq9 subscribe does
            self.router.unsubscribe(sub)
            self.router.subscribe(sub)

    def detach(self) -> None:
        """The connection ends: its persistent session goes offline (or ends, expiry 0)."""
        st, self.state = self.state, None
        if st is None:
            return
        inflight, self._inflight = self._inflight, {}
        self._inflight_bytes = 0
        self._unsent = {}
        self.subs, self._filters = {}, {}
        self._qos2_in = set()  # the session keeps its own (st.qos2_in)
        if self._shutting_down:  # the log closes next; what matters is already stored
            return
        srv = self.server
        if st.expiry <= 0:
            st.live = None
            if srv.sessions.get(st.client_id) is st:
                del srv.sessions[st.client_id]
            st.drop()
            return
        st.inflight = inflight
        st.go_offline()

    def _resend(self) -> None:
        """On reconnect: unacknowledged messages again with DUP (spec 4.4), then the queue."""
        st = self.state
        assert st is not None
        now = time.monotonic()
        now_ms = _now_ms()
        v5 = self.proto == MQTT_5
        inflight, st.inflight = st.inflight, {}
        for pid, out in inflight.items():
            if not out.released and self._owned(out.topic):
                if out.seq:  # a mailbox message: the subscription's replay sends it again
                    st.remove(out.seq)
                continue
            if out.expires_ms and not out.released:
                left_ms = out.expires_ms - now_ms
                if left_ms <= 0:  # its Message Expiry passed while the client was away (as mosquitto)
                    if out.seq:
                        st.remove(out.seq)
                    continue
                if v5:  # resent with what is left of it (MQTT 5 3.3.2.3.3)
                    out.props = out.props._replace(message_expiry_interval=(left_ms + 999) // 1000)
            self._inflight[pid] = out
            self._inflight_bytes += len(out.payload)
            out.sent_at = now
            if out.released:
                self.send(PubRel(pid))
            elif len(self._inflight) - len(self._unsent) > self._window:
                # over this connection's Receive Maximum (3.3.4-9): resent as acks make room
                self._unsent[pid] = None
            else:
                self._write_publish(out.topic, out.payload, out.qos, out.retain, True, pid, out.props)
        self._drain_queue()

    def _send_unsent(self) -> None:
        """Resend (DUP) the unacknowledged messages of a resumed session that waited for room in the
        Receive Maximum, oldest first; the client may have acknowledged some meanwhile."""
        inflight, unsent = self._inflight, self._unsent
        for pid in list(unsent):
            out = inflight.get(pid)
            if out is None or out.released:  # acknowledged (PUBACK, PUBREC) without the resend
                del unsent[pid]
        while unsent and len(inflight) - len(unsent) < self._window:
            pid = next(iter(unsent))
            del unsent[pid]
            out = inflight[pid]
            out.sent_at = time.monotonic()
            self._write_publish(out.topic, out.payload, out.qos, out.retain, True, pid, out.props)

    def _refuse_connect(self, code: int) -> None:
        self.send(ConnAck(False, code))
        self.will = None
        if code in (reasons.BAD_USER_NAME_OR_PASSWORD, reasons.NOT_AUTHORIZED,
                    reasons.BAD_AUTHENTICATION_METHOD):
            self.close_reason = "Authentication Failure"
        self._close(None)

    # ------------------------------------------------------------------ inbound publish
    def _on_publish(self, ev: Publish) -> None:
        self.msgs_in += 1
        topic, props, qos, pid = ev.topic, ev.properties, ev.qos, ev.packet_id
        if props.topic_alias is not None:
            alias = props.topic_alias
            if not 0 < alias <= TOPIC_ALIAS_MAXIMUM:
                self._protocol_error(reasons.TOPIC_ALIAS_INVALID, f"topic alias {alias}")
                return
            if topic:
                self._aliases[alias] = topic
            else:
                topic = self._aliases.get(alias, "")
                if not topic:
                    self._protocol_error(reasons.PROTOCOL_ERROR, f"unknown topic alias {alias}")
                    return
        if qos == 2 and pid in self._qos2_in:
            # the client sent it again before our PUBREC reached it: acknowledge, do not route twice
            self._ack_when_durable(None, PubRec(pid))
            return
        if qos and len(self._qos2_in) >= INBOUND_RECEIVE_MAXIMUM and self.proto == MQTT_5:
            self._protocol_error(reasons.RECEIVE_MAXIMUM_EXCEEDED, "too many unacknowledged QoS 2 publishes")
            return
        subject, plain = self._routes.get(topic) or self._route_of(topic)
        code = reasons.SUCCESS
        receipt: Receipt | None = None
        if subject is None:
            code = reasons.TOPIC_NAME_INVALID  # 3.1.1 cannot say it: acknowledged and dropped
        else:
            headers = None if props is NO_PROPERTIES else properties_to_headers(props, _now_ms())
            reply = publish_subject(props.response_topic) if props.response_topic else None
            if reply is not None and props.correlation_data is not None and headers and not plain:
                reply = self._request_reply(reply, headers)  # a request to mq9: answered by the broker
            receipt = self._route(topic, subject, ev.payload, qos, ev.retain, headers, reply)
            if self._refused is not None:
                code = refusal_code(self._refused)
                self._refused = None
        if qos == 1:
            self._ack_when_durable(receipt, PubAck(pid, code))
        elif qos == 2:
            if code < 0x80 or self.proto != MQTT_5:  # (3.1.1 PUBREC has no reason code: a normal flow)
                if self.state is not None:  # part of the session state: kept across reconnects
                    self.state.qos2_received(pid)
                    if receipt is not None:
                        receipt = self._covering(receipt)
                else:
                    self._qos2_in.add(pid)
            self._ack_when_durable(receipt, PubRec(pid, code))

    def _route_of(self, topic: str) -> tuple[str | None, bool]:
        """The subject of `topic` (None: it has none), and whether it is a plain one that a run of
        PUBLISHes may go to at once (not a subject owner's, such as mq9's, which answers each)."""
        subject = publish_subject(topic)
        plain = subject is not None and not self.router.owned(subject)
        if len(self._routes) >= ROUTE_CACHE_SIZE:
            self._routes.clear()
        route = self._routes[topic] = (subject, plain)
        return route

    def _on_publish_run(self, ev: PublishRun) -> None:
        """Consecutive QoS 0/1 PUBLISHes to one topic, no retain, no properties: one publish_many
        (one route lookup, one log append, one delivery call per subscriber) and, at QoS 1, their
        PUBACKs as one piece of bytes once the append is durable."""
        topic, qos, payloads = ev.topic, ev.qos, ev.payloads
        route = self._routes.get(topic)
        subject, plain = route or self._route_of(topic)
        if not plain:  # no subject, or a subject owner's: each message on its own, as it came
            pids = ev.packet_ids or [b"\x00\x00"] * len(payloads)
            for payload, pid in zip(payloads, pids):
                if self.closed:
                    return
                self._on_publish(Publish(topic, payload, qos, False, False, (pid[0] << 8) | pid[1]))
            return
        if qos and self._qos2_in and len(self._qos2_in) >= INBOUND_RECEIVE_MAXIMUM and self.proto == MQTT_5:
            self._protocol_error(reasons.RECEIVE_MAXIMUM_EXCEEDED, "too many unacknowledged QoS 2 publishes")
            return
        assert subject is not None
        self.msgs_in += len(payloads)
        srv = self.server
        saved = srv.publishing, srv.publish_qos, srv.publish_retain
        srv.publishing, srv.publish_qos, srv.publish_retain = self, qos, False
        try:
            receipt = self.router.publish_many(subject, payloads, self)
        finally:
            srv.publishing, srv.publish_qos, srv.publish_retain = saved
        if qos:  # PUBACK, short form (success), for each packet id in order
            self._queue_ack(receipt, _PUBACK + _PUBACK.join(ev.packet_ids))

    def _owned(self, topic: str) -> bool:
        """Whether `topic`'s subject belongs to a subject owner (mq9's `$mq9.AI.`): the owner keeps
        what is sent there (a mailbox stores the message itself), so the retained store never does,
        and nothing retained under it is delivered (a mail_id is a capability: a `$mq9/#` subscriber
        must never learn one from a retained copy)."""
        owners = self.router.owners
        if not owners or not any(topic[:1] == o.prefix[:1] for o in owners):
            return False
        subject = publish_subject(topic)  # (the first-character test above spares most topics this)
        return subject is not None and self.router.owned(subject)

    def _route(self, topic: str, subject: str, payload: bytes, qos: int, retain: bool,
               headers: Headers | None, reply: str | None) -> Receipt:
        """Route one publish (a PUBLISH or a will); `self._refused` says whether it was refused.
        The retained copy is set (or cleared) only for a publish that was accepted and whose
        subject no owner claims, in the batch of the message: the receipt returned covers both."""
        srv = self.server
        self._refused = None
        saved = srv.publishing, srv.publish_qos, srv.publish_retain
        srv.publishing, srv.publish_qos, srv.publish_retain = self, qos, retain
        try:
            receipt = self.router.publish(subject, reply, headers, payload, self)
        finally:
            srv.publishing, srv.publish_qos, srv.publish_retain = saved
        if retain and self._refused is None and not self._owned(topic):
            srv.retained.set(topic, payload, qos, headers, reply)
            receipt = self._covering(receipt)
        return receipt

    def _covering(self, receipt: Receipt) -> Receipt:
        """`receipt`, or one durable only once the current batch is (what was written after the
        message, such as its retained copy, may be in a later batch than the message)."""
        if receipt.stream is None:  # an owner's or ephemeral: its ack waits for the current batch anyway
            return receipt
        log_ = self.router.log
        return Receipt(log_, log_.batch_seq, receipt.stream, receipt.offset, receipt.count, receipt.delivered)

    def _ack_when_durable(self, receipt: Receipt | None, ack: Packet) -> None:
        """Write `ack` once everything this publish wrote (message, retained copy) is durable."""
        self._queue_ack(receipt, serialize(ack, self.proto))

    def _queue_ack(self, receipt: Receipt | None, data: bytes) -> None:
        """Ack bytes to write once the receipt is durable (at the end of the read)."""
        self._acks.append((receipt, data))

    def _ack_when_durable_all(self) -> None:
        """The end of a read: its acks go out once what each acknowledges is durable, written from
        the commit's own callbacks (not a later loop turn), in one write for the read: a single
        group (a run of PUBLISHes) writes itself; several are queued one by one, and one more
        callback, on the latest batch, writes them all."""
        acks, self._acks = self._acks, []
        if len(acks) == 1:
            receipt, data = acks[0]
            self._when_durable(receipt, functools.partial(self._write_ack, data))
            return
        for receipt, data in acks:
            self._when_durable(receipt, functools.partial(self._add_ack, data))
        self.router.log.on_commit(self.router.write_seq, self._flush, self._flush_anyway)

    def _when_durable(self, receipt: Receipt | None, callback: Callable[[], Any]) -> None:
        if receipt is not None and receipt.stream is not None:
            receipt.on_durable(callback)
        else:  # an owner (mq9) or the retained store appended it, or nothing did: the current batch
            self.router.on_durable(self.router.write_seq, callback)

    def _add_ack(self, data: bytes) -> None:
        if not self.closed:
            self._out.append(data)
            self._out_size += len(data)

    def _write_ack(self, data: bytes) -> None:
        if not self.closed:
            self._out.append(data)
            self._out_size += len(data)
            self._flush()

    def _on_pubrel(self, pid: int) -> None:
        st = self.state
        if st is not None:
            # the release is stored; PUBCOMP waits for it, so a restart never takes a later new
            # PUBLISH with this packet id for a resent one
            known = st.qos2_released(pid)
            self._ack_when_durable(None, PubComp(pid, reasons.SUCCESS if known else
                                                 reasons.PACKET_IDENTIFIER_NOT_FOUND))
            return
        known = pid in self._qos2_in
        self._qos2_in.discard(pid)
        self.send(PubComp(pid, reasons.SUCCESS if known else reasons.PACKET_IDENTIFIER_NOT_FOUND))

    def publish_will(self, will: Will) -> None:
        """Route this (closed) connection's will now; the server decides when (Will Delay)."""
        subject = publish_subject(will.topic)
        if subject is None:
            return
        headers = properties_to_headers(will.properties, _now_ms())
        response = will.properties.response_topic
        reply = publish_subject(response) if response else None  # sent unaltered (3.3.2-15)
        try:
            self._route(will.topic, subject, will.payload, will.qos, will.retain, headers, reply)
        except Exception:  # a will must not break the close of its connection
            log.exception("publishing the will of %s failed", self.name)

    # ------------------------------------------------------------------ subscriptions
    def _on_subscribe(self, ev: Subscribe) -> None:
        sub_id = ev.properties.subscription_ids[0] if ev.properties.subscription_ids else None
        codes: list[int] = []
        retained: list[tuple[MqttSubscription, str]] = []
        for req in ev.subscriptions:
            codes.append(self._add_subscription(req, sub_id, retained))
        self.send(SubAck(ev.packet_id, tuple(codes)))
        for sub, inner in retained:  # after the SUBACK (spec 3.8.4), the first page at once
            self._send_retained(sub, inner, None)

    def _send_retained(self, sub: MqttSubscription, inner: str, after: bytes | None) -> None:
        """One page of the retained messages filter `inner` matches; the next page goes in a later
        loop turn, once the client has taken what it was sent."""
        if self.closed or self.subs.get(sub.sid) is not sub:
            return  # gone, or the filter was unsubscribed or replaced meanwhile
        t = self.transport
        if after is not None and (self._queue or (self.state is not None and self.state.pending) or (
                t is not None and t.get_write_buffer_size() > RETAINED_PAUSE_BYTES)):
            self._loop.call_later(RETAINED_WAIT_S, self._send_retained, sub, inner, after)
            return
        page, after = self.server.retained.page(inner, after, RETAINED_PAGE)
        for topic, msg in page:
            if self._owned(topic):
                # a copy stored before owners' topics were kept out of the store (an mq9 mailbox
                # topic: its mail_id is a capability): never delivered
                continue
            how_props = self._props(msg.headers, msg.reply, sub)
            if how_props is not None:
                self._send_publish(topic, msg.payload, min(msg.qos, sub.qos), True, *how_props,
                                   headers=msg.headers)
                if self.closed:
                    return
        if after is not None:
            self._loop.call_soon(self._send_retained, sub, inner, after)

    def _add_subscription(self, req: SubRequest, sub_id: int | None,
                          retained: list[tuple[MqttSubscription, str]]) -> int:
        f = req.filter
        group: str | None = None
        inner = f
        if f.startswith(SHARE_PREFIX):
            shared = split_shared(f)
            if shared is None:
                return reasons.TOPIC_FILTER_INVALID
            group, inner = shared
        elif not valid_topic_filter(f):
            return reasons.TOPIC_FILTER_INVALID
        subjects = filter_subjects(inner)
        if subjects is None:
            return reasons.TOPIC_FILTER_INVALID
        existed = f in self._filters
        if existed:
            self._drop_filter(f)
        subs: list[MqttSubscription] = []
        for subject in subjects:
            sub = MqttSubscription(self, subject, group, f, inner, req, sub_id)
            self.subs[sub.sid] = sub
            refusal = self.router.subscribe(sub)
            if refusal is not None:
                del self.subs[sub.sid]
                for s in subs:
                    self.router.unsubscribe(s)
                    self.subs.pop(s.sid, None)
                return reasons.NOT_AUTHORIZED if refusal.kind is RefusalKind.PERMISSION_SUBSCRIBE \
                    else reasons.TOPIC_FILTER_INVALID
            subs.append(sub)
        self._filters[f] = subs
        if self.state is not None:
            self.state.save()
        # shared subscriptions get no retained messages (spec 4.8.2)
        if group is None and (req.retain_handling == 0 or (req.retain_handling == 1 and not existed)):
            retained.append((subs[0], inner))
        return subs[0].qos

    def _drop_filter(self, f: str) -> bool:
        subs = self._filters.pop(f, None)
        if not subs:
            return False
        for sub in subs:
            self.subs.pop(sub.sid, None)
            self.router.unsubscribe(sub)
        if self.state is not None:
            self.state.save()
        return True

    def _on_unsubscribe(self, ev: Unsubscribe) -> None:
        codes = tuple(reasons.SUCCESS if self._drop_filter(f) else reasons.NO_SUBSCRIPTION_EXISTED
                      for f in ev.filters)
        self.send(UnsubAck(ev.packet_id, codes))

    # ------------------------------------------------------------------ outbound (router -> client)
    def _how(self, sub: MqttSubscription, subject: str) -> tuple[int, bool] | None:
        """(QoS, retain flag) to deliver the message being routed to `sub` with, or None when `sub`
        does not get it (closed, a `$` subject under a leading wildcard, no-local)."""
        if self.closed or (sub.skip_dollar and subject[:1] == "$"):
            return None
        srv = self.server
        origin = srv.publishing
        if origin is not None:
            if sub.no_local and origin is self:
                return None
            qos = min(sub.qos, srv.publish_qos)
            retain = srv.publish_retain and sub.rap  # spec 3.3.1.3: live messages go without it
        else:
            qos = min(sub.qos, FOREIGN_QOS)
            retain = False
        if sub._subject is not subject:
            if subject.startswith(MAILBOX_SUBJECT):
                topic = mailbox_topic(subject, sub.filter)
            else:
                topic = delivery_topic(subject)
                if "+" in topic or "#" in topic:
                    return None  # a NATS subject no MQTT topic can name (3.3.2-2: no wildcards in a topic)
            sub.set_subject(subject, topic)
        return qos, retain

    def deliver(self, sub: MqttSubscription, subject: str, reply: str | None, headers: Headers | None,
                payload: bytes) -> None:
        how = self._how(sub, subject)
        if how is None:
            return
        qos, retain = how
        how_props = self._props(headers, reply, sub)
        if how_props is None:
            return  # its Message Expiry Interval has passed: never delivered (MQTT 5 3.3.2.3.3)
        sub.delivered += 1
        self._send_publish(sub._topic, payload, qos, retain, *how_props, headers=headers)

    def deliver_many(self, sub: MqttSubscription, subject: str, payloads: list[bytes]) -> None:
        """Several header-less, reply-less messages for `sub` (one publish_many): the frames are
        built in one pass with the subscription's topic bytes and written as one piece."""
        how = self._how(sub, subject)
        if how is None:
            return
        qos, retain = how
        if qos and self.state is not None:  # a persistent session: each message a queue entry
            self._deliver_each(sub, subject, payloads)
            return
        with_id = None if sub.sub_id is None else self._props(None, None, sub)
        props = NO_PROPERTIES if with_id is None else with_id[0]  # no headers: nothing to expire
        pb = b"" if self.proto != MQTT_5 else b"\x00" if props is NO_PROPERTIES else encode_properties(props)
        tb = sub._tb
        if self._max_out_packet < MAX_PACKET_SIZE_LIMIT and \
                5 + len(tb) + 2 + len(pb) + max(map(len, payloads)) > self._max_out_packet:
            self._deliver_each(sub, subject, payloads)  # some are too large for the client: one by one
            return
        first = 0x30 | (qos << 1) | retain
        fixed = len(tb) + len(pb) + (2 if qos else 0)
        parts: list[bytes] = []
        add = parts.append
        n = len(payloads)
        sent = n
        size = -1  # the payload size `h` (fixed header, topic) was made for: a run has one size
        h = b""
        if not qos:
            for p in payloads:
                if len(p) != size:
                    size = len(p)
                    h = sub.publish_head(first, fixed + size, pb)
                add(h)
                add(p)
        else:
            inflight = self._inflight
            if self._queue and len(inflight) < self._window and self._inflight_bytes < INFLIGHT_MAX_BYTES:
                self._send_queued()  # what waits goes first
            sent = 0 if self._queue else min(n, max(self._window - len(inflight), 0))
            if sent:
                room = INFLIGHT_MAX_BYTES - self._inflight_bytes
                nb = sum([len(p) for p in payloads[:sent]]) if sent < n else sum([len(p) for p in payloads])
                if nb - len(payloads[sent - 1]) >= room:  # the bytes fill the window first:
                    cap, sent, nb = sent, 0, 0  # each enters while less than the cap is in flight
                    while sent < cap and nb < room:
                        nb += len(payloads[sent])
                        sent += 1
                self._inflight_bytes += nb
            now = time.monotonic()
            pid = self._next_pid
            topic = sub._topic
            for p in payloads[:sent] if sent < n else payloads:
                while pid in inflight:
                    pid = pid % 0xFFFF + 1
                inflight[pid] = Outgoing(topic, p, qos, retain, props, now)
                if len(p) != size:
                    size = len(p)
                    h = sub.publish_head(first, fixed + size, b"")
                add(h)
                add(pid.to_bytes(2, "big"))
                if pb:
                    add(pb)
                add(p)
                pid = pid % 0xFFFF + 1
            self._next_pid = pid
        sub.delivered += n
        if parts:
            data = b"".join(parts)
            self.msgs_out += sent
            self.write(data)
        if sent < n:  # the inflight window is full: the rest waits, in order
            topic = sub._topic
            queue = self._queue
            for p in payloads[sent:]:
                queue.append(Outgoing(topic, p, qos, retain, props))
                self._queued_bytes += len(p) + len(topic)
            if self._queued_bytes > self.max_pending:
                self.slow_consumer()
            else:
                self.budget.account(self, self.backlog_size())

    def _deliver_each(self, sub: MqttSubscription, subject: str, payloads: list[bytes]) -> None:
        router = self.router
        cur = router.current
        try:
            for i, p in enumerate(payloads):
                if cur is not None:  # payload i is record first + i (a persistent session refers to it)
                    router.current = (cur[0], cur[1] + i)
                self.deliver(sub, subject, None, None, p)
        finally:
            router.current = cur

    def _request_reply(self, reply: str, headers: Headers) -> str:
        """The reply subject a subject owner is given for a v5 request with Correlation Data: one of
        this request's own, remembered with the Response Topic's subject and that Correlation Data
        (at most MAX_REQUESTS waiting: the oldest unanswered one is forgotten first)."""
        correlation = [(k, v) for k, v in headers if k == H_CORRELATION]
        self._request_seq += 1
        token = f"_MQTT_REQ.{self.cid}.{self._request_seq}"
        requests = self._requests
        if len(requests) >= MAX_REQUESTS:
            del requests[next(iter(requests))]
        requests[token] = (reply, correlation)
        return token

    def reply(self, subject: str, payload: bytes) -> bool:
        """A broker reply (mq9) to a v5 request's response topic: only to this connection's own
        subscription that takes it, never through the subject match; with the request's
        Correlation Data when it had some."""
        if self.closed:
            return False
        headers: Headers | None = None
        if self._requests:
            req = self._requests.pop(subject, None)
            if req is not None:
                subject, headers = req
        for sub in self.subs.values():
            if sub.queue is None and subject_matches(sub.subject, subject):
                self.deliver(sub, subject, None, headers, payload)
                return True
        return False

    def reply_many(self, subjects: list[str], payloads: list[bytes]) -> None:
        for s, p in zip(subjects, payloads):
            self.reply(s, p)

    def refuse(self, refusal: Refusal) -> None:
        """Said in the PUBACK/PUBREC of the publish being handled; otherwise MQTT has no way to say it."""
        if self.server.publishing is self:
            self._refused = refusal
        else:
            log.debug("mqtt cid=%d: %r", self.cid, refusal)

    def outbound_size(self) -> int:
        t = self.transport
        return self._out_size + self._queued_bytes + (t.get_write_buffer_size() if t is not None else 0)

    def _props(self, headers: Headers | None, reply: str | None, sub: MqttSubscription
               ) -> tuple[Properties, int] | None:
        """The v5 properties a delivery carries and its Message Expiry deadline (ms since the epoch,
        0: none; for either version); None when the message has expired."""
        if headers is None and reply is None and sub.sub_id is None:
            return NO_PROPERTIES, 0
        m = headers_to_properties(headers, _now_ms())
        if m.expired and self.server.publishing is None:
            # expired before onward delivery started. A message being routed as it is received
            # (an MQTT PUBLISH or will) is on its way at once: even a Message Expiry Interval of 0
            # reaches the subscribers connected now (sent with 0 left, as mosquitto delivers it);
            # a copy that waits (retained, queued, behind the inflight window) expires
            return None
        if self.proto != MQTT_5:
            return NO_PROPERTIES, m.expires_ms
        return Properties(payload_format_indicator=m.payload_format, message_expiry_interval=m.expiry_s,
                          content_type=m.content_type,
                          response_topic=m.response_topic or (delivery_topic(reply) if reply else None),
                          correlation_data=m.correlation_data,
                          subscription_ids=(sub.sub_id,) if sub.sub_id is not None else (),
                          user_properties=m.user), m.expires_ms

    def _send_publish(self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties,
                      expires_ms: int = 0, headers: Headers | None = None) -> None:
        """`props` as made from `headers` by `_props` (`headers` are kept by a persistent session's
        copy of a message, which is not in the log, to make its properties again when it is sent)."""
        if qos == 0:
            self._write_publish(topic, payload, 0, retain, False, 0, props)
            return
        st = self.state
        if st is not None:
            self._send_persistent(st, topic, payload, qos, retain, props, expires_ms, headers)
            return
        out = Outgoing(topic, payload, qos, retain, props)
        if len(self._inflight) >= self._window or self._inflight_bytes >= INFLIGHT_MAX_BYTES:
            out.expires_ms = expires_ms  # checked again when it leaves the queue (_send_queued)
            self._queue.append(out)
            self._queued_bytes += len(payload) + len(topic)
            if self._queued_bytes > self.max_pending:
                self.slow_consumer()
            else:
                self.budget.account(self, self.backlog_size())
            return
        self._send_inflight(out, False)

    def _send_persistent(self, st: SessionState, topic: str, payload: bytes, qos: int, retain: bool,
                         props: Properties, expires_ms: int, headers: Headers | None) -> None:
        """A QoS 1/2 message for a persistent session: stored as a queue entry (a reference to the
        record being routed, else a copy with its headers) until acknowledged, so a reconnect or a
        restart resends it with its properties, and not once its Message Expiry has passed."""
        cur = self.router.current
        entry = Entry(topic, qos, retain=retain, sub_ids=list(props.subscription_ids),
                      response=props.response_topic)
        if cur is not None:
            entry.stream, entry.offset = cur
        else:
            entry.payload = payload
            entry.headers = list(headers) if headers else None
        if st.pending or len(self._inflight) >= self._window or self._inflight_bytes >= INFLIGHT_MAX_BYTES:
            st.push(entry)  # behind what is already owed: order is kept
            self._drain_queue()
            return
        if st.count() >= MAX_QUEUED:
            st.dropped += 1
            return
        out = Outgoing(topic, payload, qos, retain, props)
        out.expires_ms = expires_ms  # a resend on reconnect carries what is left (_resend)
        pid = self._send_inflight(out, False)
        if pid in self._inflight:
            entry.pid = pid
            out.seq = st.put(entry)

    def _send_inflight(self, out: Outgoing, dup: bool, pid: int = 0) -> int:
        if not pid or pid in self._inflight:
            pid = self._next_pid
            while pid in self._inflight:
                pid = pid % 0xFFFF + 1
            self._next_pid = pid % 0xFFFF + 1
        self._inflight[pid] = out
        self._inflight_bytes += len(out.payload)
        out.sent_at = time.monotonic()
        self._write_publish(out.topic, out.payload, out.qos, out.retain, dup, pid, out.props)
        return pid

    def _write_publish(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, pid: int,
                       props: Properties) -> None:
        frame = encode_publish(topic, payload, qos, retain, dup, pid, props, self.proto)
        if len(frame) > self._max_out_packet:  # spec 3.1.2.25: too large for the client: discarded
            if self._inflight.pop(pid, None) is not None:
                self._inflight_bytes -= len(payload)
            return
        self.msgs_out += 1
        self.write(frame)

    def _on_acks(self, pids: list[int]) -> None:
        """A run of PUBACKs (success): free their packet ids, then refill the window once."""
        inflight = self._inflight
        st = self.state
        freed = False
        for pid in pids:
            out = inflight.get(pid)
            if out is not None and out.qos == 1:
                del inflight[pid]
                self._inflight_bytes -= len(out.payload)
                freed = True
                if out.seq and st is not None:
                    st.remove(out.seq)
        if freed:
            self._drain_queue()

    def _on_ack(self, pid: int, qos: int) -> None:
        out = self._inflight.get(pid)
        if out is not None and out.qos == qos:
            del self._inflight[pid]
            self._inflight_bytes -= len(out.payload)
            if out.seq and self.state is not None:
                self.state.remove(out.seq)
            self._drain_queue()

    def _on_pubrec(self, ev: PubRec) -> None:
        out = self._inflight.get(ev.packet_id)
        if out is None or out.qos != 2:
            self.send(PubRel(ev.packet_id, reasons.PACKET_IDENTIFIER_NOT_FOUND))
            return
        if ev.reason_code >= 0x80:  # the client refused it: the exchange ends here
            del self._inflight[ev.packet_id]
            self._inflight_bytes -= len(out.payload)
            if out.seq and self.state is not None:
                self.state.remove(out.seq)
            self._drain_queue()
            return
        out.released = True
        st = self.state
        if out.seq and st is not None:
            # stored before the PUBREL leaves: after a crash the PUBREL is resent, not the PUBLISH
            st.put(Entry(out.topic, 2, pid=ev.packet_id, released=True), out.seq)
            self._ack_when_durable(None, PubRel(ev.packet_id))
            return
        self.send(PubRel(ev.packet_id))

    def _drain_queue(self) -> None:
        if self._unsent:
            self._send_unsent()
        if self._queue and len(self._inflight) < self._window and self._inflight_bytes < INFLIGHT_MAX_BYTES:
            self._send_queued()
        if self._backlog:
            self.budget.account(self, self.backlog_size())
        if self.state is not None:
            self._drain_state(self.state)

    def _send_queued(self) -> None:
        """Messages waiting behind the inflight window, into its free room: packet ids, frames
        built in one pass (the fixed header and topic made once per topic and size), one write."""
        queue, inflight = self._queue, self._inflight
        room = self._window - len(inflight)
        now = time.monotonic()
        v5 = self.proto == MQTT_5
        limit = self._max_out_packet
        pid = self._next_pid
        parts: list[bytes] = []
        add = parts.append
        sent = 0
        topic = ""
        props: Properties | None = None
        key = -1
        head = pb = b""
        now_ms = 0
        while queue and room > 0 and self._inflight_bytes < INFLIGHT_MAX_BYTES:
            out = queue.popleft()
            payload = out.payload
            self._queued_bytes -= len(payload) + len(out.topic)
            if out.expires_ms:  # its Message Expiry Interval ran while it waited (MQTT 5 3.3.2.3.3)
                now_ms = now_ms or _now_ms()
                left_ms = out.expires_ms - now_ms
                if left_ms <= 0:
                    continue  # expired before onward delivery started: never delivered
                if v5:  # sent with what is left of it
                    out.props = out.props._replace(message_expiry_interval=(left_ms + 999) // 1000)
            if out.props is not props:
                props = out.props
                pb = (b"\x00" if props is NO_PROPERTIES else encode_properties(props)) if v5 else b""
                key = -1
            size = len(payload)
            k = (out.qos << 33) | (out.retain << 32) | size
            if out.topic is not topic or k != key:
                topic, key = out.topic, k
                tb = topic.encode()
                remaining = 4 + len(tb) + len(pb) + size
                head = fixed_header(0x30 | (out.qos << 1) | out.retain, remaining)
                head += len(tb).to_bytes(2, "big") + tb
            if len(head) + 2 + len(pb) + size > limit:  # spec 3.1.2.25: too large for the client: discarded
                continue
            while pid in inflight:
                pid = pid % 0xFFFF + 1
            out.sent_at = now
            inflight[pid] = out
            self._inflight_bytes += size
            add(head)
            add(pid.to_bytes(2, "big"))
            if pb:
                add(pb)
            add(payload)
            pid = pid % 0xFFFF + 1
            room -= 1
            sent += 1
        self._next_pid = pid
        if parts:
            self.msgs_out += sent
            self.write(b"".join(parts))

    def _drain_state(self, st: SessionState) -> None:
        """Send the session's queued messages while the window has room, reading each referenced
        record back from the log (one that retention dropped is skipped: spec allows the loss)."""
        before = len(st.pending)
        try:
            self._drain_state_entries(st)
        finally:
            srv = self.server  # what left the queue leaves the server-wide count (MAX_QUEUED_TOTAL)
            srv.queued_total = max(0, srv.queued_total - (before - len(st.pending)))

    def _drain_state_entries(self, st: SessionState) -> None:
        lg = self.router.log
        while st.pending and len(self._inflight) < self._window and \
                self._inflight_bytes < INFLIGHT_MAX_BYTES and not self.closed:
            seq, e = st.pending[0]
            if e.released:  # PUBRECed before a restart: only the PUBREL is owed
                st.pending.popleft()
                if e.pid in self._inflight:
                    st.remove(seq)
                    continue
                rel = Outgoing(e.topic, b"", 2, False, NO_PROPERTIES)
                rel.released, rel.seq, rel.sent_at = True, seq, time.monotonic()
                self._inflight[e.pid] = rel
                self.send(PubRel(e.pid))
                continue
            if self._owned(e.topic):  # queued by an older version for a mailbox: the replay has it
                st.pending.popleft()
                st.remove(seq)
                continue
            payload, user, headers = e.payload, e.user, e.headers
            m = None
            if e.stream is not None:
                if not lg.stream_exists(e.stream):
                    st.pending.popleft()
                    st.remove(seq)
                    continue
                stream = lg.stream(e.stream)
                if e.offset >= stream.committed:  # routed, but its batch is not written yet
                    if not self._drain_waiting:
                        self._drain_waiting = True
                        self.router.on_durable(self.router.write_seq, self._drain_later)
                    return
                recs = list(lg.read(stream, e.offset, e.offset + 1))
                if not recs or recs[0][0] != e.offset:
                    st.pending.popleft()
                    st.remove(seq)
                    continue
                rec = recs[0][1]
                payload, headers = rec.payload, rec.headers
                m = NO_MESSAGE_PROPERTIES
            if headers:  # a record's, or a copy's (written since copies keep them)
                m = headers_to_properties(headers, _now_ms())
                if m.expired:  # its Message Expiry Interval passed while the session was away
                    st.pending.popleft()
                    st.remove(seq)
                    continue
                user = list(m.user)
            st.pending.popleft()
            props = NO_PROPERTIES
            if self.proto == MQTT_5 and (user or e.sub_ids or e.response or m is not None):
                props = Properties(response_topic=m.response_topic if m is not None and m.response_topic
                                   else e.response, subscription_ids=tuple(e.sub_ids),
                                   user_properties=tuple(user or ()),
                                   payload_format_indicator=m.payload_format if m else None,
                                   message_expiry_interval=m.expiry_s if m else None,
                                   content_type=m.content_type if m else None,
                                   correlation_data=m.correlation_data if m else None)
            out = Outgoing(e.topic, payload or b"", e.qos, e.retain, props)
            out.seq = seq
            out.expires_ms = m.expires_ms if m is not None else 0
            pid = self._send_inflight(out, bool(e.pid), e.pid)
            if pid not in self._inflight:  # too large for the client: discarded
                st.remove(seq)
            elif pid != e.pid:
                e.pid = pid
                st.put(e, seq)

    def _drain_later(self) -> None:
        # called from the log's commit callback: continue on the loop, never recursively
        self._drain_waiting = False
        if not self.closed:
            self._loop.call_soon(self._drain_queue)

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> None:
        if self.closed:
            return
        if not self.connected:
            if now - self._accepted > CONNECT_TIMEOUT_S:
                self.close_reason = "Authentication Timeout"  # (nats-server's name for no CONNECT in time)
                self._close(None)
            return
        if self.keepalive and now - self.last_rx > self.keepalive * KEEPALIVE_GRACE:
            self.server.stale_connections += 1
            self._close(reasons.KEEP_ALIVE_TIMEOUT)
            return
        # 3.1.1 allows resending within a connection; v5 only on reconnect (spec 4.4)
        if self.proto == MQTT_311 and self._inflight:
            for pid, out in list(self._inflight.items()):
                if now - out.sent_at > RETRY_S and pid not in self._unsent:
                    out.sent_at = now
                    if out.released:
                        self.send(PubRel(pid))
                    else:
                        self._write_publish(out.topic, out.payload, out.qos, out.retain, True, pid, out.props)

    # ------------------------------------------------------------------ writing and closing
    def send(self, ev: Packet) -> None:
        self.write(serialize(ev, self.proto))

    def _flush_anyway(self, exc: BaseException) -> None:
        """The batch the read's acks waited on failed: acks of earlier batches may be queued."""
        self._flush()

    def slow_consumer(self) -> None:
        if self.closed:
            return
        self.server.slow_consumers += 1
        self.close_reason = "Slow Consumer (Pending Bytes)"
        log.warning("mqtt slow consumer cid=%d %s: closing", self.cid, self.peer)
        self.budget.account(self, 0)
        self._out.clear()
        self._out_size = 0
        self._queue.clear()
        self._queued_bytes = 0
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # drop the backlog: memory must not grow without bound

    def _protocol_error(self, code: int, text: str) -> None:
        log.debug("mqtt cid=%d protocol error 0x%02x: %s", self.cid, code, text)
        if not self.connected:
            if code == reasons.UNSUPPORTED_PROTOCOL_VERSION:
                self.write(serialize(ConnAck(False, code), MQTT_311))  # return code 1, in 3.1.1's form
            elif self.parser.version == MQTT_5:
                self.write(serialize(ConnAck(False, code), MQTT_5))
            self._close(None, linger=True)
        else:
            self._close(code, linger=True)

    def _close(self, reason: int | None, linger: bool = False) -> None:
        """Close after what is queued; on a v5 connection say why first (a DISCONNECT `reason`)."""
        if self.closed:
            return
        if not self.close_reason:
            self.close_reason = _CLOSE_REASONS.get(reason or 0, "Protocol Violation")
        if reason is not None and self.connected and self.proto == MQTT_5:
            self.send(Disconnect(reason))
        self._flush()
        self.closed = True
        t = self.transport
        if t is None:
            return
        if linger and t.can_write_eof():
            self._linger(t)
        else:
            t.close()

    def _linger(self, t: asyncio.Transport) -> None:
        """Close after a protocol error without a reset. The client may still be sending (the rest
        of a packet too large, read no further than its header); closing with unread bytes makes
        the kernel answer with a reset, which often destroyed the DISCONNECT 0x95 / CONNACK that
        says why. So the reply is followed by a FIN, what still comes is read and dropped
        (data_received ignores a closed session), and the socket closes when the client closes it
        or LINGER_S later. The session ends now."""
        t.write_eof()
        if self._read_paused:
            self._read_paused = False
            t.resume_reading()
        self._loop.call_later(LINGER_S, t.abort)
        self._end()

    def taken_over(self) -> None:
        """Another connection CONNECTed with this client id (spec 3.1.4): this one goes."""
        self._close(reasons.SESSION_TAKEN_OVER)

    def shutdown(self) -> None:
        self._shutting_down = True  # the log closes right after: wills are not published now
        self._close(reasons.SERVER_SHUTTING_DOWN)


MAILBOX_SUBJECT = "$mq9.AI.MAILBOX.MSG."
MAILBOX_TOPIC = "$mq9/AI/MAILBOX/MSG/"
_LEVELS = frozenset(("critical", "urgent", "normal", "low", "high"))


def mailbox_topic(subject: str, filter_: str) -> str:
    """The topic an mq9 mailbox message is delivered on to an MQTT subscription: the mail_id as the
    subscriber spelled it in its filter (a dotted public name stays one level, `q.jobs`, or is
    several, `q/jobs`, whichever it subscribed with), then the priority as a level when the filter
    has one after the mail_id (`…/<id>/+` gets `…/<id>/normal` too), so the topic always matches
    the filter it came through."""
    if filter_.startswith(SHARE_PREFIX):  # `$share/<group>/<filter>`
        filter_ = filter_.split("/", 2)[-1]
    rest = subject[len(MAILBOX_SUBJECT):]
    _, dot, last = rest.rpartition(".")
    level = last if dot and last in _LEVELS else "normal"
    f = filter_[len(MAILBOX_TOPIC):] if filter_.startswith(MAILBOX_TOPIC) else ""
    mail, slash, tail = f.rpartition("/")
    if slash and (tail in ("+", "#") or tail in _LEVELS):
        return MAILBOX_TOPIC + mail + "/" + level
    if f and not f.endswith(("+", "#")):
        return MAILBOX_TOPIC + f  # `…/<id>`: normal only, on the filter's own topic
    return delivery_topic(subject)


def refusal_code(refusal: Refusal) -> int:
    """The v5 PUBACK / PUBREC reason code for a refused publish (3.1.1 acknowledges it positively:
    its acks carry no reason, and 3.3.5 allows only that or closing the connection)."""
    kind = refusal.kind
    if kind is RefusalKind.PERMISSION_PUBLISH:
        return reasons.NOT_AUTHORIZED  # 0x87 (`$mq9/AI/PUBLIC/LIST`)
    if kind is RefusalKind.QUOTA_EXCEEDED:  # a full mailbox
        return reasons.QUOTA_EXCEEDED  # 0x97
    return reasons.TOPIC_NAME_INVALID  # 0x90: no destination (a mailbox that does not exist), invalid


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

