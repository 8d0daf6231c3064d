"""Side-by-side MQTT benchmark: robustmq against mosquitto (Debian's package) and amqtt, in one run.

    python bench/mqtt_bench.py                       # every workload (a few minutes)
    python bench/mqtt_bench.py --quick               # smaller counts, for a smoke run
    python bench/mqtt_bench.py --workloads qos0,qos1 --window 1,10,100,1000
    python bench/mqtt_bench.py --workloads conn --clients 10000
    python bench/mqtt_bench.py --workloads qos1 --servers robustmq --py-spy /tmp/mqtt   # + profiles

Every run starts a fresh server process on 127.0.0.1: robustmq (`RobustMQ(mqtt=True)`, default `wal`
durability), mosquitto (`apt-get install -y mosquitto`; a temporary config: `listener <port> 127.0.0.1`,
`allow_anonymous true`, no persistence) and amqtt (`pip install amqtt`; a temporary YAML config, no
$SYS or logging plugins). All three are driven by the same load generator: raw MQTT 3.1.1 on uvloop
`asyncio.Protocol`s, PUBLISH packets pre-encoded before the clock starts (`writer.encode_publish`),
acks and deliveries parsed with a few byte operations per packet, refills written once per read. The
generator's own CPU (process time / wall time, 1.0 = one core) is printed for every run. Every loop is
bounded in count and in time. Payloads are 128 bytes. The table gives each figure and the ratios
robustmq / peer; see docs/BENCHMARKS.md ("MQTT").
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from procs import RobustMQ, free_port, stop_process, wait_port  # noqa: E402 - after the sys.path lines

sys.path.insert(0, str(ROOT / "bench"))
from bench import PySpy, Target, cpu_seconds, rss_peak_mb  # noqa: E402 - the NATS benchmark's helpers
from robustmq.frontends.mqtt.codec import serialize  # noqa: E402
from robustmq.frontends.mqtt.packets import MQTT_311, Connect, Subscribe, Subscription  # noqa: E402
from robustmq.frontends.mqtt.writer import encode_publish  # noqa: E402

PAYLOAD_SIZE = 128
CHUNK = 1000  # QoS 0 publisher: frames per write
LOOP_TIMEOUT_S = 120.0  # no measured loop runs longer than this
STALL_S = 5.0  # ... nor goes on this long without a single delivery
SERVERS = ("robustmq", "mosquitto", "amqtt")


def payload(i: int) -> bytes:
    """128 bytes carrying the message's index, so every delivery is accounted for by index."""
    return b"%08d" % i + b"x" * (PAYLOAD_SIZE - 8)


class _Proc:
    """A peer broker subprocess with its temp dir; stop() terminates it and removes the dir."""

    def __init__(self, args: list[str], port: int, tmp: str) -> None:
        self.tmp = tmp
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_port(port, self.proc, timeout=20)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


def mosquitto_binary() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    return None


def amqtt_binary() -> str | None:
    cand = Path(sys.executable).parent / "amqtt"
    return str(cand) if cand.exists() else shutil.which("amqtt")


def start_robustmq() -> Target:
    s = RobustMQ(mqtt=True).start()
    assert s.proc is not None
    return Target("robustmq", s.mqtt_port, s.proc.pid, s.cleanup)


def start_mosquitto() -> Target:
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto not installed: apt-get install -y mosquitto")
    port, tmp = free_port(), tempfile.mkdtemp(prefix="mosquitto-bench-")
    os.chmod(tmp, 0o755)  # mosquitto started as root drops to its own user and must read the config
    conf = Path(tmp) / "mosquitto.conf"
    # the queue and inflight limits are raised to robustmq's (window 1024, no message-count cap) so
    # that a QoS 1 subscriber that falls behind is not dropped by mosquitto's default 1000-message queue;
    # TCP_NODELAY as robustmq (uvloop) sets it, else Nagle holds a second small ack for the peer's
    # delayed ACK (40 ms) and the connection workload measures that
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_inflight_messages 1024\nmax_queued_messages 2000000\nset_tcp_nodelay true\n"
                    "log_dest none\n")
    os.chmod(conf, 0o644)
    p = _Proc([binary, "-c", str(conf)], port, tmp)
    return Target("mosquitto", port, p.proc.pid, p.stop)


