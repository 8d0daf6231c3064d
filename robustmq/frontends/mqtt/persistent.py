"""Persistent MQTT sessions: what outlives a connection (and a restart) for one client id.

A `SessionState` holds a client's subscriptions and the QoS 1/2 messages it has not acknowledged.
While the client is offline its subscriptions stay in the router, owned by an `OfflineSession` (a
`routing.contract.Connection` without a socket), so routing stays in one place; each matching
publish appends a *reference* (stream, offset) to the session's queue, not a copy of the payload
(`docs/architecture.md`, "catching up"). The router says which record it is delivering in
`Router.current`; a message that is not in the log (an ephemeral subject, an mq9 mailbox delivery,
a retained message on subscribe) is the only kind kept as a copy.

Everything is in the log's metadata, written in the same group-committed batches as the records:
`mqtt.session/<client id>` holds the subscriptions and expiry, `mqtt.sessionq/<client id>\\0<seq>`
one queued or in-flight message (with its packet id once sent), `mqtt.qos2in/<client id>\\0<packet id>`
one inbound QoS 2 packet id that was PUBRECed and not yet released (so a publisher that resends the
PUBLISH with DUP after a reconnect, a takeover or a restart is not routed twice). So a publisher's
PUBACK, which waits for its batch, also covers the reference queued for an offline subscriber, and a
restart (SIGTERM or kill -9) restores the sessions as offline ones.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import msgspec

from robustmq.core_log import SegmentLog
from robustmq.frontends.mqtt.mapping import delivery_topic, filter_subjects
from robustmq.frontends.mqtt.packets import Subscription as SubRequest
from robustmq.frontends.mqtt.subscriptions import MqttSubscription, Outgoing
from robustmq.frontends.mqtt.topics import SHARE_PREFIX, split_shared
from robustmq.routing.contract import Headers, Refusal

if TYPE_CHECKING:
    from robustmq.frontends.mqtt.server import MqttServer
    from robustmq.frontends.mqtt.session import MqttSession

log = logging.getLogger("robustmq.mqtt")

NEVER = 0xFFFFFFFF  # a v5 Session Expiry Interval of 0xFFFFFFFF: the session does not expire
# The server's maximum session expiry (seconds), for both versions. 3.1.1 has no expiry of its own:
# its persistent sessions get this maximum, i.e. never expire unless it is lowered.
MAX_SESSION_EXPIRY_S = NEVER
# Messages (references, or copies for what is not in the log) one session may have waiting or in
# flight. Past it new messages for that session are dropped and counted (`SessionState.dropped`):
# the oldest ones, which the client is owed first, are kept (as mosquitto's max_queued_messages).
MAX_QUEUED = 100_000
# ... and all sessions together (SPEC §8: bounded in total): a queued entry costs a few hundred
# bytes of memory, so 500 offline sessions under one busy topic cannot grow the server by gigabytes.
# Past it, new messages for offline sessions are dropped and counted the same way.
MAX_QUEUED_TOTAL = 500_000

SESSION_NS = "mqtt.session"
QUEUE_NS = "mqtt.sessionq"
QOS2_IN_NS = "mqtt.qos2in"
FOREIGN_QOS = 1  # same rule as a live session: a non-MQTT message is delivered at min(granted, 1)


class SubRecord(msgspec.Struct, array_like=True):
    filter: str
    qos: int
    no_local: bool = False
    rap: bool = False
    sub_id: int | None = None


class SessionRecord(msgspec.Struct, array_like=True):
    version: int
    expiry: int  # seconds after the disconnect; NEVER: kept for ever
    expires_at: float = 0.0  # wall clock; 0 while connected (a restart counts from the restart)
    subs: list[SubRecord] = []


class Entry(msgspec.Struct, array_like=True):
    """One QoS 1/2 message owed to the client: a reference to a log record, or (not in the log) a
    copy. `pid` is its packet id once sent: it is then resent with DUP on reconnect."""

    topic: str
    qos: int
    stream: str | None = None
    offset: int = -1
    payload: bytes | None = None
    # v5 user properties of a copy written by an earlier version (which had no `headers`); read
    # only, as they were: new copies keep their neutral headers instead
    user: list[tuple[str, str]] | None = None
    retain: bool = False
    sub_ids: list[int] = []
    response: str | None = None
    pid: int = 0
    # QoS 2 and PUBRECed: only its PUBREL is owed (resent on reconnect and after a restart, never
    # the PUBLISH again: the client may have delivered it already, 4.3.3)
    released: bool = False
    # a copy's neutral headers (user properties and the `mqtt-*` message properties: content type,
    # correlation data, payload format, the Message Expiry deadline), made into v5 properties when
    # it is sent (`mapping.headers_to_properties`), as a referenced record's are. Fields are only
    # ever appended, with a default, so an entry written by an earlier version still decodes.
    headers: list[tuple[bytes, bytes]] | None = None


_enc = msgspec.msgpack.Encoder()
_dec_session = msgspec.msgpack.Decoder(SessionRecord)
_dec_entry = msgspec.msgpack.Decoder(Entry)


def _q2key(client_id: str, pid: int) -> bytes:
    return client_id.encode() + b"\x00" + pid.to_bytes(2, "big")


def _qkey(client_id: str, seq: int) -> bytes:
    # MQTT strings cannot hold U+0000, so the separator cannot occur in a client id
    return client_id.encode() + b"\x00" + seq.to_bytes(8, "big")


class SessionState:
    """A persistent session, connected (`live`) or not."""

    def __init__(self, server: MqttServer, client_id: str, version: int, expiry: int) -> None:
        self.server = server
        self.log: SegmentLog = server.router.log
        self.client_id = client_id
        self.version = version
        self.expiry = min(expiry, MAX_SESSION_EXPIRY_S)
        self.expires_at = 0.0
        self.subs: dict[str, MqttSubscription] = {}  # shared with the live MqttSession
        self.filters: dict[str, list[MqttSubscription]] = {}
        self.pending: deque[tuple[int, Entry]] = deque()  # waiting to be sent, in order
        self.inflight: dict[int, Outgoing] = {}  # sent, unacknowledged at the last disconnect
        # inbound QoS 2 packet ids PUBRECed and not yet released: part of the session state (MQTT
        # 4.1, 4.3.3), so the live connection uses this very set (`MqttSession._qos2_in`)
        self.qos2_in: set[int] = set()
        self.next_seq = 1
        self.dropped = 0
        self.live: MqttSession | None = None
        self.standin = OfflineSession(self)

    # ------------------------------------------------------------------ queue
    def count(self) -> int:
        return len(self.pending) + len(self.inflight) + (len(self.live._inflight) if self.live else 0)

    def put(self, entry: Entry, seq: int = 0) -> int:
        """Persist `entry` (new when seq is 0); returns its seq."""
        if not seq:
            seq = self.next_seq
            self.next_seq += 1
        self.log.put_meta(QUEUE_NS, _qkey(self.client_id, seq), _enc.encode(entry))
        return seq

    def push(self, entry: Entry) -> bool:
        """Queue a message for later sending; False (dropped) past MAX_QUEUED."""
        srv = self.server
        if self.count() >= MAX_QUEUED or srv.queued_total >= MAX_QUEUED_TOTAL:
            self.dropped += 1
            return False
        self.pending.append((self.put(entry), entry))
        srv.queued_total += 1
        return True

    def remove(self, seq: int) -> None:
        self.log.delete_meta(QUEUE_NS, _qkey(self.client_id, seq))

    def qos2_received(self, pid: int) -> None:
        """An inbound QoS 2 PUBLISH was accepted (PUBREC to come): stored with the message's batch."""
        self.qos2_in.add(pid)
        self.log.put_meta(QOS2_IN_NS, _q2key(self.client_id, pid), b"")

    def qos2_released(self, pid: int) -> bool:
        """PUBREL for `pid`: whether it was awaiting release."""
        if pid not in self.qos2_in:
            return False
        self.qos2_in.discard(pid)
        self.log.delete_meta(QOS2_IN_NS, _q2key(self.client_id, pid))
        return True

    # ------------------------------------------------------------------ the session record
    def save(self) -> None:
        subs = []
        for f, ss in self.filters.items():
            s = ss[0]
            subs.append(SubRecord(f, s.qos, s.no_local, s.rap, s.sub_id))
        rec = SessionRecord(self.version, self.expiry, self.expires_at, subs)
        self.log.put_meta(SESSION_NS, self.client_id, _enc.encode(rec))

    def go_offline(self) -> None:
        """The client is gone: its subscriptions now queue references; the expiry clock starts."""
        self.live = None
        for sub in self.subs.values():
            sub.conn = self.standin  # type: ignore[assignment]  # both are Connections to the router
        self.expires_at = 0.0 if self.expiry >= NEVER else time.time() + self.expiry
        self.save()

    def drop(self) -> None:
        """End the session: unsubscribe, forget the queue, delete it from the log."""
        router = self.server.router
        if self.live is None:
            for sub in self.subs.values():
                router.unsubscribe(sub)
        self.subs.clear()
        self.filters.clear()
        self.server.queued_total = max(0, self.server.queued_total - len(self.pending))
        self.pending.clear()
        self.inflight.clear()
        self.qos2_in.clear()
        self.log.delete_meta(SESSION_NS, self.client_id)
        self.log.delete_meta_prefix(QUEUE_NS, self.client_id.encode() + b"\x00")
        self.log.delete_meta_prefix(QOS2_IN_NS, self.client_id.encode() + b"\x00")

    def restore_subscription(self, rec: SubRecord) -> None:
        f = rec.filter
        group: str | None = None
        inner = f
        if f.startswith(SHARE_PREFIX):
            shared = split_shared(f)
            if shared is None:
                return
            group, inner = shared
        subjects = filter_subjects(inner)
        if subjects is None:
            return
        req = SubRequest(f, rec.qos, rec.no_local, rec.rap)
        subs = []
        for subject in subjects:
            sub = MqttSubscription(self.standin, subject, group, f, inner, req, rec.sub_id)  # type: ignore[arg-type]
            if self.server.router.subscribe(sub) is None:
                self.subs[sub.sid] = sub
                subs.append(sub)
        if subs:
            self.filters[f] = subs


