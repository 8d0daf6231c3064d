"""Upstream's current mq9 protocol (SPEC §4b; robustmq/mq9's protocol.md) on §4's mailboxes and log.

Every command is a request and every reply carries `"error"` (`""` on success). A SEND lands in the
mailbox's own stream (`$mq9.AI.MAILBOX.MSG.<id>`) with its priority in the record's metadata, so a
§4 subscriber, LIST and this dialect's FETCH/QUERY all see the same messages with the same msg_id.

Record metadata this dialect adds (besides §4's `p`): `vis` (ms; `mq9-delay`: hidden until then),
`exp` (ms; `mq9-ttl`: hidden from then), `tg` (the `mq9-tags` text); `mq9-key` goes in the record's
key, and an older record with the same key is deleted when the new one is sent.

FETCH groups: one state per (mailbox, group), persisted in the log's metadata (`GroupState`):
`floor` (every offset below it is settled: acked, deleted, or expired by its `mq9-ttl`), `hi` (the
highest offset ever handed out), `acked` (acked offsets at or above the floor), `start` (where the
group began: `deliver`, or a `force_deliver` restart) and `pending` (the offsets FETCH handed out that
are not acked yet: its deliveries in flight). A group FETCH returns visible, unacked messages at or
above `floor` in priority order, except those leased to another member: what a FETCH hands out is
leased (in memory) to the requesting connection until it is acked, `config.ack_wait_ms` passes or
that connection closes, so competing members never get the same message; the holder's own next
FETCH gets its unacked deliveries again (at-least-once). ACK accepts exactly the offsets in
`pending` (and answers an already-acked one again); anything else was never handed to the group: an
error.

Waiting FETCHes (the long poll) wait on one commit future of the log (`SegmentLog.wait_any`, which
drops it again on timeout) and one wake future of their own, kept by group and by connection: when a
connection closes (`connection_closed`, the router's neutral close hook), its leases end and the
waiting FETCHes of the groups it held leases in are woken at once, and its own waiting FETCHes stop
without taking anything. A mailbox holds at most `MAX_GROUPS_PER_MAILBOX` groups (each one is
persisted state until the mailbox expires).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import msgspec

from robustmq.core_log import Record, SegmentLog, Stream
from robustmq.frontends.mq9.mailboxes import (
    P_CRITICAL,
    P_LOW,
    P_NORMAL,
    P_URGENT,
    PRIORITIES,
    Mailbox,
    MailboxRegistry,
    Mq9Error,
    hidden,
    now_ms,
    priority_of,
)
from robustmq.routing.contract import Connection, Headers

SEND_PREFIX = "$mq9.AI.MSG.SEND."
FETCH_PREFIX = "$mq9.AI.MSG.FETCH."
ACK_PREFIX = "$mq9.AI.MSG.ACK."
QUERY_PREFIX = "$mq9.AI.MSG.QUERY."
MSG_DELETE_PREFIX = "$mq9.AI.MSG.DELETE."
UPSTREAM_PREFIX = "$mq9.AI.MSG."
FETCH_NS = "mq9.fetch"

# upstream's names, plus the PyPI SDK's high/low (high = urgent, as on its subjects)
HEADER_PRIORITY = {"critical": P_CRITICAL, "urgent": P_URGENT, "normal": P_NORMAL,
                   "high": P_URGENT, "low": P_LOW}
MAX_TAGS = 64
MAX_TAGS_BYTES = 4096
MAX_KEY_BYTES = 1024
MAX_NUM_MSGS = 1000
MAX_WAIT_MS = 30_000
MAX_DELAY_S = 365 * 86400
QUERY_DEFAULT_LIMIT = 100
MAX_GROUP_NAME = 256  # characters; a group's name is part of its persisted state's key
# FETCH groups one mailbox may hold: each is persisted state kept until its mailbox expires, so a
# FETCH naming a new group past this is refused (a clear error) rather than growing the state
MAX_GROUPS_PER_MAILBOX = 1000
# the largest msg_id / Unix-seconds value a request may carry (a group's state is stored as
# msgpack, whose integers end at 2**63 - 1); larger ones are refused, not stored
MAX_ID = 2**63 - 1
MAX_TIME_S = MAX_ID // 1000
# a group FETCH leases what it hands out: no other connection gets those messages until they are
# acked, the lease runs out (`config.ack_wait_ms`, this by default: JetStream's ack wait) or the
# connection holding them closes
ACK_WAIT_MS = 30_000
MAX_ACK_WAIT_MS = 3_600_000
SCAN_YIELD_EVERY = 4096  # records scanned between two yields to the event loop
# payload bytes per FETCH/QUERY reply (before base64): the first message always goes, so a large one
# still makes progress; the rest wait for the next request, as a Kafka fetch's max_bytes does
MAX_REPLY_BYTES = 512 * 1024
# a group's deliveries awaiting an ACK: at most this many are remembered (the oldest go first; a
# forgotten one that still exists is handed out again by a later FETCH, so nothing is lost)
MAX_PENDING = 10 * MAX_NUM_MSGS
# of those, deliveries whose message was deleted or expired after it was handed out (kept so that a
# late ACK of it is still accepted): at most this many
MAX_STALE_PENDING = MAX_NUM_MSGS
DELIVER_POLICIES = ("latest", "earliest", "from_time", "from_id")

_json = msgspec.json.Encoder()
_state_enc = msgspec.msgpack.Encoder()


class FetchConfig(msgspec.Struct, forbid_unknown_fields=False):
    num_msgs: int = 100
    max_wait_ms: int = 500
    ack_wait_ms: int = ACK_WAIT_MS  # this broker's extension: how long a group's lease lasts


class FetchRequest(msgspec.Struct, forbid_unknown_fields=False):
    group_name: str | None = None
    deliver: str = "latest"
    from_time: int | None = None  # Unix seconds
    from_id: int | None = None
    force_deliver: bool = False
    config: FetchConfig = msgspec.field(default_factory=FetchConfig)


class AckRequest(msgspec.Struct, forbid_unknown_fields=False):
    group_name: str
    msg_id: int
    mail_address: str | None = None


class QueryRequest(msgspec.Struct, forbid_unknown_fields=False):
    key: str | None = None
    tags: list[str] | str | None = None
    since: int | None = None  # Unix seconds
    limit: int = QUERY_DEFAULT_LIMIT


class _SavedGroup(msgspec.Struct, array_like=True):
    """A group's persisted state. Saved before `start` and `pending` existed, it has three fields."""

    floor: int
    hi: int
    acked: set[int]
    start: int = 0
    pending: set[int] | None = None


