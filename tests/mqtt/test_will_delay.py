"""MQTT 5 Will Delay Interval (3.1.3.2.2, 3.1.2.5) with paho-mqtt v5 and mosquitto_sub -V mqttv5,
against robustmq and mosquitto.

The will is published when the delay has passed or the session ends, whichever is first, unless a
new connection for the client id comes before. The scenarios run side by side (each with its own
client id and will topic) and one watcher times every will, so the delays cost seconds once.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode
from procs import RobustMQ

from robustmq.frontends.mqtt import reasons

from .clients import V5, MosqSub, Paho, uniq

WATCH_S = 2.4  # how long the watcher waits for the last due will
IMMEDIATE = (0.0, 0.6)
AFTER_ONE_SECOND = (0.9, 2.2)  # a delay (or session expiry) of 1 s; the server checks every 0.25 s



def will_props(delay: int | None) -> PahoProperties | None:
    if delay is None:
        return None
    p = PahoProperties(PacketTypes.WILLMESSAGE)
    p.WillDelayInterval = delay
    return p


def paho_with_will(port: int, cid: str, topic: str, delay: int, expiry: int | None) -> Paho:
    c = Paho(port, V5, cid, clean=True, session_expiry=expiry, connect=False)
    c.c.will_set(topic, b"gone:" + cid.encode(), 1, False, will_props(delay))
    rc = c.connect()
    assert not rc.is_failure, rc
    return c


def abrupt(c: Paho) -> None:
    """End paho's TCP connection without DISCONNECT (its thread then sees the connection lost)."""
    sock = c.c.socket()
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


def stop_later(c: Paho) -> None:
    """paho's loop_stop joins its network thread, up to a second: not on the clock of a test."""
    threading.Thread(target=c.c.loop_stop, daemon=True).start()


def cli_with_will(port: int, cid: str, topic: str, delay: int | None, *args: str) -> MosqSub:
    extra = ["-D", "WILL", "will-delay-interval", str(delay)] if delay is not None else []
    return MosqSub(port, "mqttv5", [uniq("x/")], "-i", cid, "--will-topic", topic, "--will-payload",
                   f"gone:{cid}", "--will-qos", "1", *extra, *args)


@dataclass
class Scenario:
    name: str
    expect: tuple[float, float] | None  # when the will must arrive (seconds after the close) or never
    closed_at: float = 0.0
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def test_will_delay_interval(broker: str, port: int) -> None:
    root = uniq()
    watcher = Paho(port, V5, uniq("watch"))
    arrivals: queue.Queue[tuple[float, bytes, str]] = queue.Queue()  # timed on paho's thread
    watcher.c.on_message = lambda c, u, m: arrivals.put((time.monotonic(), m.payload, m.topic))
    watcher.subscribe(f"{root}/#", 1)
    scenarios: dict[str, Scenario] = {}

    def run(name: str, expect: tuple[float, float] | None) -> tuple[str, str]:
        s = Scenario(name, expect)
        scenarios[name] = s
        return uniq(name[:6]), f"{root}/{name}"

    try:
        # control: no delay -> at once
        cid, topic = run("no-delay", IMMEDIATE)
        c = cli_with_will(port, cid, topic, None, "-c", "-x", "60")
        scenarios["no-delay"].closed_at = time.monotonic()
        c.kill()
        scenarios["no-delay"].cleanup.append(lambda cid=cid: MosqSub(port, "mqttv5", ["x"], "-i", cid, "-E",
                                                                       ready=False).finish())

        # the delay passes while the session lives on -> after the delay (mosquitto_sub, killed)
        cid, topic = run("delay-passes", AFTER_ONE_SECOND)
        c = cli_with_will(port, cid, topic, 1, "-c", "-x", "60")
        scenarios["delay-passes"].closed_at = time.monotonic()
        c.kill()
        scenarios["delay-passes"].cleanup.append(
            lambda cid=cid: MosqSub(port, "mqttv5", ["x"], "-i", cid, "-E", ready=False).finish())

        # DISCONNECT 0x04 (with will) from paho: the will is kept, and delayed too
        cid, topic = run("disconnect-0x04", AFTER_ONE_SECOND)
        p = paho_with_will(port, cid, topic, 1, 60)
        scenarios["disconnect-0x04"].closed_at = time.monotonic()
        p.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=reasons.DISCONNECT_WITH_WILL))
        p.c.loop_stop()

        # the session expires (1 s) before the delay (30 s) -> at the session's end
        cid, topic = run("expiry-first", AFTER_ONE_SECOND)
        c = cli_with_will(port, cid, topic, 30, "-c", "-x", "1")
        scenarios["expiry-first"].closed_at = time.monotonic()
        c.kill()

        # a normal DISCONNECT (0x00) discards the will, delayed or not
        cid, topic = run("disconnect-0x00", None)
        p = paho_with_will(port, cid, topic, 1, 60)
        scenarios["disconnect-0x00"].closed_at = time.monotonic()
        p.close()
        scenarios["disconnect-0x00"].cleanup.append(lambda cid=cid: Paho(port, V5, cid).close())

        # a session of expiry 0 ends with its connection: the spec says at once; mosquitto 2.0
        # waits for the delay all the same (documented in docs/mqtt.md)
        cid, topic = run("expiry-zero", IMMEDIATE if broker == "robustmq" else None)
        c = cli_with_will(port, cid, topic, 30)
        scenarios["expiry-zero"].closed_at = time.monotonic()
        c.kill()

        # a reconnect (session resumed) before the delay -> never (mosquitto_sub)
        cid, topic = run("resumed", None)
        c = cli_with_will(port, cid, topic, 1, "-c", "-x", "60")
        scenarios["resumed"].closed_at = time.monotonic()
        c.kill()
        back = MosqSub(port, "mqttv5", [uniq("x/")], "-i", cid, "-c", "-x", "60")
        scenarios["resumed"].cleanup += [back.stop, lambda cid=cid: MosqSub(port, "mqttv5", ["x"], "-i", cid,
                                                                             "-E", ready=False).finish()]

        # a reconnect with clean start before the delay -> never either (paho, socket closed)
        cid, topic = run("clean-reconnect", None)
        p = paho_with_will(port, cid, topic, 1, 60)
        scenarios["clean-reconnect"].closed_at = time.monotonic()
        abrupt(p)
        scenarios["clean-reconnect"].cleanup.append(lambda p=p: stop_later(p))
        again = Paho(port, V5, cid)
        scenarios["clean-reconnect"].cleanup.append(again.close)

        # takeover: the new connection for the id comes before the delay -> never (paho)
        cid, topic = run("takeover", None)
        first = paho_with_will(port, cid, topic, 1, 60)
        scenarios["takeover"].closed_at = time.monotonic()
        second = Paho(port, V5, cid, clean=False, session_expiry=60)
        first.disconnects.get(timeout=5)  # 0x8E, or (mosquitto, often) the socket closed first
        stop_later(first)
        scenarios["takeover"].cleanup += [second.close, lambda cid=cid: Paho(port, V5, cid).close()]

        arrived: dict[str, float] = {}
        deadline = time.monotonic() + WATCH_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, payload, topic = arrivals.get(timeout=left)
            except queue.Empty:
                break
            name = topic.rsplit("/", 1)[1]
            assert name not in arrived, f"{name}: will published twice"
            assert payload.startswith(b"gone:")
            arrived[name] = at - scenarios[name].closed_at
        wrong = {}
        for name, s in scenarios.items():
            at = arrived.get(name)
            if s.expect is None:
                if at is not None:
                    wrong[name] = f"published after {at:.2f}s, expected never"
            elif at is None or not s.expect[0] <= at <= s.expect[1]:
                wrong[name] = f"published after {at}, expected within {s.expect}"
        assert not wrong, wrong
    finally:
        for s in scenarios.values():
            for f in s.cleanup:
                try:
                    f()
                except (AssertionError, OSError, queue.Empty, subprocess.TimeoutExpired):  # keep the test's own error
                    pass
        watcher.close()


