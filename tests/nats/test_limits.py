"""Limits and faults: slow consumers, stale connections, garbage, vanishing and short-lived clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request

import nats
import pytest
from procs import RobustMQ
from testkit import proc_status_mb


async def raw(port: int, connect: bytes = b'{"verbose":false,"pedantic":false}'):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    await r.readline()
    w.write(b"CONNECT " + connect + b"\r\n")
    return r, w


async def roundtrip_ok(server) -> bool:
    nc = await nats.connect(server.nats_url, allow_reconnect=False)
    sub = await nc.subscribe("alive")
    await nc.flush()
    await nc.publish("alive", b"yes")
    ok = (await sub.next_msg(2)).data == b"yes"
    await nc.close()
    return ok


async def test_slow_consumer_is_closed_and_memory_stays_bounded() -> None:
    srv = RobustMQ(extra_args=["--max-pending", str(8 << 20)]).start()
    try:
        sk = socket.create_connection(("127.0.0.1", srv.nats_port))
        sk.recv(4096)
        sk.sendall(b'CONNECT {"verbose":false}\r\nSUB flood 1\r\nPING\r\n')  # and never read again
        await asyncio.sleep(0.2)
        r, w = await raw(srv.nats_port)
        chunk = (b"PUB flood 1024\r\n" + b"x" * 1024 + b"\r\n") * 256
        peak = 0
        deadline = time.monotonic() + 15
        for i in range(400):  # ~100 MB offered to a reader that takes nothing
            w.write(chunk)
            await w.drain()
            if i % 20 == 0:
                peak = max(peak, proc_status_mb(srv.proc.pid))
            if time.monotonic() > deadline:
                break
        w.write(b"PING\r\n")
        await w.drain()
        assert await asyncio.wait_for(r.readline(), 30) == b"PONG\r\n"
        peak = max(peak, proc_status_mb(srv.proc.pid))
        assert peak < 300, f"server RSS peaked at {peak} MB"
        assert "slow consumer" in srv.log_text().lower()
        assert closed_by_server(sk)
        assert await roundtrip_ok(srv)  # everyone else is fine
        w.close()
    finally:
        srv.cleanup()


def closed_by_server(sk: socket.socket, timeout: float = 10.0) -> bool:
    """True when the server closed (EOF or reset) within timeout; False when it is still open."""
    sk.settimeout(timeout)
    try:
        while sk.recv(1 << 20):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _nats_sleeper(port: int, n: int) -> socket.socket:
    """A NATS client subscribed to `flood` that never reads again."""
    sk = socket.socket()
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sk.connect(("127.0.0.1", port))
    sk.recv(4096)
    sk.sendall(b'CONNECT {"verbose":false}\r\nSUB flood %d\r\nPING\r\n' % n)
    return sk


def _mqtt_sleeper(port: int, n: int) -> socket.socket:
    """An MQTT 3.1.1 client subscribed to `flood` (QoS 0) that never reads again."""
    cid = b"sleeper%d" % n
    sk = socket.socket()
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sk.connect(("127.0.0.1", port))
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    sk.sendall(b"\x10" + bytes([len(var)]) + var)
    assert sk.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
    sub = b"\x00\x01\x00\x05flood\x00"
    sk.sendall(b"\x82" + bytes([len(sub)]) + sub)
    assert sk.recv(5) == b"\x90\x03\x00\x01\x00"  # SUBACK QoS 0
    return sk


@pytest.mark.parametrize("protocol", ["nats", "mqtt"])
async def test_server_wide_outbound_cap_cuts_the_slowest_first(protocol: str) -> None:
    """10 subscribers that never read, under a flood: per-connection limits alone would let each
    hold 64 MiB (about 550 MB of RSS here); the server-wide cap (here 32 MiB), one budget for every
    protocol, bounds them all — NATS and MQTT subscribers alike."""
    srv = RobustMQ(extra_args=["--max-pending-total", str(32 << 20)], mqtt=protocol == "mqtt").start()
    try:
        if protocol == "mqtt":
            sleepers = [_mqtt_sleeper(srv.mqtt_port, i) for i in range(10)]
        else:
            sleepers = [_nats_sleeper(srv.nats_port, i) for i in range(10)]
        reader = await nats.connect(srv.nats_url, allow_reconnect=False)
        got = 0

        async def count(msg) -> None:
            nonlocal got
            got += 1

        await reader.subscribe("flood", cb=count)
        await reader.flush()
        await asyncio.sleep(0.2)
        r, w = await raw(srv.nats_port)
        chunk = (b"PUB flood 1024\r\n" + b"x" * 1024 + b"\r\n") * 256
        deadline = time.monotonic() + 20
        for _ in range(200):  # 50 MB offered; each sleeper could hold all of it
            w.write(chunk)
            await w.drain()
            if time.monotonic() > deadline:
                break
        w.write(b"PING\r\n")
        await w.drain()
        assert await asyncio.wait_for(r.readline(), 30) == b"PONG\r\n"
        peak = proc_status_mb(srv.proc.pid, "VmHWM")
        print(f"peak RSS with 10 non-reading {protocol} subscribers under a 50 MB flood: {peak} MB")
        assert peak < 300, f"server RSS peaked at {peak} MB"  # uncapped: ~550 MB
        assert sum(closed_by_server(sk, 10) for sk in sleepers) >= 5
        assert reader.is_connected  # the reader keeps up: it is never the one cut
        assert await roundtrip_ok(srv)
        await reader.close()
        w.close()
        for sk in sleepers:
            sk.close()
    finally:
        srv.cleanup()


async def test_stale_connection_gets_error_and_close() -> None:
    srv = RobustMQ(extra_args=["--ping-interval", "0.2", "--max-pings-out", "2"], http=True).start()
    try:
        r, _w = await raw(srv.nats_port)
        seen = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(r.readline(), 5)
            if not line:
                break
            seen += line  # never answer the server's PINGs
        assert seen.count(b"PING\r\n") == 2
        assert seen.endswith(b"-ERR 'Stale Connection'\r\n")
        # monitoring counts it and says why it closed, as nats-server does
        def get(path: str) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}{path}", timeout=5) as resp:
                return json.loads(resp.read())
        assert (await asyncio.to_thread(get, "/varz"))["stale_connections"] == 1
        closed = (await asyncio.to_thread(get, "/connz?state=closed"))["connections"]
        # (the others: the port probes of the test's start-up, which connect and close at once)
        assert [c["reason"] for c in closed].count("Stale Connection") == 1
        # a client that answers stays connected
        nc = await nats.connect(srv.nats_url, allow_reconnect=False)
        await asyncio.sleep(1.0)
        assert nc.is_connected
        await nc.close()
    finally:
        srv.cleanup()


async def test_garbage_client_does_not_harm_others(server) -> None:
    nc = await nats.connect(server.nats_url, allow_reconnect=False)
    sub = await nc.subscribe("steady")
    await nc.flush()
    for junk in (b"\xff\xfe\x00garbage\r\n", b"PUB x 99999999999\r\n", b"SUB\r\n", b"A" * 10000,
                 b"HPUB a 10 2\r\n", b"PUB a 3\r\nabcdefg\r\n"):
        r, w = await asyncio.open_connection("127.0.0.1", server.nats_port)
        await r.readline()
        w.write(junk)
        await w.drain()
        await asyncio.wait_for(r.read(), 5)  # the server closes that connection
        w.close()
    await nc.publish("steady", b"still here")
    assert (await sub.next_msg(2)).data == b"still here"
    await nc.close()


async def test_client_vanishing_mid_frame(server) -> None:
    for partial in (b"PUB half 100\r\nonly-some-bytes", b"HPUB h 12", b"CONNECT {\"verb", b"SUB a"):
        r, w = await asyncio.open_connection("127.0.0.1", server.nats_port)
        await r.readline()
        w.write(partial)
        await w.drain()
        w.transport.abort()
    assert await roundtrip_ok(server)


async def test_thousand_short_lived_connections(server) -> None:
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> bool:
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", server.nats_port)
            info = await r.readline()
            w.write(b'CONNECT {"verbose":false}\r\nPUB churn.%d 2\r\nhi\r\nPING\r\n' % i)
            ok = info.startswith(b"INFO ") and await asyncio.wait_for(r.readline(), 5) == b"PONG\r\n"
            w.close()
            return ok

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 60)
    assert all(results)
    assert await roundtrip_ok(server)


async def test_oversize_payload_error_text(server) -> None:
    r, w = await raw(server.nats_port, b'{"verbose":false}')
    w.write(b"PUB big %d\r\n" % ((1 << 20) + 1))
    await w.drain()
    assert await asyncio.wait_for(r.readline(), 5) == b"-ERR 'Maximum Payload Violation'\r\n"
    assert await asyncio.wait_for(r.read(), 5) == b""


async def test_deeply_nested_connect_closes_only_that_connection(server) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.nats_port)
    await r.readline()
    w.write(b'CONNECT {"x":' + b"[" * 1990 + b"]" * 1990 + b"}\r\nPING\r\n")  # under the 4 KiB line limit
    await w.drain()
    assert await asyncio.wait_for(r.read(), 5) == b""  # closed, as an unparsable CONNECT is
    w.close()
    assert await roundtrip_ok(server)
    assert "Traceback" not in server.log_text()


async def test_invalid_utf8_subjects_are_refused_and_never_delivered(server) -> None:
    """A spy on `>` must not receive a PUB whose subject is not UTF-8, and `SUB bad.\\xff` is refused
    (it used to be decoded with replacement characters and matched `PUB bad.\\xfe`)."""
    r, w = await raw(server.nats_port)
    w.write(b"SUB > 1\r\nSUB bad.\xff 2\r\nPUB bad.\xfe 1\r\nx\r\nUNSUB 1 -5\r\nPUB after 1\r\ny\r\nPING\r\n")
    await w.drain()
    got = b""
    while not got.endswith(b"PONG\r\n"):
        got += await asyncio.wait_for(r.read(4096), 5)
    assert got == b"-ERR 'Invalid Subject'\r\n-ERR 'Invalid Publish Subject'\r\nPONG\r\n", got
    w.close()
    assert await roundtrip_ok(server)


async def test_reader_that_keeps_up_is_not_cut_by_a_small_max_pending() -> None:
    """max_pending 64 KiB, bursts of 200 x 1 KiB in one write (each paced by a PONG): a subscriber that
    keeps reading gets every message, as from nats-server. One read of the publisher hands the reader
    more than 64 KiB at once; only what the reader leaves untaken may count against the limit."""
    srv = RobustMQ(extra_args=["--max-pending", "65536", "--max-payload", "65536"]).start()
    try:
        rr, rw = await raw(srv.nats_port)
        rw.write(b"SUB burst 1\r\nPING\r\n")
        await rw.drain()
        assert await asyncio.wait_for(rr.readline(), 5) == b"PONG\r\n"
        total = 20 * 200 * len(b"MSG burst 1 1024\r\n" + b"x" * 1024 + b"\r\n")
        got = 0

        async def read_all() -> None:
            nonlocal got
            while got < total:
                d = await rr.read(1 << 20)
                assert d, "reader closed by the server"
                assert b"-ERR" not in d
                got += len(d)

        reading = asyncio.create_task(read_all())
        pr, pw = await raw(srv.nats_port)
        burst = (b"PUB burst 1024\r\n" + b"x" * 1024 + b"\r\n") * 200 + b"PING\r\n"
        for _ in range(20):
            pw.write(burst)
            await pw.drain()
            assert await asyncio.wait_for(pr.readline(), 10) == b"PONG\r\n"
        await asyncio.wait_for(reading, 10)
        assert got == total
        assert "slow consumer" not in srv.log_text().lower()
        pw.close()
        rw.close()
    finally:
        srv.cleanup()


async def test_small_max_pending_still_cuts_a_reader_that_never_reads() -> None:
    srv = RobustMQ(extra_args=["--max-pending", "65536", "--max-payload", "65536"]).start()
    try:
        sk = _nats_sleeper(srv.nats_port, 1)
        await asyncio.sleep(0.2)
        r, w = await raw(srv.nats_port)
        chunk = (b"PUB flood 1024\r\n" + b"x" * 1024 + b"\r\n") * 200
        deadline = time.monotonic() + 10
        while "slow consumer" not in srv.log_text().lower() and time.monotonic() < deadline:
            w.write(chunk + b"PING\r\n")
            await w.drain()
            assert await asyncio.wait_for(r.readline(), 10) == b"PONG\r\n"
        assert "slow consumer" in srv.log_text().lower()
        assert closed_by_server(sk)
        w.close()
    finally:
        srv.cleanup()
