"""Test clients for the MQTT front-end: paho-mqtt 2.x (threaded, every wait bounded), a raw socket
client built on our own codec for what paho cannot do (abrupt close, silence, malformed bytes), and
Debian's mosquitto_sub / mosquitto_pub command-line clients as subprocesses."""

from __future__ import annotations

import queue
import secrets
import socket
import subprocess
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from robustmq.frontends.mqtt.codec import MqttParser, serialize
from robustmq.frontends.mqtt.packets import MQTT_5, MQTT_311, Connect, Event, Packet

from .brokers import debian_binary

V3 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
WAIT = 5.0
RAW_VERSIONS = [pytest.param(MQTT_311, id="v3.1.1"), pytest.param(MQTT_5, id="v5")]


def uniq(prefix: str = "t") -> str:
    """A name no other test uses (topics, client ids, mailbox names)."""
    return f"{prefix}{secrets.token_hex(4)}"


def nothing_in(q: queue.Queue[Any], wait: float) -> bool:
    """True when nothing arrives in `q` within `wait` seconds."""
    try:
        q.get(timeout=wait)
    except queue.Empty:
        return True
    return False


class Paho:
    """One paho client on its own network thread; callbacks land in queues read with timeouts."""

    def __init__(self, port: int, version: int = V3, client_id: str = "", *, username: str | None = None,
                 password: str | None = None, will: tuple[str, bytes, int, bool] | None = None,
                 keepalive: int = 30, connect: bool = True, clean: bool = True,
                 session_expiry: int | None = None, connect_properties: dict[str, Any] | None = None) -> None:
        self.port = port
        self.connect_properties = connect_properties or {}  # more v5 CONNECT properties, by paho name
        self.version = version
        self.keepalive = keepalive
        self.clean = clean  # 3.1.1 clean session / 5.0 clean start
        self.session_expiry = session_expiry  # 5.0 Session Expiry Interval in CONNECT
        kw: dict[str, Any] = {"clean_session": clean} if version == V3 else {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kw)
        self.c.reconnect_delay_set(60, 60)  # a test that is cut off must stay cut off
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(*will)
        self.msgs: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.pubacks: dict[int, Any] = {}
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((rc, props, flags))
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, props: self.pubacks.__setitem__(mid, rc)
        if connect:
            rc = self.connect()
            assert not rc.is_failure, rc

    def connect(self) -> Any:
        if self.version == V5:
            props = None
            if self.session_expiry is not None or self.connect_properties:
                props = PahoProperties(PacketTypes.CONNECT)
                if self.session_expiry is not None:
                    props.SessionExpiryInterval = self.session_expiry
                for k, v in self.connect_properties.items():
                    setattr(props, k, v)
            self.c.connect("127.0.0.1", self.port, self.keepalive, clean_start=self.clean, properties=props)
        else:
            self.c.connect("127.0.0.1", self.port, self.keepalive)
        self.c.loop_start()
        rc, self.connack_props, self.connack_flags = self.connacks.get(timeout=WAIT)
        return rc

    def subscribe(self, topic: str, qos: int = 0) -> list[Any]:
        self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=WAIT)

    def unsubscribe(self, topic: str) -> None:
        info = self.c.unsubscribe(topic)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                user_properties: list[tuple[str, str]] | None = None) -> Any:
        props = None
        if user_properties:
            props = PahoProperties(PacketTypes.PUBLISH)
            props.UserProperty = user_properties
        info = self.c.publish(topic, payload, qos, retain, props)
        if qos:
            info.wait_for_publish(WAIT)
            assert info.is_published(), f"no ack for {topic}"
            return self.pubacks.get(info.mid)
        return None

    def next(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        return self.msgs.get(timeout=timeout)

    def nothing(self, wait: float = 0.3) -> bool:
        return nothing_in(self.msgs, wait)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Raw:
    """A blocking socket speaking through our codec: CONNECT, then any bytes at all."""

    def __init__(self, port: int, version: int = MQTT_311) -> None:
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.parser = MqttParser(version, server=False)
        self.events: list[Event] = []

    def send(self, pkt: Packet) -> None:
        self.sock.sendall(serialize(pkt, self.version))

    def connect(self, client_id: str, **kw: Any) -> Event:
        self.send(Connect(self.version, client_id, **kw))
        return self.read()

    def read(self, timeout: float = WAIT) -> Event:
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.events.extend(self.parser.feed(data))
        return self.events.pop(0)

    def closed_within(self, timeout: float) -> tuple[bool, list[Event]]:
        """Whether the server closes the socket within `timeout`, and what it sent before that."""
        got: list[Event] = list(self.events)
        self.events.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return True, got
            if not data:
                return True, got
            got.extend(self.parser.feed(data))
        return False, got

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------------------------ mosquitto CLI
CLI_FORMAT = r"MSG\t%t\t%q\t%r\t%x\t%E\t%S\t%C\t%R\t%P"  # mosquitto_sub -F: one line per message


class CliMessage(NamedTuple):
    """One message as mosquitto_sub printed it (v5 properties are None / empty when absent)."""

    topic: str
    qos: int
    retain: bool
    payload: bytes
    expiry: int | None  # Message Expiry Interval
    sub_id: str  # Subscription Identifier(s) as printed
    content_type: str
    response_topic: str
    user: list[tuple[str, str]]  # printed as "k:v k:v": keys and values must not hold ':' or ' '


def _parse_cli_line(line: str) -> CliMessage:
    _, topic, qos, retain, hexpayload, expiry, sub_id, ctype, resp, user = line.split("\t", 9)
    pairs = [tuple(kv.split(":", 1)) for kv in user.split(" ") if kv]
    return CliMessage(topic, int(qos), retain == "1", bytes.fromhex(hexpayload), int(expiry) if expiry else None,
                      sub_id, ctype, resp, [(k, v) for k, v in pairs])


class MosqSub:
    """Debian's `mosquitto_sub` as a subprocess (`-d` debug output, line-buffered through stdbuf, so
    the SUBACK is seen before a test publishes). Bounded: `-W wait` ends it by itself."""

    def __init__(self, port: int, version: str, topics: list[str], *args: str, qos: int = 1,
                 count: int | None = None, wait: int = 15, ready: bool = True) -> None:
        cmd = ["stdbuf", "-oL", debian_binary("mosquitto_sub", "mosquitto-clients"), "-h", "127.0.0.1",
               "-p", str(port), "-V", version, "-d", "-q", str(qos), "-W", str(wait), "-F", CLI_FORMAT]
        if count is not None:
            cmd += ["-C", str(count)]
        for t in topics:
            cmd += ["-t", t]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.msgs: queue.Queue[CliMessage] = queue.Queue()
        self.debug: list[str] = []  # every other line: "Client x received SUBACK", "sending PUBREC", ...
        self._event = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if ready:  # printed by its on_subscribe callback, after the SUBACK
            self.wait_for("Subscribed (mid")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("MSG\t"):
                self.msgs.put(_parse_cli_line(line))
            else:
                with self._event:
                    self.debug.append(line)
                    self._event.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        """The first debug line holding `text` (fails after `timeout` or when the process ends)."""
        deadline = time.monotonic() + timeout
        with self._event:
            while True:
                for line in self.debug:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"mosquitto_sub never printed {text!r}: {self.debug} "
                                         f"{self.stderr_text()}")
                self._event.wait(min(left, 0.1))

    def next(self, timeout: float = WAIT) -> CliMessage:
        return self.msgs.get(timeout=timeout)

    def take(self, n: int, timeout: float = WAIT) -> list[CliMessage]:
        deadline = time.monotonic() + timeout
        return [self.msgs.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def nothing(self, wait: float = 0.3) -> bool:
        return nothing_in(self.msgs, wait)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for it to exit by itself (-C count reached, -E, -W); its exit code."""
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def stderr_text(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the socket closes without DISCONNECT (a will is due)."""
        self.proc.kill()
        self.proc.wait(WAIT)

    def stop(self) -> None:
        """SIGTERM: mosquitto_sub sends DISCONNECT and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self._reader.join(WAIT)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def mosq_pub(port: int, version: str, topic: str, payload: bytes | None, *args: str, qos: int = 0,
             retain: bool = False, stdin_lines: bool = False, timeout: float = WAIT
             ) -> subprocess.CompletedProcess[str]:
    """Debian's `mosquitto_pub -d`: returns when the broker has acknowledged (QoS 1/2) or refused.
    `payload` None sends a null message (-n); with stdin_lines each line of it is one message (-l)."""
    cmd = [debian_binary("mosquitto_pub", "mosquitto-clients"), "-h", "127.0.0.1", "-p", str(port),
           "-V", version, "-d", "-t", topic, "-q", str(qos)]
    data: bytes | None = None
    if payload is None:
        cmd.append("-n")
    elif stdin_lines:
        cmd.append("-l")
        data = payload
    else:
        cmd.append("-s")  # the payload from stdin: any bytes at all
        data = payload
    if retain:
        cmd.append("-r")
    cmd += list(args)
    res = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(errors="replace"),
                                       res.stderr.decode(errors="replace"))


__all__ = ["MQTT_5", "MQTT_311", "V3", "V5", "WAIT", "CliMessage", "MosqSub", "Paho", "Raw", "mosq_pub"]
