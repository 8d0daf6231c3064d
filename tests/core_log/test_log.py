"""The segment log on a real RocksDB in a temp dir: append, group commit, read, time, retention,
durability modes (proved by RocksDB's own statistics) and disk reclaimed after retention."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

from robustmq.core_log import Record, SegmentLog, Store


def make(path, **kw) -> SegmentLog:
    return SegmentLog(Store(str(path)), **kw)


def rec(i: int, ts: int = 1000) -> Record:
    return Record(ts + i, b"p%d" % i)


async def test_append_commit_read(tmp_path) -> None:
    log = make(tmp_path)
    s = log.stream("a.b")
    offs = [log.append(s, rec(i)) for i in range(10)]
    assert offs == list(range(10))
    assert list(log.read(s)) == []  # not committed yet: readers see committed records only
    await log.committed()
    assert [o for o, _ in log.read(s)] == list(range(10))
    assert [r.payload for _, r in log.read(s, 3, 6)] == [b"p3", b"p4", b"p5"]
    log.close()


async def test_group_commit_one_batch_per_loop_turn(tmp_path) -> None:
    log = make(tmp_path)
    for i in range(1000):
        log.append("x", rec(i))
    await log.committed()
    assert log.stats.batches == 1
    assert log.stats.appends == 1000
    log.close()


async def test_recovery_after_reopen(tmp_path) -> None:
    log = make(tmp_path, segment_max_records=100)
    for i in range(250):
        log.append("s1", rec(i))
        if i % 7 == 0:
            await log.committed()
    log.append("s2", rec(0))
    log.put_meta("ns", "k", b"v")
    await log.committed()
    log.close()
    log2 = make(tmp_path, segment_max_records=100)
    s1 = log2.get_stream("s1")
    assert s1 is not None and s1.next_offset == 250
    assert [r.payload for _, r in log2.read(s1, 248)] == [b"p248", b"p249"]
    assert log2.get_meta("ns", "k") == b"v"
    assert log2.append(s1, rec(250)) == 250  # offsets stay dense across restarts
    log2.close()


async def test_offset_for_time(tmp_path) -> None:
    log = make(tmp_path, segment_max_records=10)
    s = log.stream("t")
    for i in range(50):
        log.append(s, Record(10_000 + i * 10, b"x"))
        await log.committed()
    assert log.offset_for_time(s, 0) == 0
    assert log.offset_for_time(s, 10_000 + 255) == 26
    assert log.offset_for_time(s, 99_999) == 50
    log.close()


async def test_retention_by_bytes_and_age(tmp_path) -> None:
    log = make(tmp_path, segment_max_records=10, retention_max_bytes=2000)
    s = log.stream("r")
    for _ in range(100):
        log.append(s, Record(1000, b"x" * 100))
        await log.committed()
    dropped = log.apply_retention()
    await log.committed()
    assert dropped > 0
    assert s.nbytes <= 2000 + 10 * 200
    assert s.first_offset > 0
    assert next(o for o, _ in log.read(s)) == s.first_offset
    log.close()
    aged = make(tmp_path, retention_max_age_s=1)
    dropped = aged.apply_retention(now=10**13)
    await aged.committed()
    r = aged.get_stream("r")
    assert dropped > 0 and r is not None and list(aged.read(r)) == []
    aged.close()


async def test_wait_wakes_on_commit(tmp_path) -> None:
    log = make(tmp_path)
    s = log.stream("w")
    waiter = asyncio.ensure_future(log.wait(s, 0, timeout=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    log.append(s, rec(0))
    assert await waiter is True
    assert await log.wait(s, 5, timeout=0.05) is False
    log.close()


async def test_delete_record_and_stream(tmp_path) -> None:
    log = make(tmp_path)
    s = log.stream("d")
    for i in range(5):
        log.append(s, rec(i))
    await log.committed()
    assert log.delete_record(s, 2) is True
    assert log.delete_record(s, 2) is False
    await log.committed()
    assert [o for o, _ in log.read(s)] == [0, 1, 3, 4]
    log.close()
    log = make(tmp_path)
    d = log.get_stream("d")
    assert d is not None and [o for o, _ in log.read(d)] == [0, 1, 3, 4]  # tombstones survive restart
    log.delete_stream("d")
    await log.committed()
    log.close()
    assert make(tmp_path).get_stream("d") is None


def test_wal_syncs_grow_per_batch_in_fsync_mode_and_stay_zero_in_wal_mode(tmp_path) -> None:
    """Counted by RocksDB's own `rocksdb.wal.synced` ticker, not by us."""
    n = 50
    for mode, expected in (("fsync", n), ("wal", 0)):
        store = Store(str(tmp_path / mode), mode, statistics=True)
        before = store.wal_syncs()
        for i in range(n):
            b = store.new_batch()
            b.put(b"k%d" % i, b"v")
            store.write(b)
        synced = store.wal_syncs() - before
        store.close()
        assert expected <= synced <= expected + 2, (mode, synced)  # + a sync RocksDB may do itself