def start_amqtt() -> Target:
    binary = amqtt_binary()
    if binary is None:
        raise RuntimeError("amqtt not installed: pip install amqtt")
    port, tmp = free_port(), tempfile.mkdtemp(prefix="amqtt-bench-")
    conf = Path(tmp) / "amqtt.yaml"
    conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
                    "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n")
    p = _Proc([binary, "-c", str(conf)], port, tmp)
    return Target("amqtt", port, p.proc.pid, p.stop)


STARTERS: dict[str, Callable[[], Target]] = {
    "robustmq": start_robustmq, "mosquitto": start_mosquitto, "amqtt": start_amqtt}


# --------------------------------------------------------------------------- raw MQTT 3.1.1 clients

def connect_packet(client_id: str) -> bytes:
    return serialize(Connect(MQTT_311, client_id, clean_start=True, keepalive=0), MQTT_311)


def subscribe_packet(topic: str, qos: int, packet_id: int = 1) -> bytes:
    return serialize(Subscribe(packet_id, (Subscription(topic, qos),)), MQTT_311)


class Client(asyncio.Protocol):
    """A raw MQTT 3.1.1 connection: splits the byte stream into packets and hands each to `packet`
    (first byte, the buffer, body start, body end). CONNACK and SUBACK resolve futures."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future = loop.create_future()
        self.suback: asyncio.Future = loop.create_future()
        self.done: asyncio.Future = loop.create_future()
        self.rest = b""
        self.out: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.fail(ConnectionError(f"server closed the connection ({exc})"))

    def fail(self, exc: Exception) -> None:
        for fut in (self.connack, self.suback, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: only the awaited one is raised
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        end = len(buf)
        pos = 0
        packet = self.packet
        try:
            while end - pos >= 2:
                length = buf[pos + 1]
                body = pos + 2
                if length & 0x80:  # a multi-byte remaining length
                    length &= 0x7F
                    mult = 128
                    while True:
                        if body >= end:
                            length = -1
                            break
                        b = buf[body]
                        body += 1
                        length += (b & 0x7F) * mult
                        mult *= 128
                        if not b & 0x80:
                            break
                    if length < 0 or body - pos > 5:
                        if body - pos > 5:
                            raise RuntimeError("malformed remaining length")
                        break
                if body + length > end:
                    break
                packet(buf[pos], buf, body, body + length)
                pos = body + length
        except Exception as exc:  # noqa: BLE001 - any failure ends the run and is raised to the awaiter
            self.fail(exc)
            return
        self.rest = buf[pos:]
        if self.out:
            assert self.transport is not None
            self.transport.write(b"".join(self.out))
            self.out.clear()
        self.after_read()

    def after_read(self) -> None:
        pass

    def packet(self, b0: int, buf: bytes, start: int, end: int) -> None:
        kind = b0 >> 4
        if kind == 2:
            if buf[start + 1] != 0:
                raise ConnectionError(f"CONNACK refused: return code {buf[start + 1]}")
            if not self.connack.done():
                self.connack.set_result(None)
        elif kind == 9:
            if buf[end - 1] == 0x80:
                raise ConnectionError("SUBACK refused the subscription")
            if not self.suback.done():
                self.suback.set_result(buf[end - 1])
        else:
            raise RuntimeError(f"unexpected packet type {kind}")


class Subscriber(Client):
    """Counts PUBLISHes by the index in their payload (each at most once) and acks QoS 1 ones."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.seen = bytearray(n)
        self.got = 0
        self.first = 0.0
        self.last = 0.0

    def packet(self, b0: int, buf: bytes, start: int, end: int) -> None:
        if b0 & 0xF0 != 0x30:
            return super().packet(b0, buf, start, end)
        p = start + 2 + ((buf[start] << 8) | buf[start + 1])  # past the topic
        if b0 & 0x06:  # QoS 1: the packet id, then PUBACK it
            self.out.append(b"\x40\x02" + buf[p:p + 2])
            p += 2
        i = int(buf[p:p + 8])
        if end - p != PAYLOAD_SIZE or i >= self.n:
            raise RuntimeError(f"unexpected message {buf[p:min(end, p + 20)]!r}")
        if self.seen[i]:
            raise RuntimeError(f"message {i} delivered twice")
        self.seen[i] = 1
        self.got += 1

    def after_read(self) -> None:
        if self.got:
            self.last = time.perf_counter()
            if self.got >= self.n and not self.done.done():
                self.done.set_result(None)


