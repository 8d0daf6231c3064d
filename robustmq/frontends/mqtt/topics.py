"""MQTT topic names and filters: validation, matching, `$share`, and the topic <-> subject mapping.

The mapping follows nats-server's published rules (SPEC §5), so one message has one name in every
protocol: levels are joined by `.`; a `.` inside a level is written `//`; an empty level (leading,
trailing or doubled `/`) is written `/` (`/a` <-> `/.a`, `a/` <-> `a./`, `a//b` <-> `a./.b`); in
filters `+` <-> `*` and `#` <-> `>`. A topic with whitespace, or with a level that is exactly `*` or
`>` (a NATS wildcard, not a literal), has no subject: the functions return None for it.
"""

from __future__ import annotations

from typing import NamedTuple

SHARE_PREFIX = "$share/"
MAX_TOPIC_BYTES = 0xFFFF
_NO_SUBJECT_CHARS = frozenset(" \t\r\n\f\v")  # NATS subjects cannot carry whitespace
_NATS_WILDCARDS = ("*", ">")


class SharedFilter(NamedTuple):
    group: str
    filter: str


def valid_topic_name(topic: str) -> bool:
    """A PUBLISH topic (spec 4.7): non-empty, no wildcards, no U+0000, at most 65535 bytes."""
    return (bool(topic) and "+" not in topic and "#" not in topic and "\x00" not in topic
            and len(topic.encode()) <= MAX_TOPIC_BYTES)


def valid_topic_filter(filter_: str) -> bool:
    """A SUBSCRIBE filter: `+` fills a whole level, `#` a whole last level."""
    if not filter_ or "\x00" in filter_ or len(filter_.encode()) > MAX_TOPIC_BYTES:
        return False
    levels = filter_.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def split_shared(filter_: str) -> SharedFilter | None:
    """`$share/<group>/<filter>` -> (group, filter); None when `filter_` is not a valid shared one.

    Call only for filters that start with SHARE_PREFIX: the group is non-empty and holds no `/`,
    `+` or `#`; the rest is a valid filter (spec 4.8.2)."""
    if not filter_.startswith(SHARE_PREFIX):
        return None
    group, sep, rest = filter_[len(SHARE_PREFIX):].partition("/")
    if not sep or not group or "+" in group or "#" in group or not valid_topic_filter(rest):
        return None
    return SharedFilter(group, rest)


def is_dollar_topic(topic: str) -> bool:
    """Topics starting with `$` are the server's: a filter starting with a wildcard skips them."""
    return topic[:1] == "$"


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT matching (spec 4.7): `+` one level, `#` this level and all below, `$` topics excepted."""
    if topic[:1] == "$" and filter_[:1] in ("+", "#"):
        return False
    f = filter_.split("/")
    t = topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True  # `a/#` matches `a` too: len(t) >= i
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def _level_to_token(level: str) -> str | None:
    if not level:
        return "/"
    if level in _NATS_WILDCARDS or not _NO_SUBJECT_CHARS.isdisjoint(level):
        return None
    return level.replace(".", "//") if "." in level else level


def topic_to_subject(topic: str) -> str | None:
    """The subject of a topic name; None if it has none (see the module docstring)."""
    if "/" not in topic and "." not in topic:  # the common one-level or already-mapped case
        return _level_to_token(topic) if topic else None
    tokens = []
    for level in topic.split("/"):
        tok = _level_to_token(level)
        if tok is None:
            return None
        tokens.append(tok)
    return ".".join(tokens)


def filter_to_subject(filter_: str) -> str | None:
    """The subject filter of a (valid, non-shared) topic filter: `+` -> `*`, `#` -> `>`.

    MQTT's `a/#` also matches `a`; NATS's `a.>` does not: use `filter_to_subjects` to subscribe."""
    tokens = []
    for level in filter_.split("/"):
        if level == "+":
            tokens.append("*")
        elif level == "#":
            tokens.append(">")
        else:
            tok = _level_to_token(level)
            if tok is None:
                return None
            tokens.append(tok)
    return ".".join(tokens)


def filter_to_subjects(filter_: str) -> list[str] | None:
    """The subject filters that together match what `filter_` matches (`a/#` -> `a.>` and `a`)."""
    subject = filter_to_subject(filter_)
    if subject is None:
        return None
    if subject.endswith(".>"):
        return [subject, subject[:-2]]
    return [subject]


def subject_to_topic(subject: str) -> str:
    """The topic of a literal subject: the inverse of topic_to_subject.

    A subject from another protocol may hold a single `/` inside a token (`a/b.c`); it has no
    MQTT spelling of its own and is kept as it is, so it reads as an extra level (`a/b/c`)."""
    if "/" not in subject:
        return subject.replace(".", "/")
    levels = []
    for tok in subject.split("."):
        if tok == "/":
            levels.append("")
        else:
            levels.append(tok.replace("//", "."))
    return "/".join(levels)
