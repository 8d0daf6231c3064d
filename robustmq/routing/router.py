"""publish -> log append -> matching subscribers of any protocol.

Front-ends speak to the router only through the neutral contract (`routing/contract.py`): a
subscription is any object with `subject`, `queue` and `conn`, where `conn` is a `Connection`;
publishes carry plain values and return a `Receipt`; refusals are `Refusal` values. A
`SubjectOwner` (mq9) owns a subject prefix: publishes and subscriptions under it go to the owner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from robustmq.core_log import Record, SegmentLog
from robustmq.routing.contract import Connection, Headers, Receipt, Refusal, SubjectOwner, Subscription
from robustmq.routing.subjects import SubjectPatterns, SubjectTrie, pick


class RouterStats(msgspec.Struct):
    msgs_in: int = 0
    msgs_out: int = 0
    no_subscribers: int = 0


class Router:
    def __init__(self, log: SegmentLog, ephemeral: list[str]) -> None:
        self.log = log
        self._trie = SubjectTrie()
        self.ephemeral = SubjectPatterns(ephemeral)
        self.owners: list[SubjectOwner] = []
        self._owner_firsts: frozenset[str] = frozenset()  # first characters of owner prefixes
        self.stats = RouterStats()
        # (stream, offset) of the logged record being delivered right now, None outside publish()
        # or when it was not logged: lets a subscriber that cannot take the message now (an offline
        # MQTT session) keep a reference to the record instead of a copy of its payload. In
        # publish_many() it is the first record's; deliver_many() payload i is at offset + i.
        self.current: tuple[str, int] | None = None

    def add_owner(self, owner: SubjectOwner) -> None:
        self.owners.append(owner)
        self._owner_firsts = frozenset(o.prefix[0] for o in self.owners)

    def owned(self, subject: str) -> bool:
        """Whether a subject owner (mq9) claims `subject`: it keeps what is sent there itself."""
        return self._owner(subject) is not None

    def _owner(self, subject: str) -> SubjectOwner | None:
        for o in self.owners:
            if subject.startswith(o.prefix):
                return o
        return None

    # ------------------------------------------------------------------ durability
    @property
    def write_seq(self) -> int:
        """The log batch that a publish made now would be part of."""
        return self.log.batch_seq

    def on_durable(self, seq: int, callback: Callable[[], Any]) -> None:
        """Run callback once batch `seq` (a `write_seq`) is written."""
        self.log.on_commit(seq, callback)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, sub: Subscription) -> Refusal | None:
        """Register a subscription, or say why it is refused."""
        for o in self.owners:
            if o.claims(sub.subject):
                return o.on_subscribe(sub)
        self._trie.insert(sub)
        return None

    def subscribe_plain(self, sub: Subscription) -> None:
        """For an owner: a filter under its prefix that it leaves to the general subject match."""
        self._trie.insert(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        if not self._trie.remove(sub):
            for o in self.owners:
                o.on_unsubscribe(sub)

    def connection_closed(self, conn: Connection) -> None:
        """A front-end's one call when a connection of any protocol is gone (after unsubscribing
        its subscriptions): every owner releases what it keeps for it (`on_connection_closed`)."""
        for o in self.owners:
            o.on_connection_closed(conn)

    @property
    def subscription_count(self) -> int:
        return self._trie.count

    def match(self, subject: str) -> list[Subscription]:
        """Every plain subscription whose filter matches `subject` (monitoring's `test=`)."""
        r = self._trie.match(subject, False)
        return [*r.psubs, *(m for members in r.qsubs for m in members)]

    def cached_fanouts(self) -> list[int]:
        """Subscriber count of every cached match result (monitoring's fan-out figures)."""
        return [len(r.psubs) + len(r.qsubs) for r in self._trie.cache.values()]

    def subscriptions(self) -> Iterator[Subscription]:
        """Every subscription in the general subject match (not those an owner took)."""
        return self._trie.all()

    # ------------------------------------------------------------------ publish
    def publish(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
                origin: Connection | None = None) -> Receipt:
        """Append (unless ephemeral) and deliver."""
        st = self.stats
        st.msgs_in += 1
        log = self.log
        if subject[:1] in self._owner_firsts:
            owner = self._owner(subject)
            if owner is not None:
                owner.on_publish(subject, reply, headers, payload, origin)
                return Receipt(log, log.batch_seq, delivered=1)
        stream = self._stream_for(subject)
        if stream is not None:
            off = log.append(stream, Record(time.time_ns() // 1_000_000, payload, None, headers))
            receipt = Receipt(log, log.batch_seq, stream.name, off)
        else:
            receipt = Receipt(log, log.batch_seq)
        saved, self.current = self.current, (receipt.stream, receipt.offset) if receipt.stream else None
        try:
            receipt.delivered = self.deliver(subject, reply, headers, payload, origin)
        finally:
            self.current = saved
        return receipt

    def publish_many(self, subject: str, payloads: list[bytes], origin: Connection | None = None) -> Receipt:
        """Several reply-less, header-less publishes to one subject (a pipelined burst)."""
        log = self.log
        if self.owners and self._owner(subject) is not None:
            for p in payloads:
                self.publish(subject, None, None, p, origin)
            return Receipt(log, log.batch_seq, count=len(payloads), delivered=len(payloads))
        st = self.stats
        n = len(payloads)
        st.msgs_in += n
        stream = self._stream_for(subject)
        if stream is not None:
            ts = time.time_ns() // 1_000_000
            receipt = Receipt(log, log.batch_seq, stream.name,
                              log.append_many(stream, [Record(ts, p) for p in payloads]), n)
        else:
            receipt = Receipt(log, log.batch_seq, count=n)
        r = self._trie.match(subject)
        delivered = 0
        first = receipt.offset
        saved, self.current = self.current, (receipt.stream, first) if receipt.stream else None
        try:
            for sub in r.psubs:
                c = sub.conn
                if c.no_echo and c is origin:
                    continue
                c.deliver_many(sub, subject, payloads)
                delivered += n
            for members in r.qsubs:
                if origin is not None and origin.no_echo:
                    members = [m for m in members if m.conn is not origin]
                    if not members:
                        continue
                for i, p in enumerate(payloads):
                    if receipt.stream:
                        self.current = (receipt.stream, first + i)
                    sub = pick(members)
                    sub.conn.deliver(sub, subject, None, None, p)
                delivered += n
        finally:
            self.current = saved
        st.msgs_out += delivered
        if not delivered:
            st.no_subscribers += n
        receipt.delivered = delivered
        return receipt

    def publish_requests(self, subject: str, replies: list[str], payloads: list[bytes],
                         origin: Connection | None = None) -> list[int] | None:
        """Several publishes to one subject, each with its reply subject. Returns how many
        subscribers each reached (None when an owner took them: it answers every one)."""
        for owner in self.owners:  # (_owner, inlined)
            if subject.startswith(owner.prefix):
                self.stats.msgs_in += len(payloads)
                owner.on_publish_requests(subject, replies, payloads, origin)
                return None
        return [self.publish(subject, r, None, p, origin).delivered for r, p in zip(replies, payloads)]

    def _stream_for(self, subject: str) -> Any:
        """The stream a subject is logged to, or None when it is ephemeral."""
        # the log's own bounded stream cache answers hot subjects with one dict lookup; holding
        # Stream objects here as well would pin them in memory
        stream = self.log.streams.get(subject)
        if stream is None:
            if self.ephemeral.matches(subject):
                return None
            stream = self.log.stream(subject)
        return stream

    def deliver(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
                origin: Connection | None = None) -> int:
        """Deliver to live subscribers only (no append); returns how many got it."""
        r = self._trie.match(subject, not self.ephemeral.matches(subject))
        n = 0
        for sub in r.psubs:
            c = sub.conn
            if c.no_echo and c is origin:
                continue
            c.deliver(sub, subject, reply, headers, payload)
            n += 1
        for members in r.qsubs:
            if origin is not None and origin.no_echo:
                members = [m for m in members if m.conn is not origin]
                if not members:
                    continue
            sub = pick(members)
            sub.conn.deliver(sub, subject, reply, headers, payload)
            n += 1
        if n:
            self.stats.msgs_out += n
        else:
            self.stats.no_subscribers += 1
        return n