class WindowPublisher(Client):
    """QoS 1 publisher keeping at most `window` PUBLISHes unacknowledged; frames pre-encoded."""

    def __init__(self, frames: list[bytes], window: int) -> None:
        super().__init__()
        self.frames, self.window, self.n = frames, window, len(frames)
        self.sent = 0
        self.acked = 0
        self.pending = bytearray(65536)

    def start(self) -> None:
        first = min(self.window, self.n)
        for i in range(first):
            self.pending[i % 65535 + 1] = 1
        self.sent = first
        assert self.transport is not None
        self.transport.write(b"".join(self.frames[:first]))

    def packet(self, b0: int, buf: bytes, start: int, end: int) -> None:
        if b0 != 0x40:
            return super().packet(b0, buf, start, end)
        pid = (buf[start] << 8) | buf[start + 1]
        if not self.pending[pid]:
            raise RuntimeError(f"PUBACK for packet id {pid} that is not in flight")
        self.pending[pid] = 0
        self.acked += 1
        if self.sent < self.n:
            self.pending[self.sent % 65535 + 1] = 1
            self.out.append(self.frames[self.sent])
            self.sent += 1

    def after_read(self) -> None:
        if self.acked >= self.n and not self.done.done():
            self.done.set_result(None)


async def open_client(port: int, factory: Callable[[], Client], client_id: str,
                      subscribe: tuple[str, int] | None = None) -> Client:
    loop = asyncio.get_running_loop()
    _, c = await loop.create_connection(factory, "127.0.0.1", port)
    assert c.transport is not None
    c.transport.write(connect_packet(client_id))
    await asyncio.wait_for(asyncio.shield(c.connack), 10)
    if subscribe is not None:
        c.transport.write(subscribe_packet(*subscribe))
        await asyncio.wait_for(asyncio.shield(c.suback), 10)
    return c


async def wait_deliveries(sub: Subscriber, also: asyncio.Future | None = None) -> None:
    """Until the subscriber has all n (and `also` is done), a stall of STALL_S, or LOOP_TIMEOUT_S."""
    deadline = time.monotonic() + LOOP_TIMEOUT_S
    last_got, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        if sub.done.done() and (also is None or also.done()):
            break
        if sub.done.done() and sub.done.exception() is not None:
            break
        if also is not None and also.done() and also.exception() is not None:
            raise also.exception()  # type: ignore[misc]
        await asyncio.sleep(0.05)
        if sub.got != last_got:
            last_got, last_change = sub.got, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            break
    if sub.done.done() and sub.done.exception() is not None:
        raise sub.done.exception()  # type: ignore[misc]


def result(sub: Subscriber, t0: float, cpu0: float, server_cpu0: float, pid: int) -> dict:
    wall = max((sub.last or time.perf_counter()) - t0, 1e-9)
    return {"rate": sub.got / wall, "received": sub.got, "sent": sub.n, "lost": sub.n - sub.got,
            "generator_cpu": (time.process_time() - cpu0) / wall,
            "server_cpu_us": (cpu_seconds(pid) - server_cpu0) / max(sub.got, 1) * 1e6}


# --------------------------------------------------------------------------- workloads

