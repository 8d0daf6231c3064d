"""The log's store seam, its writer thread, the bounded stream cache, and the reader API Kafka needs
(high watermark, log start, byte-limited reads, waits over many streams, per-stream retention,
time lookups with timestamps that go backwards)."""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Iterable, Iterator

import pytest

from robustmq.core_log import Record, SegmentLog, Store, TopicRegistry
from robustmq.core_log import keys as k
from robustmq.core_log import log as log_module


class MemBatch:
    def __init__(self) -> None:
        self.ops: list[tuple[str, bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append(("put", key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append(("del", key, b""))

    def delete_range(self, begin: bytes, end: bytes) -> None:
        self.ops.append(("range", begin, end))


class MemStore:
    """A fake `KVStore`: sorted in memory, and it can be told to fail or to hold writes."""

    durability = "wal"

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.writes = 0
        self.gets = 0
        self.scans = 0

    def new_batch(self) -> MemBatch:
        return MemBatch()

    def write(self, batch: MemBatch) -> None:
        self.gate.wait(10)
        if self.fail:
            raise OSError("disk on fire")
        for op, a, b in batch.ops:
            if op == "put":
                self.data[a] = b
            elif op == "del":
                self.data.pop(a, None)
            else:
                for key in [key for key in self.data if a <= key < b]:
                    del self.data[key]
        self.writes += 1

    def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        return self.data.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.scans += 1
        for key in sorted(key for key in self.data if start <= key < end):
            yield key, self.data[key]

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.scan(prefix, k.prefix_end(prefix))

    def seek_le(self, key: bytes, low: bytes) -> bytes | None:
        keys = sorted(self.data)
        i = bisect.bisect_right(keys, key)
        return keys[i - 1] if i and keys[i - 1] >= low else None

    def compact_ranges(self, ranges: Iterable[tuple[bytes, bytes]]) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the writer thread and failures
async def test_commit_runs_off_the_loop_and_keeps_batch_order() -> None:
    store = MemStore()
    log = SegmentLog(store)
    store.gate.clear()  # the first write blocks in the writer thread
    s = log.stream("a")
    log.append(s, Record(1, b"0"))
    first = log.committed()
    await asyncio.sleep(0.02)  # the loop runs on while the write is held
    assert not first.done() and s.committed == 0
    log.append(s, Record(2, b"1"))  # fills the next batch meanwhile
    second = log.committed()
    order: list[int] = []
    log.on_commit(1, lambda: order.append(1))
    log.on_commit(2, lambda: order.append(2))
    store.gate.set()
    await asyncio.wait_for(second, 5)
    assert first.done() and order == [1, 2]
    assert s.committed == 2 and [r.payload for _, r in log.read(s)] == [b"0", b"1"]
    assert store.writes == 2  # one batch per turn, the second written after the first
    log.close()


async def test_a_failed_write_fails_its_waiters_instead_of_hanging_them() -> None:
    store = MemStore()
    log = SegmentLog(store)
    s = log.stream("f")
    await log.committed()
    store.fail = True
    log.append(s, Record(1, b"lost"))
    seq = log.batch_seq
    errors: list[BaseException] = []
    ok: list[int] = []
    log.on_commit(seq, lambda: ok.append(1), errors.append)
    waiter = asyncio.ensure_future(log.wait(s, 0, timeout=5))
    with pytest.raises(OSError):
        await asyncio.wait_for(log.committed(), 5)
    assert await asyncio.wait_for(waiter, 5) is False  # woken, and nothing to read
    assert ok == [] and len(errors) == 1 and not log.is_committed(seq)
    late: list[BaseException] = []
    log.on_commit(seq, lambda: ok.append(2), late.append)  # asked after the failure: fails too
    assert ok == [] and len(late) == 1
    store.fail = False  # the log keeps serving
    log.append(s, Record(2, b"kept"))
    await asyncio.wait_for(log.committed(), 5)
    assert [r.payload for _, r in log.read(s)] == [b"kept"]
    assert log.stats.write_failures == 1
    log.close()


def test_flush_without_a_loop_writes_inline() -> None:
    store = MemStore()
    log = SegmentLog(store)
    log.append("t", Record(1, b"x"))
    log.flush()
    s = log.get_stream("t")
    assert s is not None and s.committed == 1 and store.writes == 1
    log.close()


# ---------------------------------------------------------------- streams at scale
def test_startup_reads_one_key_and_streams_load_on_demand() -> None:
    store = MemStore()
    log = SegmentLog(store, segment_max_records=3)
    for i in range(100):
        log.append(f"dev.{i}.t", Record(1, b"abc"))
    log.append("dev.0.t", Record(2, b"def"))
    log.flush()
    log.close()
    store.gets = store.scans = 0
    log = SegmentLog(store)
    assert (store.gets, store.scans) == (1, 0) and log.streams == {}
    s = log.get_stream("dev.0.t")
    assert s is not None and s.next_offset == 2 and [r.payload for _, r in log.read(s)] == [b"abc", b"def"]
    assert log.get_stream("dev.100.t") is None
    new = log.stream("dev.100.t")
    assert new.sid == 101  # sids keep counting from where they were
    log.close()


def test_stream_cache_is_bounded_but_never_drops_a_pinned_stream() -> None:
    store = MemStore()
    log = SegmentLog(store, stream_cache_max=50)
    held = log.stream("held")
    for i in range(500):
        log.append(f"s.{i}", Record(1, b"x"))
        log.flush()
    assert len(log.streams) <= 50
    assert log.streams.get("held") is held  # someone holds it: evicting would fork its state
    pending = log.stream("pending")
    log.append(pending, Record(1, b"p"))
    del pending
    for i in range(500, 600):
        log.stream(f"s.{i}")
        log.flush() if i % 10 == 0 else None
    s = log.get_stream("s.7")  # evicted, then loaded again with its offsets
    assert s is not None and s.next_offset == 1
    log.flush()
    p = log.get_stream("pending")
    assert p is not None and [r.payload for _, r in log.read(p)] == [b"p"]
    assert log.stats.streams_evicted > 0
    log.close()


async def test_delete_then_recreate_before_the_commit() -> None:
    log = SegmentLog(MemStore(), stream_cache_max=2)
    s = log.stream("x")
    log.append(s, Record(1, b"old"))
    await log.committed()
    log.delete_stream("x")
    assert log.get_stream("x") is None  # the S key is still on disk until the batch is written
    n = log.stream("x")
    log.append(n, Record(1, b"new"))
    await log.committed()
    assert [r.payload for _, r in log.read(n)] == [b"new"]
    log.close()


# ---------------------------------------------------------------- the reader API
async def test_high_watermark_log_start_and_byte_limited_reads(tmp_path) -> None:
    log = SegmentLog(Store(str(tmp_path)), segment_max_records=10, retention_max_bytes=1)
    s = log.stream("k")
    assert (log.log_start(s), log.high_watermark(s)) == (0, 0)
    for i in range(30):
        log.append(s, Record(1, b"x" * 100, key=b"kk"))
        if i % 10 == 9:
            await log.committed()
    log.append(s, Record(1, b"y"))
    assert log.high_watermark(s) == 30  # the pending record is not visible yet
    await log.committed()
    assert log.high_watermark(s) == 31
    assert len(list(log.read(s, 0, max_bytes=350))) == 3  # 102 bytes each
    assert len(list(log.read(s, 0, max_bytes=1))) == 1  # at least one record, however large
    assert log.apply_retention() > 0
    await log.committed()
    assert log.log_start(s) > 0 and next(log.read(s))[0] == log.log_start(s)
    log.close()


async def test_wait_any_wakes_on_the_first_stream_with_data() -> None:
    log = SegmentLog(MemStore())
    a, b, c = log.stream("p.0"), log.stream("p.1"), log.stream("p.2")
    log.append(c, Record(1, b"old"))
    await log.committed()
    task = asyncio.ensure_future(log.wait_any([(a, 0), (b, 0), (c, 1)], timeout=5))
    await asyncio.sleep(0.01)
    assert not task.done()
    log.append(b, Record(1, b"new"))
    assert await asyncio.wait_for(task, 5) == [b]
    assert not a.waiters and not c.waiters  # the shared future left no trace
    assert await log.wait_any([(a, 0)], timeout=0.02) == []
    assert await log.wait_any([(c, 0), (a, 0)], timeout=5) == [c]  # already there: no wait
    log.close()


async def test_offset_for_time_with_timestamps_that_go_backwards() -> None:
    log = SegmentLog(MemStore(), segment_max_records=4)
    s = log.stream("ct")
    stamps = [100, 90, 300, 50, 60, 70, 500, 80, 40, 200, 30, 20]
    for ts in stamps:
        log.append(s, Record(ts, b"x"))
        await log.committed()
    for t in [0, 20, 45, 61, 85, 95, 150, 250, 301, 500, 501]:
        expected = next((i for i, ts in enumerate(stamps) if ts >= t), len(stamps))
        assert log.offset_for_time(s, t) == expected, t
    log.close()


async def test_topic_registry_and_per_stream_retention(tmp_path) -> None:
    log = SegmentLog(Store(str(tmp_path)), segment_max_records=5, retention_max_age_s=0)
    topics = TopicRegistry(log)
    t = topics.create("orders", partitions=3, retention_ms=1000)
    assert t.partitions == 3 and topics.create("orders", partitions=3) is None  # exists
    names = [topics.partition_stream("orders", p) for p in range(3)]
    assert names[0] == "orders"  # partition 0 is the subject every protocol sees
    keep = log.stream("plain")
    for p in range(3):
        s = log.stream(names[p])
        for _ in range(12):
            log.append(s, Record(1000, b"x"))
            await log.committed()
    for _ in range(12):
        log.append(keep, Record(1000, b"x"))
        await log.committed()
    log.close()
    log = SegmentLog(Store(str(tmp_path)), segment_max_records=5, retention_max_age_s=0)
    topics = TopicRegistry(log)
    got = topics.get("orders")
    assert got is not None and got.partitions == 3 and got.retention_ms == 1000
    assert [n for n, _ in topics.list()] == ["orders"]
    assert log.apply_retention(now=10_000) > 0  # orders: 1 s; plain: the log's default, forever
    await log.committed()
    for n in names:
        s = log.get_stream(n)
        assert s is not None and list(log.read(s)) == []
    plain = log.get_stream("plain")
    assert plain is not None and len(list(log.read(plain))) == 12
    topics.delete("orders")
    await log.committed()
    assert topics.get("orders") is None and all(log.get_stream(n) is None for n in names)
    log.close()


def test_retention_passes_are_bounded_and_resume() -> None:
    log = SegmentLog(MemStore(), retention_max_age_s=1, retention_pass_max=4)
    for i in range(10):
        log.append(f"r.{i}", Record(1, b"x"))
    log.flush()
    assert [log.apply_retention(now=10**13) for _ in range(4)] == [4, 4, 2, 0]
    log.close()


def _time_index(store: MemStore) -> list[tuple[int, int, int]]:
    return [k.time_key_parts(key) for key in sorted(store.data) if key.startswith(k.P_TIME)]


def test_age_retention_reads_only_the_old_end_of_the_time_index() -> None:
    """A pass looks at segments old enough to age out, found by one ordered scan of the T keys; a
    million young streams cost it nothing (no G or S reads)."""
    store = MemStore()
    log = SegmentLog(store, retention_max_age_s=10)
    for i in range(200):
        log.append(f"young.{i}", Record(50_000, b"x"))
    for i in range(5):
        log.append(f"old.{i}", Record(1_000, b"x"))
    log.flush()
    assert len(_time_index(store)) == 205
    store.gets = store.scans = 0
    assert log.apply_retention(now=30_000) == 5  # cutoff 20 s: only the five old segments
    assert store.scans == 1 and store.gets <= 5 * 3
    log.flush()
    assert len(_time_index(store)) == 200  # dropped segments leave the index too
    store.gets = 0
    assert log.apply_retention(now=30_000) == 0 and store.gets == 0
    log.close()


def test_time_index_is_correct_when_timestamps_go_backwards() -> None:
    """Kafka CreateTime: a segment is keyed by its first records' timestamp, a lower bound of its
    newest, so a segment whose late records carry older stamps is still found, and one whose late
    records are newer is kept until those age out too."""
    store = MemStore()
    log = SegmentLog(store, retention_max_age_s=1, segment_max_records=2)
    log.append("ct", Record(5_000, b"a"))
    log.flush()
    log.append("ct", Record(100, b"b"))  # the same segment, an older stamp: max_ts stays 5,000
    log.flush()
    log.append("ct", Record(9_000, b"c"))  # a second segment
    log.flush()
    assert [ts for ts, _, _ in _time_index(store)] == [5_000, 9_000]
    assert log.apply_retention(now=5_500) == 0  # newest record of the first segment: 0.5 s old
    assert log.apply_retention(now=6_001) == 1
    log.flush()
    s = log.get_stream("ct")
    assert s is not None and [r.payload for _, r in log.read(s)] == [b"c"]
    log.close()


def test_time_index_follows_deletes_settings_and_late_age_limits() -> None:
    store = MemStore()
    log = SegmentLog(store)  # no default age limit: nothing indexed
    log.append("plain", Record(1_000, b"x"))
    log.flush()
    assert _time_index(store) == []
    t = log.stream("topic")
    log.set_retention(t, max_age_ms=1_000)  # a per-stream limit indexes that stream's segments
    log.append(t, Record(1_000, b"x"))
    log.flush()
    assert [ts for ts, _, _ in _time_index(store)] == [1_000]
    log.delete_stream("topic")
    log.flush()
    assert _time_index(store) == []
    log.close()
    # the default age limit turned on later: passes complete the index over the old streams
    log = SegmentLog(store, retention_max_age_s=1, retention_pass_max=1000)
    assert log.apply_retention(now=10**13) == 1  # "plain", found while indexing
    log.flush()
    s = log.get_stream("plain")
    assert s is not None and list(log.read(s)) == []
    log.append("fresh", Record(10**13, b"y"))
    log.close()
    log = SegmentLog(store, retention_max_age_s=1)
    assert not log._index_pending and [ts for ts, _, _ in _time_index(store)] == [10**13]
    log.close()


def test_byte_retention_checks_only_streams_that_grew() -> None:
    store = MemStore()
    log = SegmentLog(store, retention_max_bytes=250, segment_max_records=1)
    for i in range(100):
        log.append(f"idle.{i}", Record(1, b"x" * 10))
    big = log.stream("big")
    for _ in range(5):
        log.append(big, Record(1, b"y" * 100))
        log.flush()
    store.gets = store.scans = 0
    assert log.apply_retention() == 3  # 500 bytes in 5 segments: down to 2 (200 bytes)
    assert store.scans == 0 and store.gets == 0
    log.flush()
    assert log.apply_retention() == 0
    log.close()


async def test_backpressure_cuts_the_batch_without_losing_a_record(monkeypatch) -> None:
    """More queued than PENDING_MAX_BYTES behind a batch being written: the loop waits for that
    write and sends what it queued so far; every record still lands, at its offset."""
    monkeypatch.setattr(log_module, "PENDING_MAX_BYTES", 20_000)
    log = SegmentLog(MemStore())
    log.append("first", Record(1, b"x"))
    await asyncio.sleep(0)  # the end of the turn hands that batch to the writer thread
    assert log._inflight is not None
    for i in range(300):  # new streams (1 KiB of overhead each) and big payloads, in one turn
        log.append(f"n.{i}", Record(1, b"a"))
        log.append_many(log.stream("big"), [Record(1, b"b" * 100)] * 3)
    await asyncio.wait_for(log.committed(), 5)
    assert log.stats.batches >= 3
    for i in range(300):
        s = log.get_stream(f"n.{i}")
        assert s is not None and [r.payload for _, r in log.read(s)] == [b"a"], i
    big = log.get_stream("big")
    assert big is not None and [o for o, _ in log.read(big)] == list(range(900))
    log.close()
