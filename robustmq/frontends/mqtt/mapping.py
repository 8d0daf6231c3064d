"""Which subject an MQTT topic or filter uses on the router, and which topic a subject is delivered as.

Everything follows `topics.py` (nats-server's rules, SPEC §5) except topics under `$mq9/`: mq9
mailbox names are dotted (`task.queue`) and a mailbox subject is `$mq9.AI.MAILBOX.MSG.task.queue`,
so there a `.` inside a level stays a `.` instead of becoming `//` (which no mq9 subject has).
`$mq9/AI/MAILBOX/MSG/task.queue` and `$mq9/AI/MAILBOX/MSG/task/queue` both reach that mailbox.
"""

from __future__ import annotations

from robustmq.frontends.mqtt.topics import filter_to_subjects, subject_to_topic, topic_to_subject

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
