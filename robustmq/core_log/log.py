"""Streams, segments, group-committed appends, reads by offset and time, waiting, retention.

Appends are synchronous and cheap: the record gets its dense offset at once and is queued. The first
append of a loop turn schedules one commit for the end of that turn, which writes everything queued
as one RocksDB WriteBatch, then resolves the durability futures and wakes waiting readers. So a
burst of publishes read in one `data_received` becomes one write, and a writer that needs durability
awaits `log.committed()` instead of paying a write of its own.

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
    decode_record,
    decode_segment,
    decode_stream,
    encode,
    now_ms,
)

log = logging.getLogger("robustmq.log")


class Stream:
    """In-memory state of one stream; the segment index mirrors the G keys on disk."""

    __slots__ = ("name", "sid", "next_offset", "committed", "segments", "nbytes", "waiters", "dirty",
                 "created_ms")

    def __init__(self, name: str, sid: int, created_ms: int) -> None:
        self.name = name
        self.sid = sid
        self.created_ms = created_ms
        self.next_offset = 0
        self.committed = 0  # next_offset as of the last commit: readers see offsets below it
        self.segments: list[SegmentMeta] = []
        self.nbytes = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.dirty = False

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
            sid = int.from_bytes(k[1:5], "big")
            s = self._by_sid.get(sid)
            if s is None:
                continue
            seg = decode_segment(v)
            s.segments.append(seg)
            s.nbytes += seg.nbytes
            s.next_offset = max(s.next_offset, seg.last + 1)
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
        s = self.streams.pop(name, None)
        if s is None:
            return
        self._by_sid.pop(s.sid, None)
        b = self._batch
        sid4 = s.sid.to_bytes(4, "big")
        b.delete_range(st.P_RECORD + sid4, st.prefix_end(st.P_RECORD + sid4))
        b.delete_range(st.P_SEGMENT + sid4, st.prefix_end(st.P_SEGMENT + sid4))
        b.delete(st.stream_key(name))
        self._batch_len += 1
        s.segments.clear()
        self._wake(s)
        self._schedule()

    # ------------------------------------------------------------------ append
    def append(self, stream: Stream | str, record: Record) -> int:
        """Queue a record; returns its offset. Durable once `committed()` resolves."""
        s = self.stream(stream) if isinstance(stream, str) else stream
        off = s.next_offset
        s.next_offset = off + 1
        data = encode(record)
        n = len(data)
        self._batch.put(b"R" + s.sid.to_bytes(4, "big") + off.to_bytes(8, "big"), data)
        self._batch_len += 1
        segs = s.segments
        ts = record.ts
        if segs:
            seg = segs[-1]
            if seg.last - seg.first + 1 >= self.segment_max_records or (
                ts - seg.created_ms > self.segment_max_age_ms
            ):
                seg = SegmentMeta(off, off - 1, ts, ts, 0, ts)
                segs.append(seg)
        else:
            seg = SegmentMeta(off, off - 1, ts, ts, 0, ts)
            segs.append(seg)
        seg.last = off
        if ts > seg.max_ts:
            seg.max_ts = ts
        if ts < seg.min_ts:
            seg.min_ts = ts
        seg.nbytes += n
        s.nbytes += n
        if not s.dirty:
            s.dirty = True
            self._dirty.append(s)
        st_ = self.stats
        st_.appends += 1
        st_.bytes_appended += n
        if not self._scheduled:
            self._schedule()
        return off

    def delete_record(self, stream: Stream, offset: int) -> None:
        self._batch.delete(st.record_key(stream.sid, offset))
        self._batch_len += 1
        self._schedule()

    # front-end metadata (mailboxes, group progress, ...) goes through the same batches, so it is
    # ordered with the records it describes.
    def put_meta(self, namespace: str, key: str | bytes, value: bytes) -> None:
        self._put(st.meta_key(namespace, key), value)

    def delete_meta(self, namespace: str, key: str | bytes) -> None:
        self._batch.delete(st.meta_key(namespace, key))
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
            except RuntimeError:  # no loop (tools, unit tests): commit synchronously on flush()
                self._scheduled = False
                return
        loop.call_soon(self.flush)

    def committed(self) -> asyncio.Future[None]:
        """A future resolved when everything appended so far is written."""
        loop = self._loop or asyncio.get_running_loop()
        if self._batch_len == 0:
            f = loop.create_future()
            f.set_result(None)
            return f
        if self._commit_future is None:
            self._commit_future = loop.create_future()
        return self._commit_future

    def on_commit(self, seq: int, callback: Callable[[], Any]) -> None:
        """Run callback once batch `seq` is written (at once if it already is)."""
        if seq <= self.committed_seq:
            callback()
        else:
            self._commit_callbacks.append(callback)

    def flush(self) -> None:
        """Write the pending batch now (normally called once per loop turn)."""
        self._scheduled = False
        if self._batch_len == 0:
            return
        batch = self._batch
        b = batch
        for s in self._dirty:
            s.dirty = False
            # write the index entry of every segment this batch touched (usually just the last)
            for seg in reversed(s.segments):
                if seg.last < s.committed:
                    break
                b.put(st.segment_key(s.sid, seg.first), encode(seg))
        dirty, self._dirty = self._dirty, []
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
        stats.batches += 1
        stats.commit_seconds_total += dt
        if dt > stats.commit_seconds_max:
            stats.commit_seconds_max = dt
        self.committed_seq = self.batch_seq
        self.batch_seq += 1
        if fut is not None and not fut.done():
            fut.set_result(None)
        for cb in cbs:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a callback must not break the commit path
                log.exception("commit callback failed")
        for s in dirty:
            s.committed = s.next_offset
            if s.waiters:
                self._wake(s)

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
        sid4 = stream.sid.to_bytes(4, "big")
        n = 0
        for k, v in self.store.scan(st.P_RECORD + sid4 + start.to_bytes(8, "big"),
                                    st.P_RECORD + sid4 + stop.to_bytes(8, "big")):
            yield int.from_bytes(k[5:13], "big"), decode_record(v)
            n += 1
            if limit is not None and n >= limit:
                return

    def read_raw(self, stream: Stream, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        sid4 = stream.sid.to_bytes(4, "big")
        for k, v in self.store.scan(st.P_RECORD + sid4 + start.to_bytes(8, "big"),
                                    st.P_RECORD + sid4 + end.to_bytes(8, "big")):
            yield int.from_bytes(k[5:13], "big"), v

    def offset_for_time(self, stream: Stream, ts_ms: int) -> int:
        """First offset whose timestamp is >= ts_ms (next_offset if none)."""
        segs = stream.segments
        i = bisect.bisect_left([g.max_ts for g in segs], ts_ms)
        while i < len(segs):
            for off, rec in self.read(stream, segs[i].first, segs[i].last + 1):
                if rec.ts >= ts_ms:
                    return off
            i += 1
        return stream.next_offset

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
        """Drop whole old segments by age and by bytes; returns how many were dropped."""
        now = now or now_ms()
        dropped = 0
        for s in list(self.streams.values()):
            segs = s.segments
            while len(segs) > 1 or (segs and not s.dirty and self._expired(segs[0], now)):
                g = segs[0]
                too_old = self._expired(g, now)
                too_big = self.retention_max_bytes and s.nbytes > self.retention_max_bytes
                if not (too_old or too_big):
                    break
                sid4 = s.sid.to_bytes(4, "big")
                self._batch.delete_range(st.P_RECORD + sid4 + g.first.to_bytes(8, "big"),
                                         st.P_RECORD + sid4 + (g.last + 1).to_bytes(8, "big"))
                self._batch.delete(st.segment_key(s.sid, g.first))
                self._batch_len += 1
                s.nbytes -= g.nbytes
                segs.pop(0)
                dropped += 1
                if not segs:
                    break
        if dropped:
            self.stats.segments_dropped += dropped
            self._schedule()
        return dropped

    def _expired(self, g: SegmentMeta, now: int) -> bool:
        return bool(self.retention_max_age_ms) and g.max_ts < now - self.retention_max_age_ms

    def close(self) -> None:
        self.flush()
        self.store.close()

