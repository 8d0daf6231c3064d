"""Test clients for the MQTT front-end: paho-mqtt 2.x (threaded, every wait bounded) and a raw socket
client built on our own codec for what paho cannot do (abrupt close, silence, malformed bytes)."""

from __future__ import annotations

import queue
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from robustmq.frontends.mqtt.codec import MqttParser, serialize
from robustmq.frontends.mqtt.packets import MQTT_5, MQTT_311, Connect, Event, Packet

V3 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
WAIT = 5.0


class Paho:
    """One paho client on its own network thread; callbacks land in queues read with timeouts."""

    def __init__(self, port: int, version: int = V3, client_id: str = "", *, username: str | None = None,
                 password: str | None = None, will: tuple[str, bytes, int, bool] | None = None,
                 keepalive: int = 30, connect: bool = True, clean: bool = True,
                 session_expiry: int | None = None) -> None:
        self.port = port
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
            if self.session_expiry is not None:
                props = PahoProperties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.session_expiry
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
        try:
            self.msgs.get(timeout=wait)
        except queue.Empty:
            return True
        return False

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


__all__ = ["MQTT_5", "MQTT_311", "V3", "V5", "WAIT", "Paho", "Raw"]
