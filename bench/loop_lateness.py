"""Worst lateness of a 1 ms timer on the broker's event loop while one client publishes continuously.

Runs the broker in this process (uvloop, like `robustmq serve`) and the publisher in a child process,
so the figure is what the loop itself suffers, e.g. while `--durability fsync` waits for the disk.

    python bench/loop_lateness.py --durability fsync --seconds 5
    python bench/loop_lateness.py --write-delay-ms 5   # as if each fsync took 5 ms (a real disk)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import tempfile
import time

import uvloop

from robustmq.config import Config
from robustmq.core_log import Store
from robustmq.server import Broker


def publisher(port: int, seconds: float) -> None:
    """Publishes without pause: 200 PUBs and a PING, and the next 200 as soon as the PONG (the commit
    barrier) comes back, so in fsync mode every round waits for a disk sync."""
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(4096)
    s.sendall(b'CONNECT {"verbose":false}\r\n')
    chunk = b"".join(b"PUB lat.%d 16\r\n0123456789abcdef\r\n" % (i % 100) for i in range(200)) + b"PING\r\n"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(chunk)
        buf = b""
        while b"PONG" not in buf:
            buf += s.recv(4096)
    s.close()


async def run(durability: str, seconds: float) -> dict[str, float]:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        free = sk.getsockname()[1]
    cfg = Config(host="127.0.0.1", nats_port=free, mqtt_port=0, kafka_port=0, http_port=0,
                 data_dir=tempfile.mkdtemp(prefix="robustmq-lat-"), durability=durability)
    broker = Broker(cfg)
    await broker.start()
    port = broker.nats.port
    child = multiprocessing.Process(target=publisher, args=(port, seconds))
    child.start()
    worst = 0.0
    lates: list[float] = []
    while child.is_alive():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        late = time.perf_counter() - t0 - 0.001
        lates.append(late)
        worst = max(worst, late)
    child.join()
    batches = broker.log.stats.batches
    appends = broker.log.stats.appends
    await broker.stop()
    lates.sort()
    return {"durability": durability, "worst_late_ms": round(worst * 1000, 2),
            "p99_late_ms": round(lates[int(len(lates) * 0.99)] * 1000, 2), "appends": appends,
            "batches": batches, "msgs_s": round(appends / seconds)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--durability", default="fsync", choices=["wal", "fsync"])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--write-delay-ms", type=float, default=0.0,
                    help="add this to every store write, the way a slow disk's fsync would")
    args = ap.parse_args()
    if args.write_delay_ms:
        write = Store.write
        delay = args.write_delay_ms / 1000

        def slow_write(self: Store, batch: object) -> None:
            time.sleep(delay)  # releases the GIL, as rocksdict does while it syncs
            write(self, batch)  # type: ignore[arg-type]

        Store.write = slow_write  # type: ignore[method-assign]
    uvloop.install()
    print(json.dumps(asyncio.run(run(args.durability, args.seconds))))


if __name__ == "__main__":
    main()
