"""Retention under kill -9 (SPEC §2, §8): a server dropping aged-out segments every 100 ms while
many subjects are published to is killed mid-pass. After the restart no acknowledged, unexpired
record is missing, offsets stay dense and are never handed out twice (also for a stream whose
every segment retention dropped), and later passes still drop what the time index points at; a
stream left past its byte limit is still trimmed; expired mailboxes stay gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest
from procs import RobustMQ

from robustmq.core_log import SegmentLog, Store

AGE_S = 2.0
ARGS = ["--retention-max-age-s", str(AGE_S), "--retention-check-interval-s", "0.1",
        "--retention-max-bytes", "200000", "--segment-max-records", "20", "--segment-max-age-s", "0.3"]
N_LIVE = 100  # subjects published to every round until the kill
N_GONE = 30  # subjects published to only at the start: every segment ages out before the kill


def open_log(data_dir: str) -> SegmentLog:
    # the server's retention settings, so reading does not change the time index's state
    return SegmentLog(Store(data_dir), retention_max_age_s=AGE_S, retention_max_bytes=200_000)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false}\r\n')
    return reader, writer


async def barrier(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """PING after the PUBs: the PONG means every one of them is committed (docs/durability.md)."""
    writer.write(b"PING\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 10) == b"PONG\r\n"


def pubs(subjects: list[bytes], rnd: int, size: int = 0) -> bytes:
    body = b"%d" % rnd + b"." * size
    return b"".join(b"PUB %s %d\r\n%s\r\n" % (s, len(body), body) for s in subjects)


@pytest.mark.parametrize("durability", ["wal", "fsync"])
async def test_kill9_during_retention_keeps_acked_records_and_never_reuses_offsets(
        fresh_server: RobustMQ, durability: str) -> None:
    fresh_server.extra_args = [*ARGS, "--durability", durability]
    fresh_server.start()
    live = [b"ret.%d" % i for i in range(N_LIVE)]
    gone = [b"gone.%d" % i for i in range(N_GONE)]
    reader, writer = await connect(fresh_server.nats_port)
    for rnd in range(5):
        writer.write(pubs(gone, rnd))
    await barrier(reader, writer)
    acked = -1  # last round of `live` (and of `big`, with 1 KB payloads) whose PONG came back
    acked_at: dict[int, int] = {}  # round -> wall clock (ms) when it was acknowledged
    deadline = time.monotonic() + AGE_S + 2.5
    rnd = 0
    while rnd < 5000 and time.monotonic() < deadline:
        writer.write(pubs(live, rnd) + pubs([b"big"], rnd, 1000))
        await barrier(reader, writer)
        acked, acked_at[rnd] = rnd, time.time_ns() // 1_000_000
        rnd += 1
        await asyncio.sleep(0.005)
    # mid-load, with passes running every 100 ms: one more round in flight, then kill -9
    writer.write(pubs(live, rnd))
    await writer.drain()
    killed_ms = time.time_ns() // 1_000_000
    fresh_server.kill9()
    writer.close()
    assert acked > 100

    log = open_log(fresh_server.data_dir)
    try:
        before: dict[bytes, int] = {}
        for subj in [*live, *gone, b"big"]:
            s = log.get_stream(subj.decode())
            assert s is not None, subj
            got = list(log.read(s))
            offs = [o for o, _ in got]
            # dense: every offset from the oldest retained one to the end is there, once
            assert offs == list(range(s.first_offset, s.next_offset)), subj
            # each subject got one record per round, so offset == round
            assert all(int(r.payload.split(b".")[0]) == o for o, r in got), subj
            before[subj] = s.next_offset
        for subj in live:
            assert before[subj] >= acked + 1, subj  # every acknowledged round is there...
            first = log.get_stream(subj.decode()).first_offset  # type: ignore[union-attr]
            # ...unless retention may have dropped it: acknowledged longer than AGE_S before the kill
            young = [r for r, t in acked_at.items() if t >= killed_ms - AGE_S * 1000 + 50]
            assert young and first <= min(young), (subj, first, min(young))
        for subj in gone:  # aged out completely before the kill
            s = log.get_stream(subj.decode())
            assert s is not None and s.first_offset == s.next_offset == 5, (subj, s.first_offset)
        big = log.get_stream("big")
        assert big is not None and big.first_offset > 0 and big.nbytes <= 200_000 + 20 * 1100
    finally:
        log.close()

    fresh_server.start()
    reader, writer = await connect(fresh_server.nats_port)
    writer.write(pubs([*live, *gone, b"big"], 10_000_000))
    await barrier(reader, writer)
    t0 = time.monotonic()
    await asyncio.sleep(AGE_S + 0.6)  # the records from before the kill age out meanwhile
    writer.write(pubs(live, 10_000_001))
    await barrier(reader, writer)
    writer.close()
    assert time.monotonic() - t0 < 6
    fresh_server.stop()

    log = open_log(fresh_server.data_dir)
    try:
        for subj in [*live, *gone, b"big"]:
            s = log.get_stream(subj.decode())
            assert s is not None
            got = list(log.read(s))
            # the publishes after the restart took the next offsets, not old ones (the first has
            # aged out by now: the second one sits right after it)
            want = before[subj] + 1 if subj in live else None
            new = [o for o, r in got if r.payload == b"10000001"]
            assert new == ([want] if want is not None else []), (subj, new, before[subj])
            assert s.next_offset == before[subj] + (2 if subj in live else 1), subj
            # and the time index survived the kill: every record from before it has been dropped
            assert all(int(r.payload.split(b".")[0]) >= 10_000_000 for _, r in got), subj
    finally:
        log.close()


def test_a_stream_emptied_by_retention_keeps_its_offsets_after_eviction_and_reopen(tmp_path) -> None:
    """Every segment aged out, so no G key is left: the stream must still go on from its next
    offset when it is loaded again (from the cache's eviction, or after a restart), not from 0."""
    from robustmq.core_log import Record
    from robustmq.core_log.records import now_ms

    log = SegmentLog(Store(str(tmp_path)), retention_max_age_s=1, stream_cache_max=1)
    s = log.stream("a")
    for i in range(25):
        log.append(s, Record(now_ms() - 10_000, b"%d" % i))
    log.flush()
    assert log.apply_retention() == 1
    log.flush()
    assert s.first_offset == s.next_offset == 25
    del s
    for i in range(20):  # other streams push "a" out of the cache
        log.append(f"other.{i}", Record(now_ms(), b"x"))
        log.flush()
    assert "a" not in log.streams
    assert log.append("a", Record(now_ms(), b"new")) == 25
    log.flush()
    log.close()
    log = SegmentLog(Store(str(tmp_path)), retention_max_age_s=1)
    s2 = log.get_stream("a")
    assert s2 is not None and s2.next_offset == 26 and [o for o, _ in log.read(s2)] == [25]
    log.close()


def test_a_stream_over_its_byte_limit_is_trimmed_after_a_restart_without_new_appends(tmp_path) -> None:
    """Past the byte limit, then closed before any pass ran: the pass after reopening trims it
    (the note that it is over the limit used to live in memory only, so it waited for an append)."""
    from robustmq.core_log import Record
    from robustmq.core_log.records import now_ms

    log = SegmentLog(Store(str(tmp_path)), retention_max_bytes=10_000, segment_max_records=10)
    for _ in range(100):
        log.append("b", Record(now_ms(), b"x" * 500))
        log.flush()
    log.close()
    log = SegmentLog(Store(str(tmp_path)), retention_max_bytes=10_000, segment_max_records=10)
    assert log.apply_retention() > 0
    log.flush()
    s = log.get_stream("b")
    assert s is not None and s.nbytes <= 10_000 and s.next_offset == 100
    assert list(log.store.scan_prefix(b"O")) == []  # the note goes with the pass that trimmed it
    log.close()


async def test_kill9_before_a_byte_retention_pass_still_trims_after_restart(fresh_server: RobustMQ) -> None:
    """20 MB to one subject with a 1 MB limit, kill -9 before the (30 s) pass: after the restart,
    with nothing more published, the next pass trims it and the disk comes back."""
    from procs import disk_usage

    fresh_server.extra_args = ["--retention-max-bytes", str(1 << 20), "--retention-check-interval-s", "30",
                               "--segment-max-records", "1000"]
    fresh_server.start()
    reader, writer = await connect(fresh_server.nats_port)
    # incompressible: RocksDB must not shrink it by itself when the restart flushes its WAL
    blob = b"".join(b"PUB over.one 1000\r\n%s\r\n" % os.urandom(1000) for _ in range(2000))
    for _ in range(10):  # 20,000 x 1 KB, each round acknowledged by its PONG
        writer.write(blob)
        await barrier(reader, writer)
    fresh_server.kill9()
    writer.close()
    full = disk_usage(fresh_server.data_dir)
    fresh_server.extra_args = ["--retention-max-bytes", str(1 << 20), "--retention-check-interval-s", "0.2",
                               "--segment-max-records", "1000"]
    fresh_server.start()
    deadline = time.monotonic() + 8
    while disk_usage(fresh_server.data_dir) > full // 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    fresh_server.stop()
    log = SegmentLog(Store(fresh_server.data_dir), retention_max_bytes=1 << 20)
    try:
        s = log.get_stream("over.one")
        assert s is not None and s.next_offset == 20_000
        assert s.nbytes <= (1 << 20) + 1000 * 1100, s.nbytes
        assert [o for o, _ in log.read(s)] == list(range(s.first_offset, 20_000))
    finally:
        log.close()
    assert disk_usage(fresh_server.data_dir) <= full // 3, (disk_usage(fresh_server.data_dir), full)


async def test_kill9_while_mailboxes_expire_keeps_them_gone_and_live_ones_whole(
        fresh_server: RobustMQ) -> None:
    """60 mailboxes with a 1 s TTL expire while acknowledged sends go on to them and to 5 live ones;
    kill -9 at once. After the restart the expired ones stay gone (LIST, send, a re-created public
    name starts empty) and the live ones hold every acknowledged message."""
    import json

    import nats

    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url, allow_reconnect=False, max_reconnect_attempts=0)

    async def create(body: dict[str, object]) -> str:
        r = await nc.request("$mq9.AI.MAILBOX.CREATE", json.dumps(body).encode(), timeout=5)
        return str(json.loads(r.data)["mail_id"])

    live = [await create({"ttl": 600}) for _ in range(5)]
    short = [await create({"ttl": 1}) for _ in range(59)] + [await create(
        {"ttl": 1, "public": True, "name": "crash.short"})]
    acked: dict[str, set[int]] = {m: set() for m in live + short}

    async def send(m: str, i: int) -> None:
        try:
            r = json.loads((await nc.request("$mq9.AI.MAILBOX.MSG." + m, b"%d" % i, timeout=5)).data)
        except Exception:  # noqa: BLE001 - the kill cuts the last ones off: not acknowledged
            return
        if "msg_id" in r:
            acked[m].add(r["msg_id"])

    deadline = time.monotonic() + 1.4  # past the 1 s TTL and a sweep (every 0.5 s)
    i = 0
    while time.monotonic() < deadline and i < 500:
        await asyncio.gather(*(send(m, i) for m in live + short))
        i += 1
    fresh_server.kill9()
    with contextlib.suppress(Exception):
        await nc.close()
    assert sum(len(acked[m]) for m in short) > 0 and all(acked[m] for m in live)

    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url, allow_reconnect=False)
    try:
        for m in live:
            r = json.loads((await nc.request("$mq9.AI.MAILBOX.LIST." + m, b'{"limit": 1000}', timeout=5)).data)
            assert "error" not in r and "next" not in r
            assert {x["msg_id"] for x in r["messages"]} == acked[m], m
        for m in short:
            r = json.loads((await nc.request("$mq9.AI.MAILBOX.LIST." + m, b"", timeout=5)).data)
            assert "does not exist" in r.get("error", ""), (m, r)
            r = json.loads((await nc.request("$mq9.AI.MAILBOX.MSG." + m, b"late", timeout=5)).data)
            assert "error" in r, (m, r)
        assert (await create({"ttl": 600, "public": True, "name": "crash.short"})) == "crash.short"
        r = json.loads((await nc.request("$mq9.AI.MAILBOX.LIST.crash.short", b"", timeout=5)).data)
        assert r["messages"] == [], r
    finally:
        await nc.close()
