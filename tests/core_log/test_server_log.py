"""The log through the real server: every flushed NATS publish survives restart and kill -9, and
retention gives the disk back while the server runs."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable

import nats
import pytest
from procs import RobustMQ, disk_usage

from robustmq.core_log import SegmentLog, Store


def stream_payloads(data_dir: str, subject: str) -> list[bytes]:
    log = SegmentLog(Store(data_dir))
    try:
        s = log.get_stream(subject)
        return [] if s is None else [r.payload for _, r in log.read(s)]
    finally:
        log.close()


@pytest.mark.parametrize("n", [1, 5_000, 200_000])
async def test_kill9_right_after_pong_keeps_every_published_message(fresh_server: RobustMQ, n: int) -> None:
    """Raw protocol: PUB x N, then PING; the PONG means committed, at any burst size, so kill -9 at
    once loses nothing (docs/durability.md: the barrier for clients that write PING after PUBs)."""
    fresh_server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", fresh_server.nats_port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false}\r\n')
    for i in range(0, n, 10_000):
        writer.write(b"".join(b"PUB durable.raw %d\r\nm%d\r\n" % (len(b"m%d" % j), j)
                              for j in range(i, min(i + 10_000, n))))
        await writer.drain()
    writer.write(b"PING\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 60) == b"PONG\r\n"
    fresh_server.kill9()
    writer.close()
    payloads = stream_payloads(fresh_server.data_dir, "durable.raw")
    assert len(payloads) == n and payloads == [b"m%d" % i for i in range(n)]


async def test_kill9_after_nats_py_requests_keeps_every_acked_send(fresh_server: RobustMQ) -> None:
    """With nats-py the barrier is a request: every mq9 send that got its {"msg_id"} reply
    survives kill -9, with thousands in flight at once."""
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url, allow_reconnect=False)
    mid = json.loads((await nc.request("$mq9.AI.MAILBOX.CREATE", b'{"ttl": 600}', timeout=5)).data)["mail_id"]
    subject = "$mq9.AI.MAILBOX.MSG." + mid
    replies = await asyncio.gather(*(nc.request(subject, b"m%d" % i, timeout=30) for i in range(5_000)))
    acked = {json.loads(r.data)["msg_id"] for r in replies}
    fresh_server.kill9()
    await nc.close()
    payloads = stream_payloads(fresh_server.data_dir, subject)
    assert len(acked) == 5_000 and len(payloads) == 5_000
    assert sorted(payloads) == sorted(b"m%d" % i for i in range(5_000))


async def test_restart_recovers_offsets(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url)
    for i in range(10):
        await nc.publish("r.a", b"%d" % i)
    await nc.flush()
    await nc.close()
    fresh_server.restart()
    nc = await nats.connect(fresh_server.nats_url)
    for i in range(10, 15):
        await nc.publish("r.a", b"%d" % i)
    await nc.flush()
    await nc.close()
    fresh_server.stop()
    assert stream_payloads(fresh_server.data_dir, "r.a") == [b"%d" % i for i in range(15)]


async def test_inbox_subjects_are_not_logged(fresh_server: RobustMQ) -> None:
    fresh_server.extra_args = ["--ephemeral-subjects", "_INBOX.>,tmp.>"]
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url)
    await nc.publish("_INBOX.abc", b"x")
    await nc.publish("tmp.x", b"x")
    await nc.publish("kept", b"x")
    await nc.flush()
    await nc.close()
    fresh_server.stop()
    assert stream_payloads(fresh_server.data_dir, "_INBOX.abc") == []
    assert stream_payloads(fresh_server.data_dir, "tmp.x") == []
    assert stream_payloads(fresh_server.data_dir, "kept") == [b"x"]


async def test_a_flush_after_only_unlogged_publishes_is_answered_at_once(fresh_server: RobustMQ) -> None:
    """A fresh server, a client whose publishes are all ephemeral (request/reply inboxes): nothing is
    appended, so its PING barrier has nothing to wait for. (It used to wait for a commit that only
    the next logged publish of any client would trigger: nats-py's flush() timed out.)"""
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url)
    try:
        await nc.publish("_INBOX.only", b"x")
        await nc.flush(timeout=2)
        await nc.publish("_INBOX.only", b"y")
        await nc.flush(timeout=2)
    finally:
        await nc.close()
    # the raw protocol: PUB then PING in one write, and in two
    reader, writer = await asyncio.open_connection("127.0.0.1", fresh_server.nats_port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false}\r\nPUB _INBOX.raw 1\r\nx\r\nPING\r\n')
    assert await asyncio.wait_for(reader.readline(), 2) == b"PONG\r\n"
    writer.write(b"PUB _INBOX.raw 1\r\nx\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"PING\r\n")
    assert await asyncio.wait_for(reader.readline(), 2) == b"PONG\r\n"
    writer.close()


async def flood(port: int, subject: bytes, n: int, size: int, max_s: float,
                on_round: Callable[[], None] | None = None) -> int:
    """Raw-protocol publisher: up to n incompressible payloads, a PING/PONG per 20000 to stay in step."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
    assert await asyncio.wait_for(reader.readline(), 10) == b"PONG\r\n"
    head = b"PUB %s %d\r\n" % (subject, size)
    per = 20000
    blob = b"".join(head + os.urandom(size) + b"\r\n" for _ in range(per)) + b"PING\r\n"
    sent = 0
    deadline = time.monotonic() + max_s
    while sent < n and time.monotonic() < deadline:
        writer.write(blob)
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 30) == b"PONG\r\n"
        sent += per
        if on_round is not None:
            on_round()
    writer.close()
    return sent


async def test_retention_frees_disk_while_the_server_runs(fresh_server: RobustMQ) -> None:
    """10 MiB retention, a pass a second, a few hundred MB to one subject: the dropped segments
    must leave the disk. Before retention compacted its ranges this left 57-92 MiB; now ~10 MiB."""
    fresh_server.extra_args = ["--retention-max-bytes", str(10 << 20), "--retention-check-interval", "1"]
    fresh_server.start()
    peak = 0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, disk_usage(fresh_server.data_dir))

    sent = await flood(fresh_server.nats_port, b"flood.one", 4_000_000, 100, 15.0, sample)
    assert sent >= 1_000_000  # >= 10 times the retention limit went through the log
    await asyncio.sleep(2.5)  # so at least one pass runs after the last publish
    settled = disk_usage(fresh_server.data_dir)
    deadline = time.monotonic() + 8
    while settled > 24 << 20 and time.monotonic() < deadline:  # its compaction may still be running
        await asyncio.sleep(0.5)
        settled = disk_usage(fresh_server.data_dir)
    assert settled <= 24 << 20, f"data dir {settled >> 20} MiB after retention (peak {peak >> 20} MiB)"
    fresh_server.stop()
    log = SegmentLog(Store(fresh_server.data_dir))
    try:
        s = log.get_stream("flood.one")
        assert s is not None and s.next_offset == sent  # every publish was logged
        assert s.first_offset > 0 and s.nbytes <= 10 << 20
    finally:
        log.close()