@pytest.mark.parametrize("stop", ["graceful", "kill9"])
def test_a_waiting_will_survives_a_restart(stop: str) -> None:
    """SPEC §2 (a restart recovers MQTT sessions): a will waiting for its Will Delay Interval when the
    server stops is still published when due; one that came due while it was down goes at once; one
    whose client comes back first is cancelled. The wills are retained, so the watcher (which can only
    subscribe once the server is back) sees every will published, whenever it came."""
    srv = RobustMQ(mqtt=True).start()
    try:
        root = uniq("wr")
        cids = {name: uniq(name) for name in ("later", "soon", "kept")}
        delays = {"soon": 1, "later": 6, "kept": 30}
        clients = []
        for name, delay in delays.items():
            c = Paho(srv.mqtt_port, V5, cids[name], clean=True, session_expiry=300, connect=False)
            c.c.will_set(f"{root}/{name}", b"gone:" + cids[name].encode(), 1, True, will_props(delay))
            assert not c.connect().is_failure
            clients.append(c)
        for c in clients:
            abrupt(c)
            stop_later(c)
        closed = time.monotonic()
        time.sleep(0.5)  # the closes (and the waits they start) are committed
        srv.kill9() if stop == "kill9" else srv.stop()
        time.sleep(1.0)  # `soon` comes due while the server is down
        srv.start()
        restarted = time.monotonic() - closed
        # `kept`'s client comes back before its delay passed: its will is cancelled (3.1.3-9)
        again = Paho(srv.mqtt_port, V5, cids["kept"], clean=False, session_expiry=300)
        watcher = Paho(srv.mqtt_port, V5, uniq("watch"))
        arrivals: queue.Queue[tuple[float, bytes, str]] = queue.Queue()
        watcher.c.on_message = lambda c, u, m: arrivals.put((time.monotonic(), m.payload, m.topic))
        watcher.subscribe(f"{root}/#", 1)
        got: dict[str, float] = {}
        deadline = time.monotonic() + max(6.0, restarted) + 4.0
        while time.monotonic() < deadline and not {"soon", "later"} <= set(got):
            try:
                at, payload, topic = arrivals.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            name = topic.rsplit("/", 1)[1]
            assert payload == b"gone:" + cids[name].encode()
            got[name] = at - closed
        time.sleep(0.5)
        assert arrivals.empty(), arrivals.get()  # and `kept`'s never comes
        assert set(got) == {"soon", "later"}, got
        assert got["soon"] < restarted + 2.0, (got, restarted)  # at once after the restart
        # at its time (not at the restart, unless the restart itself came after it)
        assert 5.5 <= got["later"] < max(6.0, restarted) + 2.0, (got, restarted)
        again.close()
        watcher.close()
    finally:
        srv.cleanup()
