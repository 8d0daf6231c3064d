"""Delayed messages (upstream's `mq9-delay`, SPEC §4b): pushed to §4 subscribers when they come due,
across restarts too.

A delayed send stores its record at once (hidden until `vis`) and, in the same log batch, a small
index entry `mq9.delay/<mail_id>\\0<offset:8>` -> `vis` (ms) in the log's metadata. One timer serves
every pending delayed message: a heap ordered by `vis`, armed for the earliest. When one comes due it
is handed to delivery (plain subscribers, one member of each queue group) and its index entry is
deleted. At startup the index alone is read, so only the delayed messages still pending are
scanned, never the mailboxes' records; their records are read when they come due (and only when the
mailbox has a subscriber or a queue group to push to). A mailbox that expires drops its entries.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

import msgspec

from robustmq.core_log import Record, SegmentLog
from robustmq.frontends.mq9.mailboxes import Mailbox, MailboxRegistry, now_ms

DELAY_NS = "mq9.delay"
DUE_PER_TURN = 1000  # due messages handled per loop turn; more wait for the next one

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(int)


def _key(mail_id: str, off: int) -> bytes:
    return mail_id.encode() + b"\x00" + off.to_bytes(8, "big")


class DelayedPush:
    """The pending delayed messages of every mailbox and the one timer that pushes them when due.
    `push(mailbox, offset, record)` gets None for a record deleted meanwhile."""

    def __init__(self, log: SegmentLog, registry: MailboxRegistry,
                 has_targets: Callable[[str], bool],
                 push: Callable[[Mailbox, int, Record | None], None]) -> None:
        self.log = log
        self.registry = registry
        self.has_targets = has_targets
        self.push = push
        # (vis ms, tie-breaker, mail_id, offset, mailbox, record or None: read when due)
        self._heap: list[tuple[int, int, str, int, Mailbox, Record | None]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0

    def __len__(self) -> int:
        return len(self._heap)

    def stored(self, mb: Mailbox, off: int, vis: int) -> None:
        """A delayed send: index it in the batch that stores its record."""
        self.log.put_meta(DELAY_NS, _key(mb.mail_id, off), _enc.encode(vis))

    def committed(self, mb: Mailbox, off: int, vis: int, rec: Record) -> None:
        """Its record is durable: push it when due."""
        heapq.heappush(self._heap, (vis, next(self._seq), mb.mail_id, off, mb, rec))
        self._arm()

    def load(self) -> int:
        """At startup: the delayed messages still pending, from the index alone."""
        n = 0
        for key, raw in self.log.scan_meta(DELAY_NS):
            mail, _, ob = key.partition(b"\x00")
            mb = self.registry.boxes.get(mail.decode())
            if mb is None or len(ob) != 8:
                self.log.delete_meta(DELAY_NS, key)  # its mailbox is gone
                continue
            self._heap.append((_dec.decode(raw), next(self._seq), mb.mail_id,
                               int.from_bytes(ob, "big"), mb, None))
            n += 1
        heapq.heapify(self._heap)
        self._arm()
        return n

    def forget(self, mb: Mailbox) -> None:
        """A mailbox expired: its entries go (heap entries are skipped when they come up)."""
        self.log.delete_meta_prefix(DELAY_NS, mb.mail_id.encode() + b"\x00")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if not self._heap:
            return
        at = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        # the loop's clock is monotonic, `vis` is wall-clock ms: a timer that fires a little early
        # finds nothing due and re-arms for the remainder
        self._timer = asyncio.get_running_loop().call_later(max(0, at - now_ms()) / 1000, self._fire)

    def _fire(self) -> None:
        self._timer = None
        heap = self._heap
        now = now_ms()
        done = 0
        while heap and heap[0][0] <= now and done < DUE_PER_TURN:
            _, _, mail_id, off, mb, rec = heapq.heappop(heap)
            done += 1
            if self.registry.get(mail_id, now) is not mb:
                continue  # expired (its entries go with it), maybe re-created since
            self.log.delete_meta(DELAY_NS, _key(mail_id, off))
            if rec is None:
                if not self.has_targets(mail_id):
                    continue  # nobody to push to: a later subscribe replays it
                stream = self.log.get_stream(mb.stream_name)
                found = next(iter(self.log.read(stream, off, off + 1)), None) if stream else None
                rec = found[1] if found is not None else None  # None: deleted meanwhile
            self.push(mb, off, rec)
        if heap and heap[0][0] <= now:
            self._timer_at = now
            self._timer = asyncio.get_running_loop().call_later(0, self._fire)
        else:
            self._arm()
