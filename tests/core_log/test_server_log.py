"""The log through the real server: every flushed NATS publish survives restart and kill -9."""

from __future__ import annotations

import asyncio

import nats
import pytest

from procs import RobustMQ
from robustmq.core_log import SegmentLog, Store


def stream_payloads(data_dir: str, subject: str) -> list[bytes]:
    log = SegmentLog(Store(data_dir))
    try:
        s = log.get_stream(subject)
        return [] if s is None else [r.payload for _, r in log.read(s)]
    finally:
        log.close()


async def test_kill9_right_after_pong_keeps_every_published_message(fresh_server: RobustMQ) -> None:
    """Raw protocol: PUB x N, PING; the PONG means committed, so kill -9 at once loses nothing."""
    fresh_server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", fresh_server.nats_port)
    await reader.readline()  # INFO
    frames = b"".join(b"PUB durable.raw %d\r\nm%d\r\n" % (len(b"m%d" % i), i) for i in range(20000))
    writer.write(b'CONNECT {"verbose":false}\r\n' + frames + b"PING\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 10) == b"PONG\r\n"
    fresh_server.kill9()
    writer.close()
    payloads = stream_payloads(fresh_server.data_dir, "durable.raw")
    assert payloads == [b"m%d" % i for i in range(20000)]


async def test_kill9_after_nats_py_flush(fresh_server: RobustMQ) -> None:
    """One flush() is the barrier, even though nats-py 2.16 writes flush()'s PING ahead of its own
    still-buffered PUBs (the server holds a lone PING's PONG for the publishes that follow it)."""
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url, allow_reconnect=False)
    for i in range(5000):
        await nc.publish("durable.test", b"m%d" % i)
    await nc.flush()
    fresh_server.kill9()
    await nc.close()
    payloads = stream_payloads(fresh_server.data_dir, "durable.test")
    assert payloads == [b"m%d" % i for i in range(5000)]


@pytest.mark.parametrize("n", [1, 7, 300])
async def test_kill9_after_single_nats_py_flush_small_batches(fresh_server: RobustMQ, n: int) -> None:
    """publish a few, flush() once, kill -9: the few are there (the PUBs are still in nats-py's
    buffer when its PING goes out)."""
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url, allow_reconnect=False)
    for i in range(n):
        await nc.publish("durable.small", b"m%d" % i)
    await nc.flush()
    fresh_server.kill9()
    await nc.close()
    assert stream_payloads(fresh_server.data_dir, "durable.small") == [b"m%d" % i for i in range(n)]


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


async def test_lone_ping_covers_the_publishes_right_behind_it(fresh_server: RobustMQ) -> None:
    """Raw protocol, nats-py's wire order: PING alone, then the PUBs a moment later. The PONG
    comes after those PUBs are committed; a lone PING with nothing behind it is still answered."""
    fresh_server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", fresh_server.nats_port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    writer.write(b"PING\r\n")  # nothing behind it: answered after the short hold
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    writer.write(b"PING\r\n")
    await writer.drain()
    await asyncio.sleep(0.001)
    writer.write(b"".join(b"PUB durable.lone 2\r\nm%d\r\n" % i for i in range(10)))
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    fresh_server.kill9()
    writer.close()
    assert stream_payloads(fresh_server.data_dir, "durable.lone") == [b"m%d" % i for i in range(10)]