_state_dec = msgspec.msgpack.Decoder(_SavedGroup)


def _decode(body: bytes, typ: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(body if body.strip() else b"{}", type=typ)
    except msgspec.ValidationError as exc:
        raise Mq9Error(f"invalid {what} request: {exc}") from None
    except msgspec.DecodeError:
        raise Mq9Error(f"invalid {what} request: body is not valid JSON") from None
    except RecursionError:  # msgspec skips an unknown field's value recursively
        raise Mq9Error(f"invalid {what} request: JSON nested too deeply") from None


def _check_int(value: int | None, name: str, top: int) -> None:
    if value is not None and not 0 <= value <= top:
        raise Mq9Error(f"{name} must be between 0 and {top}")


def ok(obj: dict[str, Any]) -> bytes:
    """An upstream success reply: `error` is present and empty."""
    return _json.encode({"error": "", **obj})


def _header(headers: Headers | None, name: bytes) -> str | None:
    for k, v in headers or ():
        if k.lower() == name:
            return v.decode("utf-8", "replace").strip()
    return None


def _seconds(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()):
        raise Mq9Error(f"{name} must be a non-negative integer number of seconds, got {text!r}")
    n = int(text)
    if n > MAX_DELAY_S:
        raise Mq9Error(f"{name} {n} is above the maximum of {MAX_DELAY_S} seconds")
    return n


def parse_send_headers(headers: Headers | None, now: int) -> tuple[int, dict[str, int | str], bytes | None]:
    """SEND's `mq9-*` headers -> (priority, record meta, key). Raises Mq9Error on bad values."""
    prio_text = _header(headers, b"mq9-priority")
    prio = P_NORMAL
    if prio_text:
        if prio_text.lower() not in HEADER_PRIORITY:
            raise Mq9Error(f"unknown mq9-priority {prio_text!r}: use critical, urgent or normal")
        prio = HEADER_PRIORITY[prio_text.lower()]
    meta: dict[str, int | str] = {"p": prio}
    delay = _seconds(_header(headers, b"mq9-delay"), "mq9-delay")
    if delay:
        meta["vis"] = now + delay * 1000
    ttl = _seconds(_header(headers, b"mq9-ttl"), "mq9-ttl")
    if ttl:  # 0 = no per-message TTL, as a mailbox's ttl 0 never expires (and the SDKs mean it so)
        # counted from when the message becomes visible, so a delayed message is not born expired
        meta["exp"] = now + (delay or 0) * 1000 + ttl * 1000
    tags = _header(headers, b"mq9-tags")
    if tags:
        if len(tags.encode()) > MAX_TAGS_BYTES:
            raise Mq9Error(f"mq9-tags is longer than {MAX_TAGS_BYTES} bytes")
        parts = [t.strip() for t in tags.split(",") if t.strip()]
        if len(parts) > MAX_TAGS:
            raise Mq9Error(f"mq9-tags has {len(parts)} tags; at most {MAX_TAGS} are allowed")
        if parts:
            meta["tg"] = ",".join(parts)
    key_text = _header(headers, b"mq9-key")
    key = key_text.encode() if key_text else None
    if key is not None and len(key) > MAX_KEY_BYTES:
        raise Mq9Error(f"mq9-key is longer than {MAX_KEY_BYTES} bytes")
    return prio, meta, key


def _tags(rec: Record) -> set[str]:
    t = rec.meta.get("tg") if rec.meta else None
    return set(str(t).split(",")) if t else set()


# FETCH and QUERY name priorities in upstream's vocabulary: its Python SDK (`Priority(...)`) and Rust
# SDK (a serde enum) fail the whole reply on any other name, so `low` (the PyPI SDK's fourth level,
# delivered after normal) is told as `normal`; the order of the messages still puts it last
UPSTREAM_PRIORITIES = ("critical", "urgent", "normal", "normal")


def _entry(off: int, rec: Record) -> dict[str, Any]:
    """One message as FETCH and QUERY show it: base64 payload (binary-safe), Unix-seconds time."""
    return {"msg_id": off, "payload": base64.b64encode(rec.payload).decode(),
            "priority": UPSTREAM_PRIORITIES[priority_of(rec)], "create_time": rec.ts // 1000}


def split_addr_msg(rest: str) -> tuple[str, int]:
    addr, dot, msg = rest.rpartition(".")
    if not dot or not addr or not (msg.isascii() and msg.isdigit()):
        raise Mq9Error("use $mq9.AI.MSG.DELETE.<mail_address>.<msg_id> with a numeric msg_id")
    return addr, int(msg)


class GroupState:
    __slots__ = ("acked", "floor", "hi", "leases", "pending", "start")

    def __init__(self, floor: int, hi: int, acked: set[int], start: int | None = None,
                 pending: set[int] | None = None) -> None:
        self.floor = floor
        self.hi = hi
        self.acked = acked
        self.start = floor if start is None else start
        self.pending: set[int] = set() if pending is None else pending
        # in memory only: pending offset -> (lease end in ms, the connection it was handed to).
        # A restart forgets them, so what was in flight is free for any member again at once.
        self.leases: dict[int, tuple[int, Any]] = {}

    def held(self, off: int, origin: Any, now: int) -> bool:
        """Whether `off` is leased to a connection other than `origin` (handed out to it, not
        acked, its lease not run out, that connection still open)."""
        lease = self.leases.get(off)
        if lease is None or lease[1] is origin:
            return False
        if lease[0] <= now or getattr(lease[1], "closed", False) or off not in self.pending:
            del self.leases[off]
            return False
        return True

    def held_by_others(self, origin: Any, now: int) -> Callable[[int], bool]:
        return lambda off: self.held(off, origin, now)

    def next_release(self, origin: Any, now: int) -> int | None:
        """When the earliest lease held by another connection runs out (ms), or None. Leases
        already over (run out, holder gone, message acked or forgotten) are dropped here, so one
        whose message is never read again (deleted) cannot keep a waiting FETCH spinning."""
        leases, pending = self.leases, self.pending
        for off in [o for o, (end, conn) in leases.items()
                    if end <= now or getattr(conn, "closed", False) or o not in pending]:
            del leases[off]
        ends = [end for end, conn in leases.values() if conn is not origin]
        return min(ends) if ends else None

    def trim(self) -> None:
        """Bound `pending`: at most MAX_STALE_PENDING entries below the floor (deliveries of
        messages deleted or expired since), at most MAX_PENDING in all; the lowest offsets go."""
        pending = self.pending
        stale = [o for o in pending if o < self.floor]
        drop = max(len(stale) - MAX_STALE_PENDING, len(pending) - MAX_PENDING, 0)
        if drop:
            for o in sorted(pending)[:drop]:
                pending.discard(o)
                self.leases.pop(o, None)


class PriorityIndex:
    """Per mailbox stream: the offset of the last message stored with each priority (deleted or
    hidden ones included: an upper bound is all a FETCH needs to know when to stop scanning)."""

    __slots__ = ("last", "noted", "stream", "upto")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.upto = 0  # committed offsets below this are indexed
        self.noted = 0  # offsets below this are in `last`, committed or not (sends note themselves)
        self.last = [-1] * len(PRIORITIES)


class Upstream:
    """FETCH, ACK and QUERY of upstream's dialect (SEND and DELETE share §4's code in handlers)."""

    def __init__(self, log: SegmentLog, registry: MailboxRegistry) -> None:
        self.log = log
        self.registry = registry
        self._groups: dict[tuple[str, str], GroupState] = {}
        # groups changed by ACKs and not written yet: written together by `save_dirty`, once per
        # loop turn, so a burst of ACKs costs one write per group, not one per ACK
        self._dirty: dict[tuple[str, str], tuple[Mailbox, GroupState]] = {}
        self._prio: dict[str, PriorityIndex] = {}  # by mail_id, built by the first FETCH
        # by mail_id: each mq9-key's latest offset, built by the mailbox's first keyed send
        self._keys: dict[str, tuple[Stream, dict[bytes, int]]] = {}
        # by mail_id: how many groups are persisted (counted from the metadata at first need)
        self._group_counts: dict[str, int] = {}
        # a connection -> the groups it has held leases in (what its close must release)
        self._holders: dict[Any, set[tuple[str, str]]] = {}
        # the wake futures of the FETCHes waiting now: by group, and by requesting connection
        self._group_waits: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        self._conn_waits: dict[Any, set[asyncio.Future[None]]] = {}

    def mailbox(self, addr: str) -> Mailbox:
        mb = self.registry.get(addr)
        if mb is None:
            raise Mq9Error(f"mailbox {addr} does not exist")
        return mb

    # ------------------------------------------------------------------ groups
    def _group(self, mb: Mailbox, name: str) -> GroupState | None:
        key = (mb.mail_id, name)
        g = self._groups.get(key)
        if g is None:
            raw = self.log.get_meta(FETCH_NS, _gkey(mb.mail_id, name))
            if raw is None:
                return None
            st = _state_dec.decode(raw)
            pending = st.pending
            if pending is None:
                # saved before deliveries were tracked: everything unacked up to `hi` may have
                # been handed out, so an ACK of any of it is accepted
                pending = {o for o in range(st.floor, min(st.hi + 1, st.floor + MAX_PENDING))
                           if o not in st.acked}
            g = self._groups[key] = GroupState(st.floor, st.hi, st.acked, st.start, pending)
        return g

    def _save(self, mb: Mailbox, name: str, g: GroupState) -> None:
        """Write a group's state now (into the log batch being filled)."""
        key = (mb.mail_id, name)
        self._groups[key] = g
        self._dirty.pop(key, None)
        self.log.put_meta(FETCH_NS, _gkey(mb.mail_id, name),
                          _state_enc.encode(_SavedGroup(g.floor, g.hi, g.acked, g.start, g.pending)))

    def _count_groups(self, mb: Mailbox) -> int:
        n = self._group_counts.get(mb.mail_id)
        if n is None:  # once per mailbox and process: every group created since is counted here
            n = sum(1 for _ in self.log.scan_meta(FETCH_NS, _gkey(mb.mail_id, "")))
            self._group_counts[mb.mail_id] = n
        return n

    def _new_group(self, mb: Mailbox, name: str, g: GroupState) -> None:
        """Persist a group this mailbox did not have, if it has room for one more."""
        n = self._count_groups(mb)
        if n >= MAX_GROUPS_PER_MAILBOX:
            raise Mq9Error(f"mailbox {mb.mail_id} already has {n} FETCH groups, the most one mailbox "
                           f"may have ({MAX_GROUPS_PER_MAILBOX}): use an existing group_name (a "
                           f"group's state is kept until its mailbox expires)")
        self._group_counts[mb.mail_id] = n + 1
        self._save(mb, name, g)

    def save_dirty(self) -> None:
        """Write the groups ACKs changed since the last call (their replies wait for this batch)."""
        dirty, self._dirty = self._dirty, {}
        for (_, name), (mb, g) in dirty.items():
            self._save(mb, name, g)

    def forget(self, mb: Mailbox) -> None:
        """A mailbox expired: its groups' offsets (and its priority index) go with its stream."""
        self._prio.pop(mb.mail_id, None)
        self._keys.pop(mb.mail_id, None)
        for key in [k for k in self._dirty if k[0] == mb.mail_id]:
            del self._dirty[key]
        for key in [k for k in self._groups if k[0] == mb.mail_id]:
            g = self._groups.pop(key)
            for conn in {c for _, c in g.leases.values()}:  # its leases go: so does their index
                held = self._holders.get(conn)
                if held is not None:
                    held.discard(key)
        self._group_counts.pop(mb.mail_id, None)
        self.log.delete_meta_prefix(FETCH_NS, _gkey(mb.mail_id, ""))

    def connection_closed(self, conn: Any) -> None:
        """`conn` closed: its leases end now, and every FETCH waiting in a group it held leases in
        is woken to take what they covered; its own waiting FETCHes stop, taking nothing."""
        for fut in self._conn_waits.pop(conn, ()):
            if not fut.done():
                fut.set_result(None)
        for key in self._holders.pop(conn, ()):
            g = self._groups.get(key)
            if g is None:
                continue
            leases = g.leases
            mine = [off for off, (_, holder) in leases.items() if holder is conn]
            for off in mine:
                del leases[off]
            if mine:
                for fut in self._group_waits.get(key, ()):
                    if not fut.done():
                        fut.set_result(None)

    async def _wait(self, stream: Stream, key: tuple[str, str] | None, origin: Any,
                    timeout: float) -> None:
        """A FETCH's long poll: until a commit to `stream`, a wake (`connection_closed`) or
        `timeout`. Two futures, both gone when it returns: nothing is left behind by a poll that
        timed out, however often a consumer polls an idle mailbox."""
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        commit = asyncio.ensure_future(self.log.wait_any([(stream, stream.committed)], timeout))
        by_group = self._group_waits.setdefault(key, set()) if key is not None else None
        by_conn = self._conn_waits.setdefault(origin, set()) if origin is not None else None
        for waits in (by_group, by_conn):
            if waits is not None:
                waits.add(wake)
        try:
            # (the commit future's own timeout ends the wait: it drops itself from the stream first)
            await asyncio.wait((commit, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not commit.done():
                commit.cancel()  # wait_any drops its future from the stream as it ends
            if by_group is not None and key is not None:
                by_group.discard(wake)
                if not by_group and self._group_waits.get(key) is by_group:
                    del self._group_waits[key]
            if by_conn is not None:
                by_conn.discard(wake)
                if not by_conn and self._conn_waits.get(origin) is by_conn:
                    del self._conn_waits[origin]

    def ack(self, addr: str, body: bytes) -> bytes:
        """Ack one delivery. The new state is written by the next `save_dirty`: answer after it."""
        mb = self.mailbox(addr)
        req: AckRequest = _decode(body, AckRequest, "ack")
        if len(req.group_name) > MAX_GROUP_NAME:
            raise Mq9Error(f"group_name is longer than {MAX_GROUP_NAME} characters")
        if req.mail_address is not None and req.mail_address != addr:
            raise Mq9Error(f"mail_address {req.mail_address!r} does not match the subject's {addr!r}")
        g = self._group(mb, req.group_name)
        n = req.msg_id
        if g is None:
            raise Mq9Error(f"msg_id {n} was never fetched by group {req.group_name!r}")
        if n in g.pending:
            g.pending.discard(n)
            g.leases.pop(n, None)
            if n >= g.floor:
                g.acked.add(n)
                stream = self.log.get_stream(mb.stream_name)
                deleted = stream.deleted if stream is not None else ()
                # the floor passes every acked (or deleted) offset, so the acked set stays small
                while g.floor in g.acked or g.floor in deleted:
                    g.acked.discard(g.floor)
                    g.floor += 1
            self._dirty[(mb.mail_id, req.group_name)] = (mb, g)
        elif n not in g.acked and not self._acked_below_floor(mb, g, n, req.group_name):
            raise Mq9Error(f"msg_id {n} was never fetched by group {req.group_name!r}")
        return ok({})

    def _acked_below_floor(self, mb: Mailbox, g: GroupState, n: int, group: str) -> bool:
        """An ACK again of an offset below the floor that is not awaiting one: the floor passes only
        acked, deleted and expired offsets, so a message still there and visible was acked. A
        deleted or expired one cannot be told from one the group never got: a clear error."""
        if not g.start <= n < g.floor:
            return False
        stream = self.log.get_stream(mb.stream_name)
        if stream is None:
            return False
        if n in stream.deleted:
            raise Mq9Error(f"msg_id {n} is not awaiting an ack from group {group!r}: "
                           f"that message was deleted")
        rec = next(iter(self.log.read(stream, n, n + 1)), None)
        if rec is None:
            return False
        if hidden(rec[1], now_ms()):
            raise Mq9Error(f"msg_id {n} is not awaiting an ack from group {group!r}: "
                           f"that message has expired")
        return True

    # ------------------------------------------------------------------ fetch
    def _start(self, stream: Stream, req: FetchRequest) -> int:
        if req.deliver == "earliest":
            return stream.first_offset
        if req.deliver == "from_time":
            if req.from_time is None:
                raise Mq9Error("deliver \"from_time\" needs \"from_time\" (Unix seconds)")
            return self.log.offset_for_time(stream, req.from_time * 1000)
        if req.deliver == "from_id":
            if req.from_id is None or req.from_id < 0:
                raise Mq9Error("deliver \"from_id\" needs a non-negative \"from_id\"")
            return req.from_id
        return stream.committed

    def parse_fetch(self, body: bytes) -> FetchRequest:
        req: FetchRequest = _decode(body, FetchRequest, "fetch")
        if req.deliver not in DELIVER_POLICIES:
            raise Mq9Error(f"unknown deliver policy {req.deliver!r}: use one of "
                           f"{', '.join(DELIVER_POLICIES)}")
        if not 1 <= req.config.num_msgs <= MAX_NUM_MSGS:
            raise Mq9Error(f"config.num_msgs must be between 1 and {MAX_NUM_MSGS}")
        if not 0 <= req.config.max_wait_ms <= MAX_WAIT_MS:
            raise Mq9Error(f"config.max_wait_ms must be between 0 and {MAX_WAIT_MS}")
        if not 1 <= req.config.ack_wait_ms <= MAX_ACK_WAIT_MS:
            raise Mq9Error(f"config.ack_wait_ms must be between 1 and {MAX_ACK_WAIT_MS}")
        _check_int(req.from_id, "from_id", MAX_ID)
        _check_int(req.from_time, "from_time (Unix seconds)", MAX_TIME_S)
        if req.group_name is not None and len(req.group_name) > MAX_GROUP_NAME:
            raise Mq9Error(f"group_name is longer than {MAX_GROUP_NAME} characters")
        if req.group_name == "":
            # upstream's Go SDK always sends `group_name`, "" when the fetch is stateless
            req.group_name = None
        return req

    def replace_keyed(self, mb: Mailbox, stream: Stream, key: bytes, off: int) -> None:
        """`mq9-key`: the message at `off` is now the one kept for `key`; the one before goes
        (SPEC §4b). The first keyed send of a mailbox reads its committed messages once; after that
        each keyed send is a dict lookup, and two keyed sends in one unwritten batch see each other."""
        entry = self._keys.get(mb.mail_id)
        if entry is None or entry[0] is not stream:
            latest: dict[bytes, int] = {}
            for o, rec in self.log.read(stream):
                if rec.key is not None and o < off:
                    latest[rec.key] = o
            entry = self._keys[mb.mail_id] = (stream, latest)
        latest = entry[1]
        old = latest.get(key)
        if old is not None and old != off:
            self.log.delete_record(stream, old)
        latest[key] = off

    def note_stored(self, mb: Mailbox, stream: Stream, first: int, count: int, prio: int) -> None:
        """`count` messages of priority `prio` were appended to a mailbox from offset `first`: keep
        its index current without reading them back. A mailbox's first send starts its index, so a
        mailbox created since the start is never scanned for it; after a gap (a restart) the next
        look scans what was not noted."""
        idx = self._prio.get(mb.mail_id)
        if idx is None or idx.stream is not stream:
            if first != 0:
                return
            idx = self._prio[mb.mail_id] = PriorityIndex(stream)
        if idx.noted != first:
            return
        idx.noted = first + count
        if first + count - 1 > idx.last[prio]:
            idx.last[prio] = first + count - 1

    async def index(self, mb: Mailbox, stream: Stream) -> PriorityIndex:
        """The mailbox's priority index, brought up to the committed end: only the records neither
        noted by their send nor read before are read (each record at most once over the mailbox's
        life)."""
        idx = self._prio.get(mb.mail_id)
        if idx is None or idx.stream is not stream:
            idx = self._prio[mb.mail_id] = PriorityIndex(stream)
        if idx.noted > idx.upto:
            idx.upto = min(idx.noted, stream.committed)
        while idx.upto < stream.committed:
            # one bounded step, with no await inside: a concurrent FETCH resumes where it ended
            end = min(stream.committed, max(idx.upto, stream.first_offset) + SCAN_YIELD_EVERY)
            last = idx.last
            for off, rec in self.log.read(stream, idx.upto, end):
                last[priority_of(rec)] = off
            idx.upto = end
            idx.noted = max(idx.noted, end)
            if end < stream.committed:
                await asyncio.sleep(0)
        return idx

    async def _collect(self, mb: Mailbox, stream: Stream, start: int, n: int,
                       skip: Callable[[int], bool], held: Callable[[int], bool] | None = None,
                       ) -> tuple[list[tuple[int, Record]], int | None, int]:
        """Visible messages from `start`, in priority order, at most n; when the next delayed one
        becomes visible (ms), for the long poll; and the first offset from `start` on that is still
        to be consumed (not skipped, not expired; everything before it is settled for a group).
        Priority order may need a long scan (a critical message may be the last one), so the scan
        yields to the loop between chunks; it stops as soon as no later message can be among the n
        (the index knows where each priority's last message is), so a FETCH from a large mailbox
        reads about what it returns. `held`: messages leased to another member of the group: not
        returned, and not settled either (they come back if their lease runs out)."""
        idx = await self.index(mb, stream)
        # later[q]: the last offset holding a message that would come before priority q
        later = [max(idx.last[:q], default=-1) for q in range(len(PRIORITIES))]
        now = now_ms()
        buckets: list[list[tuple[int, Record]]] = [[] for _ in PRIORITIES]
        next_vis: int | None = None
        unsettled: int | None = None
        scanned = kept = 0
        for off, rec in self.log.read(stream, start, idx.upto):
            scanned += 1
            if scanned % SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if skip(off):
                continue
            if unsettled is None:
                unsettled = off  # an expired one is reset below: it settles like an acked one
            if hidden(rec, now):
                vis = rec.meta.get("vis") if rec.meta else None
                if vis is not None and int(vis) > now:
                    next_vis = int(vis) if next_vis is None else min(next_vis, int(vis))
                elif unsettled == off:
                    unsettled = None
                continue
            if held is not None and held(off):
                continue
            b = buckets[priority_of(rec)]
            if len(b) < n:
                b.append((off, rec))
                kept += 1
            if kept >= n:
                # the first n are in priorities 0..q; only a later message above q could change them
                q, cum = 0, len(buckets[0])
                while cum < n:
                    q += 1
                    cum += len(buckets[q])
                if off >= later[q]:
                    break
        return _cap([e for b in buckets for e in b][:n]), next_vis, \
            idx.upto if unsettled is None else unsettled

    async def fetch(self, addr: str, req: FetchRequest, origin: Any = None) -> bytes:
        """`origin`: the requesting connection; a group's deliveries are leased to it."""
        mb = self.mailbox(addr)
        stream = self.log.stream(mb.stream_name)
        deadline = time.monotonic() + req.config.max_wait_ms / 1000
        group = req.group_name
        g = self._group(mb, group) if group is not None else None
        if group is not None and (g is None or req.force_deliver):
            # a new group (or a forced restart) starts where `deliver` says; nothing there is acked
            fresh = GroupState(self._start(stream, req), -1, set())
            fresh.hi = fresh.floor - 1
            if g is None:
                self._new_group(mb, group, fresh)  # refused past MAX_GROUPS_PER_MAILBOX
            else:
                self._save(mb, group, fresh)
            g = fresh
        start = g.floor if g is not None else self._start(stream, req)
        settled = start
        while True:
            if self.registry.get(addr) is not mb:
                raise Mq9Error(f"mailbox {addr} does not exist")
            if g is not None:
                # read the group afresh on every pass: ACKs (of any member) handled while this
                # FETCH scanned or waited move the floor and drop the offsets it passed from
                # `acked`, so a start or an acked set kept from an earlier pass would hand out
                # again what was acked meanwhile
                start = g.floor
            skip = _settled_in(g) if g is not None else _nothing
            held = g.held_by_others(origin, now_ms()) if g is not None and g.leases else None
            msgs, next_vis, settled = await self._collect(mb, stream, start, req.config.num_msgs,
                                                           skip, held)
            if getattr(origin, "closed", False):
                # the connection that asked is gone: nobody would get the answer, so take nothing
                # (no lease on a dead holder, no move of the group's floor)
                return ok({"messages": []})
            if group is not None:
                cur = self._groups.get((mb.mail_id, group))
                if cur is not None and cur is not g:
                    # another FETCH restarted the group (`force_deliver`) while this one collected
                    # or waited: answer from the group as it is now, never write the old one back
                    g = cur
                    continue
            if g is not None and msgs:
                # acked (by another member, or by this one) while the scan yielded to the loop
                msgs = [m for m in msgs if not skip(m[0])]
                if not msgs and deadline > time.monotonic():
                    continue
            if g is not None and msgs and g.leases:
                # another member's FETCH may have leased some of these while this one scanned
                now = now_ms()
                kept = [m for m in msgs if not g.held(m[0], origin, now)]
                if len(kept) < len(msgs):
                    msgs = kept
                    if not msgs and deadline > time.monotonic():
                        continue
            left = deadline - time.monotonic()
            if msgs or left <= 0:
                break
            if next_vis is not None:
                left = min(left, max(0.0, (next_vis - now_ms()) / 1000) + 0.001)
            release = g.next_release(origin, now_ms()) if g is not None else None
            if release is not None:  # a lease that runs out frees its messages for this member
                left = min(left, max(0.0, (release - now_ms()) / 1000) + 0.001)
            # wake on the next commit to this stream, when a delayed message comes due or a lease
            # runs out, or when a connection holding leases in the group closes
            await self._wait(stream, (mb.mail_id, group) if group is not None else None, origin, left)
        if g is not None and group is not None:
            changed = False
            if settled > g.floor:
                # expired messages (mq9-ttl) at the floor are settled: pass them, and the acked
                # offsets behind them, so `acked` stays small
                g.floor = settled
                g.acked.difference_update([o for o in g.acked if o < settled])
                changed = True
            pending, leases = g.pending, g.leases
            lease = (now_ms() + req.config.ack_wait_ms, origin)
            if msgs and origin is not None:
                self._holders.setdefault(origin, set()).add((mb.mail_id, group))
            for off, _ in msgs:
                leases[off] = lease
                if off not in pending:
                    pending.add(off)
                    changed = True
                    if off > g.hi:
                        g.hi = off
            if changed:
                g.trim()
                self._save(mb, group, g)
        return ok({"messages": [_entry(off, rec) for off, rec in msgs]})

    # ------------------------------------------------------------------ query
    async def query(self, addr: str, body: bytes) -> bytes:
        mb = self.mailbox(addr)
        req: QueryRequest = _decode(body, QueryRequest, "query")
        if not 1 <= req.limit <= MAX_NUM_MSGS:
            raise Mq9Error(f"limit must be between 1 and {MAX_NUM_MSGS}")
        _check_int(req.since, "since (Unix seconds)", MAX_TIME_S)
        tags = req.tags.split(",") if isinstance(req.tags, str) else req.tags or []
        want = {t.strip() for t in tags}
        want.discard("")
        key = req.key.encode() if req.key is not None else None
        since = req.since * 1000 if req.since is not None else None
        stream = self.log.get_stream(mb.stream_name)
        now = now_ms()
        buckets: list[list[tuple[int, Record]]] = [[] for _ in PRIORITIES]
        n = 0
        if stream is not None:
            for off, rec in self.log.read(stream):
                n += 1
                if n % SCAN_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a huge mailbox never stalls other clients
                if hidden(rec, now) or (key is not None and rec.key != key):
                    continue
                if since is not None and rec.ts < since:
                    continue
                if want and not want <= _tags(rec):
                    continue
                b = buckets[priority_of(rec)]
                if len(b) < req.limit:
                    b.append((off, rec))
        msgs = _cap([e for b in buckets for e in b][:req.limit])
        return ok({"messages": [_entry(off, rec) for off, rec in msgs]})


def _nothing(off: int) -> bool:
    return False


def _settled_in(g: GroupState) -> Callable[[int], bool]:
    """Whether an offset is settled for the group as it is when asked: below its floor, or acked."""
    return lambda off: off < g.floor or off in g.acked


def _cap(msgs: list[tuple[int, Record]]) -> list[tuple[int, Record]]:
    total = 0
    for i, (_, rec) in enumerate(msgs):
        total += len(rec.payload)
        if i and total > MAX_REPLY_BYTES:
            return msgs[:i]
    return msgs


def _gkey(mail_id: str, group: str) -> str:
    return mail_id + "\x00" + group


def reply_error(origin: Connection | None, reply: str | None, exc: Exception) -> None:
    if reply and origin is not None and not origin.closed:
        origin.reply(reply, _json.encode({"error": str(exc)}))