class OfflineSession:
    """The router's `Connection` for a persistent session whose client is not connected: every
    matching QoS >= 1 message becomes a queued reference. It never has a socket."""

    protocol = "mqtt"
    no_echo = False
    closed = False
    cid = 0

    def __init__(self, state: SessionState) -> None:
        self.state = state
        self.name = state.client_id

    def deliver(self, sub: MqttSubscription, subject: str, reply: str | None, headers: Headers | None,
                payload: bytes, offset: int = -1) -> None:
        if sub.skip_dollar and subject[:1] == "$":
            return
        st = self.state
        srv = st.server
        if srv.publishing is not None:
            qos = min(sub.qos, srv.publish_qos)
            retain = srv.publish_retain and sub.rap
        else:
            qos = min(sub.qos, FOREIGN_QOS)
            retain = False
        if qos == 0:  # QoS 0 messages are not kept for an offline client (spec 3.1.2.4 allows it)
            return
        if srv.router.owned(subject):
            # a mailbox keeps its messages itself, in priority order, and forgets deleted and
            # expired ones: the reconnect's subscribe replays them (a queued copy would come in
            # arrival order, outlive a DELETE or the mailbox's TTL, and repeat after a restart)
            return
        topic = delivery_topic(subject)
        if "+" in topic or "#" in topic:
            return  # a NATS subject no MQTT topic can name (3.3.2-2)
        cur = srv.router.current
        entry = Entry(topic, qos, retain=retain,
                      sub_ids=[sub.sub_id] if sub.sub_id is not None else [],
                      response=delivery_topic(reply) if reply else None)
        if cur is not None:
            entry.stream = cur[0]
            entry.offset = cur[1] if offset < 0 else offset
        else:
            entry.payload = payload
            if headers:  # made into properties (or found expired) when it is sent
                entry.headers = list(headers)
        st.push(entry)

    def deliver_many(self, sub: MqttSubscription, subject: str, payloads: list[bytes]) -> None:
        cur = self.state.server.router.current
        for i, p in enumerate(payloads):
            self.deliver(sub, subject, None, None, p, cur[1] + i if cur is not None else -1)

    def reply(self, subject: str, payload: bytes) -> bool:
        return False

    def reply_many(self, subjects: list[str], payloads: list[bytes]) -> None:
        return None

    def refuse(self, refusal: Refusal) -> None:
        return None

    def outbound_size(self) -> int:
        return 0


