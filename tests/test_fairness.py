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


def _mqtt_subscribe(s: socket.socket, filter_: bytes, qos: int) -> None:
    body = b"\x00\x01" + struct.pack(">H", len(filter_)) + filter_ + bytes([qos])
    s.sendall(bytes([0x82, len(body)]) + body)


def test_a_wildcard_subscribe_over_many_retained_topics_does_not_hold_the_loop() -> None:
    """A SUBSCRIBE to `#` over 100,000 retained topics: they go out a page per loop turn, so another
    client's PINGREQ waits a small part of the burst (before, the loop framed them all in one go),
    and every retained message still arrives, once, with RETAIN set."""
    from robustmq.frontends.mqtt.codec import MqttParser
    from robustmq.frontends.mqtt.packets import MQTT_311, Publish

    n = 100_000
    srv = RobustMQ(mqtt=True).start()
    try:
        pub = _mqtt_connect(srv.mqtt_port, b"retainer")
        for i in range(0, n, 5000):
            frames = []
            for j in range(i, i + 5000):
                topic = b"dev/%d/state" % j
                body = struct.pack(">H", len(topic)) + topic + b"s%d" % j
                frames.append(bytes([0x31, len(body)]) + body)  # QoS 0, RETAIN
            pub.sendall(b"".join(frames))
        pub.sendall(b"\xc0\x00")
        _recv_until(pub, b"\xd0\x00")
        observer = _mqtt_connect(srv.mqtt_port, b"observer")
        sub = _mqtt_connect(srv.mqtt_port, b"wildcard")
        waits: list[float] = []
        done = threading.Event()

        def observe() -> None:
            while not done.is_set():
                t = time.perf_counter()
                observer.sendall(b"\xc0\x00")
                _recv_until(observer, b"\xd0\x00")
                waits.append(time.perf_counter() - t)
                time.sleep(OBSERVE_EVERY_S)

        th = threading.Thread(target=observe)
        th.start()
        parser = MqttParser(MQTT_311, server=False)
        got: dict[str, bytes] = {}
        dups = 0
        t0 = time.perf_counter()
        _mqtt_subscribe(sub, b"#", 0)
        while len(got) < n and time.perf_counter() - t0 < 60:
            chunk = sub.recv(1 << 16)
            assert chunk, "the server closed the subscriber"
            for ev in parser.feed(chunk):
                if isinstance(ev, Publish):
                    assert ev.retain
                    dups += ev.topic in got
                    got[ev.topic] = ev.payload
        burst_s = time.perf_counter() - t0
        done.set()
        th.join(timeout=30)
        assert not th.is_alive()
        assert len(got) == n and dups == 0, (len(got), dups)
        assert got["dev/77/state"] == b"s77"
        assert len(waits) >= 3, waits
        assert max(waits) < burst_s / 5, (max(waits), burst_s, len(waits))
        for s in (pub, observer, sub):
            s.close()
    finally:
        srv.cleanup()
