"""The mq9 layer: owns the `$mq9.AI.` subjects on the router and dispatches them.

It talks to the rest of the broker through three narrow things only: the router's `SubjectOwner`
interface (`claims`, `on_publish`, `on_subscribe`, `on_unsubscribe`, `on_connection_closed`), the
log (streams, metadata, commit callbacks), and the neutral `Connection` of a subscription or
request (`deliver`, `reply`, `refuse`, `outbound_size`, `closed`), which any front-end's connection
provides. Replies go to the requesting connection only (`Connection.reply`), never through the
subject match.

Store-first: a send is appended to the mailbox's stream; delivery to live subscribers and the
request's `{"msg_id": N}` reply happen only after the commit that made it durable.

The parts, one job each: `mailboxes` (registry, ids, TTL, expiry heap), `delivery` (subscribers,
queue groups, replay), `discovery` (PUBLIC.LIST), `requests` (LIST paging), `subjects` (parsing, and
which dialect a client speaks: §4's or the PyPI SDK's `high`/`normal`/`low`, SPEC §4b), `upstream`
(upstream's current protocol, §4b: `$mq9.AI.MSG.*` SEND/FETCH/ACK/QUERY/DELETE, every reply with
`error`; its SEND and DELETE are dispatched here, sharing §4's store-first path), `agents` (upstream's
`$mq9.AI.AGENT.*` registry, with full-text and semantic search in `agents_search`).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from time import time_ns
from typing import Any

import msgspec

from robustmq.config import Config
from robustmq.core_log import Record, SegmentLog
from robustmq.frontends.mq9.agents import AGENT_PREFIX, DISCOVER, AgentRegistry
from robustmq.frontends.mq9.delayed import DelayedPush
from robustmq.frontends.mq9.delivery import Delivery, SubTarget
from robustmq.frontends.mq9.discovery import PublicList
from robustmq.frontends.mq9.mailboxes import STREAM_PREFIX, Mailbox, MailboxRegistry, Mq9Error, now_ms
from robustmq.frontends.mq9.requests import ListRequest, list_page, parse_list_request
from robustmq.frontends.mq9.stats import Mq9Stats
from robustmq.frontends.mq9.subjects import (
    CREATE,
    DELETE_PREFIX,
    LIST_PREFIX,
    PREFIX,
    PUBLIC_LIST,
    is_sdk_client,
    parse_msg_subject,
    parse_send_subject,
)
from robustmq.frontends.mq9.upstream import (
    ACK_PREFIX,
    FETCH_PREFIX,
    MSG_DELETE_PREFIX,
    QUERY_PREFIX,
    SEND_PREFIX,
    FetchRequest,
    Upstream,
    ok,
    parse_send_headers,
    reply_error,
    split_addr_msg,
)
from robustmq.routing.contract import Connection, Headers, Refusal, RefusalKind
from robustmq.routing.router import Router

log = logging.getLogger("robustmq.mq9")

_json = msgspec.json.Encoder()

# work that waits for the commit of the batch it was appended in
_SEND, _LIVE, _LIVE_MANY, _REPLY, _ACKS, _LIST, _PUBLIC, _DELAYED = range(8)
ACK_PART = 64  # sends of one burst committed and acknowledged together (wal mode), at least
ACK_PARTS_MAX = 4  # and a burst in at most this many parts (each part costs one commit)


class Mq9Layer:
    prefix = PREFIX

    def __init__(self, cfg: Config, router: Router, log_: SegmentLog) -> None:
        self.cfg = cfg
        self.router = router
        self.log = log_
        self.stats = Mq9Stats()
        self.registry = MailboxRegistry(log_, cfg.mq9_default_ttl_s, cfg.mq9_max_ttl_s)
        self.upstream = Upstream(log_, self.registry)
        # replays read each priority's range only, from upstream's per-mailbox priority index
        self.delivery = Delivery(log_, self.registry, self.stats, self.upstream.index)
        self.public = PublicList(self.registry)
        # upstream's mq9-delay: pushed to §4 subscribers and queue groups when due, restarts included
        self.delayed = DelayedPush(log_, self.registry, self.delivery.has_targets, self._push_due)
        self.agents = AgentRegistry(log_, self.registry)  # upstream's AGENT.* registry and search
        # work to do once a log batch is written, per batch: the log writes one batch while the next
        # fills, so an item queued now must not ride on the callback of the batch already in flight
        self._post: list[tuple[Any, ...]] | None = None
        self._post_seq = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # LIST pages being built
        self._ack_replies: list[tuple[Connection | None, str, bytes]] = []  # until `_save_acks`
        self._acks_scheduled = False
        # subscriptions this layer took: their delivery target (None: a PUBLIC.LIST subscriber)
        self._taken: dict[Any, SubTarget | None] = {}
        # mailbox streams live exactly as long as their mailbox, not by the log's retention
        log_.retention_exempt.append(STREAM_PREFIX)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        pending = self.delayed.load()  # delayed messages sent before a restart, from their index
        if pending:
            log.info("mq9: %d delayed messages pending", pending)
        self.agents.start()

    def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        self.delivery.close()
        self.delayed.close()
        self.agents.close()
        for task in list(self._tasks):
            task.cancel()

    # ================================================================== publish side
    def on_publish(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
                   origin: Connection | None) -> None:
        try:
            if subject.startswith(STREAM_PREFIX):
                self._send(subject, reply, headers, payload, origin)
            elif subject == CREATE:
                self._create(origin, reply, payload)
            elif subject.startswith(LIST_PREFIX):
                if reply:
                    req = parse_list_request(payload)
                    self._post_commit((_LIST, origin, reply, subject[len(LIST_PREFIX):], req))
            elif subject.startswith(DELETE_PREFIX):
                self._delete(origin, subject[len(DELETE_PREFIX):], reply)
            elif subject.startswith(SEND_PREFIX):
                self._upstream_send(subject[len(SEND_PREFIX):], reply, headers, payload, origin)
            elif subject.startswith(MSG_DELETE_PREFIX):
                self._delete(origin, subject[len(MSG_DELETE_PREFIX):], reply, upstream=True)
            elif subject.startswith(ACK_PREFIX):
                # the group's new state is written at the end of this loop turn (one write for a
                # burst of ACKs) and the ACK answered once that write is durable
                body = self.upstream.ack(subject[len(ACK_PREFIX):], payload)
                if reply:
                    self._ack_replies.append((origin, reply, body))
                if not self._acks_scheduled:
                    self._acks_scheduled = True
                    asyncio.get_running_loop().call_soon(self._save_acks)
            elif subject.startswith(FETCH_PREFIX):
                if reply and origin is not None:
                    freq = self.upstream.parse_fetch(payload)
                    self._spawn(self._upstream_fetch(origin, reply, subject[len(FETCH_PREFIX):], freq))
            elif subject.startswith(QUERY_PREFIX):
                if reply and origin is not None:
                    self._spawn(self._upstream_query(origin, reply, subject[len(QUERY_PREFIX):], payload))
            elif subject.startswith(AGENT_PREFIX):
                if subject == DISCOVER:
                    if reply and origin is not None:
                        dreq = self.agents.parse_discover(payload)
                        self._spawn(self.agents.serve_discover(origin, reply, dreq))
                else:  # REGISTER / UNREGISTER / REPORT: answered once the write is durable
                    body = self.agents.handle(subject, payload)
                    if reply:
                        self._post_commit((_REPLY, origin, reply, body))
            elif subject == PUBLIC_LIST:
                if reply is None and origin is not None:
                    origin.refuse(Refusal(RefusalKind.PERMISSION_PUBLISH, subject))
                raise Mq9Error(f"{PUBLIC_LIST} is managed by the broker; publishing to it is not allowed")
            else:
                raise Mq9Error(f"unknown mq9 subject {subject}")
        except Mq9Error as exc:
            if reply and origin is not None:
                origin.reply(reply, _json.encode({"error": str(exc)}))
        except Exception as exc:
            # a bug in one request must cost that request only: it is answered and logged, and
            # the connection (and the others pipelined behind it) carry on
            log.exception("mq9 request on %s failed", subject)
            if reply and origin is not None and not origin.closed:
                origin.reply(reply, _json.encode({"error": f"internal error: {type(exc).__name__}"}))

    def on_publish_requests(self, subject: str, replies: list[str], payloads: list[bytes],
                            origin: Connection | None) -> None:
        """A pipelined burst of sends (each with its reply) to one subject: one lookup, one append."""
        if len(payloads) == 1 and subject.startswith(STREAM_PREFIX):  # one request at a time
            try:
                self._send(subject, replies[0], None, payloads[0], origin)
            except Mq9Error as exc:
                if replies[0] and origin is not None:
                    origin.reply(replies[0], _json.encode({"error": str(exc)}))
            return
        if subject.startswith(STREAM_PREFIX) and len(payloads) > 1:
            mail_id, _, meta, prio = parse_send_subject(subject)
            mb = self.registry.get(mail_id)
            if mb is not None and self._room(mb, len(payloads), sum([len(p) for p in payloads])) is None:
                ts = now_ms()
                stream = self.log.stream(mb.stream_name)
                n = len(payloads)
                # a large burst is committed and acknowledged in parts, so the first acks leave while
                # the rest is stored and a windowed client refills meanwhile instead of waiting for
                # the whole window (inline commits: only where a commit does not wait on the disk)
                step = n if self.log.writer_thread or n <= ACK_PART else max(ACK_PART, -(-n // ACK_PARTS_MAX))
                for i in range(0, n, step):
                    if i:
                        self.log.flush()
                    recs = [Record(ts, p, None, None, meta) for p in payloads[i:i + step]]
                    first = self.log.append_many(stream, recs)
                    self.upstream.note_stored(mb, stream, first, len(recs), prio)
                    self.stats.messages_stored += len(recs)
                    self._post_commit((_LIVE_MANY, mb, first, recs))
                    self._post_commit((_ACKS, origin, replies[i:i + step], first))
                return
        for reply, payload in zip(replies, payloads):
            self.on_publish(subject, reply, None, payload, origin)

    def _room(self, mb: Mailbox, count: int, size: int) -> int | None:
        """None when `count` more messages of `size` bytes fit; else how many the mailbox holds."""
        stream = self.log.stream(mb.stream_name)
        held = stream.next_offset - stream.first_offset - len(stream.deleted)
        if held + count > self.cfg.mq9_max_messages or \
                stream.nbytes + stream.pending_bytes + size > self.cfg.mq9_max_bytes:
            return held
        return None

    def _send(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
              origin: Connection | None) -> None:
        # the hot path of mq9: `now_ms`, `registry.get`, `Stream.first_offset` and `_room` inlined,
        # one clock read, one stream lookup
        mail_id, name, meta, prio = parse_send_subject(subject)
        now = time_ns() // 1_000_000
        mb = self.registry.boxes.get(mail_id)
        if mb is None or (mb.expires_ms and now >= mb.expires_ms):
            if reply is None:
                self.stats.dropped_no_mailbox += 1
                if origin is not None:
                    origin.refuse(Refusal(RefusalKind.NO_DESTINATION, subject,
                                          f"mailbox {mail_id} does not exist"))
                return
            raise Mq9Error(f"mailbox {mail_id} does not exist")
        log_ = self.log
        stream = log_.streams.get(name) or log_.stream(name)
        segs = stream.segments
        held = stream.next_offset - (segs[0].first if segs else stream.next_offset) - len(stream.deleted)
        if held >= self.cfg.mq9_max_messages or \
                stream.nbytes + stream.pending_bytes + len(payload) > self.cfg.mq9_max_bytes:
            self.stats.refused_full += 1
            if reply is None:
                if origin is not None:
                    origin.refuse(Refusal(RefusalKind.QUOTA_EXCEEDED, subject, f"mailbox {mail_id} is full"))
                return
            raise Mq9Error(f"mailbox {mail_id} is full ({held} messages); nothing was stored")
        if headers:
            meta = _with_mqtt_expiry(headers, meta)
        rec = Record(now, payload, None, _publisher_headers(headers) if headers else None, meta)
        off = log_.append(stream, rec)
        self.upstream.note_stored(mb, stream, off, 1, prio)
        self.stats.messages_stored += 1
        # always queued: who is subscribed is decided at commit time (no gap at the switch); the
        # reply (if any) goes after the live delivery, once the commit is written
        self._post_commit((_SEND, mb, off, rec, origin, reply))

    def _upstream_send(self, addr: str, reply: str | None, headers: Headers | None, payload: bytes,
                       origin: Connection | None) -> None:
        """Upstream's SEND: into the same mailbox stream as §4's, with its `mq9-*` headers read into
        the record's priority, key and metadata (SPEC §4b). Always answered with `error`."""
        mb = self.registry.get(addr)
        subject = SEND_PREFIX + addr
        if mb is None:
            if reply is None:
                self.stats.dropped_no_mailbox += 1
                if origin is not None:
                    origin.refuse(Refusal(RefusalKind.NO_DESTINATION, subject,
                                          f"mailbox {addr} does not exist"))
                return
            raise Mq9Error(f"mailbox {addr} does not exist")
        now = now_ms()
        _, meta, key = parse_send_headers(headers, now)  # the priority is in meta["p"]
        held = self._room(mb, 1, len(payload))
        if held is not None:
            self.stats.refused_full += 1
            if reply is None and origin is not None:
                origin.refuse(Refusal(RefusalKind.QUOTA_EXCEEDED, subject, f"mailbox {addr} is full"))
            raise Mq9Error(f"mailbox {addr} is full ({held} messages); nothing was stored")
        stream = self.log.stream(mb.stream_name)
        rec = Record(now, payload, key, _publisher_headers(headers) if headers else None, meta)
        off = self.log.append(stream, rec)
        self.upstream.note_stored(mb, stream, off, 1, int(meta["p"]))
        if key is not None:
            self.upstream.replace_keyed(mb, stream, key, off)  # keep only the latest per key
        self.stats.messages_stored += 1
        vis = meta.get("vis")
        if vis is None:
            self._post_commit((_LIVE, mb, off, rec))
        else:
            # pushed to §4 subscribers and queue groups when due; indexed in this batch, so a
            # restart before then still pushes it
            self.delayed.stored(mb, off, int(vis))
            self._post_commit((_DELAYED, mb, off, rec))
        if reply:
            self._post_commit((_REPLY, origin, reply, ok({"msg_id": -1 if vis is not None else off})))

    def _save_acks(self) -> None:
        """End of a loop turn with ACKs: write the groups they changed, then answer each ACK once
        the batch holding that write is committed."""
        self._acks_scheduled = False
        self.upstream.save_dirty()
        replies, self._ack_replies = self._ack_replies, []
        for origin, reply, body in replies:
            self._post_commit((_REPLY, origin, reply, body))

    def _push_due(self, mb: Mailbox, off: int, rec: Record | None) -> None:
        """A delayed message came due (None: it was deleted meanwhile)."""
        if rec is None:
            self.delivery.settle_owed(mb.mail_id, off)
        else:
            self.delivery.live(mb, off, rec)
        self.delivery.persist_groups()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upstream_fetch(self, origin: Connection, reply: str, addr: str,
                              req: FetchRequest) -> None:
        try:
            body = await self.upstream.fetch(addr, req, origin)
            await self.log.committed()  # a group's new `hi` is durable before the messages go out
        except Mq9Error as exc:
            reply_error(origin, reply, exc)
            return
        except Exception as exc:  # a failed write: the requester is told, the layer goes on
            log.exception("mq9 FETCH on %s failed", addr)
            reply_error(origin, reply, Mq9Error(f"fetch failed: {exc}"))
            return
        if not origin.closed:
            origin.reply(reply, body)

    async def _upstream_query(self, origin: Connection, reply: str, addr: str, payload: bytes) -> None:
        try:
            body = await self.upstream.query(addr, payload)
        except Mq9Error as exc:
            reply_error(origin, reply, exc)
            return
        except Exception as exc:  # a bug must not leave the requester without an answer
            log.exception("mq9 QUERY on %s failed", addr)
            reply_error(origin, reply, Mq9Error(f"query failed: {exc}"))
            return
        if not origin.closed:
            origin.reply(reply, body)

    def _create(self, origin: Connection | None, reply: str | None, body: bytes) -> None:
        req = self.registry.parse_create(body)
        if isinstance(req.name, str):
            old = self.registry.boxes.get(req.name)
            if old is not None and old.expired(now_ms()):
                self._expire(old)  # expired but not swept yet: finish it before the name is reused
        mb, is_new = self.registry.create(req)
        if is_new:
            self.stats.mailboxes_created += 1
            if mb.public:
                self._post_commit((_PUBLIC, mb))
        if reply:
            # both dialects' names for the id; `error: ""` only for upstream's named create, the one
            # request no §4/PyPI-SDK client sends (they raise when `error` is present at all)
            out: dict[str, Any] = {"mail_id": mb.mail_id, "mail_address": mb.mail_id, "is_new": is_new}
            if req.name is not None and req.public is msgspec.UNSET:
                out["error"] = ""
            self._post_commit((_REPLY, origin, reply, _json.encode(out)))

    def _delete(self, origin: Connection | None, rest: str, reply: str | None,
                upstream: bool = False) -> None:
        if upstream:
            mail_id, num = split_addr_msg(rest)
            msg = str(num)
        else:
            mail_id, dot, msg = rest.rpartition(".")
            if not dot or not (msg.isascii() and msg.isdigit()):
                raise Mq9Error("use $mq9.AI.MAILBOX.DELETE.<mail_id>.<msg_id> with a numeric msg_id")
        mb = self.registry.get(mail_id)
        if mb is None:
            raise Mq9Error(f"mailbox {mail_id} does not exist")
        stream = self.log.get_stream(mb.stream_name)
        deleted = stream is not None and self.log.delete_record(stream, int(msg))
        if reply:
            out = ok({"deleted": deleted}) if upstream else _json.encode({"deleted": deleted})
            self._post_commit((_REPLY, origin, reply, out))

    async def _list(self, origin: Connection, reply: str, mail_id: str, req: ListRequest) -> None:
        try:
            obj = await list_page(self.log, self.registry, mail_id, req, is_sdk_client(origin))
        except Mq9Error as exc:
            obj = {"error": str(exc)}
        if not origin.closed:
            origin.reply(reply, _json.encode(obj))

    # ------------------------------------------------------------------ after commit
    def _post_commit(self, item: tuple[Any, ...]) -> None:
        seq = self.log.batch_seq
        if self._post is not None and self._post_seq == seq:
            self._post.append(item)
            return
        items = self._post = [item]
        self._post_seq = seq
        self.log.on_commit(seq, partial(self._run_post, items))

    def _run_post(self, items: list[tuple[Any, ...]]) -> None:
        if self._post is items:
            self._post = None
        delivery = self.delivery
        subs, groups = delivery.subs, delivery.groups_by_mail
        pos, end = 0, len(items)
        while pos < end:
            item = items[pos]
            pos += 1
            kind = item[0]
            if kind == _SEND:  # (_SEND, mailbox, offset, record, origin, reply subject or None)
                mail_id = item[1].mail_id
                if mail_id in subs or mail_id in groups:
                    delivery.live(item[1], item[2], item[3])
                if item[5] and item[4] is not None:
                    item[4].reply(item[5], b'{"msg_id":%d}' % item[2])
            elif kind == _LIVE:
                delivery.live(item[1], item[2], item[3])
            elif kind == _REPLY:
                origin = item[1]
                if origin is None:
                    continue
                # a pipelined burst of requests from one connection (e.g. a batch's ACKs) is
                # answered in one write, not one socket write per reply
                j = pos
                while j < end and items[j][0] == _REPLY and items[j][1] is origin:
                    j += 1
                if j == pos:
                    origin.reply(item[2], item[3])
                else:
                    run = items[pos - 1:j]
                    origin.reply_many([r[2] for r in run], [r[3] for r in run])
                    pos = j
            elif kind == _ACKS:
                origin, first = item[1], item[3]
                if origin is not None and not origin.closed:
                    acks = [b'{"msg_id":%d}' % i for i in range(first, first + len(item[2]))]
                    origin.reply_many(item[2], acks)
            elif kind == _LIVE_MANY:
                mb, first, recs = item[1], item[2], item[3]
                if delivery.has_targets(mb.mail_id):
                    for i, rec in enumerate(recs):
                        delivery.live(mb, first + i, rec)
            elif kind == _LIST:
                if item[1] is not None:
                    task = asyncio.get_running_loop().create_task(self._list(*item[1:]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif kind == _PUBLIC:
                self.public.created(item[1])
            elif kind == _DELAYED:
                mb, off, rec = item[1], item[2], item[3]
                delivery.delayed(mb, off, rec)
                self.delayed.committed(mb, off, int(rec.meta["vis"]), rec)
        if delivery._dirty_groups:  # (persist_groups would find nothing to do)
            delivery.persist_groups()

    # ================================================================== subscribe side
    def claims(self, subject: str) -> bool:
        return subject.startswith(PREFIX)

    def on_subscribe(self, sub: Any) -> Refusal | None:
        subject = sub.subject
        if subject == PUBLIC_LIST:
            self._taken[sub] = None
            self.public.add(sub)
            return None
        if subject.startswith(STREAM_PREFIX) or subject + "." == STREAM_PREFIX:
            parsed = parse_msg_subject(subject[len(STREAM_PREFIX):])
            if parsed is None:
                return Refusal(RefusalKind.PERMISSION_SUBSCRIBE, subject,
                               "a wildcard in the mail-id position could reveal other mailboxes")
            mail_id, mask, _ = parsed
            # the SDK's dialect (an envelope body) only for the SDK itself, known by its CONNECT
            # name: a `.low` / `.high` filter of any other client (the nats CLI, robustmq's own CLI,
            # an MQTT device on `…/low`) gets the payload untouched, as §4 says
            self._taken[sub] = self.delivery.add(sub, mail_id, mask, is_sdk_client(sub.conn))
            return None
        # other $mq9.AI.* filters are plain subscriptions; mailbox traffic never reaches them
        self.router.subscribe_plain(sub)
        return None

    def on_connection_closed(self, conn: Connection) -> None:
        """The router's close hook: a FETCH group's leases held by `conn` end now, and the FETCHes
        waiting for them are woken (upstream's dialect; its subscriptions went by `on_unsubscribe`)."""
        self.upstream.connection_closed(conn)

    def on_unsubscribe(self, sub: Any) -> None:
        if sub not in self._taken:
            return
        t = self._taken.pop(sub)
        if t is None:
            self.public.remove(sub)
        else:
            self.delivery.remove(t)

    # ================================================================== expiry
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
        self.delivery.forget(mb)
        self.upstream.forget(mb)
        self.delayed.forget(mb)
        self.agents.forget(mb.mail_id)  # a registered agent goes with its mailbox
        self.stats.mailboxes_expired += 1
        if mb.public:
            self.public.expired(mb)

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


def _publisher_headers(headers: Headers) -> Headers | None:
    """The publisher's headers without any `mq9-*` name: those belong to the broker, which sets
    them on delivery; a forged `mq9-msg-id` or `mq9-priority` is never stored."""
    pairs = [kv for kv in headers if not kv[0].lower().startswith(b"mq9-")]
    return pairs or None


def _with_mqtt_expiry(headers: Headers, meta: dict[str, Any]) -> dict[str, Any]:
    """An MQTT 5 send's Message Expiry Interval (the `mqtt-expires-ms` header) is the message's
    expiry in the mailbox too, as upstream's `mq9-ttl` is: hidden from every reader once past."""
    for k, v in headers:
        if k == b"mqtt-expires-ms" and v.isdigit():
            return {**meta, "exp": int(v)}
    return meta
