"""Agent registry DISCOVER latency over 10,000 registered agents (upstream mq9's `$mq9.AI.AGENT.*`).

Starts a fresh `robustmq serve` on 127.0.0.1, creates 10,000 mailboxes and registers one synthetic,
varied A2A-style card on each, then times sequential DISCOVER requests (full text, and by meaning
when the `semantic` extra is installed): p50 / p99 round trip. Meanwhile another connection sends
PINGs: its worst PONG wait while DISCOVERs run shows whether a search stalls other clients. Last, a
restart: how long until the first text and semantic DISCOVER answers with every agent indexed.

    python bench/discover_bench.py                 # 10,000 agents, 300 queries per kind
    python bench/discover_bench.py --agents 2000 --queries 100 --json out.json

Every loop is bounded by its count; every request has a timeout. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import nats  # noqa: E402
from procs import RobustMQ  # noqa: E402 - after the sys.path line

DOMAINS = {
    "translation": ["translate", "language", "English", "Chinese", "Japanese", "localization", "subtitles"],
    "code": ["review", "pull request", "bugs", "Python", "refactor", "tests", "static analysis"],
    "weather": ["forecast", "rain", "temperature", "wind", "climate", "storm", "city"],
    "finance": ["invoice", "payment", "refund", "accounting", "tax", "budget", "billing"],
    "travel": ["flight", "hotel", "booking", "itinerary", "visa", "train", "airport"],
    "health": ["symptoms", "fitness", "nutrition", "sleep", "medication", "doctor", "diet"],
    "media": ["image", "drawing", "video", "caption", "podcast", "music", "illustration"],
    "data": ["SQL", "database", "query", "dashboard", "report", "spreadsheet", "analytics"],
    "support": ["customer", "ticket", "chat", "complaint", "FAQ", "escalation", "email"],
    "legal": ["contract", "clause", "compliance", "GDPR", "policy", "lawyer", "agreement"],
}
FILLER = ["fast", "reliable", "multilingual", "enterprise", "open source", "secure", "batch",
          "real-time", "accurate", "friendly", "scalable", "offline", "streaming", "cheap"]
TEXT_QUERIES = ["translate", "python bugs", "invoice refund", "weather forecast city", "hotel",
                "dashboard SQL analytics", "agent", "reliable secure", "nosuchword", "GDPR contract"]
SEMANTIC_QUERIES = [
    "I need this Chinese paragraph in English", "check my code changes for mistakes",
    "will it rain in Paris tomorrow", "pay back a customer who was charged twice",
    "book me a room near the airport", "what should I eat to lose weight",
    "draw a picture of a cat", "build a chart of monthly sales", "answer my customers' emails",
    "is this agreement legal in Europe",
]


def card(i: int, box: str, rnd: random.Random) -> dict[str, Any]:
    domain = rnd.choice(list(DOMAINS))
    words = DOMAINS[domain]
    skills = [{"id": f"s{i}-{k}", "name": f"{rnd.choice(words)} {rnd.choice(words)}",
               "description": " ".join(rnd.sample(words, 4) + rnd.sample(FILLER, 2)),
               "tags": rnd.sample(words, 2)} for k in range(rnd.randint(1, 4))]
    return {"name": f"{domain}-agent-{i}", "mailbox": box, "version": "1.0.0",
            "description": f"A {rnd.choice(FILLER)} {domain} agent: " + ", ".join(rnd.sample(words, 3)),
            "url": f"https://agents.example/{i}", "capabilities": {"streaming": rnd.random() < 0.5},
            "defaultInputModes": ["text/plain"], "skills": skills}


async def request(nc: Any, subject: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    reply = json.loads(msg.data)
    if reply.get("error"):
        raise RuntimeError(f"{subject}: {reply['error']}")
    return reply


async def in_batches(coros: list[Any], size: int = 500) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), size):
        out += await asyncio.gather(*coros[i:i + size])
    return out


async def populate(url: str, n: int) -> float:
    nc = await nats.connect(url, allow_reconnect=False)
    rnd = random.Random(14)
    boxes = [f"bench.agent.{i}" for i in range(n)]
    await in_batches([request(nc, "$mq9.AI.MAILBOX.CREATE", {"name": b, "ttl": 0}) for b in boxes])
    t0 = time.perf_counter()
    await in_batches([request(nc, "$mq9.AI.AGENT.REGISTER", card(i, b, rnd)) for i, b in enumerate(boxes)])
    rate = n / (time.perf_counter() - t0)
    await nc.close()
    return rate


async def pinger(url: str, stop: asyncio.Event, rtts: list[float]) -> None:
    nc = await nats.connect(url, allow_reconnect=False)
    while not stop.is_set() and len(rtts) < 100_000:
        t0 = time.perf_counter()
        await nc.flush(timeout=10)
        rtts.append(time.perf_counter() - t0)
        await asyncio.sleep(0.002)
    await nc.close()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


async def timed(url: str, kind: str, queries: list[str], n: int, concurrency: int) -> dict[str, Any]:
    """n DISCOVERs (`concurrency` requesters), while another connection PINGs."""
    ncs = [await nats.connect(url, allow_reconnect=False) for _ in range(concurrency)]
    lat: list[float] = []
    hits: list[int] = []
    stop, rtts = asyncio.Event(), []  # type: ignore[var-annotated]
    ping = asyncio.create_task(pinger(url, stop, rtts))
    await asyncio.sleep(0.2)

    async def worker(nc: Any, k: int) -> None:
        for i in range(k, n, concurrency):
            t0 = time.perf_counter()
            r = await request(nc, "$mq9.AI.AGENT.DISCOVER", {kind: queries[i % len(queries)], "limit": 20})
            lat.append(time.perf_counter() - t0)
            hits.append(len(r["agents"]))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(nc, k) for k, nc in enumerate(ncs)))
    wall = time.perf_counter() - t0
    stop.set()
    await ping
    for nc in ncs:
        await nc.close()
    return {"kind": kind, "concurrency": concurrency, "n": n, "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99), "max_ms": round(max(lat) * 1000, 2),
            "per_s": round(n / wall), "mean_hits": round(statistics.mean(hits), 1),
            "ping_p50_ms": pct(rtts, 0.5), "ping_max_ms": round(max(rtts) * 1000, 2)}


async def first_answer(url: str, body: dict[str, Any], t_start: float, deadline: float) -> float:
    """Seconds from the restart's start until DISCOVER `body` answers (the port is open by then)."""
    nc = await nats.connect(url, allow_reconnect=False)
    while time.monotonic() < deadline:
        try:
            await request(nc, "$mq9.AI.AGENT.DISCOVER", body, timeout=30)
            break
        except RuntimeError:
            await asyncio.sleep(0.05)
    t = time.monotonic() - t_start
    await nc.close()
    return round(t, 2)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    semantic = importlib.util.find_spec("wordllama") is not None
    server = RobustMQ().start()
    out: dict[str, Any] = {"agents": args.agents, "semantic_installed": semantic}
    try:
        out["register_per_s"] = round(await populate(server.nats_url, args.agents))
        stop, idle = asyncio.Event(), []  # type: ignore[var-annotated]
        ping = asyncio.create_task(pinger(server.nats_url, stop, idle))
        await asyncio.sleep(3)  # the baseline: the same PINGs with no DISCOVER running
        stop.set()
        await ping
        out["idle_ping_p50_ms"], out["idle_ping_max_ms"] = pct(idle, 0.5), round(max(idle) * 1000, 2)
        rows = []
        for conc in (1, 4):
            rows.append(await timed(server.nats_url, "text", TEXT_QUERIES, args.queries, conc))
            if semantic:
                rows.append(await timed(server.nats_url, "semantic", SEMANTIC_QUERIES, args.queries, conc))
        out["discover"] = rows
        server.stop()
        t0 = time.monotonic()
        server.start()
        out["restart_port_open_s"] = round(time.monotonic() - t0, 2)
        deadline = t0 + 120
        out["restart_first_text_s"] = await first_answer(server.nats_url, {"text": "translate"}, t0, deadline)
        if semantic:
            out["restart_first_semantic_s"] = await first_answer(
                server.nats_url, {"semantic": "translate a text"}, t0, deadline)
        out["server_rss_mb"] = rss_mb(server)
    finally:
        server.cleanup()
    return out


