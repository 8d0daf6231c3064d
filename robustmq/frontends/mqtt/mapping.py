"""Which subject an MQTT topic or filter uses on the router, and which topic a subject is delivered as.

Everything follows `topics.py` (nats-server's rules, SPEC §5) except topics under `$mq9/`: mq9
mailbox names are dotted (`task.queue`) and a mailbox subject is `$mq9.AI.MAILBOX.MSG.task.queue`,
so there a `.` inside a level stays a `.` instead of becoming `//` (which no mq9 subject has).
`$mq9/AI/MAILBOX/MSG/task.queue` and `$mq9/AI/MAILBOX/MSG/task/queue` both reach that mailbox.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from robustmq.frontends.mqtt.properties import Properties
from robustmq.frontends.mqtt.topics import filter_to_subjects, subject_to_topic, topic_to_subject
from robustmq.routing.contract import Headers

MQ9_TOPIC_PREFIX = "$mq9/"
_NO_SUBJECT_CHARS = frozenset(" \t\r\n\f\v")


def _mq9_subject(topic: str, is_filter: bool) -> str | None:
    tokens = []
    for level in topic.split("/"):
        if not level or not _NO_SUBJECT_CHARS.isdisjoint(level):
            return None
        if is_filter and level in ("+", "#"):
            tokens.append("*" if level == "+" else ">")
        elif level in ("*", ">"):
            return None
        else:
            tokens.append(level)
    return ".".join(tokens)


def publish_subject(topic: str) -> str | None:
    """The subject an MQTT PUBLISH to `topic` goes to; None when the topic has no subject."""
    if topic.startswith(MQ9_TOPIC_PREFIX):
        return _mq9_subject(topic, False)
    return topic_to_subject(topic)


def filter_subjects(filter_: str) -> list[str] | None:
    """The subject filters a (valid, non-shared) MQTT filter subscribes to (`a/#`: `a.>` and `a`)."""
    if filter_.startswith(MQ9_TOPIC_PREFIX):
        subject = _mq9_subject(filter_, True)
        if subject is None:
            return None
        return [subject, subject[:-2]] if subject.endswith(".>") else [subject]
    return filter_to_subjects(filter_)


def delivery_topic(subject: str) -> str:
    """The MQTT topic a message on `subject` is delivered as."""
    return subject_to_topic(subject)


# MQTT 5 PUBLISH properties that have no neutral field travel as headers with these reserved names
# (so a NATS subscriber sees them too, and a record in the log keeps them for a later delivery).
# Correlation data is binary, so it goes as base64; the expiry is an absolute deadline in ms.
H_CONTENT_TYPE = b"mqtt-content-type"
H_CORRELATION = b"mqtt-correlation-data"
H_PAYLOAD_FORMAT = b"mqtt-payload-format"
H_EXPIRES_MS = b"mqtt-expires-ms"
# the Response Topic travels as the reply subject; only one that the subject cannot give back as it
# was written (whitespace, `$mq9/` dots) also travels as this header, so it is forwarded unaltered
# ([MQTT-3.3.2-15])
H_RESPONSE_TOPIC = b"mqtt-response-topic"
_RESERVED = frozenset((H_CONTENT_TYPE, H_CORRELATION, H_PAYLOAD_FORMAT, H_EXPIRES_MS, H_RESPONSE_TOPIC))
# A user property whose name starts with `mqtt-` (any case) could be taken for one of the names above
# (or for this prefix) on its way back; it travels as a header with this prefix added, which the way
# back takes off again, so the server forwards every user property unaltered (MQTT 5 3.3.2.3.7,
# [MQTT-3.3.2-17]) and none can pose as a message property (a user property `mqtt-expires-ms: 1` once
# dropped the message). A NATS publisher's `mqtt-user-<name>` header reaches MQTT 5 as `<name>`.
H_USER_ESCAPE = b"mqtt-user-"


def _user_header(name: str) -> bytes:
    k = name.encode()
    return H_USER_ESCAPE + k if k[:5].lower() == b"mqtt-" else k


def properties_to_headers(props: Properties, now_ms: int) -> Headers | None:
    """A PUBLISH's user properties and message properties as neutral headers."""
    out: Headers = [(_user_header(k), v.encode()) for k, v in props.user_properties]
    if props.content_type is not None:
        out.append((H_CONTENT_TYPE, props.content_type.encode()))
    if props.correlation_data is not None:
        out.append((H_CORRELATION, base64.b64encode(props.correlation_data)))
    if props.payload_format_indicator is not None:
        out.append((H_PAYLOAD_FORMAT, b"%d" % props.payload_format_indicator))
    if props.message_expiry_interval is not None:
        out.append((H_EXPIRES_MS, b"%d" % (now_ms + props.message_expiry_interval * 1000)))
    rt = props.response_topic
    if rt is not None:
        subject = publish_subject(rt)
        if subject is None or delivery_topic(subject) != rt:
            out.append((H_RESPONSE_TOPIC, rt.encode()))
    return out or None


class MessageProperties(NamedTuple):
    user: tuple[tuple[str, str], ...]
    content_type: str | None
    correlation_data: bytes | None
    payload_format: int | None
    expiry_s: int | None  # what is left of the Message Expiry Interval
    expired: bool
    expires_ms: int = 0  # the Message Expiry deadline (ms since the epoch); 0: none
    response_topic: str | None = None  # the Response Topic as written, when the reply subject alters it


NO_MESSAGE_PROPERTIES = MessageProperties((), None, None, None, None, False)


def headers_to_properties(headers: Headers | None, now_ms: int) -> MessageProperties:
    """Neutral headers -> user properties plus the reserved message properties (v5 delivery)."""
    if not headers:
        return NO_MESSAGE_PROPERTIES
    user: list[tuple[str, str]] = []
    content_type = correlation = fmt = expiry = response = None
    expired = False
    expires_ms = 0
    for k, v in headers:
        name = k.lower()
        try:
            if name == H_CONTENT_TYPE:
                content_type = v.decode()
            elif name == H_CORRELATION:
                correlation = base64.b64decode(v, validate=True)
            elif name == H_RESPONSE_TOPIC:
                response = v.decode()
            elif name == H_PAYLOAD_FORMAT:
                fmt = int(v) if v in (b"0", b"1") else None
            elif name == H_EXPIRES_MS:
                expires_ms = int(v)
                left_ms = expires_ms - now_ms
                expired = left_ms <= 0
                expiry = max(0, (left_ms + 999) // 1000)
            elif name.startswith(H_USER_ESCAPE):
                user.append((k[len(H_USER_ESCAPE):].decode(errors="replace"), v.decode(errors="replace")))
            else:
                user.append((k.decode(errors="replace"), v.decode(errors="replace")))
        except (ValueError, binascii.Error):  # a NATS publisher's malformed value: pass it as a user property
            user.append((k.decode(errors="replace"), v.decode(errors="replace")))
    return MessageProperties(tuple(user), content_type, correlation, fmt, expiry, expired, expires_ms,
                             response)