async def wl_qos0(t: Target, n: int) -> dict:
    """QoS 0 publisher -> QoS 0 subscriber: n PUBLISHes written in chunks of CHUNK with the
    transport's flow control; msg/s received from the first write to the last delivery."""
    topic = "bench/qos0"
    frames = [encode_publish(topic, payload(i)) for i in range(n)]
    chunks = [b"".join(frames[i:i + CHUNK]) for i in range(0, n, CHUNK)]
    sub = await open_client(t.port, lambda: Subscriber(n), "bench-sub", (topic, 0))
    assert isinstance(sub, Subscriber)
    pr, pw = await asyncio.open_connection("127.0.0.1", t.port)
    try:
        pw.write(connect_packet("bench-pub"))
        if (await asyncio.wait_for(pr.readexactly(4), 10))[3] != 0:
            raise ConnectionError("CONNACK refused")
        cpu0, server0 = time.process_time(), cpu_seconds(t.pid)
        t0 = time.perf_counter()
        deadline = time.monotonic() + LOOP_TIMEOUT_S

        async def pump() -> None:
            for chunk in chunks:
                pw.write(chunk)
                await pw.drain()
                if time.monotonic() > deadline:
                    break

        pub = asyncio.ensure_future(pump())
        await wait_deliveries(sub, pub)
        pub.cancel()
        return result(sub, t0, cpu0, server0, t.pid)
    finally:
        pw.close()
        if sub.transport is not None:
            sub.transport.close()


async def wl_qos1(t: Target, n: int, window: int) -> dict:
    """QoS 1 publisher with at most `window` unacknowledged -> QoS 1 subscriber that PUBACKs each
    delivery; msg/s received from the first write to the last delivery (every PUBACK must arrive)."""
    topic = "bench/qos1"
    frames = [encode_publish(topic, payload(i), 1, packet_id=i % 65535 + 1) for i in range(n)]
    sub = await open_client(t.port, lambda: Subscriber(n), "bench-sub", (topic, 1))
    pub = await open_client(t.port, lambda: WindowPublisher(frames, window), "bench-pub")
    assert isinstance(sub, Subscriber) and isinstance(pub, WindowPublisher)
    try:
        cpu0, server0 = time.process_time(), cpu_seconds(t.pid)
        t0 = time.perf_counter()
        pub.start()
        await wait_deliveries(sub, pub.done)
        out = result(sub, t0, cpu0, server0, t.pid)
        if pub.acked != n:
            raise RuntimeError(f"{pub.acked} of {n} PUBACKs arrived")
        if out["lost"]:
            raise RuntimeError(f"QoS 1: {out['lost']} of {n} messages not delivered")
        return out
    finally:
        for c in (sub, pub):
            if c.transport is not None:
                c.transport.close()


async def read_packet(r: asyncio.StreamReader) -> tuple[int, bytes]:
    b0 = (await r.readexactly(1))[0]
    length, mult = 0, 1
    for _ in range(4):
        b = (await r.readexactly(1))[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return b0, await r.readexactly(length)


async def wl_conn(t: Target, n: int, concurrency: int = 50) -> dict:
    """n devices, `concurrency` at a time: connect, subscribe to bench/<i>/cmd (QoS 1), publish one
    QoS 1 message to bench/<i>/tele and wait for its PUBACK; every connection stays open until the end.
    A collector subscribed to bench/+/tele must receive all n messages. Devices/s; server peak RSS."""
    collector = await open_client(t.port, lambda: Subscriber(n), "bench-collector", ("bench/+/tele", 1))
    assert isinstance(collector, Subscriber)
    sem = asyncio.Semaphore(concurrency)
    writers: list[asyncio.StreamWriter] = []
    rss0 = rss_peak_mb(t.pid)

    async def device(i: int) -> None:
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", t.port)
            writers.append(w)
            w.write(connect_packet(f"dev{i}"))
            b0, body = await read_packet(r)
            if b0 >> 4 != 2 or body[1] != 0:
                raise ConnectionError(f"device {i}: CONNACK {b0:#x} {body!r}")
            w.write(subscribe_packet(f"bench/{i}/cmd", 1) + encode_publish(
                f"bench/{i}/tele", payload(i), 1, packet_id=2))
            got: set[int] = set()
            while len(got) < 2:
                b0, body = await read_packet(r)
                got.add(b0 >> 4)
                if b0 >> 4 == 9 and body[-1] == 0x80:
                    raise ConnectionError(f"device {i}: SUBACK refused")
            if got != {9, 4}:
                raise RuntimeError(f"device {i}: expected SUBACK and PUBACK, got types {sorted(got)}")

    cpu0, server0 = time.process_time(), cpu_seconds(t.pid)
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(device(i) for i in range(n))), LOOP_TIMEOUT_S)
        connected = time.perf_counter() - t0
        await wait_deliveries(collector)
        wall = time.perf_counter() - t0
        if collector.got != n:
            raise RuntimeError(f"collector got {collector.got} of {n} telemetry messages")
        return {"rate": n / connected, "connect_s": connected, "all_delivered_s": wall,
                "rss_peak_mb": rss_peak_mb(t.pid), "rss_before_mb": rss0,
                "generator_cpu": (time.process_time() - cpu0) / wall,
                "server_cpu_us": (cpu_seconds(t.pid) - server0) / n * 1e6}
    finally:
        for w in writers:
            w.close()
        if collector.transport is not None:
            collector.transport.close()