def rss_mb(server: RobustMQ) -> float:
    try:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return 0.0
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(kb / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300, help="DISCOVERs per kind and concurrency")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    res = asyncio.run(asyncio.wait_for(main_async(args), timeout=600))
    print(f"agents: {res['agents']}  registered at {res['register_per_s']:,}/s  "
          f"semantic extra: {'installed' if res['semantic_installed'] else 'absent'}")
    print(f"{'kind':<9} {'conc':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'req/s':>6} "
          f"{'hits':>5} {'other client PING p50/max ms':>29}")
    print(f"{'(idle)':<9} {'':>4} {'':>7} {'':>7} {'':>7} {'':>6} {'':>5} "
          f"{res['idle_ping_p50_ms']:>14} / {res['idle_ping_max_ms']}")
    for r in res["discover"]:
        print(f"{r['kind']:<9} {r['concurrency']:>4} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['max_ms']:>7} "
              f"{r['per_s']:>6} {r['mean_hits']:>5} {r['ping_p50_ms']:>14} / {r['ping_max_ms']}")
    sem = res.get("restart_first_semantic_s")
    print(f"restart: port open {res['restart_port_open_s']} s, first text DISCOVER "
          f"{res['restart_first_text_s']} s" + (f", first semantic DISCOVER {sem} s" if sem else "")
          + f"; server RSS {res['server_rss_mb']} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
