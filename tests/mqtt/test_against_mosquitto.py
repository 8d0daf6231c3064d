"""The same MQTT behaviours against robustmq and a real mosquitto (Debian's package), with paho-mqtt:
each test is parametrized by broker and asserts one observable result for both, so a test that
passes only against robustmq is a test of robustmq's reading of the spec, not of the spec.

mosquitto is started by a fixture on a free 127.0.0.1 port with a temporary config; if it is not
installed the fixture installs it with apt-get (CI runs as root) or fails — it never skips.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from procs import RobustMQ, free_port, wait_port

from robustmq.frontends.mqtt.packets import Disconnect, Will

from .clients import MQTT_5, MQTT_311, V3, V5, Paho, Raw

VERSIONS = [pytest.param(V3, id="v3.1.1"), pytest.param(V5, id="v5")]


def mosquitto_binary() -> str:
    """The mosquitto broker, installed with apt-get if missing (fails loudly if that fails)."""
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    if shutil.which("apt-get") is None:
        pytest.fail("mosquitto is not installed and apt-get is not available: apt-get install -y mosquitto")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(["apt-get", "install", "-y", "mosquitto"], capture_output=True, env=env, timeout=300)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=300)
        res = subprocess.run(["apt-get", "install", "-y", "mosquitto"], capture_output=True, env=env,
                             timeout=300)
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    pytest.fail("could not install mosquitto with apt-get: " + res.stderr.decode(errors="replace")[-500:])


class Mosquitto:
    """A mosquitto on 127.0.0.1:<free port>, anonymous, no persistence, its config in a temp dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mosquitto-test-")
        os.chmod(self.dir, 0o755)  # mosquitto drops root for its own user and must read the config
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        conf = Path(self.dir) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "log_dest stderr\nlog_type error\nlog_type warning\n")
        os.chmod(conf, 0o644)
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def robustmq_port() -> Iterator[int]:
    s = RobustMQ(mqtt=True).start()
    yield s.mqtt_port
    s.cleanup()


@pytest.fixture(scope="module")
def mosquitto_port() -> Iterator[int]:
    m = Mosquitto().start()
    yield m.port
    m.stop()