async def test_fsync_mode_syncs_once_per_group_commit_not_per_message(tmp_path) -> None:
    store = Store(str(tmp_path), "fsync", statistics=True)
    log = SegmentLog(store)
    before = store.wal_syncs()
    for turn in range(3):
        for i in range(500):
            log.append("f", rec(turn * 500 + i))
        await log.committed()
    assert store.wal_syncs() - before == 3
    assert log.stats.batches == 3
    log.close()


def test_wal_mode_survives_a_process_crash(tmp_path) -> None:
    """wal mode: the child dies with os._exit (no close, no WAL flush or sync) right after commit."""
    child = f"""
import asyncio, os
from robustmq.core_log import Record, SegmentLog, Store
async def main():
    log = SegmentLog(Store({str(tmp_path)!r}, "wal", statistics=True))
    for i in range(1000):
        log.append("crash", Record(1000 + i, b"p%d" % i))
    await log.committed()
    assert log.store.wal_syncs() == 0
    os._exit(0)
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    log = make(tmp_path)
    s = log.get_stream("crash")
    assert s is not None and [r.payload for _, r in log.read(s)] == [b"p%d" % i for i in range(1000)]
    log.close()


def test_wal_syncs_needs_statistics(tmp_path) -> None:
    store = Store(str(tmp_path))
    with pytest.raises(RuntimeError):
        store.wal_syncs()
    store.close()


def dir_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


async def test_retention_compaction_gives_the_disk_back(tmp_path) -> None:
    """A range delete alone leaves the dropped records on disk; compacting the ranges frees them."""
    log = make(tmp_path, segment_max_records=2000, retention_max_bytes=2 << 20)
    s = log.stream("big")
    for _ in range(100):  # ~40 MB of incompressible payloads, in batches of 2000 records
        log.append_many(s, [Record(1000, os.urandom(200)) for _ in range(2000)])
        await log.committed()
    assert log.apply_retention() > 0
    await log.committed()
    ranges = log.take_reclaimable()
    assert len(ranges) == 1 and log.take_reclaimable() == []
    held = dir_bytes(tmp_path)
    assert held > 30 << 20  # the premise: retention alone did not shrink the directory
    await asyncio.get_running_loop().run_in_executor(None, log.store.compact_ranges, ranges)
    assert dir_bytes(tmp_path) < 8 << 20, (held, dir_bytes(tmp_path))
    assert s.nbytes <= 3 << 20 and next(log.read(s))[0] == s.first_offset
    log.close()


def test_close_waits_for_a_running_compaction(tmp_path) -> None:
    """Closing under a compaction thread would fail (rocksdict: 'Already borrowed'); close waits."""
    store = Store(str(tmp_path))
    for c in range(100):
        b = store.new_batch()
        b.put(b"R" + bytes(4) + c.to_bytes(8, "big"), os.urandom(400_000))
        store.write(b)
    b = store.new_batch()
    b.delete_range(b"R", b"S")
    store.write(b)
    t = threading.Thread(target=store.compact_ranges, args=([(b"R", b"S")],))
    t.start()
    time.sleep(0.01)
    store.close()
    t.join()
    store = Store(str(tmp_path))
    assert list(store.scan_prefix(b"R")) == []
    store.close()
