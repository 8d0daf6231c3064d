"""One NATS client connection on asyncio: parse -> router; router -> coalesced outbound buffer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from time import time as _time
from typing import TYPE_CHECKING

import msgspec

from robustmq.frontends.inbound import ReadTurns
from robustmq.frontends.nats import errors
from robustmq.frontends.nats.codec import (
    Connect,
    NatsParser,
    Ping,
    Pong,
    ProtocolError,
    Pub,
    PubBatch,
    RequestBatch,
    Sub,
    Unsub,
)
from robustmq.frontends.nats.headers import build_headers, parse_headers
from robustmq.frontends.outbound import BufferedConnection
from robustmq.routing.contract import Headers, Refusal, RefusalKind
from robustmq.routing.subjects import subject_matches, valid_publish_subject, valid_subscribe_subject

if TYPE_CHECKING:
    from robustmq.frontends.nats.server import NatsServer

log = logging.getLogger("robustmq.nats")

# A producer whose messages land on a backlogged reader is paused this long at most per episode
# (resumed earlier when the reader drains): its rate falls to what its readers take, as nats-server
# stalls fast producers, instead of growing backlogs until PINGs wait behind megabytes of data.
STALL_MAX_S = 0.05
STALL_BACKLOG_BYTES = 1 << 20  # a reader with this much unsent is backlogged (at most max_pending / 2)
# A reader's unsent bytes may pass max_pending for this long before it is a slow consumer (its
# producers are stalled meanwhile), and by this many bytes at most: one read of a producer can hand
# it a burst larger than a small max_pending in one go, and the socket takes more only in a later
# loop turn. A reader that keeps reading drains that burst at once; one that does not is cut.
SLOW_GRACE_S = 0.5
SLOW_SLACK_BYTES = 2 << 20
PONG = b"PONG\r\n"
FAIL_PONG_WAIT_S = 1.0  # how long a close waits for the PONGs of PINGs read before the bad input
PING = b"PING\r\n"
OK = b"+OK\r\n"
NO_RESPONDERS_HDR = b"NATS/1.0 503\r\nNats-Subject: %s\r\n\r\n"
# reply subjects a client may not use (nats-server's isReservedReply): `_R_.` with anything after
# it or nothing; the other two only with something after them
RESERVED_REPLY_PREFIXES = ("_R_.", "_GR_.", "$JS.ACK.")
_INT64 = 1 << 63  # CONNECT's `protocol` is a Go int


class ConnectOptions(msgspec.Struct):
    """CONNECT fields. Like nats-server, a CONNECT only overrides the fields it names: a client
    starts at verbose and pedantic (real clients always send both as false)."""

    verbose: bool | msgspec.UnsetType | None = msgspec.UNSET
    pedantic: bool | msgspec.UnsetType | None = msgspec.UNSET
    echo: bool | msgspec.UnsetType | None = msgspec.UNSET
    headers: bool | msgspec.UnsetType | None = msgspec.UNSET
    no_responders: bool | msgspec.UnsetType | None = msgspec.UNSET
    name: str | None = ""  # (a JSON null is "not given", as Go's encoding/json takes it)
    lang: str | None = ""
    version: str | None = ""
    protocol: int | None = 0
    user: str | None = ""
    pass_: str | None = msgspec.field(default="", name="pass")
    auth_token: str | None = ""
    tls_required: bool | None = False


_connect_decoder = msgspec.json.Decoder(ConnectOptions)


class Subscription:
    """A NATS subscription; to the router, a `routing.contract.Subscription`."""

    __slots__ = ("_pfx", "_pfx_subject", "conn", "delivered", "max_msgs", "queue", "sid", "subject")

    def __init__(self, conn: NatsSession, subject: str, queue: str | None, sid: str) -> None:
        self.conn = conn
        self.subject = subject
        self.queue = queue
        self.sid = sid
        self.max_msgs = 0
        self.delivered = 0
        self._pfx_subject = ""
        self._pfx = b""


class NatsSession(ReadTurns, BufferedConnection):
    """One NATS client connection; to the router, a `routing.contract.Connection`."""

    protocol = "nats"
    # 256 KiB a loop turn (one full uvloop read; about 1,800 128-byte PUBs): during a pipelined flood
    # another client's PONG waited 32-39 ms (p50) with 1 MiB a turn, 13-16 ms with this, and
    # alternating `pub` runs showed no throughput change beyond their spread (tests/test_fairness.py)
    read_turn_bytes = 1 << 18

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        cfg = server.cfg
        self.router = server.router
        self.parser = NatsParser(cfg.max_payload, cfg.max_control_line)
        self._init_outbound(server.budget, cfg.max_pending)
        self._stall_at = min(STALL_BACKLOG_BYTES, cfg.max_pending // 2)  # see _behind
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop  # set in connection_made
        self.subs: dict[str, Subscription] = {}
        self.cid = 0
        self.verbose = True  # until CONNECT says otherwise, like nats-server
        self.pedantic = True
        self.no_echo = False
        self.headers = False
        self.no_responders = False
        self.name = ""
        self.lang = ""
        self.version = ""
        self.connected = False  # CONNECT received (and authorised)
        self.closed = False
        self.pings_out = 0
        self._pongs_due = 0  # PINGs read whose PONG waits for a commit
        self._failing: tuple[str | None] | None = None  # a close waiting for those PONGs
        self.last_pub_seq = 0
        self._reply_subs: dict[str, Subscription] = {}  # reply-subject parent -> own subscription
        self._stall_pending = False
        self._init_read_turns()
        self._stalled: set[NatsSession] = set()  # producers paused until this reader drains
        self._drained_at_ping = 0  # bytes the socket had taken when the last server PING went out
        self._read_at_ping = 0  # bytes_in then
        self._auth_timer: asyncio.TimerHandle | None = None
        self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0
        self.peer = ("", 0)
        self.start_time = 0.0  # wall clock at accept (for /connz)
        self.last_activity = 0.0  # wall clock of the last read from the client (/connz last_activity, idle)
        self.close_reason = ""  # why it closed, in nats-server's words (/connz?state=closed)

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.peer = transport.get_extra_info("peername") or ("", 0)
        self.start_time = self.last_activity = time.time()
        self.cid = self.server.register(self)
        self.write(self.server.info_line(self))
        if self.server.auth_required:
            loop = asyncio.get_running_loop()
            self._auth_timer = loop.call_later(self.server.cfg.auth_timeout_s, self._auth_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.close_reason:
            self.close_reason = errors.CLOSED_BY_CLIENT
        if self._auth_timer:
            self._auth_timer.cancel()
        for sub in list(self.subs.values()):
            self.router.unsubscribe(sub)
            if sub.queue and sub.max_msgs:
                self.server.capped_queue_subs -= 1
        self.subs.clear()
        self.router.connection_closed(self)
        self._out.clear()
        self.budget.account(self, 0)
        self._release_stalled()
        self.server.unregister(self)

    # flow control: asyncio tells us when the transport's buffer crosses its high/low water marks;
    # only connections between the two carry a backlog worth counting against the server-wide cap
    def pause_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.budget.account(self, self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self._over_since = 0.0
        if not self.closed:
            self.budget.account(self, 0)
        self._release_stalled()

    def _release_stalled(self) -> None:
        stalled, self._stalled = self._stalled, set()
        for p in stalled:
            p._resume_reading()

    def _stall(self, reader: NatsSession) -> None:
        """This connection's messages reached a backlogged reader: pause reading from it."""
        if not self.closed:
            reader._stalled.add(self)
            self._stall_pending = True

    def data_received(self, data: bytes) -> None:
        if self.closed or self._failing is not None:
            return
        self.bytes_in += len(data)
        self.last_activity = _time()
        srv = self.server
        srv.producer = self
        self._stall_pending = False
        try:
            self._handle(data)
        finally:
            srv.producer = None
        if self._stall_pending:
            self._pause_reading(STALL_MAX_S)
        else:
            self.count_read(len(data))

    def _handle(self, data: bytes) -> None:
        router = self.router
        gate = self.server.auth_required and not self.connected
        if gate and self.bytes_in == len(data) and data[:1] not in (b"C", b"c"):
            # as nats-server's parser: with auth required, the first operation must be CONNECT;
            # any other (PONG, INFO, an unknown one, even a blank line) is refused before parsing
            return self.fail(errors.AUTH_VIOLATION)
        for op in self.parser.feed(data):
            if isinstance(op, (PubBatch, RequestBatch)):
                if gate:
                    return self.fail(errors.AUTH_VIOLATION)
                subject, payloads = op.subject, op.payloads
                self.msgs_in += len(payloads)
                replies = op.replies if isinstance(op, RequestBatch) else None
                if self.verbose or (self.pedantic and not valid_publish_subject(subject)) or (
                        replies is not None and _any_reserved(replies)):
                    # rare modes: one message at a time, for nats-server's exact reply order
                    for i, payload in enumerate(payloads):
                        self._publish_one(subject, replies[i] if replies else None, None, payload)
                    continue
                self.last_pub_seq = router.write_seq
                if replies is None:
                    if self.server.capped_queue_subs and len(payloads) > 1:
                        for payload in payloads:  # (see NatsServer.capped_queue_subs)
                            router.publish(subject, None, None, payload, self)
                    else:
                        router.publish_many(subject, payloads, self)
                    continue
                counts = router.publish_requests(subject, replies, payloads, self)
                if counts is not None and self.no_responders and self.headers:
                    for n, reply in zip(counts, replies):
                        if not n:
                            self._no_responders(reply, subject)
            elif isinstance(op, Pub):
                if gate:
                    return self.fail(errors.AUTH_VIOLATION)
                if op.hdr is not None and not self.headers:
                    return self.fail(errors.SILENT_CLOSE)  # HPUB without announcing headers
                self.msgs_in += 1
                self._publish_one(op.subject, op.reply, op.hdr, op.payload)
            elif isinstance(op, Ping):
                if gate:
                    return self.fail(errors.AUTH_VIOLATION)
                self._ping_barrier()
            elif isinstance(op, Pong):
                self.pings_out = 0
            elif isinstance(op, Sub):
                if gate:
                    return self.fail(errors.AUTH_VIOLATION)
                self._sub(op.subject, op.queue, op.sid)
            elif isinstance(op, Unsub):
                if gate:
                    return self.fail(errors.AUTH_VIOLATION)
                self._unsub(op.sid, op.max_msgs)
            elif isinstance(op, Connect):
                if not self._connect(op.raw):
                    return
                gate = False
            elif isinstance(op, ProtocolError):
                if op.fatal:
                    return self.fail(op.text)
                if op.text is not None:
                    self.write(errors.err_line(op.text))
        return None

    # ------------------------------------------------------------------ operations
    def _publish_one(self, subject: str, reply: str | None, hdr: bytes | None, payload: bytes) -> None:
        """One PUB or HPUB (`hdr`: its NATS header block, parsed here into neutral pairs)."""
        reserved = reply is not None and _reserved_reply(reply)
        if self.pedantic and not valid_publish_subject(subject):
            # nats-server (processPub) only reports it: the message then goes on as a
            # non-pedantic client's would (+OK, delivery), or is refused for a reserved reply
            self.write(errors.err_line(errors.INVALID_PUB_SUBJECT))
        if reserved:  # not delivered; the connection stays
            self.write(errors.err_line(errors.permissions_reply(reply or "")))
            return
        if self.verbose:
            self.write(OK)  # nats-server queues +OK before any delivery, even to this connection
        self.last_pub_seq = self.router.write_seq
        headers = parse_headers(hdr) if hdr else None  # HPUB with 0 header bytes is a plain message
        if not self.router.publish(subject, reply, headers, payload, self).delivered and reply and \
                self.no_responders and self.headers:
            self._no_responders(reply, subject)

    def _connect(self, raw: bytes) -> bool:
        try:
            # `CONNECT null` changes nothing, as Go's json.Unmarshal of null into a struct
            o = ConnectOptions() if raw.rstrip() == b"null" else _connect_decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # RecursionError: absurdly nested JSON
            self.fail(None)  # nats-server closes on an unparsable CONNECT without an -ERR
            return False
        if o.protocol is not None and not -_INT64 <= o.protocol < _INT64:
            self.fail(None)  # (Go's json.Unmarshal into an int fails on it: unparsable, as above)
            return False
        srv = self.server
        if srv.auth_required and not srv.check_auth(o.user or "", o.pass_ or "", o.auth_token or ""):
            self.fail(errors.AUTH_VIOLATION)
            return False
        if self._auth_timer:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.connected = True
        # a field left out, or null, keeps its value
        if isinstance(o.verbose, bool):
            self.verbose = o.verbose
        if isinstance(o.pedantic, bool):
            self.pedantic = o.pedantic
        if isinstance(o.echo, bool):
            self.no_echo = not o.echo
        if isinstance(o.headers, bool):
            self.headers = o.headers
        if isinstance(o.no_responders, bool):
            self.no_responders = o.no_responders
        if not 0 <= (o.protocol or 0) <= 1:  # nats-server knows protocol 0 and 1 (ClientProtoInfo)
            self.fail(errors.BAD_CLIENT_PROTOCOL)
            return False
        if self.no_responders and not self.headers:  # nats-server's check, after authentication
            self.fail(errors.NO_RESPONDERS_REQUIRES_HEADERS)
            return False
        self.name, self.lang, self.version = o.name or "", o.lang or "", o.version or ""
        if self.verbose:
            self.write(OK)
        return True

    def _sub(self, subject: str, queue: str | None, sid: str) -> None:
        if not valid_subscribe_subject(subject) or (queue is not None and not _valid_queue(queue)):
            self.write(errors.err_line(errors.INVALID_SUBJECT))
            return
        if sid in self.subs:  # same sid again: nats-server ignores the duplicate
            if self.verbose:
                self.write(OK)
            return
        sub = Subscription(self, subject, queue, sid)
        self.subs[sid] = sub
        # +OK goes before anything the subscription delivers at once (mq9 replay)
        if self.verbose:
            self.write(OK)
        refusal = self.router.subscribe(sub)
        if refusal is not None:
            del self.subs[sid]
            self.refuse(refusal)

    def _unsub(self, sid: str, max_msgs: int | None) -> None:
        sub = self.subs.get(sid)
        if sub is not None:
            if max_msgs and sub.delivered < max_msgs:
                if sub.queue and not sub.max_msgs:
                    self.server.capped_queue_subs += 1
                sub.max_msgs = max_msgs
            else:
                self._remove(sub)
        if self.verbose:
            self.write(OK)

    def _remove(self, sub: Subscription) -> None:
        if self.subs.get(sub.sid) is sub:
            del self.subs[sub.sid]
            self.router.unsubscribe(sub)
            if sub.queue and sub.max_msgs:
                self.server.capped_queue_subs -= 1

    def _no_responders(self, reply: str, subject: str) -> None:
        for sub in list(self.subs.values()):
            if not sub.queue and subject_matches(sub.subject, reply):  # (nats-server: none to a queue sub)
                self._frame(sub, reply, None, NO_RESPONDERS_HDR % subject.encode(), b"")
                return

    def _ping_barrier(self) -> None:
        # PONG only once the publishes that arrived before this PING are committed. That is a
        # barrier for clients that write PING after their PUBs (the raw protocol, nats.go's
        # Flush); nats-py writes flush()'s PING ahead of its buffered PUBs (docs/durability.md)
        self._pongs_due += 1
        self.router.on_durable(self.last_pub_seq, self._pong)

    def _pong(self) -> None:
        self._pongs_due -= 1
        if not self.closed:
            self.write(PONG)
            if self._failing is not None and not self._pongs_due:
                self._finish_fail()

    # ------------------------------------------------------------------ outbound
    def deliver(self, sub: Subscription, subject: str, reply: str | None, headers: Headers | None,
                payload: bytes) -> None:
        self._frame(sub, subject, reply, build_headers(headers) if headers is not None else None, payload)

    def _frame(self, sub: Subscription, subject: str, reply: str | None, hdr: bytes | None,
               payload: bytes) -> None:
        """Queue one MSG (or HMSG with the header block `hdr`, when this client takes headers)."""
        if self.closed or (sub.max_msgs and sub.delivered >= sub.max_msgs):
            return  # (a subscription that reached its UNSUB max gets no more, whoever routes to it)
        if sub._pfx_subject is not subject:
            sub._pfx_subject = subject
            sub._pfx = (" " + subject + " " + sub.sid + " ").encode()
        if hdr is not None and self.headers:
            hl = len(hdr)
            if reply:
                frame = b"HMSG%s%s %d %d\r\n%s%s\r\n" % (sub._pfx, reply.encode(), hl, hl + len(payload),
                                                         hdr, payload)
            else:
                frame = b"HMSG%s%d %d\r\n%s%s\r\n" % (sub._pfx, hl, hl + len(payload), hdr, payload)
        elif reply:
            frame = b"MSG%s%s %d\r\n%s\r\n" % (sub._pfx, reply.encode(), len(payload), payload)
        else:
            frame = b"MSG%s%d\r\n%s\r\n" % (sub._pfx, len(payload), payload)
        self._out.append(frame)
        self._out_size += len(frame)
        self.msgs_out += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        sub.delivered += 1
        if sub.max_msgs and sub.delivered >= sub.max_msgs:
            self._remove(sub)
        if self._out_size > self.max_pending:
            # this turn's deliveries alone pass the limit: hand them to the socket now; `_flush`
            # judges what the client has not taken
            self._flush()
        elif self._backlog:  # a reader that is already behind: count what it is given at once
            self.budget.account(self, self._backlog + len(frame))
            self._behind()

    def deliver_many(self, sub: Subscription, subject: str, payloads: list[bytes]) -> None:
        """Several reply-less, header-less messages for one subscription: one buffer append."""
        if self.closed:
            return
        if sub.max_msgs:
            room = sub.max_msgs - sub.delivered
            if room < len(payloads):
                payloads = payloads[:max(room, 0)]
        if not payloads:
            return
        if sub._pfx_subject is not subject:
            sub._pfx_subject = subject
            sub._pfx = (" " + subject + " " + sub.sid + " ").encode()
        pfx = b"MSG" + sub._pfx
        size = len(payloads[0])
        if all(len(p) == size for p in payloads):
            h = pfx + b"%d\r\n" % size
            frame = h + (b"\r\n" + h).join(payloads) + b"\r\n"
        else:
            frame = b"".join([b"%s%d\r\n%s\r\n" % (pfx, len(p), p) for p in payloads])
        self._out.append(frame)
        self._out_size += len(frame)
        self.msgs_out += len(payloads)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        sub.delivered += len(payloads)
        if sub.max_msgs and sub.delivered >= sub.max_msgs:
            self._remove(sub)
        if self._out_size > self.max_pending:
            # this turn's deliveries alone pass the limit: hand them to the socket now; `_flush`
            # judges what the client has not taken
            self._flush()
        elif self._backlog:
            self.budget.account(self, self._backlog + len(frame))
            self._behind()

    def _behind(self) -> None:
        """Delivery to a reader whose socket is full: past STALL_BACKLOG_BYTES, slow the producer."""
        p = self.server.producer
        if p is not None and p is not self and self._backlog > self._stall_at:
            p._stall(self)

    def _over_limit(self, size: int) -> None:
        """The socket holds `size` (> max_pending) bytes the client has not taken. Only a burst
        handed over just now is forgiven, and briefly: past SLOW_GRACE_S over the limit, or
        SLOW_SLACK_BYTES beyond it, the connection is a slow consumer. Meanwhile its producers stall."""
        now = self._loop.time()
        if size > self.max_pending + SLOW_SLACK_BYTES or (
                self._over_since and now - self._over_since > SLOW_GRACE_S):
            self.slow_consumer()
            return
        if not self._over_since:
            self._over_since = now
        if self._backlog:  # (writing is paused: the transport told us at its high-water mark)
            self.budget.account(self, self.backlog_size())
            self._behind()

    def _reply_sub(self, subject: str) -> Subscription | None:
        """This connection's own plain subscription that receives `subject` (cached per parent)."""
        parent = subject.rpartition(".")[0]
        sub = self._reply_subs.get(parent)
        if sub is None or self.subs.get(sub.sid) is not sub or not (
                sub.subject == subject or sub.subject == parent + ".*" or
                subject_matches(sub.subject, subject)):
            # the most specific one: a client's request inbox (`_INBOX.<id>.*`), not a `>` it also
            # holds for logging or debugging (the first match would send the reply there instead)
            sub = max((s for s in self.subs.values() if not s.queue and subject_matches(s.subject, subject)),
                      key=lambda s: _specificity(s.subject, subject), default=None)
            if sub is None:
                return None
            if len(self._reply_subs) >= 64:
                self._reply_subs.clear()
            self._reply_subs[parent] = sub
        return sub

    def reply(self, subject: str, payload: bytes) -> bool:
        """Deliver a broker reply to this connection's own subscription on `subject`, never through
        the general subject match (mq9 replies carry mail_ids: a `SUB >` spy must not see them).
        False when this connection has no subscription that matches."""
        if self.closed:
            return False
        parent = subject.rpartition(".")[0]
        sub = self._reply_subs.get(parent)
        if sub is None or self.subs.get(sub.sid) is not sub or (
                sub.subject != subject and sub.subject != parent + ".*"):
            sub = self._reply_sub(subject)  # (its usual cache hits inlined above)
            if sub is None:
                return False
        t = self.transport
        if self._out or sub.max_msgs or self._backlog or t is None:
            self._frame(sub, subject, None, None, payload)
            self._flush()  # the requester is waiting for exactly this: no extra loop turn
            return True
        # nothing queued before it (the usual case): straight to the socket, as `_frame` + `_flush`
        # would, without a buffer or a flush callback
        if sub._pfx_subject != subject:  # equal, not identical: a client's fixed reply subject
            sub._pfx_subject = subject
            sub._pfx = (" " + subject + " " + sub.sid + " ").encode()
        frame = b"MSG%s%d\r\n%s\r\n" % (sub._pfx, len(payload), payload)
        self.msgs_out += 1
        sub.delivered += 1
        self.bytes_out += len(frame)
        t.write(frame)
        size = t.get_write_buffer_size()
        if size > self.max_pending:
            self._over_limit(size)
        return True

    def reply_many(self, subjects: list[str], payloads: list[bytes]) -> None:
        """Several broker replies (a pipelined burst of acked requests), framed in one pass and
        written at once: the requester is waiting for exactly these."""
        if self.closed or not subjects:
            return
        sub = self._reply_sub(subjects[0])
        parent = subjects[0].rpartition(".")[0]
        if sub is None or sub.max_msgs or sub.subject != parent + ".*" or \
                not all(r.rpartition(".")[0] == parent for r in subjects):
            for r, p in zip(subjects, payloads):
                self.reply(r, p)
        else:  # one wildcard inbox subscription takes them all (every client library's request)
            sid = sub.sid.encode()
            frame = b"".join([b"MSG %s %s %d\r\n%s\r\n" % (r.encode(), sid, len(p), p)
                              for r, p in zip(subjects, payloads)])
            self._out.append(frame)
            self._out_size += len(frame)
            self.msgs_out += len(subjects)
            sub.delivered += len(subjects)
        self._flush()

    def outbound_size(self) -> int:
        """Bytes queued for this client and not yet taken by the socket."""
        t = self.transport
        return self._out_size + (t.get_write_buffer_size() if t is not None else 0)

    def refuse(self, refusal: Refusal) -> None:
        """A non-fatal -ERR (the connection stays open), in nats-server's words. A fire-and-forget
        publish to a missing or full mailbox says nothing: NATS clients close on any -ERR but a
        permissions one, and SPEC §4 has those sends dropped (and counted); a request gets the
        error reply instead."""
        kind = refusal.kind
        if kind is RefusalKind.NO_DESTINATION or kind is RefusalKind.QUOTA_EXCEEDED:
            return
        if kind is RefusalKind.PERMISSION_SUBSCRIBE:
            text = errors.permissions_sub(refusal.subject)
        elif kind is RefusalKind.PERMISSION_PUBLISH:
            text = errors.permissions_pub(refusal.subject)
        else:
            text = errors.INVALID_SUBJECT
        self.write(errors.err_line(text))

    def slow_consumer(self) -> None:
        if self.closed:
            return
        self.server.slow_consumers += 1
        self.close_reason = errors.CLOSED_SLOW_CONSUMER
        log.warning("slow consumer cid=%d %s: closing (backlog %d, out %d, total %d)", self.cid, self.peer,
                    self._backlog, self._out_size, self.server.pending_total)
        self.budget.account(self, 0)
        self._out.clear()
        self._out_size = 0
        t = self.transport
        if t is not None:
            t.write(errors.err_line(errors.SLOW_CONSUMER))
        self.closed = True
        if t is not None:
            t.abort()  # drop the backlog: memory must not grow without bound

    def fail(self, text: str | None) -> None:
        """Send -ERR (if any) after what is already queued, then close. A PONG still waiting for a
        commit goes first, as nats-server answers a PING read before the bad input."""
        if self.closed or self._failing is not None:
            return
        if self._pongs_due:
            self._failing = (text,)
            if self.transport is not None:
                self.transport.pause_reading()
            self._loop.call_later(FAIL_PONG_WAIT_S, self._finish_fail)  # a failed commit sends none
            return
        self._close_with(text)

    def _finish_fail(self) -> None:
        if self._failing is not None and not self.closed:
            self._close_with(self._failing[0])

    def _close_with(self, text: str | None) -> None:
        self.close_reason = errors.CLOSE_REASONS.get(text, errors.CLOSED_OTHER)
        if text is not None:
            self.write(errors.err_line(text))
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send_ping(self) -> None:
        t = self.transport
        drained = self.bytes_out - (t.get_write_buffer_size() if t is not None else 0)
        if drained > self._drained_at_ping or self.bytes_in > self._read_at_ping:
            # the client keeps taking our data or sending its own, so it is alive: its PONG may be
            # queued behind that data (nats-server also skips a PING after recent client activity).
            # Stale means neither a PONG nor any progress either way for max_pings_out intervals.
            self.pings_out = 0
        self._read_at_ping = self.bytes_in
        if self.pings_out >= self.server.cfg.max_pings_out:
            self.server.stale_connections += 1
            self.fail(errors.STALE)
            return
        self._drained_at_ping = drained + len(PING)  # the PING itself is no sign of life
        self.pings_out += 1
        self.write(PING)

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if not self.connected:
            self.fail(errors.AUTH_TIMEOUT)


def _reserved_reply(reply: str) -> bool:
    if reply.startswith(RESERVED_REPLY_PREFIXES):
        return reply.startswith("_R_.") or len(reply) > (5 if reply[0] == "_" else 8)
    return False


_RESERVED_REPEAT = itertools.repeat(RESERVED_REPLY_PREFIXES)  # (endless: shared by every call)


def _any_reserved(replies: list[str]) -> bool:
    """Whether any reply of a pipelined burst is reserved (a C-level scan first: usually none)."""
    return any(map(str.startswith, replies, _RESERVED_REPEAT)) and any(map(_reserved_reply, replies))


def _valid_queue(q: str) -> bool:
    return bool(q) and not any(c in q for c in " \t\r\n")


def _specificity(filter_: str, subject: str) -> tuple[bool, int, bool]:
    """How closely a matching filter names `subject`: the subject itself, then more literal tokens,
    then `*` before `>`."""
    tokens = filter_.split(".")
    return filter_ == subject, sum(t not in ("*", ">") for t in tokens), tokens[-1] != ">"
