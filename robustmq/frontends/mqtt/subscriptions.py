"""What one MQTT connection holds towards the router and the client: its subscriptions (each a
`routing.contract.Subscription`) and its unacknowledged QoS 1/2 PUBLISHes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from robustmq.frontends.mqtt.packets import Subscription as SubRequest
from robustmq.frontends.mqtt.properties import Properties
from robustmq.frontends.mqtt.writer import fixed_header

if TYPE_CHECKING:
    from robustmq.frontends.mqtt.session import MqttSession


class MqttSubscription:
    """One subject filter of one MQTT subscription (`a/#` is two: `a.>` and `a`)."""

    __slots__ = ("_head", "_head_key", "_subject", "_tb", "_topic", "conn", "delivered", "filter", "max_msgs",
                 "no_local", "qos", "queue", "rap", "sid", "skip_dollar", "sub_id", "subject")

    def __init__(self, conn: MqttSession, subject: str, queue: str | None, filter_: str, inner: str,
                 req: SubRequest, sub_id: int | None) -> None:
        self.conn = conn
        self.subject = subject
        self.queue = queue
        self.filter = filter_  # as the client wrote it (with `$share/<group>/`)
        self.sid = f"{filter_} {subject}"
        self.qos = min(req.qos, 2)
        self.no_local = req.no_local
        self.rap = req.retain_as_published
        self.sub_id = sub_id
        # spec 4.7.2: a filter starting with a wildcard does not match topics starting with `$`
        self.skip_dollar = inner[:1] in ("+", "#")
        self.delivered = 0
        self.max_msgs = 0
        # the subject last delivered and its MQTT topic, as a str and as a PUBLISH's topic field
        self._subject = ""
        self._topic = ""
        self._tb = b""
        self._head = b""  # the last PUBLISH head made for it (publish_head) and what it was made for
        self._head_key = -1

    def set_subject(self, subject: str, topic: str) -> None:
        self._subject = subject
        self._topic = topic
        tb = topic.encode()
        self._tb = len(tb).to_bytes(2, "big") + tb
        self._head_key = -1

    def publish_head(self, first: int, remaining: int, tail: bytes) -> bytes:
        """The start of a PUBLISH of this subscription's current topic: fixed header (`first`
        byte, remaining length), topic, then `tail` (v5 QoS 0: the properties; else b"")."""
        key = (first << 40) | (remaining << 8) | len(tail)  # remaining < 2**28; tail: a few bytes
        if key != self._head_key:
            self._head = fixed_header(first, remaining) + self._tb + tail
            self._head_key = key
        return self._head


class Outgoing:
    """A QoS 1/2 PUBLISH towards the client, until it is acknowledged."""

    __slots__ = ("expires_ms", "payload", "props", "qos", "released", "retain", "sent_at", "seq", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties,
                 sent_at: float = 0.0) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.props = props
        self.released = False  # QoS 2: PUBREC came, PUBREL sent, waiting for PUBCOMP
        self.sent_at = sent_at
        self.seq = 0  # a persistent session's queue entry (`persistent.py`) for it; 0: none
        # the v5 Message Expiry deadline (wall clock, ms) while it waits behind the inflight window:
        # it is dropped if that passes before it is sent, else sent with what is left; 0: none
        self.expires_ms = 0
