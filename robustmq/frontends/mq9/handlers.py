"""The mq9 layer: owns the `$mq9.AI.` subjects on the router.

It talks to the rest of the broker through three narrow things only: the router's `SubjectOwner`
interface (`claims`, `on_publish`, `on_subscribe`, `on_unsubscribe`), the log (streams, metadata,
commit callbacks), and the neutral `Connection` of a subscription or request (`deliver`, `reply`,
`refuse`, `outbound_size`, `closed`), which any front-end's connection provides. Replies go to the
requesting connection only (`Connection.reply`), never through the subject match.

Store-first: a send is appended to the mailbox's stream; delivery to live subscribers and the
request's `{"msg_id": N}` reply happen only after the commit that made it durable. A subscriber
gets a replay of what was committed when it subscribed (critical, urgent, normal; FIFO within each)
and everything committed later live; live messages that arrive while the replay runs wait in a
backlog, so the switch has no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import msgspec

from robustmq.config import Config
from robustmq.core_log import Record, SegmentLog, Stream
from robustmq.frontends.mq9.mailboxes import (
    GROUP_NS,
    P_NORMAL,
    PRIORITIES,
    PRIORITY_INDEX,
    STREAM_PREFIX,
    Mailbox,
    MailboxRegistry,
    Mq9Error,
    now_ms,
)
from robustmq.routing.contract import Headers, Refusal, RefusalKind
from robustmq.routing.router import Router

log = logging.getLogger("robustmq.mq9")

PREFIX = "$mq9.AI."
PUBLIC_LIST = "$mq9.AI.PUBLIC.LIST"
CREATE = "$mq9.AI.MAILBOX.CREATE"
LIST_PREFIX = "$mq9.AI.MAILBOX.LIST."
DELETE_PREFIX = "$mq9.AI.MAILBOX.DELETE."
ALL_MASK = 0b111
REPLAY_CHUNK = 512
REPLAY_HIGH_WATER = 8 << 20  # pause a replay while the subscriber has this much unsent
LIST_DEFAULT_LIMIT = 1000  # LIST entries per reply unless the request asks for another page size
LIST_MAX_LIMIT = 10_000  # about 600 KB of JSON: a LIST reply always fits under max_payload
LIST_YIELD_EVERY = 4096  # records scanned between two yields to the event loop

_json = msgspec.json.Encoder()
_group_enc = msgspec.msgpack.Encoder()
_group_dec = msgspec.msgpack.Decoder(list[int])

_PRIO_BYTES = [p.encode() for p in PRIORITIES]


class Mq9Stats(msgspec.Struct):
    mailboxes_created: int = 0
    mailboxes_expired: int = 0
    messages_stored: int = 0
    messages_delivered: int = 0
    dropped_no_mailbox: int = 0
    refused_full: int = 0
    replays: int = 0


class Target:
    """A delivery target on one mailbox: one plain subscription, or one queue group."""

    __slots__ = ("backlog", "mail_id", "mask", "replaying", "task")

    def __init__(self, mail_id: str, mask: int) -> None:
        self.mail_id = mail_id
        self.mask = mask
        self.replaying = False
        self.backlog: list[tuple[Mailbox, int, Record]] = []
        self.task: asyncio.Task[None] | None = None


class SubTarget(Target):
    __slots__ = ("sub",)

    def __init__(self, sub: Any, mail_id: str, mask: int) -> None:
        super().__init__(mail_id, mask)
        self.sub = sub


class Group(Target):
    """A queue group on a mailbox. cursors[p]: the highest offset of priority p handed to a member."""

    __slots__ = ("cursors", "members", "queue")

    def __init__(self, mail_id: str, queue: str, cursors: list[int]) -> None:
        super().__init__(mail_id, ALL_MASK)
        self.queue = queue
        self.members: list[SubTarget] = []
        self.cursors = cursors


def parse_msg_subject(rest: str) -> tuple[str, int, bool] | None:
    """`<mail_id>[.critical|.urgent|.normal|.*]` -> (mail_id, priority mask, explicit suffix).

    None when the mail-id position holds a wildcard (such a subscription could reveal mailboxes).
    """
    mail_id, dot, last = rest.rpartition(".")
    if not dot:
        mail_id, last = rest, ""
    if last in PRIORITY_INDEX:
        mask, explicit = 1 << PRIORITY_INDEX[last], True
    elif last == "*":
        mask, explicit = ALL_MASK, True
    else:
        mail_id, mask, explicit = rest, 1 << P_NORMAL, False
    if not mail_id or any(t in ("*", ">") or not t for t in mail_id.split(".")):
        return None
    return mail_id, mask, explicit


class Mq9Layer:
    prefix = PREFIX

    def __init__(self, cfg: Config, router: Router, log_: SegmentLog) -> None:
        self.cfg = cfg
        self.router = router
        self.log = log_
        self.registry = MailboxRegistry(log_, cfg.mq9_default_ttl_s, cfg.mq9_max_ttl_s)
        self.subs: dict[str, list[SubTarget]] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.groups_by_mail: dict[str, list[Group]] = {}
        self.public_subs: list[Any] = []
        self._post: list[tuple[Any, ...]] = []  # work that waits for the current batch's commit
        self._post_scheduled = False
        self._dirty_groups: set[Group] = set()
        self.stats = Mq9Stats()
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # LIST pages being built
        # subscriptions this layer took: their delivery target (None: a PUBLIC.LIST subscriber)
        self._taken: dict[Any, SubTarget | None] = {}
        # mailbox streams live exactly as long as their mailbox, not by the log's retention
        log_.retention_exempt.append(STREAM_PREFIX)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for t in self._all_targets():
            if t.task:
                t.task.cancel()
        for task in list(self._tasks):
            task.cancel()

    def _all_targets(self) -> list[Target]:
        out: list[Target] = [t for ts in self.subs.values() for t in ts]
        out.extend(self.groups.values())
        return out

    # ================================================================== publish side
    def on_publish(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
                   origin: Any) -> None:
        try:
            if subject.startswith(STREAM_PREFIX):
                self._send(subject, reply, headers, payload, origin)
            elif subject == CREATE:
                self._create(origin, reply, payload)
            elif subject.startswith(LIST_PREFIX):
                self._list(origin, subject[len(LIST_PREFIX):], reply, payload)
            elif subject.startswith(DELETE_PREFIX):
                self._delete(origin, subject[len(DELETE_PREFIX):], reply)
            elif subject == PUBLIC_LIST:
                if reply is None and origin is not None:
                    origin.refuse(Refusal(RefusalKind.PERMISSION_PUBLISH, subject))
                raise Mq9Error(f"{PUBLIC_LIST} is managed by the broker; publishing to it is not allowed")
            else:
                raise Mq9Error(f"unknown mq9 subject {subject}")
        except Mq9Error as exc:
            if reply:
                self._reply_now(origin, reply, {"error": str(exc)})

    def on_publish_requests(self, subject: str, replies: list[str], payloads: list[bytes],
                            origin: Any) -> None:
        """A pipelined burst of sends (each with its reply) to one subject: one lookup, one append."""
        if subject.startswith(STREAM_PREFIX) and len(payloads) > 1:
            mb, prio, explicit_normal = self._resolve_send(subject)
            if mb is not None:
                stream = self.log.stream(mb.stream_name)
                count = stream.next_offset - stream.first_offset - len(stream.deleted)
                size = sum([len(p) for p in payloads])
                if count + len(payloads) <= self.cfg.mq9_max_messages and \
                        stream.nbytes + stream.pending_bytes + size <= self.cfg.mq9_max_bytes:
                    meta: dict[str, int | str] = {"p": prio, "n": 1} if explicit_normal else {"p": prio}
                    ts = now_ms()
                    recs = [Record(ts, p, None, None, meta) for p in payloads]
                    first = self.log.append_many(stream, recs)
                    self.stats.messages_stored += len(recs)
                    self._post_commit(("live_many", mb, first, recs))
                    self._post_commit(("acks", origin, replies, first))
                    return
        for reply, payload in zip(replies, payloads):
            self.on_publish(subject, reply, None, payload, origin)

    def _resolve_send(self, subject: str) -> tuple[Mailbox | None, int, bool]:
        rest = subject[len(STREAM_PREFIX):]
        mail_id, dot, last = rest.rpartition(".")
        if dot and last in PRIORITY_INDEX:
            prio = PRIORITY_INDEX[last]
            return self.registry.get(mail_id), prio, prio == P_NORMAL
        return self.registry.get(rest), P_NORMAL, False

    def _send(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
              origin: Any) -> None:
        rest = subject[len(STREAM_PREFIX):]
        mail_id, dot, last = rest.rpartition(".")
        explicit_normal = False
        if dot and last in PRIORITY_INDEX:
            prio = PRIORITY_INDEX[last]
            explicit_normal = prio == P_NORMAL
        else:
            mail_id, prio = rest, P_NORMAL
        mb = self.registry.get(mail_id)
        if mb is None:
            if reply is None:
                self.stats.dropped_no_mailbox += 1
                return
            raise Mq9Error(f"mailbox {mail_id} does not exist")
        stream = self.log.stream(mb.stream_name)
        count = stream.next_offset - stream.first_offset - len(stream.deleted)
        if count >= self.cfg.mq9_max_messages or \
                stream.nbytes + stream.pending_bytes + len(payload) > self.cfg.mq9_max_bytes:
            self.stats.refused_full += 1
            if reply is None:
                return
            raise Mq9Error(f"mailbox {mail_id} is full ({count} messages); "
                           f"nothing was stored")
        meta: dict[str, int | str] = {"p": prio}
        if explicit_normal:
            meta["n"] = 1
        rec = Record(now_ms(), payload, None, _publisher_headers(headers) if headers else None, meta)
        off = self.log.append(stream, rec)
        self.stats.messages_stored += 1
        # always queued: who is subscribed is decided at commit time (no gap at the switch)
        self._post_commit(("live", mb, off, rec))
        if reply:
            self._post_commit(("reply", origin, reply, b'{"msg_id":%d}' % off))

    def _create(self, origin: Any, reply: str | None, body: bytes) -> None:
        req = self.registry.parse_create(body)
        if req.public and isinstance(req.name, str):
            old = self.registry.boxes.get(req.name)
            if old is not None and old.expired(now_ms()):
                self._expire(old)  # expired but not swept yet: finish it before the name is reused
        mb, is_new = self.registry.create(req)
        if is_new:
            self.stats.mailboxes_created += 1
            if mb.public:
                self._post_commit(("public", mb))
        if reply:
            self._post_commit(("reply", origin, reply,
                               _json.encode({"mail_id": mb.mail_id, "is_new": is_new})))

    def _list(self, origin: Any, mail_id: str, reply: str | None, body: bytes) -> None:
        if not reply:
            return
        req = parse_list_request(body)
        self._post_commit(("list", origin, reply, mail_id, req))

    def _delete(self, origin: Any, rest: str, reply: str | None) -> None:
        mail_id, dot, msg = rest.rpartition(".")
        if not dot or not (msg.isascii() and msg.isdigit()):
            raise Mq9Error("use $mq9.AI.MAILBOX.DELETE.<mail_id>.<msg_id> with a numeric msg_id")
        mb = self.registry.get(mail_id)
        if mb is None:
            raise Mq9Error(f"mailbox {mail_id} does not exist")
        stream = self.log.get_stream(mb.stream_name)
        deleted = stream is not None and self.log.delete_record(stream, int(msg))
        if reply:
            self._post_commit(("reply", origin, reply, _json.encode({"deleted": deleted})))

    async def _list_page(self, origin: Any, reply: str, mail_id: str, req: ListRequest) -> None:
        """One page of LIST in delivery order, built by one pass over the stream that yields to the
        loop between chunks, so a huge mailbox never stalls other clients."""
        try:
            obj = await self._list_reply(mail_id, req)
        except Mq9Error as exc:
            obj = {"error": str(exc)}
        if not origin.closed:
            origin.reply(reply, _json.encode(obj))

    async def _list_reply(self, mail_id: str, req: ListRequest) -> dict[str, Any]:
        mb = self.registry.get(mail_id)
        if mb is None:
            raise Mq9Error(f"mailbox {mail_id} does not exist")
        after = parse_cursor(req.cursor)
        limit = req.limit
        buckets: list[list[tuple[int, int, int, int]]] = [[], [], []]
        total = 0
        stream = self.log.get_stream(mb.stream_name)
        if stream is not None:
            for off, rec in self.log.read(stream):
                total += 1
                if total % LIST_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                    if self.registry.get(mail_id) is not mb:
                        raise Mq9Error(f"mailbox {mail_id} does not exist")
                p = _prio(rec)
                if (p, off) <= after:
                    continue
                b = buckets[p]
                if len(b) <= limit:  # one more than a page: tells whether a next page exists
                    b.append((p, off, rec.ts, len(rec.payload)))
        page = (buckets[0] + buckets[1] + buckets[2])[:limit + 1]
        out: dict[str, Any] = {"mail_id": mail_id, "messages": [
            {"msg_id": off, "priority": PRIORITIES[p], "ts": ts, "size": size}
            for p, off, ts, size in page[:limit]], "total": total}
        if len(page) > limit:
            p, off = page[limit - 1][0], page[limit - 1][1]
            out["next"] = f"{PRIORITIES[p]}:{off}"
        return out

    def _reply_now(self, origin: Any, reply: str, obj: dict[str, Any]) -> None:
        if origin is not None:
            origin.reply(reply, _json.encode(obj))

    # ------------------------------------------------------------------ after commit
    def _post_commit(self, item: tuple[Any, ...]) -> None:
        self._post.append(item)
        if not self._post_scheduled:
            self._post_scheduled = True
            self.log.after_commit(self._run_post)

    def _run_post(self) -> None:
        self._post_scheduled = False
        items, self._post = self._post, []
        for item in items:
            kind = item[0]
            if kind == "live":
                self._deliver_live(item[1], item[2], item[3])
            elif kind == "reply":
                if item[1] is not None:
                    item[1].reply(item[2], item[3])
            elif kind == "acks":
                origin, first = item[1], item[3]
                if origin is not None and not origin.closed:
                    reply_to = origin.reply
                    for i, reply in enumerate(item[2]):
                        reply_to(reply, b'{"msg_id":%d}' % (first + i))
            elif kind == "live_many":
                mb, first, recs = item[1], item[2], item[3]
                if mb.mail_id in self.subs or mb.mail_id in self.groups_by_mail:
                    for i, rec in enumerate(recs):
                        self._deliver_live(mb, first + i, rec)
            elif kind == "list":
                if item[1] is not None:
                    task = asyncio.get_running_loop().create_task(
                        self._list_page(item[1], item[2], item[3], item[4]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif kind == "public":
                mb = item[1]
                self._public_event({"event": "created", "mail_id": mb.mail_id, "desc": mb.desc,
                                    "ttl": mb.ttl})
        self._persist_groups()

    # ================================================================== delivery
    def _deliver_live(self, mb: Mailbox, off: int, rec: Record) -> None:
        if self.registry.boxes.get(mb.mail_id) is not mb:
            return  # expired meanwhile
        stream = self.log.get_stream(mb.stream_name)
        if stream is not None and off in stream.deleted:
            return
        bit = 1 << _prio(rec)
        for t in self.subs.get(mb.mail_id, ()):
            if t.mask & bit:
                if t.replaying:
                    t.backlog.append((mb, off, rec))
                else:
                    self._to_sub(t.sub, mb, off, rec)
        for g in self.groups_by_mail.get(mb.mail_id, ()):
            if g.replaying:
                g.backlog.append((mb, off, rec))
            else:
                self._to_group(g, mb, off, rec)

    def _to_sub(self, sub: Any, mb: Mailbox, off: int, rec: Record) -> None:
        p = _prio(rec)
        subject = mb.stream_name if p == P_NORMAL and not (rec.meta and rec.meta.get("n")) \
            else mb.stream_name + "." + PRIORITIES[p]
        headers = [(b"mq9-msg-id", b"%d" % off), (b"mq9-priority", _PRIO_BYTES[p]), (b"mq9-ts", b"%d" % rec.ts)]
        if rec.headers:
            headers.extend(rec.headers)
        sub.conn.deliver(sub, subject, None, headers, rec.payload)
        self.stats.messages_delivered += 1

    def _to_group(self, g: Group, mb: Mailbox, off: int, rec: Record) -> bool:
        p = _prio(rec)
        if off <= g.cursors[p]:
            return True
        bit = 1 << p
        members = [m for m in g.members if m.mask & bit and not m.sub.conn.closed]
        if not members:
            return False
        m = members[random.randrange(len(members))] if len(members) > 1 else members[0]
        self._to_sub(m.sub, mb, off, rec)
        g.cursors[p] = off
        self._dirty_groups.add(g)
        return True

    def _persist_groups(self) -> None:
        if not self._dirty_groups:
            return
        for g in self._dirty_groups:
            self.log.put_meta(GROUP_NS, _group_key(g.mail_id, g.queue), _group_enc.encode(g.cursors))
        self._dirty_groups.clear()

    # ------------------------------------------------------------------ replay
    def _start_replay(self, t: Target) -> None:
        mb = self.registry.get(t.mail_id)
        if mb is None:
            return
        stream = self.log.get_stream(mb.stream_name)
        if stream is None or stream.committed == stream.first_offset:
            return
        t.replaying = True
        t.backlog = []
        self.stats.replays += 1
        t.task = asyncio.get_running_loop().create_task(self._replay(t, mb, stream, stream.committed))

    async def _replay(self, t: Target, mb: Mailbox, stream: Stream, end: int) -> None:
        try:
            n = 0
            for p in range(3):
                if not t.mask & (1 << p):
                    continue
                start = t.cursors[p] + 1 if isinstance(t, Group) else 0
                for off, rec in self.log.read(stream, start, end):
                    if _prio(rec) != p:
                        continue
                    if isinstance(t, Group):
                        if not self._to_group(t, mb, off, rec):
                            return  # nobody left in the group: the rest waits for it
                    else:
                        if t.sub.conn.closed:
                            return
                        self._to_sub(t.sub, mb, off, rec)
                    n += 1
                    if n % REPLAY_CHUNK == 0:
                        self._persist_groups()
                        if not await self._pace(t):
                            return
                        if self.registry.boxes.get(mb.mail_id) is not mb or mb.expired(now_ms()):
                            return
        finally:
            self._persist_groups()
            t.replaying = False
            t.task = None
            backlog, t.backlog = t.backlog, []
            for bmb, off, rec in backlog:
                if isinstance(t, Group):
                    self._to_group(t, bmb, off, rec)
                elif not t.sub.conn.closed:
                    self._to_sub(t.sub, bmb, off, rec)

    async def _pace(self, t: Target) -> bool:
        """Yield to the loop; wait while the subscriber(s) have a large unsent backlog."""
        await asyncio.sleep(0)
        conns = [m.sub.conn for m in t.members] if isinstance(t, Group) else [t.sub.conn]
        for _ in range(5000):  # bounded: about 10 s
            live = [c for c in conns if not c.closed]
            if not live:
                return False
            if min(c.outbound_size() for c in live) < REPLAY_HIGH_WATER:
                return True
            await asyncio.sleep(0.002)
        return True

    # ================================================================== subscribe side
    def claims(self, subject: str) -> bool:
        return subject.startswith(PREFIX)

    def on_subscribe(self, sub: Any) -> Refusal | None:
        subject = sub.subject
        if subject == PUBLIC_LIST:
            self._taken[sub] = None
            self.public_subs.append(sub)
            for mb in sorted(self.registry.public(now_ms()), key=lambda m: m.created_ms):
                sub.conn.deliver(sub, PUBLIC_LIST, None, None, _json.encode(
                    {"event": "created", "mail_id": mb.mail_id, "desc": mb.desc, "ttl": mb.ttl}))
            return None
        if subject.startswith(STREAM_PREFIX) or subject + "." == STREAM_PREFIX:
            parsed = parse_msg_subject(subject[len(STREAM_PREFIX):])
            if parsed is None:
                return Refusal(RefusalKind.PERMISSION_SUBSCRIBE, subject,
                               "a wildcard in the mail-id position could reveal other mailboxes")
            mail_id, mask, _ = parsed
            t = SubTarget(sub, mail_id, mask)
            self._taken[sub] = t
            if sub.queue:
                self._join_group(t, sub.queue)
            else:
                self.subs.setdefault(mail_id, []).append(t)
                self._start_replay(t)
            return None
        # other $mq9.AI.* filters are plain subscriptions; mailbox traffic never reaches the trie
        self.router.subscribe_plain(sub)
        return None

    def _join_group(self, t: SubTarget, queue: str) -> None:
        key = (t.mail_id, queue)
        g = self.groups.get(key)
        if g is None:
            raw = self.log.get_meta(GROUP_NS, _group_key(t.mail_id, queue))
            g = Group(t.mail_id, queue, _group_dec.decode(raw) if raw else [-1, -1, -1])
            self.groups[key] = g
            self.groups_by_mail.setdefault(t.mail_id, []).append(g)
            g.members.append(t)
            self._start_replay(g)
        else:
            g.members.append(t)

    def on_unsubscribe(self, sub: Any) -> None:
        if sub not in self._taken:
            return
        t = self._taken.pop(sub)
        if t is None:
            try:
                self.public_subs.remove(sub)
            except ValueError:
                pass
            return
        if sub.queue:
            g = self.groups.get((t.mail_id, sub.queue))
            if g is None:
                return
            try:
                g.members.remove(t)
            except ValueError:
                pass
            if not g.members:
                if g.task:
                    g.task.cancel()
                self._persist_groups()
                del self.groups[(t.mail_id, sub.queue)]
                lst = self.groups_by_mail.get(t.mail_id, [])
                if g in lst:
                    lst.remove(g)
                if not lst:
                    self.groups_by_mail.pop(t.mail_id, None)
            return
        lst2 = self.subs.get(t.mail_id)
        if lst2 and t in lst2:
            lst2.remove(t)
            if not lst2:
                del self.subs[t.mail_id]
        if t.task:
            t.task.cancel()

    # ================================================================== expiry
    def _public_event(self, event: dict[str, Any]) -> None:
        data = _json.encode(event)
        for sub in list(self.public_subs):
            if not sub.conn.closed:
                sub.conn.deliver(sub, PUBLIC_LIST, None, None, data)

    def sweep(self) -> int:
        """Remove expired mailboxes and their messages; returns how many."""
        gone = self.registry.expired_now(now_ms())
        for mb in gone:
            self._expire(mb)
        return len(gone)

    def _expire(self, mb: Mailbox) -> None:
        """Remove one mailbox: registry entry, stream, group progress; announce it if public."""
        self.registry.remove(mb.mail_id)
        self.log.delete_stream(mb.stream_name)
        # groups stay attached (their members are still subscribed: a public name may be created
        # again), with progress reset because a new mailbox's stream starts again at offset 0
        for g in self.groups_by_mail.get(mb.mail_id, []):
            if g.task:
                g.task.cancel()
            g.cursors = [-1, -1, -1]
            g.backlog = []
            self._dirty_groups.discard(g)
        self.log.delete_meta_prefix(GROUP_NS, _group_key(mb.mail_id, ""))
        self.stats.mailboxes_expired += 1
        if mb.public:
            self._public_event({"event": "expired", "mail_id": mb.mail_id})

    async def _sweep_loop(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:
                log.exception("mq9 sweep failed")
            await asyncio.sleep(self.cfg.mq9_sweep_interval_s)

    # ------------------------------------------------------------------ monitoring
    def mailbox_count(self) -> int:
        return len(self.registry.boxes)


class ListRequest(msgspec.Struct, forbid_unknown_fields=True):
    """LIST's optional body: a page size and where the previous page ended."""

    limit: int = LIST_DEFAULT_LIMIT
    cursor: str | None = None