def load_sessions(server: MqttServer) -> dict[str, SessionState]:
    """The persistent sessions stored in the log, restored offline (subscriptions in the router)."""
    lg = server.router.log
    out: dict[str, SessionState] = {}
    now = time.time()
    for key, value in lg.scan_meta(SESSION_NS):
        try:
            cid = key.decode()
            rec = _dec_session.decode(value)
        except (msgspec.DecodeError, UnicodeDecodeError):  # a damaged entry costs only itself
            continue
        st = SessionState(server, cid, rec.version, rec.expiry)
        if rec.expires_at and rec.expires_at <= now:
            st.drop()
            continue
        # connected when the broker stopped: the expiry counts from now
        st.expires_at = rec.expires_at or (0.0 if st.expiry >= NEVER else now + st.expiry)
        for s in rec.subs:
            st.restore_subscription(s)
        out[cid] = st
    for key, value in lg.scan_meta(QUEUE_NS):
        cid_b, seq_b = key[:-9], key[-8:]  # client id, \0, 8-byte seq (which may hold \0 bytes)
        st2 = out.get(cid_b.decode(errors="replace")) if len(key) > 9 and key[-9] == 0 else None
        if st2 is None:
            lg.delete_meta(QUEUE_NS, key)  # the queue of a session that is gone
            continue
        try:
            entry = _dec_entry.decode(value)
        except msgspec.DecodeError:
            continue
        seq = int.from_bytes(seq_b, "big")
        st2.pending.append((seq, entry))  # in seq order: scan_meta is sorted by key
        st2.next_seq = max(st2.next_seq, seq + 1)
    for key, _ in lg.scan_meta(QOS2_IN_NS):
        st3 = out.get(key[:-3].decode(errors="replace")) if len(key) > 3 and key[-3] == 0 else None
        if st3 is None:
            lg.delete_meta(QOS2_IN_NS, key)  # of a session that is gone
            continue
        st3.qos2_in.add(int.from_bytes(key[-2:], "big"))
    for st in out.values():
        st.save()
        server.queued_total += len(st.pending)
    if out:
        log.info("restored %d persistent MQTT sessions", len(out))
    return out
