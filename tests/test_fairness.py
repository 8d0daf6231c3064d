"""SPEC §8 (bad input affects only its own connection): one client flooding small publishes as fast as
it can write must not hold the event loop for its whole flood. Another client keeps pinging
(MQTT PINGREQ, NATS PING) meanwhile; its longest wait must be a small part of the flood's duration,
whatever this machine's speed. Before reads were bounded per loop turn, an MQTT observer's
PINGRESP waited about half of a 6.5 s flood."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from procs import RobustMQ

pytestmark = pytest.mark.timeout(120)

FLOOD = 600_000  # publishes; each load loop is bounded in count and by the socket timeouts
OBSERVE_EVERY_S = 0.005


def _mqtt_connect(port: int, cid: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
    s.sendall(bytes([0x10, len(var)]) + var)
    assert s.recv(4)[:2] == b"\x20\x02"
    return s


def _mqtt_flood(port: int) -> tuple[socket.socket, list[bytes], bytes, bytes]:
    s = _mqtt_connect(port, b"flooder")
    frames = []
    for i in range(1000):
        topic = b"dev/%d/t" % i
        body = struct.pack(">H", len(topic)) + topic + b"x" * 20
        frames.append(bytes([0x30, len(body)]) + body)
    return s, frames, b"\xc0\x00", b"\xd0\x00"


def _nats_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.recv(4096)  # INFO
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
    buf = b""
    while b"PONG\r\n" not in buf:
        buf += s.recv(4096)
    return s


def _nats_flood(port: int) -> tuple[socket.socket, list[bytes], bytes, bytes]:
    s = _nats_connect(port)
    frames = [b"PUB dev.%d.t 20\r\n%s\r\n" % (i, b"x" * 20) for i in range(1000)]
    return s, frames, b"PING\r\n", b"PONG\r\n"


def _recv_until(s: socket.socket, token: bytes) -> None:
    buf = b""
    while token not in buf:
        chunk = s.recv(65536)
        assert chunk, "the server closed the connection"
        buf = buf[-16:] + chunk


@pytest.mark.parametrize("protocol", ["mqtt", "nats"])
def test_a_flooding_client_does_not_hold_the_loop(protocol: str) -> None:
    srv = RobustMQ(mqtt=True).start()
    try:
        if protocol == "mqtt":
            observer, ping, pong = _mqtt_connect(srv.mqtt_port, b"observer"), b"\xc0\x00", b"\xd0\x00"
            flooder, frames, fping, fpong = _mqtt_flood(srv.mqtt_port)
        else:
            observer, ping, pong = _nats_connect(srv.nats_port), b"PING\r\n", b"PONG\r\n"
            flooder, frames, fping, fpong = _nats_flood(srv.nats_port)
        waits: list[float] = []
        done = threading.Event()

        def observe() -> None:
            while not done.is_set():
                t = time.perf_counter()
                observer.sendall(ping)
                _recv_until(observer, pong)
                waits.append(time.perf_counter() - t)
                time.sleep(OBSERVE_EVERY_S)

        th = threading.Thread(target=observe)
        th.start()
        t0 = time.perf_counter()
        block = b"".join(frames) * 5  # 5,000 publishes a write
        for _ in range(FLOOD // 5000):
            flooder.sendall(block)
        flooder.sendall(fping)
        _recv_until(flooder, fpong)  # every publish of the flood has been handled
        flood_s = time.perf_counter() - t0
        done.set()
        th.join(timeout=30)
        assert not th.is_alive()
        assert len(waits) >= 3, waits
        # the share of the flood the observer ever had to wait for one answer
        assert max(waits) < flood_s / 5, (max(waits), flood_s, len(waits))
        observer.close()
        flooder.close()
    finally:
        srv.cleanup()