def measure(server: str, job: Callable[[Target], Awaitable[dict]], spy: str | None = None) -> dict:
    """One run on a fresh server process, stopped afterwards whatever happens; `spy`: profile it
    with py-spy into that file."""
    t = STARTERS[server]()

    async def run() -> dict:
        return await asyncio.wait_for(job(t), LOOP_TIMEOUT_S + 60)

    prof: PySpy | None = None
    try:
        prof = PySpy(spy, t.pid)
        return asyncio.run(run())
    finally:
        if prof is not None:
            prof.stop()
        t.stop()


# --------------------------------------------------------------------------- table

@dataclass
class Row:
    workload: str
    unit: str
    figures: dict[str, float]  # server -> figure (median of the runs)
    target: str = "-"
    higher_is_better: bool = True
    runs: dict[str, list[dict]] = field(default_factory=dict)


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b == 0:
        return "-"
    return f"{a / b:.2f}x" if a / b < 100 else f"{a / b:.0f}x"


def print_table(rows: list[Row], servers: list[str]) -> None:
    peers = [s for s in servers if s != "robustmq"]
    head = ("workload", "unit", *servers, *(f"robustmq/{p}" for p in peers), "target")
    lines = [head]
    for r in rows:
        lines.append((r.workload, r.unit, *(fmt(r.figures.get(s, float("nan"))) for s in servers),
                      *(ratio(r.figures.get("robustmq", float("nan")), r.figures.get(p, float("nan")))
                        for p in peers), r.target))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(widths[j]) if j < 2 or j == len(head) - 1 else c.rjust(widths[j])
                        for j, c in enumerate(line)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ap.add_argument("--workloads", default="qos0,qos1,conn",
                    help="comma-separated subset of qos0, qos1, conn")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma-separated subset of " + ", ".join(SERVERS))
    ap.add_argument("--window", default="1,10,100,1000", metavar="W,...",
                    help="qos1: the publisher's windows (unacknowledged PUBLISHes in flight)")
    ap.add_argument("--messages", type=int, default=0, help="messages per run (default 200,000 QoS 0, "
                    "100,000 QoS 1; --quick 20,000; amqtt a tenth of it)")
    ap.add_argument("--clients", type=int, default=1000, help="conn: devices (default 1,000)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows medians")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    ap.add_argument("--py-spy", metavar="PREFIX", help="profile robustmq during the first run of each "
                    "workload into PREFIX.<workload>.txt, e.g. PREFIX.qos1_w100.txt (py-spy raw collapsed "
                    "stacks; `pip install py-spy`)")
    args = ap.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if set(servers) - set(SERVERS) or "robustmq" not in servers:
        ap.error(f"--servers: robustmq and any of {', '.join(SERVERS[1:])}")
    if set(workloads) - {"qos0", "qos1", "conn"}:
        ap.error("--workloads: any of qos0, qos1, conn")
    try:
        windows = [int(w) for w in args.window.split(",") if w.strip()]
    except ValueError:
        ap.error("--window takes comma-separated integers")
    if any(w < 1 or w > 65535 for w in windows) or args.repeat < 1 or not 0 < args.clients <= 100_000:
        ap.error("windows 1..65535, --repeat >= 1, --clients 1..100000")
    if "mosquitto" in servers and mosquitto_binary() is None:
        print("mosquitto not found: apt-get install -y mosquitto", file=sys.stderr)
        return 2
    if "amqtt" in servers and amqtt_binary() is None:
        print("amqtt not found: pip install amqtt", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 2 fds per device, and the servers inherit it
    want = min(hard, max(soft, 2 * args.clients + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        import uvloop
        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    print(f"robustmq MQTT bench: python {sys.version.split()[0]}, {loop_name} raw-socket load generator "
          f"(one process), {os.cpu_count()} cores, {'quick' if args.quick else 'full'} counts")

    def count(kind: str, server: str) -> int:
        n = args.messages or (20_000 if args.quick else 200_000 if kind == "qos0" else 100_000)
        return max(n // 10, 1000) if server == "amqtt" else n

    n_clients = min(args.clients, 1000) if args.quick else args.clients

    def job(kind: str, window: int, server: str) -> Callable[[Target], Awaitable[dict]]:
        if kind == "qos0":
            return functools.partial(wl_qos0, n=count("qos0", server))
        if kind == "qos1":
            return functools.partial(wl_qos1, n=count("qos1", server), window=window)
        return functools.partial(wl_conn, n=n_clients)

    target = ">= 0.5x mosquitto, >= 10x amqtt"
    cells: list[tuple[str, str, str, str, int]] = []
    if "qos0" in workloads:
        cells.append(("qos0", "msg/s received", target, "qos0", 0))
    if "qos1" in workloads:
        cells.extend((f"qos1 w={w}", "msg/s received", target, "qos1", w) for w in windows)
    if "conn" in workloads:
        cells.append((f"conn n={n_clients:,}", "devices/s", "-", "conn", 0))
    rows: list[Row] = []
    failed: list[str] = []
    for name, unit, target, kind, window in cells:
        runs: dict[str, list[dict]] = {s: [] for s in servers}
        for rep in range(args.repeat):
            for s in servers:
                spy = (f"{args.py_spy}.{name.replace(' ', '_').replace('=', '').replace(',', '')}.txt"
                       if args.py_spy and s == "robustmq" and rep == 0 else None)  # qos1_w100.txt, ...
                try:
                    out = measure(s, job(kind, window, s), spy)
                except Exception as exc:  # noqa: BLE001 - report and go on with the other cells
                    print(f"  {name:<12} {s:<10} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    failed.append(f"{name}/{s}")
                    continue
                runs[s].append(out)
                extra = (f", lost {out['lost']:,} of {out['sent']:,}" if out.get("lost") else "")
                if kind == "conn":
                    extra += (f", all delivered in {out['all_delivered_s']:.2f} s, "
                              f"peak RSS {out['rss_peak_mb']:.0f} MB")
                print(f"  {name:<12} {s:<10} {out['rate']:>12,.0f} {unit}{extra}; generator "
                      f"{out['generator_cpu']:.2f} core, server {out['server_cpu_us']:.1f} us CPU/msg",
                      flush=True)

        def med(key: str, runs: dict[str, list[dict]] = runs) -> dict[str, float]:
            return {s: statistics.median([r[key] for r in rs]) for s, rs in runs.items() if rs}

        rows.append(Row(name, unit, med("rate"), target, True, runs))
        if kind == "conn":
            rows.append(Row("", "MB peak RSS (VmHWM; lower is better)", med("rss_peak_mb")))
        rows.append(Row("", "server CPU us/msg (lower is better)", med("server_cpu_us")))
        rows.append(Row("", "generator CPU (cores)", med("generator_cpu")))
    print()
    print_table(rows, servers)
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"workload": r.workload, "unit": r.unit, "figures": r.figures, "target": r.target,
              "runs": r.runs} for r in rows], indent=2))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
