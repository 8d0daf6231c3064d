"""The log through the real server: every flushed NATS publish survives restart and kill -9."""

from __future__ import annotations

import asyncio

import nats

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
    """nats-py 2.16 writes flush()'s PING ahead of its own buffered PUBs, so the first flush only
    drains its buffer; the second is the barrier (its PING follows the PUBs on the wire)."""
    fresh_server.start()
    nc = await nats.connect(fresh_server.nats_url, allow_reconnect=False)
    for i in range(5000):
        await nc.publish("durable.test", b"m%d" % i)
    await nc.flush()
    await nc.flush()
    fresh_server.kill9()
    await nc.close()
    payloads = stream_payloads(fresh_server.data_dir, "durable.test")
    assert payloads == [b"m%d" % i for i in range(5000)]


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
