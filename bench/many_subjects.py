"""Many distinct subjects: N devices publish once each to `dev.<n>.t`, then the server restarts.

Reports the publish rate (raw NATS protocol, pipelined, one connection), the server's peak RSS
(VmHWM), how long a restart on that data takes until the NATS port answers, and the RSS after it.
Loopback only; bounded by --count and --timeout.

    python bench/many_subjects.py --count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.procs import RobustMQ

BATCH = 5000  # PUBs per socket write


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def publish(port: int, count: int, timeout: float, subjects: int = 0) -> tuple[int, float]:
    """Publish `count` messages to distinct subjects (or cycling over `subjects` of them); returns
    (sent, seconds until PONG)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(4096)  # INFO
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    t0 = time.perf_counter()
    sent = 0
    deadline = t0 + timeout
    while sent < count and time.perf_counter() < deadline:
        n = min(BATCH, count - sent)
        s.sendall(b"".join(b"PUB dev.%d.t 3\r\nabc\r\n" % (i % subjects if subjects else i)
                           for i in range(sent, sent + n)))
        sent += n
    s.sendall(b"PING\r\n")
    buf = b""
    s.settimeout(max(1.0, deadline - time.perf_counter() + 60))
    while b"PONG" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection")
        buf += chunk
    dt = time.perf_counter() - t0
    s.close()
    return sent, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=120.0, help="stop publishing after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--subjects", type=int, default=0,
                    help="cycle over this many subjects instead of a new one per message (the same "
                         "path for subjects the server already knows: what a new subject is compared to)")
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="robustmq-many-")
    srv = RobustMQ(os.path.join(data, "d"))
    out: dict[str, float | int] = {}
    try:
        srv.start()
        assert srv.proc is not None
        sent, dt = publish(srv.nats_port, args.count, args.timeout, args.subjects)
        out["sent"] = sent
        out["rate_msgs_s"] = round(sent / dt)
        out["peak_rss_mb"] = round(vm_kb(srv.proc.pid, "VmHWM") / 1024, 1)
        srv.stop()
        t0 = time.perf_counter()
        srv.start()  # returns once the NATS port accepts a connection
        assert srv.proc is not None
        out["restart_s"] = round(time.perf_counter() - t0, 2)
        # a real answer, not only an accepted socket: INFO arrives and a PING gets its PONG
        with socket.create_connection(("127.0.0.1", srv.nats_port), timeout=30) as c:
            c.recv(4096)
            c.sendall(b"CONNECT {}\r\nPING\r\n")
            buf = b""
            while b"PONG" not in buf:
                buf += c.recv(4096)
        out["restart_answer_s"] = round(time.perf_counter() - t0, 2)
        time.sleep(1.0)
        out["restart_rss_mb"] = round(vm_kb(srv.proc.pid, "VmRSS") / 1024, 1)
        out["restart_peak_rss_mb"] = round(vm_kb(srv.proc.pid, "VmHWM") / 1024, 1)
    finally:
        srv.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