@pytest.fixture(params=["robustmq", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def port(broker: str, request: pytest.FixtureRequest) -> int:
    return request.getfixturevalue(f"{broker}_port")


def uniq(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def drain(c: Paho, wait: float = 0.4) -> list:
    """Every message that arrives within `wait` seconds."""
    got = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(c.next(left))
        except queue.Empty:
            break
    return got


# ------------------------------------------------------------------------------------ QoS
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_at_each_qos(port: int, version: int, qos: int) -> None:
    topic = f"{uniq('q')}/data"
    sub = Paho(port, version, uniq("sub"))
    pub = Paho(port, version, uniq("pub"))
    try:
        sub.subscribe(topic, 2)
        for i in range(5):
            pub.publish(topic, b"m%d" % i, qos)
        got = [sub.next() for _ in range(5)]
        assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == \
            [(topic, b"m%d" % i, qos, False) for i in range(5)]
        # granted QoS 0 caps delivery at 0
        low = Paho(port, version, uniq("low"))
        low.subscribe(topic, 0)
        pub.publish(topic, b"capped", qos)
        assert low.next().qos == 0
        assert sub.next().qos == qos
        low.close()
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------------------------ wildcards
@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards(port: int, version: int) -> None:
    root = uniq("w")
    sub = Paho(port, version, uniq("sub"))
    pub = Paho(port, version, uniq("pub"))
    try:
        sub.subscribe(f"{root}/+/t", 1)
        sub.subscribe(f"{root}/x/#", 1)
        for t in (f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}/a/b/t", f"{root}/a", f"{root}//t"):
            pub.publish(t, t.encode(), 1)
        got = sorted(m.topic for m in drain(sub))
        assert got == sorted([f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}//t"])
        sub.unsubscribe(f"{root}/x/#")
        pub.publish(f"{root}/x/q", b"gone", 1)
        assert sub.nothing()
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_skip_leading_wildcards(port: int, version: int) -> None:
    name = uniq("$app")
    wide = Paho(port, version, uniq("sub"))
    exact = Paho(port, version, uniq("sub"))
    pub = Paho(port, version, uniq("pub"))
    try:
        wide.subscribe("#", 0)
        wide.subscribe("+/status", 0)
        exact.subscribe(f"{name}/#", 0)
        exact.subscribe("$nosuch/+", 0)
        pub.publish(f"{name}/status", b"hidden", 1)
        assert exact.next().payload == b"hidden"
        # mosquitto publishes $SYS/...; neither broker may hand a $ topic to '#' or '+/...'
        assert [m.topic for m in drain(wide, 0.5) if m.topic.startswith("$")] == []
    finally:
        wide.close()
        exact.close()
        pub.close()


# ------------------------------------------------------------------------------------ retained
@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_deliver_clear(port: int, version: int) -> None:
    root = uniq("ret")
    topic = f"{root}/state"
    pub = Paho(port, version, uniq("pub"))
    try:
        pub.publish(topic, b"off", 1, retain=True)
        pub.publish(topic, b"on", 1, retain=True)  # replaces the first
        sub = Paho(port, version, uniq("sub"))
        sub.subscribe(f"{root}/#", 1)
        m = sub.next()
        assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"on", True, 1)
        assert sub.nothing()
        pub.publish(topic, b"live", 1, retain=True)  # a live copy goes out without the retain flag
        m = sub.next()
        assert (m.payload, m.retain) == (b"live", False)
        pub.publish(topic, b"", 1, retain=True)  # clears it; delivered live as an empty message
        m = sub.next()
        assert (m.payload, m.retain) == (b"", False)
        sub.close()
        again = Paho(port, version, uniq("sub"))
        again.subscribe(f"{root}/#", 1)
        assert again.nothing(0.5)
        again.close()
    finally:
        pub.close()


# ------------------------------------------------------------------------------------ will
@pytest.mark.parametrize("version", [pytest.param(MQTT_311, id="v3.1.1"), pytest.param(MQTT_5, id="v5")])
def test_will_on_abrupt_close_not_on_disconnect(port: int, version: int) -> None:
    topic = uniq("will/")
    sub = Paho(port, V5, uniq("sub"))
    try:
        sub.subscribe(topic, 1)
        polite = Raw(port, version)
        polite.connect(uniq("w"), will=Will(topic, b"polite", 1))
        polite.send(Disconnect())
        assert polite.closed_within(3)[0]
        assert sub.nothing(0.5)
        rude = Raw(port, version)
        rude.connect(uniq("w"), will=Will(topic, b"gone", 1))
        rude.close()
        m = sub.next()
        assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"gone", 1, False)
        assert sub.nothing()
    finally:
        sub.close()


# ------------------------------------------------------------------------------------ shared
@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription_each_message_once_per_group(port: int, version: int) -> None:
    topic = f"{uniq('jobs')}/x"
    a = Paho(port, version, uniq("a"))
    b = Paho(port, version, uniq("b"))
    plain = Paho(port, version, uniq("plain"))
    pub = Paho(port, version, uniq("pub"))
    try:
        a.subscribe(f"$share/g/{topic}", 1)
        b.subscribe(f"$share/g/{topic}", 1)
        plain.subscribe(topic, 1)
        n = 40
        for i in range(n):
            pub.publish(topic, b"%d" % i, 1)
        got_a, got_b = drain(a, 0.8), drain(b, 0.1)
        shared = sorted(int(m.payload) for m in got_a + got_b)
        assert shared == list(range(n))  # every message once across the group
        assert got_a and got_b  # and the group shares the work
        assert all(m.topic == topic for m in got_a + got_b)  # delivered on the real topic
        assert sorted(int(m.payload) for m in drain(plain, 0.2)) == list(range(n))
    finally:
        for c in (a, b, plain, pub):
            c.close()


# ------------------------------------------------------------------------------------ v5 properties
def test_v5_user_properties_round_trip(port: int) -> None:
    topic = f"{uniq('props')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    v3 = Paho(port, V3, uniq("v3"))
    try:
        sub.subscribe(topic, 1)
        v3.subscribe(topic, 1)
        props = [("unit", "lux"), ("zone", "a"), ("unit", "raw")]  # order and repeats are kept
        pub.publish(topic, b"42", 1, user_properties=props)
        m = sub.next()
        assert m.payload == b"42"
        assert getattr(m.properties, "UserProperty", None) == props
        assert v3.next().payload == b"42"  # a 3.1.1 subscriber gets the message without them
    finally:
        for c in (sub, pub, v3):
            c.close()


def test_v5_publish_properties_forwarded(broker: str, port: int) -> None:
    """MQTT 5 §3.3.2.3: Payload Format Indicator, Content Type, Response Topic and Correlation Data
    reach the subscriber unaltered; Message Expiry Interval is forwarded (less the time it waited)."""
    topic = f"{uniq('props')}/t"
    sub = Paho(port, V5, uniq("sub"))
    pub = Paho(port, V5, uniq("pub"))
    try:
        sub.subscribe(topic, 1)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        props.ContentType = "text/plain"
        props.ResponseTopic = f"{topic}/reply"
        props.CorrelationData = b"cid-1"
        props.MessageExpiryInterval = 60
        pub.c.publish(topic, b"x", 1, False, props).wait_for_publish(5)
        got = sub.next().properties
        seen = {k: getattr(got, k, None) for k in
                ("PayloadFormatIndicator", "ContentType", "ResponseTopic", "CorrelationData")}
        expiry = getattr(got, "MessageExpiryInterval", None)
        ok = seen == {"PayloadFormatIndicator": 1, "ContentType": "text/plain",
                      "ResponseTopic": f"{topic}/reply", "CorrelationData": b"cid-1"} \
            and expiry is not None and 58 <= expiry <= 60
        assert ok, (seen, expiry)
    finally:
        sub.close()
        pub.close()


def test_v5_expired_retained_message_is_not_delivered(broker: str, port: int) -> None:
    """MQTT 5 §3.3.2.3.3: a retained message whose Message Expiry Interval has passed is not sent to a
    new subscriber; one still within it is, with the remaining interval."""
    root = uniq("exp")
    pub = Paho(port, V5, uniq("pub"))
    try:
        for leaf, seconds in (("short", 1), ("long", 60)):
            props = PahoProperties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = seconds
            pub.c.publish(f"{root}/{leaf}", leaf.encode(), 1, True, props).wait_for_publish(5)
        time.sleep(2.2)
        sub = Paho(port, V5, uniq("sub"))
        sub.subscribe(f"{root}/#", 1)
        m = sub.next()
        assert (m.topic, m.payload, m.retain) == (f"{root}/long", b"long", True)
        assert 55 <= m.properties.MessageExpiryInterval <= 60
        assert sub.nothing(0.5)
        sub.close()
    finally:
        pub.close()