_list_decoder = msgspec.json.Decoder(ListRequest)


def parse_list_request(body: bytes) -> ListRequest:
    if not body.strip():
        return ListRequest()
    try:
        req = _list_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise Mq9Error(f"invalid list request: {exc}") from None
    except msgspec.DecodeError:
        raise Mq9Error("invalid list request: body is not valid JSON") from None
    if not 1 <= req.limit <= LIST_MAX_LIMIT:
        raise Mq9Error(f"limit must be between 1 and {LIST_MAX_LIMIT}")
    parse_cursor(req.cursor)
    return req


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    """`"<priority>:<msg_id>"` (a LIST reply's `next`) -> the (priority index, msg_id) it stands for."""
    if cursor is None:
        return (-1, -1)
    name, sep, num = cursor.partition(":")
    if not sep or name not in PRIORITY_INDEX or not (num.isascii() and num.isdigit()):
        raise Mq9Error("invalid cursor: pass the \"next\" value of the previous LIST reply")
    return (PRIORITY_INDEX[name], int(num))


def _publisher_headers(headers: Headers) -> Headers | None:
    """The publisher's headers without any `mq9-*` name: those belong to the broker, which sets
    them on delivery; a forged `mq9-msg-id` or `mq9-priority` is never stored."""
    pairs = [kv for kv in headers if not kv[0].lower().startswith(b"mq9-")]
    return pairs or None


def _prio(rec: Record) -> int:
    m = rec.meta
    return int(m.get("p", P_NORMAL)) if m else P_NORMAL


def _group_key(mail_id: str, queue: str) -> str:
    return mail_id + "\x00" + queue
