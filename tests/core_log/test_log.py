"""The segment log on a real RocksDB in a temp dir: append, group commit, read, time, retention."""

from __future__ import annotations

import asyncio

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
    for i in range(100):
        log.append(s, Record(1000, b"x" * 100))
        await log.committed()
    dropped = log.apply_retention()
    await log.committed()
    assert dropped > 0
    assert s.nbytes <= 2000 + 10 * 200
    assert s.first_offset > 0
    assert [o for o, _ in log.read(s)][0] == s.first_offset
    log.close()
    aged = make(tmp_path, retention_max_age_s=1)
    dropped = aged.apply_retention(now=10**13)
    await aged.committed()
    assert dropped > 0 and list(aged.read(aged.get_stream("r"))) == []
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
    s = log.get_stream("d")
    assert [o for o, _ in log.read(s)] == [0, 1, 3, 4]  # tombstones survive restart
    log.delete_stream("d")
    await log.committed()
    log.close()
    assert make(tmp_path).get_stream("d") is None


@pytest.mark.parametrize("mode", ["wal", "fsync"])
async def test_durability_modes(tmp_path, mode: str) -> None:
    log = SegmentLog(Store(str(tmp_path), mode))
    log.append("m", rec(0))
    await log.committed()
    log.close()
    assert make(tmp_path).get_stream("m").next_offset == 1
