"""Pull consumption with acknowledgements: mq9 FETCH + ACK (SPEC §4b) against a JetStream pull consumer.

    python bench/fetch_bench.py                          # 100,000 x 128 B, batches of 100, both ack modes
    python bench/fetch_bench.py --n 20000 --repeat 1     # a smoke run
    python bench/fetch_bench.py --acks confirmed --py-spy /tmp/fetch.txt   # profile robustmq meanwhile

Each run starts fresh server processes on 127.0.0.1, stores n messages first (not timed: the raw
protocol, pipelined, each send acknowledged), then times their consumption by one nats-py client:

* robustmq: a mailbox (upstream's named CREATE); `$mq9.AI.MSG.FETCH.<addr>` with a `group_name`,
  `deliver: earliest`, `num_msgs` = batch; the client base64-decodes each payload (as the SDKs do)
  and ACKs **every message** (`$mq9.AI.MSG.ACK.<addr>` with its msg_id): robustmq's ACK marks one
  msg_id, it is not cumulative (a group's floor passes only contiguous acked offsets, so one ACK of
  the batch's highest id would leave the other 99 to be fetched again);
* nats-server JetStream: a file-storage stream and a durable pull consumer (`AckExplicit`,
  `deliver_policy: all`) made before the timer; `fetch(batch)`, every message acked.

Ack modes (`--acks`): `confirmed` waits for every ack's reply before the next fetch (mq9 ACK
requests, JetStream `ack_sync`, each batch's acks pipelined and awaited together); `publish` sends
the acks without waiting (mq9 ACK with no reply subject, JetStream `ack()`), then fetches. Both are
at-least-once; the client checks that each message arrives exactly once. Runs alternate robustmq and
JetStream, `--repeat` times, and the table shows medians. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from procs import NatsServer, RobustMQ  # noqa: E402

from bench import PySpy, acked_pump, connect, cpu_seconds, js_stream, request_json  # noqa: E402

LOOP_TIMEOUT_S = 300.0  # the whole timed consumption of one run
REQUEST_TIMEOUT_S = 10.0
OK_REPLY = b'{"error":""}'


@dataclass
class Result:
    rate: float  # messages consumed (fetched, decoded, acked) per second
    server_cpu_us: float  # server user + system CPU per message
    client_cpu: float  # the client's CPU seconds per wall second
    fetches: int


async def store(port: int, subject: bytes, n: int, ack_token: bytes) -> None:
    r, w = await connect(port)
    try:
        await acked_pump(r, w, subject, n, ack_token)
    finally:
        w.close()


async def consume_mq9(url: str, pid: int, addr: str, n: int, batch: int, acks: str) -> Result:
    nc = await nats.connect(url, allow_reconnect=False)
    fetch_subj, ack_subj = f"$mq9.AI.MSG.FETCH.{addr}", f"$mq9.AI.MSG.ACK.{addr}"
    body = json.dumps({"group_name": "bench", "deliver": "earliest",
                       "config": {"num_msgs": batch, "max_wait_ms": 500}}).encode()
    seen: set[int] = set()
    fetches = 0
    cpu0, srv0, t0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
    while len(seen) < n:
        reply = json.loads((await nc.request(fetch_subj, body, timeout=REQUEST_TIMEOUT_S)).data)
        fetches += 1
        if reply.get("error") != "" or not reply["messages"]:
            raise RuntimeError(f"FETCH {fetches} after {len(seen)} messages: {reply}")
        ids = []
        for m in reply["messages"]:
            if len(base64.b64decode(m["payload"])) != 128 or m["msg_id"] in seen:
                raise RuntimeError(f"bad or repeated message {m}")
            ids.append(m["msg_id"])
        seen.update(ids)
        ack_bodies = [b'{"group_name":"bench","mail_address":"%s","msg_id":%d}' % (addr.encode(), i)
                      for i in ids]
        if acks == "confirmed":
            replies = await asyncio.gather(*(nc.request(ack_subj, b, timeout=REQUEST_TIMEOUT_S)
                                             for b in ack_bodies))
            bad = [r.data for r in replies if r.data != OK_REPLY]
            if bad:
                raise RuntimeError(f"ACK failed: {bad[:3]}")
        else:
            for b in ack_bodies:
                await nc.publish(ack_subj, b)
    wall = time.perf_counter() - t0
    res = Result(n / wall, (cpu_seconds(pid) - srv0) / n * 1e6, (time.process_time() - cpu0) / wall, fetches)
    await nc.close()
    return res


async def consume_js(url: str, pid: int, n: int, batch: int, acks: str) -> Result:
    nc = await nats.connect(url, allow_reconnect=False)
    js = nc.jetstream()
    cfg = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL)
    psub = await js.pull_subscribe("bench.fetch", durable="bench", stream="FETCH", config=cfg)
    seen: set[int] = set()
    fetches = 0
    cpu0, srv0, t0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
    while len(seen) < n:
        msgs = await psub.fetch(batch, timeout=REQUEST_TIMEOUT_S)
        fetches += 1
        for m in msgs:
            seq = m.metadata.sequence.stream
            if len(m.data) != 128 or seq in seen:
                raise RuntimeError(f"bad or repeated message {seq}")
            seen.add(seq)
        if acks == "confirmed":
            await asyncio.gather(*(m.ack_sync(timeout=REQUEST_TIMEOUT_S) for m in msgs))
        else:
            for m in msgs:
                await m.ack()
    wall = time.perf_counter() - t0
    res = Result(n / wall, (cpu_seconds(pid) - srv0) / n * 1e6, (time.process_time() - cpu0) / wall, fetches)
    await nc.close()
    return res


async def run_mq9(n: int, batch: int, acks: str, spy: str | None) -> Result:
    s = RobustMQ(extra_args=["--mq9-max-messages", str(max(n, 100_000))]).start()
    try:
        assert s.proc is not None
        r, w = await connect(s.nats_port)
        addr = "bench.fetch"
        reply = await request_json(r, w, b"$mq9.AI.MAILBOX.CREATE", b'{"name":"bench.fetch","ttl":3600}')
        w.close()
        if reply.get("error") != "":
            raise RuntimeError(f"create failed: {reply}")
        await store(s.nats_port, b"$mq9.AI.MAILBOX.MSG." + addr.encode(), n, b'"msg_id"')
        prof = PySpy(spy, s.proc.pid, gil=True)
        try:
            return await asyncio.wait_for(consume_mq9(s.nats_url, s.proc.pid, addr, n, batch, acks),
                                          LOOP_TIMEOUT_S)
        finally:
            prof.stop()
    finally:
        s.cleanup()


async def run_js(n: int, batch: int, acks: str) -> Result:
    s = NatsServer(jetstream=True).start()
    try:
        assert s.proc is not None
        r, w = await connect(s.port)
        await js_stream(r, w, "FETCH", "bench.fetch")
        w.close()
        await store(s.port, b"bench.fetch", n, b'"seq"')
        return await asyncio.wait_for(consume_js(s.url, s.proc.pid, n, batch, acks), LOOP_TIMEOUT_S)
    finally:
        s.stop()


def median(results: list[Result]) -> dict[str, float]:
    return {k: statistics.median([getattr(r, k) for r in results]) for k in Result.__dataclass_fields__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="messages stored, then consumed (100,000)")
    ap.add_argument("--batch", type=int, default=100, help="messages per FETCH / JetStream fetch (100)")
    ap.add_argument("--acks", choices=("confirmed", "publish", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side, alternating; medians (3)")
    ap.add_argument("--py-spy", metavar="FILE", help="profile robustmq's timed part (first run of each "
                    "ack mode) into FILE.<mode>: py-spy's raw collapsed stacks, GIL-holding samples only")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.batch <= 1000 or args.n < args.batch or args.repeat < 1:
        ap.error("need 1 <= --batch <= 1000, --n >= --batch, --repeat >= 1")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    modes = ["confirmed", "publish"] if args.acks == "both" else [args.acks]
    out: dict[str, Any] = {"n": args.n, "batch": args.batch, "payload": 128, "modes": {}}
    print(f"fetch_bench: n={args.n:,} x 128 B, batch {args.batch}, repeat {args.repeat}", flush=True)
    for mode in modes:
        runs: dict[str, list[Result]] = {"robustmq": [], "jetstream": []}
        for i in range(args.repeat):
            spy = f"{args.py_spy}.{mode}" if args.py_spy and i == 0 else None
            ours = asyncio.run(run_mq9(args.n, args.batch, mode, spy))
            peer = asyncio.run(run_js(args.n, args.batch, mode))
            runs["robustmq"].append(ours)
            runs["jetstream"].append(peer)
            print(f"  acks={mode} run {i + 1}: robustmq {ours.rate:,.0f} msg/s ({ours.server_cpu_us:.1f} us "
                  f"server CPU/msg), JetStream {peer.rate:,.0f} msg/s ({peer.server_cpu_us:.1f} us)",
                  flush=True)
        med = {side: median(rs) for side, rs in runs.items()}
        out["modes"][mode] = {"median": med, "runs": {k: [r.__dict__ for r in v] for k, v in runs.items()}}
    print()
    print(f"{'acks':<10} {'robustmq msg/s':>15} {'JetStream msg/s':>16} {'ratio':>7} "
          f"{'server CPU us/msg (ours / JS)':>30} {'client CPU (ours / JS)':>23}")
    for mode, d in out["modes"].items():
        a, b = d["median"]["robustmq"], d["median"]["jetstream"]
        print(f"{mode:<10} {a['rate']:>15,.0f} {b['rate']:>16,.0f} {a['rate'] / b['rate']:>6.2f}x "
              f"{a['server_cpu_us']:>14.1f} / {b['server_cpu_us']:<13.1f} "
              f"{a['client_cpu']:>10.0%} / {b['client_cpu']:<10.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
