"""Streams, segments, group-committed appends, reads by offset and time, waiting, retention.

Appends are synchronous and cheap: the record gets its dense offset at once and is queued. The first
append of a loop turn schedules one commit for the end of that turn, which writes everything queued
as one RocksDB WriteBatch, then resolves the durability futures and wakes waiting readers. So a
burst of publishes read in one `data_received` becomes one write, and a writer that needs durability
awaits `log.committed()` instead of paying a write of its own.

Records are stored in chunks, like Kafka's record batches: the records one commit appends to one
stream become one RocksDB value (a msgpack array) under the key of the chunk's first offset. That
turns per-message work into a list append; encoding and the WriteBatch put happen once per chunk.
Segments are runs of whole chunks, so retention drops a segment with one range delete.

Readers see committed records only: `read()` goes to RocksDB, and `wait()` wakes on commit.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from robustmq.core_log import store as st
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
CHUNK_MAX_BYTES = 4 << 20
RECLAIM_MAX_RANGES = 10_000  # dropped ranges remembered for compaction between two passes


class Stream:
    """In-memory state of one stream; the segment index mirrors the G keys on disk."""

    __slots__ = ("name", "sid", "next_offset", "committed", "segments", "nbytes", "waiters", "pending",
                 "pending_bytes", "created_ms", "deleted", "kprefix")

    def __init__(self, name: str, sid: int, created_ms: int) -> None:
        self.name = name
        self.sid = sid
        self.created_ms = created_ms
        self.next_offset = 0
        self.committed = 0  # next_offset as of the last commit: readers see offsets below it
        self.segments: list[SegmentMeta] = []
        self.nbytes = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.pending: list[Record] = []  # appended since the last commit
        self.pending_bytes = 0
        self.deleted: set[int] = set()  # offsets removed one by one (mq9 DELETE)
        self.kprefix = st.P_RECORD + sid.to_bytes(4, "big")

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


class SegmentLog:
    def __init__(
        self,
        store: st.Store,
        *,
        segment_max_records: int = 10_000,
        segment_max_age_s: float = 3600.0,
        retention_max_age_s: float = 0.0,
        retention_max_bytes: int = 0,
    ) -> None:
        self.store = store
        self.segment_max_records = segment_max_records
        self.segment_max_age_ms = int(segment_max_age_s * 1000)
        self.retention_max_age_ms = int(retention_max_age_s * 1000)
        self.retention_max_bytes = retention_max_bytes
        self.streams: dict[str, Stream] = {}
        self._by_sid: dict[int, Stream] = {}
        self._next_sid = 1
        self._batch = store.new_batch()
        self._batch_len = 0
        self._dirty: list[Stream] = []
        self._commit_future: asyncio.Future[None] | None = None
        self._commit_callbacks: list[Callable[[], Any]] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.retention_exempt: list[str] = []  # stream-name prefixes that retention never touches
        self._reclaim: list[tuple[bytes, bytes]] = []  # record key ranges retention range-deleted
        self.stream_gen = 0  # bumped when a stream is deleted (caches of Stream objects drop)
        self.batch_seq = 1  # sequence number of the batch now being filled
        self.committed_seq = 0
        self.stats = LogStats()
        self._recover()

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        for k, v in self.store.scan_prefix(st.P_STREAM):
            meta = decode_stream(v)
            s = Stream(k[1:].decode(), meta.sid, meta.created_ms)
            self.streams[s.name] = s
            self._by_sid[s.sid] = s
            self._next_sid = max(self._next_sid, s.sid + 1)
        for k, v in self.store.scan_prefix(st.P_SEGMENT):
            s = self._by_sid.get(int.from_bytes(k[1:5], "big"))
            if s is None:
                continue
            seg = decode_segment(v)
            s.segments.append(seg)
            s.nbytes += seg.nbytes
            s.next_offset = max(s.next_offset, seg.last + 1)
        for k, _ in self.store.scan_prefix(st.P_DELETED):
            s = self._by_sid.get(int.from_bytes(k[1:5], "big"))
            if s is not None:
                s.deleted.add(int.from_bytes(k[5:13], "big"))
        for s in self.streams.values():
            s.segments.sort(key=lambda g: g.first)
            s.committed = s.next_offset
        if self.streams:
            log.info("recovered %d streams", len(self.streams))

    # ------------------------------------------------------------------ streams
    def get_stream(self, name: str) -> Stream | None:
        return self.streams.get(name)

    def stream(self, name: str) -> Stream:
        s = self.streams.get(name)
        if s is None:
            s = Stream(name, self._next_sid, now_ms())
            self._next_sid += 1
            self.streams[name] = s
            self._by_sid[s.sid] = s
            self._put(st.stream_key(name), encode(StreamMeta(s.sid, s.created_ms)))
        return s

    def delete_stream(self, name: str) -> None:
        """Drop a stream and all its records (one range delete per key family)."""
        s = self.streams.pop(name, None)
        if s is None:
            return
        self._by_sid.pop(s.sid, None)
        self.stream_gen += 1
        b = self._batch
        sid4 = s.sid.to_bytes(4, "big")
        for prefix in (st.P_RECORD, st.P_SEGMENT, st.P_DELETED):
            b.delete_range(prefix + sid4, st.prefix_end(prefix + sid4))
        b.delete(st.stream_key(name))
        self._batch_len += 1
        s.segments.clear()
        s.pending.clear()
        s.next_offset = s.committed = 0
        self._wake(s)
        self._schedule()

    # ------------------------------------------------------------------ append
    def append(self, stream: Stream | str, record: Record) -> int:
        """Queue a record; returns its offset. Durable once `committed()` resolves."""
        s = self.stream(stream) if isinstance(stream, str) else stream
        off = s.next_offset
        s.next_offset = off + 1
        p = s.pending
        if not p:
            self._dirty.append(s)
            if not self._scheduled:
                self._schedule()
        p.append(record)
        s.pending_bytes += len(record.payload)
        return off

    def append_many(self, stream: Stream, records: list[Record]) -> int:
        """Queue several records; returns the offset of the first."""
        s = stream
        off = s.next_offset
        s.next_offset = off + len(records)
        p = s.pending
        if not p:
            self._dirty.append(s)
            if not self._scheduled:
                self._schedule()
        p.extend(records)
        s.pending_bytes += sum([len(r.payload) for r in records])
        return off

    def delete_record(self, stream: Stream, offset: int) -> bool:
        """Remove one record (a tombstone; the bytes go with its segment)."""
        if not (stream.first_offset <= offset < stream.next_offset) or offset in stream.deleted:
            return False
        stream.deleted.add(offset)
        self._put(st.deleted_key(stream.sid, offset), b"")
        return True

    # front-end metadata (mailboxes, group progress, ...) goes through the same batches, so it is
    # ordered with the records it describes.
    def put_meta(self, namespace: str, key: str | bytes, value: bytes) -> None:
        self._put(st.meta_key(namespace, key), value)

    def delete_meta(self, namespace: str, key: str | bytes) -> None:
        self._batch.delete(st.meta_key(namespace, key))
        self._batch_len += 1
        self._schedule()

    def delete_meta_prefix(self, namespace: str, prefix: str | bytes) -> None:
        start = st.meta_key(namespace, prefix)
        self._batch.delete_range(start, st.prefix_end(start))
        self._batch_len += 1
        self._schedule()

    def get_meta(self, namespace: str, key: str | bytes) -> bytes | None:
        return self.store.get(st.meta_key(namespace, key))

    def scan_meta(self, namespace: str) -> Iterator[tuple[bytes, bytes]]:
        p = st.meta_key(namespace, b"")
        for k, v in self.store.scan_prefix(p):
            yield k[len(p):], v

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
        loop.call_soon(self.flush)

    @property
    def has_pending(self) -> bool:
        return bool(self._batch_len or self._dirty)

    def committed(self) -> asyncio.Future[None]:
        """A future resolved when everything appended so far is written."""
        loop = self._loop or asyncio.get_running_loop()
        if not self.has_pending:
            f = loop.create_future()
            f.set_result(None)
            return f
        if self._commit_future is None:
            self._commit_future = loop.create_future()
        return self._commit_future

    def on_commit(self, seq: int, callback: Callable[[], Any]) -> None:
        """Run callback once batch `seq` is written (at once if it already is)."""
        if seq <= self.committed_seq or not self.has_pending:
            callback()  # nothing is waiting to be written: everything up to now is durable
        else:
            self._commit_callbacks.append(callback)

    def is_committed(self, seq: int) -> bool:
        """Whether batch `seq` (a `batch_seq` taken when something was appended) is written."""
        return seq <= self.committed_seq or not self.has_pending

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run callback once everything appended so far is written (at once if nothing is pending)."""
        self.on_commit(self.batch_seq, callback)

    def flush(self) -> None:
        """Write the pending batch now (normally called once per loop turn)."""
        self._scheduled = False
        if not self.has_pending:
            return
        batch = self._batch
        dirty, self._dirty = self._dirty, []
        now = now_ms()
        appended = 0
        nbytes = 0
        for s in dirty:
            recs = s.pending
            if not recs:
                continue
            s.pending = []
            pbytes = s.pending_bytes
            s.pending_bytes = 0
            appended += len(recs)
            nbytes += pbytes
            first = s.committed
            for i in range(0, len(recs), CHUNK_MAX_RECORDS):
                self._write_chunk(batch, s, first + i, recs[i:i + CHUNK_MAX_RECORDS], now)
        fut, self._commit_future = self._commit_future, None
        cbs, self._commit_callbacks = self._commit_callbacks, []
        self._batch = self.store.new_batch()
        self._batch_len = 0
        t0 = time.perf_counter()
        try:
            self.store.write(batch)
        except Exception as exc:  # the disk failed: fail the writers that wait, keep serving
            log.exception("log write failed")
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return
        dt = time.perf_counter() - t0
        stats = self.stats
        stats.appends += appended
        stats.bytes_appended += nbytes
        stats.batches += 1
        stats.commit_seconds_total += dt
        if dt > stats.commit_seconds_max:
            stats.commit_seconds_max = dt
        self.committed_seq = self.batch_seq
        self.batch_seq += 1
        for s in dirty:
            s.committed = s.next_offset if s.name in self.streams else 0
        if fut is not None and not fut.done():
            fut.set_result(None)
        for cb in cbs:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a callback must not break the commit path
                log.exception("commit callback failed")
        for s in dirty:
            if s.waiters:
                self._wake(s)

    def _write_chunk(self, batch: Any, s: Stream, first: int, recs: list[Record], now: int) -> None:
        data = encode(recs)
        batch.put(s.kprefix + first.to_bytes(8, "big"), data)
        last = first + len(recs) - 1
        t_first, t_last = recs[0].ts, recs[-1].ts
        lo, hi = min(t_first, t_last), max(t_first, t_last)
        segs = s.segments
        seg = segs[-1] if segs else None
        if seg is None or seg.count >= self.segment_max_records or now - seg.created_ms > \
                self.segment_max_age_ms:
            seg = SegmentMeta(first, first - 1, lo, hi, 0, now)
            segs.append(seg)
        seg.last = last
        seg.min_ts = min(seg.min_ts, lo)
        seg.max_ts = max(seg.max_ts, hi)
        seg.nbytes += len(data)
        s.nbytes += len(data)
        batch.put(st.segment_key(s.sid, seg.first), encode(seg))

    def _wake(self, s: Stream) -> None:
        ws, s.waiters = s.waiters, []
        for w in ws:
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------------ read
    def read(self, stream: Stream, start: int = 0, end: int | None = None,
             limit: int | None = None) -> Iterator[tuple[int, Record]]:
        """Committed records with start <= offset < end, in offset order (deleted ones skipped)."""
        start = max(start, stream.first_offset)
        stop = stream.committed if end is None else min(end, stream.committed)
        if start >= stop:
            return
        deleted = stream.deleted
        n = 0
        for first, recs in self._chunks(stream, start, stop):
            i0 = max(0, start - first)
            i1 = min(len(recs), stop - first)
            for i in range(i0, i1):
                off = first + i
                if deleted and off in deleted:
                    continue
                yield off, recs[i]
                n += 1
                if limit is not None and n >= limit:
                    return

    def _chunks(self, stream: Stream, start: int, stop: int) -> Iterator[tuple[int, list[Record]]]:
        """Decoded chunks overlapping [start, stop)."""
        kp = stream.kprefix
        it = self.store.db.iter()
        it.seek_for_prev(kp + start.to_bytes(8, "big"))
        if not it.valid() or not it.key().startswith(kp):
            it.seek(kp + start.to_bytes(8, "big"))
        while it.valid():
            k = it.key()
            if not k.startswith(kp):
                return
            first = int.from_bytes(k[5:13], "big")
            if first >= stop:
                return
            yield first, decode_chunk(it.value())
            it.next()

    def offset_for_time(self, stream: Stream, ts_ms: int) -> int:
        """First offset whose timestamp is >= ts_ms (next_offset if none)."""
        segs = stream.segments
        i = bisect.bisect_left([g.max_ts for g in segs], ts_ms)
        while i < len(segs):
            for off, rec in self.read(stream, segs[i].first, segs[i].last + 1):
                if rec.ts >= ts_ms:
                    return off
            i += 1
        return stream.committed

    async def wait(self, stream: Stream, offset: int, timeout: float | None = None) -> bool:
        """Wait until a committed record exists at `offset` (or beyond). False on timeout."""
        if stream.committed > offset:
            return True
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        stream.waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return False
        return stream.committed > offset

    # ------------------------------------------------------------------ retention
    def apply_retention(self, now: int | None = None) -> int:
        """Drop whole old segments by age and by bytes; returns how many were dropped.

        The newest segment of a stream is kept unless it is entirely past the age limit.
        """
        now = now or now_ms()
        dropped = 0
        exempt = tuple(self.retention_exempt)
        for s in list(self.streams.values()):
            if exempt and s.name.startswith(exempt):
                continue
            segs = s.segments
            lo = hi = -1
            while segs:
                g = segs[0]
                too_old = self._expired(g, now)
                too_big = bool(self.retention_max_bytes) and s.nbytes > self.retention_max_bytes \
                    and len(segs) > 1
                if not (too_old or too_big) or (len(segs) == 1 and s.pending):
                    break
                sid4 = s.sid.to_bytes(4, "big")
                b = self._batch
                b.delete_range(st.P_RECORD + sid4 + g.first.to_bytes(8, "big"),
                               st.P_RECORD + sid4 + (g.last + 1).to_bytes(8, "big"))
                b.delete(st.segment_key(s.sid, g.first))
                if s.deleted:
                    b.delete_range(st.deleted_key(s.sid, g.first), st.deleted_key(s.sid, g.last + 1))
                    s.deleted = {o for o in s.deleted if o > g.last}
                self._batch_len += 1
                s.nbytes -= g.nbytes
                segs.pop(0)
                dropped += 1
                if lo < 0:
                    lo = g.first
                hi = g.last + 1
            # the stream's dropped segments are adjacent: one range to compact. Past the cap (a tool
            # that never takes them) RocksDB's own compactions free the space later.
            if lo >= 0 and len(self._reclaim) < RECLAIM_MAX_RANGES:
                self._reclaim.append((s.kprefix + lo.to_bytes(8, "big"), s.kprefix + hi.to_bytes(8, "big")))
        if dropped:
            self.stats.segments_dropped += dropped
            self._schedule()
        return dropped

    def take_reclaimable(self) -> list[tuple[bytes, bytes]]:
        """Record key ranges retention dropped since the last call, for `Store.compact_ranges`.

        A range delete only hides records; RocksDB frees their space when it compacts that range.
        Compact only after the retention batch is committed, or there is nothing to drop yet.
        """
        ranges, self._reclaim = self._reclaim, []
        return ranges

    def _expired(self, g: SegmentMeta, now: int) -> bool:
        return bool(self.retention_max_age_ms) and g.max_ts < now - self.retention_max_age_ms

    def close(self) -> None:
        self.flush()
        self.store.close()
