"""Streams, segments, group-committed appends, reads by offset and time, waiting, retention.

Appends are synchronous and cheap: the record gets its dense offset at once and is queued. The first
append of a loop turn schedules one commit for the end of that turn, which encodes everything queued
into one store batch and hands it to the single writer thread. While that batch is being written
the next one fills on the loop; it goes to the writer as soon as the first is done, so batches are
written in order, one at a time, and grow with the disk's latency instead of stalling the loop. The
writer reports back through `call_soon_threadsafe`; only then do durability futures and callbacks
fire and waiting readers wake. A writer that needs durability awaits `log.committed()` (or
`on_commit`) instead of paying a write of its own.

Records are stored in chunks, like Kafka's record batches: the records one commit appends to one
stream become one value (a msgpack array) under the key of the chunk's first offset. Segments are
runs of whole chunks, so retention drops a segment with one range delete.

Stream state is loaded on demand and kept in a bounded cache (`streams`): a stream is evicted only
when nothing pins it (pending writes, an uncommitted batch touching it, waiters, or any other
holder: a reader, the router, a mailbox — counted by reference count, so a second object for the
same stream can never exist). Startup reads one key.

Readers see committed records only: `read()` goes to the store, and `wait()` wakes on commit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from robustmq.core_log import keys as k
from robustmq.core_log.kv import Batch, KVStore
from robustmq.core_log.records import (
    Record,
    SegmentMeta,
    StreamMeta,
    decode_chunk,
    decode_segment,
    decode_stream,
    encode,
    now_ms,
)

log = logging.getLogger("robustmq.log")

CHUNK_MAX_RECORDS = 4096
RECLAIM_MAX_RANGES = 10_000  # dropped ranges remembered for compaction between two passes
STREAM_CACHE_MAX = 50_000  # stream states kept in memory (pinned ones may exceed it)
PENDING_MAX_BYTES = 8 << 20  # queued behind a batch being written before the loop waits for it
# what a queued record and a new stream cost in memory beyond their payload, so a flood of tiny
# messages to a million new subjects is bounded too, not only one of big payloads
RECORD_OVERHEAD = 64
STREAM_OVERHEAD = 1024
FAILED_BATCHES_KEPT = 1000  # refused batches remembered, so a late on_commit fails instead of passing
_EVICT_FRACTION = 8  # evict 1/8 of the cache at a time, so eviction cost is amortised
_NO_DELETED: frozenset[int] = frozenset()  # shared by the many streams with no deleted record
# references to a cached Stream the log itself holds while checking it: the cache dict, the local
# variable and getrefcount's argument. More means someone else (reader, router, mailbox) holds it.
_OWN_REFS = 3


class Stream:
    """In-memory state of one stream; the segment index mirrors the G keys in the store."""

    __slots__ = (
        "committed",
        "created_ms",
        "deleted",
        "floor",
        "gone",
        "gprefix",
        "kprefix",
        "name",
        "nbytes",
        "next_offset",
        "pending",
        "pending_bytes",
        "retention_age_ms",
        "retention_bytes",
        "segments",
        "sid",
        "touched",
        "waiters",
    )

    def __init__(self, name: str, sid: int, created_ms: int) -> None:
        self.name = name
        self.sid = sid
        self.created_ms = created_ms
        self.next_offset = 0
        self.committed = 0  # next_offset as of the last commit: readers see offsets below it
        self.segments: list[SegmentMeta] = []
        self.nbytes = 0
        # most streams never have a reader waiting: share one empty tuple until one does
        self.waiters: list[asyncio.Future[None]] | tuple[()] = ()
        self.pending: list[Record] = []  # appended since the last commit
        self.pending_bytes = 0
        self.deleted: set[int] | frozenset[int] = _NO_DELETED  # offsets removed one by one (mq9 DELETE)
        self.kprefix = k.P_RECORD + sid.to_bytes(4, "big")  # k.record_prefix, inlined: per new stream
        self.gprefix = k.P_SEGMENT + sid.to_bytes(4, "big")  # k.segment_prefix: each commit puts a G key
        self.touched = 0  # the last batch that wrote this stream's keys: evictable once committed
        self.gone = False  # deleted: a later commit must not bring its offsets back
        self.retention_age_ms = -1  # -1: the log's default; 0: keep forever
        self.retention_bytes = -1
        self.floor = 0  # offsets below it were dropped by retention (persisted in the S key)

    @property
    def first_offset(self) -> int:
        """Oldest offset still retained (== next_offset when empty)."""
        return self.segments[0].first if self.segments else self.next_offset

    @property
    def count(self) -> int:
        return self.next_offset - self.first_offset


class LogStats(msgspec.Struct):
    appends: int = 0
    batches: int = 0
    bytes_appended: int = 0
    commit_seconds_total: float = 0.0
    commit_seconds_max: float = 0.0
    segments_dropped: int = 0
    write_failures: int = 0
    streams_loaded: int = 0
    streams_evicted: int = 0


class _Commit:
    """One batch on its way to the store, and what to resolve once it is written."""

    __slots__ = (
        "appended",
        "batch",
        "callbacks",
        "done",
        "exc",
        "future",
        "nbytes",
        "seconds",
        "seq",
        "streams",
        "thread_future",
    )

    def __init__(self, batch: Batch, seq: int, future: asyncio.Future[None] | None,
                 callbacks: list[tuple[Callable[[], Any], Callable[[BaseException], Any] | None]]) -> None:
        self.batch = batch
        self.seq = seq
        self.streams: list[tuple[Stream, int]] = []  # (stream, next_offset it becomes readable up to)
        self.future = future
        self.callbacks = callbacks
        self.appended = 0
        self.nbytes = 0
        self.done = False
        self.thread_future: ThreadFuture[None] | None = None
        self.exc: BaseException | None = None  # set by the writer thread
        self.seconds = 0.0


class SegmentLog:
    def __init__(
        self,
        store: KVStore,
        *,
        segment_max_records: int = 10_000,
        segment_max_age_s: float = 3600.0,
        retention_max_age_s: float = 0.0,
        retention_max_bytes: int = 0,
        stream_cache_max: int = STREAM_CACHE_MAX,
        retention_pass_max: int | None = None,
        writer_thread: bool = True,
    ) -> None:
        self.store = store
        self.segment_max_records = segment_max_records
        self.segment_max_age_ms = int(segment_max_age_s * 1000)
        self.retention_max_age_ms = int(retention_max_age_s * 1000)
        self.retention_max_bytes = retention_max_bytes
        self.stream_cache_max = max(1, stream_cache_max)
        self._evict_at = self.stream_cache_max
        self.retention_pass_max = retention_pass_max  # streams checked per apply_retention (None: all)
        # False: each loop turn's batch is written inline at the end of the turn. Cheaper per commit
        # (no thread hand-off), right when a write is a memtable insert plus a WAL write() (`wal`);
        # a thread is for writes that wait on the disk (`fsync`), so they never stall the loop.
        self.writer_thread = writer_thread
        self._retention_cursor: bytes | None = None  # where the next age pass resumes in the T index
        self._over_bytes: set[str] = set()  # streams that grew past their byte limit since the last pass
        # the first pass also takes the notes (O keys) of streams that were past their limit when the
        # last run ended (kill -9 or a stop before its pass): startup itself still reads one key
        self._over_loaded = False  # (set below: a new store, with no N key yet, has none to load)
        self.streams: dict[str, Stream] = {}  # the cache of loaded streams, oldest first
        self._deleting: dict[str, int] = {}  # name -> batch deleting it, until that batch is written
        self._batch = store.new_batch()
        self._spare: Batch | None = None  # the next commit's batch, made once the last one is resolved
        self._batch_len = 0
        self._dirty: list[Stream] = []
        self._pending_total = 0  # payload bytes queued for the next batch
        self._commit_future: asyncio.Future[None] | None = None
        self._commit_callbacks: list[tuple[Callable[[], Any], Callable[[BaseException], Any] | None]] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: ThreadPoolExecutor | None = None  # one thread: batches are written in order
        self._inflight: _Commit | None = None
        self._inflight_lock = threading.Lock()
        self.retention_exempt: list[str] = []  # stream-name prefixes that retention never touches
        self._reclaim: list[tuple[bytes, bytes]] = []  # record key ranges retention range-deleted
        self.stream_gen = 0  # bumped when a stream is deleted (caches of Stream objects drop)
        self.batch_seq = 1  # sequence number of the batch now being filled
        self.committed_seq = 0
        self._failed: dict[int, BaseException] = {}  # recent batches the store refused
        self.stats = LogStats()
        # the log's state, one key (N): the next sid, the smallest per-stream age limit ever set, and
        # whether the time index (T keys) covers the segments of every stream whose age limit is > 0
        raw = store.get(k.K_NEXT_SID)
        self._over_loaded = raw is None
        self._sid_dirty = False  # the N key is to be written
        self._next_sid = int.from_bytes(raw[:4], "big") if raw else self._max_sid_on_disk() + 1
        self._min_custom_age_ms = int.from_bytes(raw[4:12], "big") if raw and len(raw) >= 13 else 0
        self._index_complete = bool(raw and len(raw) >= 13 and raw[12])
        # when the default age limit is turned on over data written without it, the retention passes
        # complete the index (a bounded scan per pass), not startup
        self._index_cursor: bytes | None = None
        self._index_pending = False
        if self.retention_max_age_ms > 0 and not self._index_complete:
            if next(iter(store.scan_prefix(k.P_STREAM)), None) is None:
                self._index_complete = self._sid_dirty = True  # nothing written yet: complete already
            else:
                self._index_pending = True
        elif self.retention_max_age_ms <= 0 and self._index_complete:
            self._index_complete = False  # new segments of default streams go unindexed from now on
            self._sid_dirty = True
        if self._sid_dirty:
            # written now, not left pending: a pending N key with no commit scheduled would hold
            # every durability barrier (a PONG, an ack) until some later append happened to flush it
            startup = store.new_batch()
            startup.put(k.K_NEXT_SID, self._state_value())
            store.write(startup)
            self._sid_dirty = False

    def _state_value(self) -> bytes:
        """The N key's value: next sid, smallest per-stream age limit, time index complete."""
        return self._next_sid.to_bytes(4, "big") + self._min_custom_age_ms.to_bytes(8, "big") + (
            b"\x01" if self._index_complete else b"\x00")

    def _max_sid_on_disk(self) -> int:
        """Data written before the N key existed: one scan of the S keys, once (N is written next)."""
        top = 0
        for _, v in self.store.scan_prefix(k.P_STREAM):
            top = max(top, decode_stream(v).sid)
        if top:
            self._sid_dirty = True
        return top

    # ------------------------------------------------------------------ streams
    def get_stream(self, name: str) -> Stream | None:
        """The stream, loaded from the store if it is not cached; None if it does not exist."""
        s = self.streams.get(name)
        if s is None and name not in self._deleting:
            raw = self.store.get(k.stream_key(name))
            if raw is not None:
                s = self._load(name, decode_stream(raw))
        return s

    def stream(self, name: str) -> Stream:
        """The stream, created if it does not exist."""
        s = self.streams.get(name)
        if s is not None:
            return s
        if name not in self._deleting:
            raw = self.store.get(k.stream_key(name))
            if raw is not None:
                return self._load(name, decode_stream(raw))
        s = Stream(name, self._next_sid, now_ms())
        self._next_sid += 1
        self._sid_dirty = True
        self._pending_total += STREAM_OVERHEAD
        self._cache(s)
        self._put_stream_meta(s)
        return s

    def stream_exists(self, name: str) -> bool:
        return name in self.streams or (name not in self._deleting
                                        and self.store.get(k.stream_key(name)) is not None)

    def stream_names(self, prefix: str = "") -> Iterator[str]:
        """Names of every stream in the store (committed), in byte order. A scan: not for hot paths."""
        for key, _ in self.store.scan_prefix(k.stream_key(prefix)):
            yield k.stream_key_name(key)

    def _load(self, name: str, meta: StreamMeta) -> Stream:
        s = Stream(name, meta.sid, meta.created_ms)
        s.retention_age_ms = meta.retention_age_ms
        s.retention_bytes = meta.retention_bytes
        s.floor = meta.floor
        for _, v in self.store.scan_prefix(k.segment_prefix(meta.sid)):
            seg = decode_segment(v)
            s.segments.append(seg)
            s.nbytes += seg.nbytes
        # a stream whose every segment retention dropped has no G key left: it goes on from the
        # floor, never from 0 again (a consumer's stored offset or an MQTT reference would skip or
        # misread the new records)
        s.next_offset = s.committed = max(s.segments[-1].last + 1 if s.segments else 0, meta.floor)
        deleted = {k.record_key_offset(key) for key, _ in self.store.scan_prefix(k.deleted_prefix(meta.sid))}
        if deleted:
            s.deleted = deleted
        self.stats.streams_loaded += 1
        self._cache(s)
        return s

    def _cache(self, s: Stream) -> None:
        self.streams[s.name] = s
        if len(self.streams) > self._evict_at:
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest unpinned streams; pinned ones move to the back."""
        cache = self.streams
        want = max(1, len(cache) // _EVICT_FRACTION)
        done = self.committed_seq
        getref = sys.getrefcount
        evicted = 0
        keep: list[str] = []
        for name in list(cache)[:want * 2]:
            s = cache[name]
            if s.touched > done or s.pending or s.waiters or getref(s) > _OWN_REFS:
                keep.append(name)
            else:
                del cache[name]
                evicted += 1
                if evicted >= want:
                    break
        for name in keep:  # pinned: to the back, so the next pass starts with other streams
            cache[name] = cache.pop(name)
        self.stats.streams_evicted += evicted
        # when most are pinned (a burst of new streams in one uncommitted batch), try again only after
        # as many more inserts or the next commit, so eviction stays amortised O(1) per stream
        self._evict_at = max(self.stream_cache_max, len(cache) + want)

    def _put_stream_meta(self, s: Stream) -> None:
        s.touched = self.batch_seq
        self._put(k.stream_key(s.name), encode(StreamMeta(s.sid, s.created_ms, s.retention_age_ms,
                                                          s.retention_bytes, s.floor)))

    def set_retention(self, stream: Stream, max_age_ms: int = -1, max_bytes: int = -1) -> None:
        """Per-stream retention (persisted); -1 means the log's default, 0 means unlimited."""
        stream.retention_age_ms = max_age_ms
        stream.retention_bytes = max_bytes
        self._put_stream_meta(stream)
        if max_age_ms > 0 and (not self._min_custom_age_ms or max_age_ms < self._min_custom_age_ms):
            self._min_custom_age_ms = max_age_ms
            self._sid_dirty = True
            self._schedule()
        if self._ages(stream.name, max_age_ms):
            for g in stream.segments:
                self._index_segment(self._batch, stream.sid, stream.name, g)
        limit = self._limits(max_age_ms, max_bytes)[1]
        if limit and stream.nbytes > limit and stream.name not in self._over_bytes:
            self._note_over(self._batch, stream.name)
            self._batch_len += 1
            self._schedule()

    def _note_over(self, batch: Batch, name: str) -> None:
        """A stream went past its byte limit: the next pass trims it (and a restart before then
        still knows, from its O key, written in the same batch as the records that did it)."""
        if self.retention_exempt and name.startswith(tuple(self.retention_exempt)):
            return  # (mailboxes): retention never trims them, so nothing to remember
        self._over_bytes.add(name)
        batch.put(k.over_key(name), b"")

    def _ages(self, name: str, age_setting: int) -> bool:
        """Whether a stream with this age setting (-1: the default) has an age limit retention applies."""
        age = age_setting if age_setting >= 0 else self.retention_max_age_ms
        return age > 0 and not (self.retention_exempt and name.startswith(tuple(self.retention_exempt)))

    def _index_segment(self, batch: Batch, sid: int, name: str, g: SegmentMeta) -> None:
        """Put a segment in the time index (and persist that it is), unless it already is."""
        if g.indexed_ts >= 0:
            return
        g.indexed_ts = max(0, g.min_ts)
        batch.put(k.time_key(g.indexed_ts, sid, g.first), name.encode())
        batch.put(k.segment_key(sid, g.first), encode(g))
        self._batch_len += 1
        self._schedule()

    def delete_stream(self, name: str) -> None:
        """Drop a stream and all its records (one range delete per key family)."""
        s = self.get_stream(name)
        if s is None:
            return
        self.streams.pop(name, None)
        self._deleting[name] = self.batch_seq
        self.stream_gen += 1
        b = self._batch
        for prefix in (k.record_prefix(s.sid), k.segment_prefix(s.sid), k.deleted_prefix(s.sid)):
            b.delete_range(prefix, k.prefix_end(prefix))
        for g in s.segments:
            if g.indexed_ts >= 0:
                b.delete(k.time_key(g.indexed_ts, s.sid, g.first))
        self._over_bytes.discard(name)
        b.delete(k.over_key(name))
        b.delete(k.stream_key(name))
        self._batch_len += 1
        if s.segments and len(self._reclaim) < RECLAIM_MAX_RANGES:
            # the range delete only hides the records: the retention pass compacts this range
            # next, so an expired mailbox's disk comes back while the server runs
            rp = k.record_prefix(s.sid)
            self._reclaim.append((rp, k.prefix_end(rp)))
        s.gone = True
        s.segments.clear()
        self._pending_total -= s.pending_bytes + RECORD_OVERHEAD * len(s.pending)
        s.pending.clear()
        s.pending_bytes = 0
        s.next_offset = s.committed = 0
        self._wake(s)
        self._schedule()

    # ------------------------------------------------------------------ append
    def append(self, stream: Stream | str, record: Record) -> int:
        """Queue a record; returns its offset. Durable once `committed()` resolves."""
        s = self.stream(stream) if isinstance(stream, str) else stream
        if self._pending_total > PENDING_MAX_BYTES and self._inflight is not None:
            self._backpressure()  # before this record touches any state: the batch is cut here
        off = s.next_offset
        s.next_offset = off + 1
        p = s.pending
        if not p:
            self._dirty.append(s)
            if not self._scheduled:
                loop = self._loop
                if loop is not None:  # _schedule(), inlined: the first append of each turn does this
                    self._scheduled = True
                    loop.call_soon(self._flush_soon)
                else:
                    self._schedule()
        p.append(record)
        n = len(record.payload)
        s.pending_bytes += n
        self._pending_total += n + RECORD_OVERHEAD
        return off

    def append_many(self, stream: Stream, records: list[Record]) -> int:
        """Queue several records; returns the offset of the first."""
        s = stream
        if self._pending_total > PENDING_MAX_BYTES and self._inflight is not None:
            self._backpressure()
        off = s.next_offset
        s.next_offset = off + len(records)
        p = s.pending
        if not p:
            self._dirty.append(s)
            if not self._scheduled:
                self._schedule()
        p.extend(records)
        n = sum([len(r.payload) for r in records])
        s.pending_bytes += n
        self._pending_total += n + RECORD_OVERHEAD * len(records)
        return off

    def delete_record(self, stream: Stream, offset: int) -> bool:
        """Remove one record, committed or still pending (a tombstone; the bytes go with its segment)."""
        # a stream with no segment yet holds only pending records
        lo = stream.segments[0].first if stream.segments else stream.next_offset - len(stream.pending)
        if not (lo <= offset < stream.next_offset) or offset in stream.deleted:
            return False
        if not stream.deleted:
            stream.deleted = set()
        stream.deleted.add(offset)  # type: ignore[union-attr]  # a set from here on
        stream.touched = self.batch_seq
        self._put(k.deleted_key(stream.sid, offset), b"")
        return True

    # front-end metadata (mailboxes, group progress, ...) goes through the same batches, so it is
    # ordered with the records it describes.
    def put_meta(self, namespace: str, key: str | bytes, value: bytes) -> None:
        self._put(k.meta_key(namespace, key), value)

    def delete_meta(self, namespace: str, key: str | bytes) -> None:
        self._batch.delete(k.meta_key(namespace, key))
        self._batch_len += 1
        self._schedule()

    def delete_meta_prefix(self, namespace: str, prefix: str | bytes) -> None:
        start = k.meta_key(namespace, prefix)
        self._batch.delete_range(start, k.prefix_end(start))
        self._batch_len += 1
        self._schedule()

    def get_meta(self, namespace: str, key: str | bytes) -> bytes | None:
        return self.store.get(k.meta_key(namespace, key))

    def scan_meta(self, namespace: str, prefix: str | bytes = b"",
                  after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Committed metadata of a namespace whose key starts with `prefix`: (key, value) in key
        order; only keys greater than `after` when it is given (to go on from a page's last key)."""
        p = k.meta_key(namespace, b"")
        start = k.meta_key(namespace, prefix)
        end = k.prefix_end(start)
        if after is not None:
            start = max(start, p + after + b"\x00")  # the smallest key after `after`
        for key, v in self.store.scan(start, end):
            yield key[len(p):], v

    def _put(self, key: bytes, value: bytes) -> None:
        self._batch.put(key, value)
        self._batch_len += 1
        self._schedule()

    # ------------------------------------------------------------------ commit
    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (tools, unit tests): call flush() yourself
                self._scheduled = False
                return
        loop.call_soon(self._flush_soon)

    @property
    def has_pending(self) -> bool:
        return bool(self._batch_len or self._dirty or self._sid_dirty)

    @property
    def _unwritten(self) -> bool:
        return self.has_pending or self._inflight is not None

    def committed(self) -> asyncio.Future[None]:
        """A future resolved when everything appended so far is written (failed if the write fails)."""
        loop = self._loop or asyncio.get_running_loop()
        if not self.has_pending:
            inflight = self._inflight
            if inflight is None:
                f = loop.create_future()
                f.set_result(None)
                return f
            if inflight.future is None:
                inflight.future = loop.create_future()
            return inflight.future
        if self._commit_future is None:
            self._commit_future = loop.create_future()
        return self._commit_future

    def on_commit(self, seq: int, callback: Callable[[], Any],
                  on_error: Callable[[BaseException], Any] | None = None) -> None:
        """Run callback once batch `seq` is written (at once if it already is); on_error if it fails."""
        if seq == self.batch_seq and (self._dirty or self._batch_len or self._sid_dirty):
            # the usual case: the batch now filling, which holds something (`has_pending`), inlined
            self._commit_callbacks.append((callback, on_error))
            return
        if self._failed and seq in self._failed:
            if on_error is not None:
                on_error(self._failed[seq])
            return
        if self.is_committed(seq):
            callback()
            return
        inflight = self._inflight
        # nothing queued after the batch being written: it carries everything up to `seq`
        if inflight is not None and (seq <= inflight.seq or not self.has_pending):
            inflight.callbacks.append((callback, on_error))
        else:
            self._commit_callbacks.append((callback, on_error))

    def is_committed(self, seq: int) -> bool:
        """Whether batch `seq` (a `batch_seq` taken when something was appended) is written."""
        if self._failed and seq in self._failed:
            return False
        return seq <= self.committed_seq or not self._unwritten

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run callback once everything appended so far is written (at once if nothing is pending)."""
        self.on_commit(self.batch_seq, callback)

    def _flush_soon(self) -> None:
        """End of a loop turn: hand the batch to the writer thread, unless one is being written (then
        this one keeps filling and goes when that one is done)."""
        self._scheduled = False
        if self._inflight is not None or not (self._dirty or self._batch_len or self._sid_dirty):
            return  # (has_pending, inlined)
        if not self.writer_thread:
            self._write_inline()  # (flush(), less what was just checked)
            return
        c = self._build()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="robustmq-log-writer")
        loop = self._loop
        assert loop is not None
        self._inflight = c
        c.thread_future = self._writer.submit(self._write_in_thread, c, loop)

    def _backpressure(self) -> None:
        """Too much queued while a batch is being written (a flood faster than the disk): wait for
        that write here, on the loop, so the loop stops reading sockets and memory stays bounded."""
        c = self._inflight
        if c is not None and c.thread_future is not None:
            c.thread_future.result()
            self._complete(c, c.exc, c.seconds)
        self._flush_soon()

    def _write_in_thread(self, c: _Commit, loop: asyncio.AbstractEventLoop) -> None:
        t0 = time.perf_counter()
        try:
            self.store.write(c.batch)
        except Exception as e:  # noqa: BLE001 - reported on the loop: the waiters of this batch fail, the log goes on
            c.exc = e
        c.seconds = time.perf_counter() - t0
        try:
            loop.call_soon_threadsafe(self._complete, c, c.exc, c.seconds)
        except RuntimeError:  # the loop is closed: flush()/close() completes it instead
            pass

    def flush(self) -> None:
        """Write everything pending now, on this thread, and resolve it (tools, tests, close)."""
        self._scheduled = False
        c = self._inflight
        if c is not None and c.thread_future is not None:
            c.thread_future.result()  # the writer thread never raises: failures are passed on
            self._complete(c, c.exc, c.seconds)  # its report may still be queued on the loop
        if not (self._dirty or self._batch_len or self._sid_dirty):  # has_pending, inlined
            return
        self._write_inline()

    def _write_inline(self) -> None:
        """Build the pending batch and write it on this thread (nothing is in flight)."""
        c = self._build()
        self._inflight = c
        t0 = time.perf_counter()
        exc: BaseException | None = None
        try:
            self.store.write(c.batch)
        except Exception as e:  # noqa: BLE001 - any store failure fails this batch's waiters
            exc = e
        self._complete(c, exc, time.perf_counter() - t0)

    def _build(self) -> _Commit:
        """Turn everything queued into one store batch (runs on the loop: Python objects only)."""
        # the batch's waiters move to it (no empty list made only to be replaced)
        c = _Commit(self._batch, self.batch_seq, self._commit_future, self._commit_callbacks)
        self._commit_future = None
        self._commit_callbacks = []
        batch = c.batch
        dirty, self._dirty = self._dirty, []
        now = time.time_ns() // 1_000_000  # (now_ms, inlined)
        for s in dirty:
            recs = s.pending
            if not recs:
                continue
            s.pending = []
            c.nbytes += s.pending_bytes
            s.pending_bytes = 0
            n = len(recs)
            c.appended += n
            first = s.next_offset - n
            if n <= CHUNK_MAX_RECORDS:
                self._write_chunk(batch, s, first, recs, now)
            else:
                for i in range(0, len(recs), CHUNK_MAX_RECORDS):
                    self._write_chunk(batch, s, first + i, recs[i:i + CHUNK_MAX_RECORDS], now)
            s.touched = c.seq
            c.streams.append((s, s.next_offset))
        if self._sid_dirty:
            batch.put(k.K_NEXT_SID, self._state_value())
            self._sid_dirty = False
        self._pending_total = 0
        spare = self._spare
        if spare is not None:
            self._spare = None
            self._batch = spare
        else:
            self._batch = self.store.new_batch()
        self._batch_len = 0
        self.batch_seq += 1
        return c

    def _complete(self, c: _Commit, exc: BaseException | None, dt: float) -> None:
        """On the loop (or the flushing thread): resolve what waited on batch `c`."""
        if c.done:
            return
        c.done = True
        if self._inflight is c:
            self._inflight = None
        if self._deleting:
            self._deleting = {n: q for n, q in self._deleting.items() if q > c.seq}
        if exc is None:
            self._succeed(c, dt)
        else:
            self._fail(c, exc)
        if (self._dirty or self._batch_len or self._sid_dirty) and self._loop is not None and \
                not self._scheduled:  # has_pending, inlined
            # the next batch filled while this one was written: send it now, in order
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)
        if self._spare is None:
            # made here, after this batch's callbacks: its acknowledgements do not wait for it (a
            # WriteBatch costs about a microsecond; each commit needs a new one)
            self._spare = self.store.new_batch()

    def _succeed(self, c: _Commit, dt: float) -> None:
        self.committed_seq = c.seq
        streams = c.streams
        for s, upto in streams:
            if upto > s.committed and not s.gone:
                s.committed = upto
        fut = c.future
        if fut is not None and not fut.done():
            fut.set_result(None)
        for cb, _ in c.callbacks:
            try:
                cb()
            except Exception:
                log.exception("commit callback failed")
        for s, _ in streams:
            if s.waiters:
                self._wake(s)
        # the figures after the callbacks: acknowledgements do not wait for them
        stats = self.stats
        stats.appends += c.appended
        stats.bytes_appended += c.nbytes
        stats.batches += 1
        stats.commit_seconds_total += dt
        if dt > stats.commit_seconds_max:
            stats.commit_seconds_max = dt
        if len(self.streams) > self.stream_cache_max:  # streams this batch pinned may go now
            self._evict()

    def _fail(self, c: _Commit, exc: BaseException) -> None:
        """The store refused the batch: its records are lost, so fail whoever waits on it (never
        acknowledge it), wake its readers (they find nothing new), and keep serving."""
        log.error("log write failed: %r", exc)
        self.stats.write_failures += 1
        self.committed_seq = c.seq  # later batches may still succeed; this one will never be written
        self._failed[c.seq] = exc
        while len(self._failed) > FAILED_BATCHES_KEPT:
            del self._failed[next(iter(self._failed))]
        if c.future is not None and not c.future.done():
            c.future.set_exception(exc)
            c.future.exception()  # retrieved here too, so an unawaited future logs nothing more
        for _, eb in c.callbacks:
            if eb is not None:
                try:
                    eb(exc)
                except Exception:
                    log.exception("commit error callback failed")
        for s, _ in c.streams:
            if s.waiters:
                self._wake(s)

    def _write_chunk(self, batch: Batch, s: Stream, first: int, recs: list[Record], now: int) -> None:
        data = encode(recs)
        batch.put(s.kprefix + first.to_bytes(8, "big"), data)
        nrec = len(recs)
        last = first + nrec - 1
        # client timestamps (Kafka CreateTime) need not be monotonic: the bounds cover every record
        if nrec == 1:
            lo = hi = recs[0].ts
        else:
            tss = [r.ts for r in recs]
            lo, hi = min(tss), max(tss)
        segs = s.segments
        seg = segs[-1] if segs else None
        if seg is None or seg.last - seg.first + 1 >= self.segment_max_records or now - seg.created_ms > \
                self.segment_max_age_ms:  # (seg.count, inlined)
            seg = SegmentMeta(first, first - 1, lo, hi, 0, now)
            segs.append(seg)
            if self._ages(s.name, s.retention_age_ms):
                # keyed by its first records' timestamp, a lower bound of its newest: a scan of the
                # index up to (now - age) finds every segment that may have aged out
                seg.indexed_ts = max(0, lo)
                batch.put(k.time_key(seg.indexed_ts, s.sid, first), s.name.encode())
        seg.last = last
        if lo < seg.min_ts:
            seg.min_ts = lo
        if hi > seg.max_ts:
            seg.max_ts = hi
        nb = len(data)
        seg.nbytes += nb
        s.nbytes += nb
        batch.put(s.gprefix + seg.first.to_bytes(8, "big"), encode(seg))  # k.segment_key, inlined
        limit = s.retention_bytes if s.retention_bytes >= 0 else self.retention_max_bytes
        if limit and s.nbytes > limit and len(segs) > 1 and s.name not in self._over_bytes:
            self._note_over(batch, s.name)

    def _wake(self, s: Stream) -> None:
        ws, s.waiters = s.waiters, ()
        for w in ws:
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------------ read
    def high_watermark(self, stream: Stream) -> int:
        """The offset after the last committed record (Kafka's high watermark)."""
        return stream.committed

    def log_start(self, stream: Stream) -> int:
        """The oldest offset still retained (Kafka's log start offset)."""
        return min(stream.first_offset, stream.committed)

    def read(self, stream: Stream, start: int = 0, end: int | None = None,
             limit: int | None = None, max_bytes: int | None = None) -> Iterator[tuple[int, Record]]:
        """Committed records with start <= offset < end, in offset order (deleted ones skipped).

        `max_bytes` bounds the payload, key and header bytes returned, but the first record is always
        returned, however large (as Kafka does, so a consumer always makes progress)."""
        start = max(start, stream.first_offset)
        stop = stream.committed if end is None else min(end, stream.committed)
        if start >= stop:
            return
        deleted = stream.deleted
        n = 0
        total = 0
        for first, recs in self._chunks(stream, start, stop):
            i0 = max(0, start - first)
            i1 = min(len(recs), stop - first)
            for i in range(i0, i1):
                off = first + i
                if deleted and off in deleted:
                    continue
                r = recs[i]
                if max_bytes is not None:
                    total += record_size(r)
                    if n and total > max_bytes:
                        return
                yield off, r
                n += 1
                if limit is not None and n >= limit:
                    return

    def _chunks(self, stream: Stream, start: int, stop: int) -> Iterator[tuple[int, list[Record]]]:
        """Decoded chunks overlapping [start, stop)."""
        kp = stream.kprefix
        at = self.store.seek_le(kp + start.to_bytes(8, "big"), kp) or kp + start.to_bytes(8, "big")
        for key, v in self.store.scan(at, kp + stop.to_bytes(8, "big")):
            yield k.record_key_offset(key), decode_chunk(v)

    def offset_for_time(self, stream: Stream, ts_ms: int) -> int:
        """First offset whose timestamp is >= ts_ms (the committed end if none).

        Timestamps may go backwards (Kafka CreateTime), so segments are not sorted by time: a
        segment whose max_ts is below ts_ms is skipped, every other one is scanned in offset order."""
        for g in list(stream.segments):
            if g.max_ts < ts_ms:
                continue
            for off, rec in self.read(stream, g.first, g.last + 1):
                if rec.ts >= ts_ms:
                    return off
        return stream.committed

    async def wait(self, stream: Stream, offset: int, timeout: float | None = None) -> bool:
        """Wait until a committed record exists at `offset` (or beyond). False on timeout."""
        if stream.committed > offset:
            return True
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._add_waiter(stream, fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        return stream.committed > offset

    @staticmethod
    def _add_waiter(s: Stream, fut: asyncio.Future[None]) -> None:
        if s.waiters:
            s.waiters.append(fut)  # type: ignore[union-attr]  # non-empty: a list
        else:
            s.waiters = [fut]

    async def wait_any(self, streams_offsets: Iterable[tuple[Stream, int]],
                       timeout: float | None = None) -> list[Stream]:
        """Wait until at least one stream has a committed record at its offset (or beyond); returns
        those that do (empty on timeout). One future spans them all, as a Kafka Fetch over many
        partitions needs."""
        pairs = list(streams_offsets)
        ready = [s for s, off in pairs if s.committed > off]
        if ready or not pairs:
            return ready
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        for s, _ in pairs:
            self._add_waiter(s, fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            for s, _ in pairs:  # the streams that did not fire still hold the future: drop it
                ws = s.waiters
                if fut in ws:
                    ws.remove(fut)  # type: ignore[union-attr]  # a list: it holds a future
        return [s for s, off in pairs if s.committed > off]

    # ------------------------------------------------------------------ retention
    def apply_retention(self, now: int | None = None) -> int:
        """Drop whole old segments by age and by bytes, per each stream's settings (or the log's
        defaults); returns how many were dropped. The newest segment of a stream is kept unless it is
        entirely past the age limit.

        Nothing walks every stream. By bytes: the streams whose appends took them past their limit
        (noted at the write). By age: the time index (T keys), oldest first, up to now minus the
        smallest age limit in force; an entry whose stream is not cached is checked from its `G` key and
        the stream loaded only when the segment is to be dropped. With `retention_pass_max`, one call
        handles that many entries and the next call goes on from there."""
        now = now or now_ms()
        dropped = 0
        budget = self.retention_pass_max if self.retention_pass_max is not None else 1 << 62
        if not self._over_loaded:
            self._over_loaded = True
            for key, _ in self.store.scan_prefix(k.P_OVER):
                self._over_bytes.add(key[1:].decode())
        while self._over_bytes and budget > 0:
            budget -= 1
            name = self._over_bytes.pop()
            self._unindex(k.over_key(name))
            s = self.get_stream(name)
            if s is not None and self._ages(s.name, 1):  # (not exempt)
                dropped += self._retain(s, now)
        if self._index_pending and budget > 0:
            budget, n = self._complete_index(budget, now)
            dropped += n
        ages = [a for a in (self.retention_max_age_ms, self._min_custom_age_ms) if a > 0]
        if ages and budget > 0:
            start = self._retention_cursor or k.P_TIME
            self._retention_cursor = None
            for key, v in self.store.scan(start, k.time_bound(now - min(ages))):
                if budget <= 0:  # the next pass resumes here: a pass costs bounded loop time
                    self._retention_cursor = key
                    break
                budget -= 1
                dropped += self._age_out(key, v.decode(), now)
        if dropped:
            self.stats.segments_dropped += dropped
        if self._batch_len:
            # also for the deletes of stale index entries alone: a batch left unscheduled would hold
            # every durability barrier (a PONG, an ack) until some later append happened to flush it
            self._schedule()
        return dropped

    def _age_out(self, tkey: bytes, name: str, now: int) -> int:
        """Check one time-index entry: drop what its stream has aged out; forget stale entries."""
        _, sid, first = k.time_key_parts(tkey)
        s = self.streams.get(name)
        if s is None:
            raw = None if name in self._deleting else self.store.get(k.stream_key(name))
            meta = decode_stream(raw) if raw is not None else None
            if meta is None or meta.sid != sid or not self._ages(name, meta.retention_age_ms):
                self._unindex(tkey)
                return 0
            g = self.store.get(k.segment_key(sid, first))
            if g is None:
                self._unindex(tkey)
                return 0
            age = self._limits(meta.retention_age_ms, meta.retention_bytes)[0]
            if decode_segment(g).max_ts >= now - age:
                return 0  # not yet
            s = self.get_stream(name)
            if s is None:
                return 0
        elif s.sid != sid or not self._ages(name, s.retention_age_ms) or \
                not any(g.first == first for g in s.segments):
            self._unindex(tkey)
            return 0
        return self._retain(s, now)

    def _unindex(self, tkey: bytes) -> None:
        self._batch.delete(tkey)
        self._batch_len += 1

    def _complete_index(self, budget: int, now: int) -> tuple[int, int]:
        """Index the segments of streams written while the default age limit was off (a bounded
        part per pass), dropping what has aged out on the way; once every stream is done, mark the
        index complete. Returns (the budget left, segments dropped)."""
        start = self._index_cursor or k.P_STREAM
        self._index_cursor = None
        dropped = 0
        for key, v in self.store.scan(start, k.prefix_end(k.P_STREAM)):
            if budget <= 0:
                self._index_cursor = key
                return 0, dropped
            budget -= 1
            name = k.stream_key_name(key)
            meta = decode_stream(v)
            if not self._ages(name, meta.retention_age_ms):
                continue
            s = self.streams.get(name)
            if s is not None:
                segs = s.segments
            else:
                segs = [decode_segment(gv) for _, gv in self.store.scan_prefix(k.segment_prefix(meta.sid))]
            age = self._limits(meta.retention_age_ms, meta.retention_bytes)[0]
            old = bool(segs) and segs[0].max_ts < now - age
            if old and s is None:  # load it, so that the segments indexed are the ones dropped
                s = self.get_stream(name)
                segs = s.segments if s is not None else []
            for g in segs:
                self._index_segment(self._batch, meta.sid, name, g)
            if old and s is not None:
                dropped += self._retain(s, now)
        self._index_pending = False
        self._index_complete = self._sid_dirty = True
        self._schedule()
        return budget, dropped

    def _limits(self, age_ms: int, nbytes: int) -> tuple[int, int]:
        return (self.retention_max_age_ms if age_ms < 0 else age_ms,
                self.retention_max_bytes if nbytes < 0 else nbytes)

    def _may_drop(self, meta: StreamMeta, now: int) -> bool:
        """Whether an uncached stream has a segment to drop, from its G keys alone."""
        max_age, max_bytes = self._limits(meta.retention_age_ms, meta.retention_bytes)
        if not max_age and not max_bytes:
            return False
        total = 0
        nsegs = 0
        for _, v in self.store.scan_prefix(k.segment_prefix(meta.sid)):
            g = decode_segment(v)
            if nsegs == 0 and max_age and g.max_ts < now - max_age:
                return True
            total += g.nbytes
            nsegs += 1
        return bool(max_bytes) and total > max_bytes and nsegs > 1

    def _retain(self, s: Stream, now: int) -> int:
        max_age, max_bytes = self._limits(s.retention_age_ms, s.retention_bytes)
        if not max_age and not max_bytes:
            return 0
        segs = s.segments
        dropped = 0
        lo = hi = -1
        while segs:
            g = segs[0]
            too_old = bool(max_age) and g.max_ts < now - max_age
            too_big = bool(max_bytes) and s.nbytes > max_bytes and len(segs) > 1
            if not (too_old or too_big) or (len(segs) == 1 and s.pending):
                break
            b = self._batch
            b.delete_range(k.record_key(s.sid, g.first), k.record_key(s.sid, g.last + 1))
            b.delete(k.segment_key(s.sid, g.first))
            if g.indexed_ts >= 0:
                b.delete(k.time_key(g.indexed_ts, s.sid, g.first))
            if s.deleted:
                b.delete_range(k.deleted_key(s.sid, g.first), k.deleted_key(s.sid, g.last + 1))
                s.deleted = {o for o in s.deleted if o > g.last} or _NO_DELETED
            self._batch_len += 1
            s.touched = self.batch_seq
            s.nbytes -= g.nbytes
            segs.pop(0)
            dropped += 1
            if lo < 0:
                lo = g.first
            hi = g.last + 1
        # the stream's dropped segments are adjacent: one range to compact. Past the cap (a tool
        # that never takes them) the store's own compactions free the space later.
        if lo >= 0 and len(self._reclaim) < RECLAIM_MAX_RANGES:
            self._reclaim.append((s.kprefix + lo.to_bytes(8, "big"), s.kprefix + hi.to_bytes(8, "big")))
        if lo >= 0:
            # in the same batch as the range delete: once the last G key is gone, the S key still
            # says where the stream's offsets go on
            s.floor = hi
            self._put_stream_meta(s)
        return dropped

    @property
    def has_reclaimable(self) -> bool:
        return bool(self._reclaim)

    def take_reclaimable(self) -> list[tuple[bytes, bytes]]:
        """Record key ranges retention (or a stream's deletion) dropped since the last call, for
        `Store.compact_ranges`.

        A range delete only hides records; RocksDB frees their space when it compacts that range.
        Compact only after the retention batch is committed, or there is nothing to drop yet.
        """
        ranges, self._reclaim = self._reclaim, []
        return ranges

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.store.close()


def record_size(r: Record) -> int:
    """Bytes a record carries (payload, key, headers), for byte-limited reads."""
    n = len(r.payload)
    if r.key:
        n += len(r.key)
    if r.headers:
        n += sum(len(a) + len(b) for a, b in r.headers)
    return n
