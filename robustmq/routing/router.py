"""publish -> log append -> matching subscribers of any protocol.

A subscription is any object with `subject`, `queue` and `conn`, where `conn.deliver(sub, subject,
reply, hdr, payload)` queues one message for that connection. Front-ends register subscriptions here
and publish here; they never reach into each other. A `SubjectInterceptor` (mq9) owns a subject
prefix: publishes and subscriptions under it go to the interceptor instead of the plain path.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import msgspec

from robustmq.core_log import Record, SegmentLog
from robustmq.routing.headers import parse_headers
from robustmq.routing.subjects import SubjectPatterns, SubjectTrie, pick


class Deliverer(Protocol):
    no_echo: bool

    def deliver(self, sub: Any, subject: str, reply: str | None, hdr: bytes | None,
                payload: bytes) -> None: ...

    def deliver_many(self, sub: Any, subject: str, payloads: list[bytes]) -> None: ...


class SubjectInterceptor(Protocol):
    prefix: str

    def on_publish(self, subject: str, reply: str | None, hdr: bytes | None, payload: bytes,
                   origin: Any) -> None: ...

    def on_subscribe(self, sub: Any) -> str | None:
        """Take the subscription (return None) or refuse it (return the -ERR text)."""

    def on_unsubscribe(self, sub: Any) -> None: ...

    def on_publish_requests(self, subject: str, replies: list[str], payloads: list[bytes],
                            origin: Any) -> None: ...

    def wants_subscription(self, subject: str) -> bool: ...


class RouterStats(msgspec.Struct):
    msgs_in: int = 0
    msgs_out: int = 0
    no_subscribers: int = 0


class Router:
    def __init__(self, log: SegmentLog, ephemeral: list[str]) -> None:
        self.log = log
        self.trie = SubjectTrie()
        self.ephemeral = SubjectPatterns(ephemeral)
        self.interceptors: list[SubjectInterceptor] = []
        self._icp_firsts: frozenset[str] = frozenset()  # first characters of interceptor prefixes
        self.stats = RouterStats()
        # subject -> its stream, or None for ephemeral subjects; dropped when a stream is deleted
        self._streams: dict[str, Any] = {}
        self._streams_gen = log.stream_gen

    def add_interceptor(self, icp: SubjectInterceptor) -> None:
        self.interceptors.append(icp)
        self._icp_firsts = frozenset(i.prefix[0] for i in self.interceptors)

    def _interceptor(self, subject: str) -> SubjectInterceptor | None:
        for icp in self.interceptors:
            if subject.startswith(icp.prefix):
                return icp
        return None

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, sub: Any) -> str | None:
        """Register a subscription; returns an error text when it is refused."""
        for icp in self.interceptors:
            if icp.wants_subscription(sub.subject):
                return icp.on_subscribe(sub)
        self.trie.insert(sub)
        return None

    def unsubscribe(self, sub: Any) -> None:
        if not self.trie.remove(sub):
            for icp in self.interceptors:
                icp.on_unsubscribe(sub)

    # ------------------------------------------------------------------ publish
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def publish(self, subject: str, reply: str | None, hdr: bytes | None, payload: bytes,
                origin: Any = None) -> int:
        """Append (unless ephemeral) and deliver. Returns how many subscribers got it."""
        st = self.stats
        st.msgs_in += 1
        if subject[:1] in self._icp_firsts:
            icp = self._interceptor(subject)
            if icp is not None:
                icp.on_publish(subject, reply, hdr, payload, origin)
                return 1
        stream = self._stream_for(subject)
        if stream is not None:
            self.log.append(stream, Record(time.time_ns() // 1_000_000, payload, None,
                                           parse_headers(hdr) if hdr else None))
        return self.deliver(subject, reply, hdr, payload, origin)

    def publish_many(self, subject: str, payloads: list[bytes], origin: Any = None) -> None:
        """Several reply-less, header-less publishes to one subject (a pipelined burst)."""
        if self.interceptors and self._interceptor(subject) is not None:
            for p in payloads:
                self.publish(subject, None, None, p, origin)
            return
        st = self.stats
        n = len(payloads)
        st.msgs_in += n
        stream = self._stream_for(subject)
        if stream is not None:
            ts = time.time_ns() // 1_000_000
            self.log.append_many(stream, [Record(ts, p) for p in payloads])
        r = self.trie.match(subject)
        delivered = 0
        for sub in r.psubs:
            c = sub.conn
            if c is origin and c.no_echo:
                continue
            c.deliver_many(sub, subject, payloads)
            delivered += n
        for members in r.qsubs:
            if origin is not None and origin.no_echo:
                members = [m for m in members if m.conn is not origin]
                if not members:
                    continue
            for p in payloads:
                sub = pick(members)
                sub.conn.deliver(sub, subject, None, None, p)
            delivered += n
        st.msgs_out += delivered
        if not delivered:
            st.no_subscribers += n

    def publish_requests(self, subject: str, replies: list[str], payloads: list[bytes],
                         origin: Any = None) -> list[int] | None:
        """Several publishes to one subject, each with its reply subject. Returns how many
        subscribers each reached (None when an interceptor took them: they always get a reply)."""
        if self.interceptors:
            icp = self._interceptor(subject)
            if icp is not None:
                self.stats.msgs_in += len(payloads)
                icp.on_publish_requests(subject, replies, payloads, origin)
                return None
        return [self.publish(subject, r, None, p, origin) for r, p in zip(replies, payloads)]

    def _stream_for(self, subject: str) -> Any:
        """The stream a subject is logged to, or None when it is ephemeral."""
        log = self.log
        if self._streams_gen != log.stream_gen:
            self._streams.clear()
            self._streams_gen = log.stream_gen
        stream = self._streams.get(subject, False)
        if stream is False:
            if self.ephemeral.matches(subject):
                return None  # not cached: inbox subjects are unique, they would only churn the cache
            stream = log.stream(subject)
            if len(self._streams) > 100_000:
                self._streams.clear()
            self._streams[subject] = stream
        return stream

    def deliver(self, subject: str, reply: str | None, hdr: bytes | None, payload: bytes,
                origin: Any = None) -> int:
        """Deliver to live subscribers only (no append)."""
        r = self.trie.match(subject, not self.ephemeral.matches(subject))
        n = 0
        for sub in r.psubs:
            c = sub.conn
            if c is origin and c.no_echo:
                continue
            c.deliver(sub, subject, reply, hdr, payload)
            n += 1
        for members in r.qsubs:
            if origin is not None and origin.no_echo:
                members = [m for m in members if m.conn is not origin]
                if not members:
                    continue
            sub = pick(members)
            sub.conn.deliver(sub, subject, reply, hdr, payload)
            n += 1
        if n:
            self.stats.msgs_out += n
        else:
            self.stats.no_subscribers += 1
        return n
