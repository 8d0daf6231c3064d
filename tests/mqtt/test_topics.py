"""Topic <-> subject mapping (SPEC §5, nats-server's rules), filters, `$share`, `$` topics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.frontends.mqtt.topics import (
    SharedFilter,
    filter_to_subject,
    filter_to_subjects,
    is_dollar_topic,
    split_shared,
    subject_to_topic,
    topic_matches,
    topic_to_subject,
    valid_topic_filter,
    valid_topic_name,
)

# topic name -> subject, and back again
NAMES = [
    ("sensors/room1/temp", "sensors.room1.temp"),
    ("a", "a"),
    ("a/b", "a.b"),
    ("/", "/./"),
    ("//", "/././"),
    ("/a", "/.a"),
    ("a/", "a./"),
    ("a//b", "a./.b"),
    ("a///b", "a././.b"),
    ("/a/b/", "/.a.b./"),
    ("a.b", "a//b"),
    ("a.b/c", "a//b.c"),
    ("a/.b", "a.//b"),
    (".", "//"),
    ("..", "////"),
    ("a./", "a//./"),
    ("$SYS/broker/load", "$SYS.broker.load"),
    ("ø/日本", "ø.日本"),
    ("a*b/c>d", "a*b.c>d"),  # `*` and `>` inside a level are literal in NATS too
]


@pytest.mark.parametrize(("topic", "subject"), NAMES)
def test_topic_subject_both_ways(topic: str, subject: str) -> None:
    assert topic_to_subject(topic) == subject
    assert subject_to_topic(subject) == topic


@pytest.mark.parametrize("topic", ["a b", "a/b c", "tab\there", "new\nline", "a/*/b", ">", "a/>", "*", ""])
def test_topics_without_a_subject(topic: str) -> None:
    assert topic_to_subject(topic) is None


FILTERS = [
    ("a/+/c", "a.*.c", ["a.*.c"]),
    ("+", "*", ["*"]),
    ("#", ">", [">"]),
    ("a/#", "a.>", ["a.>", "a"]),  # MQTT's `a/#` matches `a` itself too
    ("+/+/#", "*.*.>", ["*.*.>", "*.*"]),
    ("/+", "/.*", ["/.*"]),
    ("a//#", "a./.>", ["a./.>", "a./"]),
    ("a.b/+", "a//b.*", ["a//b.*"]),
    ("$SYS/#", "$SYS.>", ["$SYS.>", "$SYS"]),
]


@pytest.mark.parametrize(("filter_", "subject", "subjects"), FILTERS)
def test_filter_to_subject(filter_: str, subject: str, subjects: list[str]) -> None:
    assert valid_topic_filter(filter_)
    assert filter_to_subject(filter_) == subject
    assert filter_to_subjects(filter_) == subjects


@pytest.mark.parametrize("filter_", ["a b/#", "a/*", "> /x"])
def test_filters_without_a_subject(filter_: str) -> None:
    assert filter_to_subject(filter_) is None and filter_to_subjects(filter_) is None


@pytest.mark.parametrize(("topic", "ok"), [
    ("a/b", True), ("/", True), ("$SYS/x", True), ("a b", True), ("", False), ("a/+", False),
    ("#", False), ("a+b", False), ("a\x00b", False), ("x" * 65535, True), ("x" * 65536, False),
    ("é" * 32768, False),  # 65536 bytes in UTF-8
])
def test_valid_topic_name(topic: str, ok: bool) -> None:
    assert valid_topic_name(topic) is ok


@pytest.mark.parametrize(("filter_", "ok"), [
    ("a/b", True), ("#", True), ("+", True), ("a/#", True), ("+/+/#", True), ("/#", True), ("a//+", True),
    ("", False), ("a/#/b", False), ("a#", False), ("a/b#", False), ("a+", False), ("a/+b/c", False),
    ("##", False), ("a\x00", False), ("$share/g/a", True),
])
def test_valid_topic_filter(filter_: str, ok: bool) -> None:
    assert valid_topic_filter(filter_) is ok


@pytest.mark.parametrize(("filter_", "want"), [
    ("$share/g/a/b", SharedFilter("g", "a/b")),
    ("$share/group-1/#", SharedFilter("group-1", "#")),
    ("$share/g/+/x", SharedFilter("g", "+/x")),
    ("$share/g//a", SharedFilter("g", "/a")),
    ("$share/g", None),  # no filter
    ("$share/g/", None),  # empty filter
    ("$share//a", None),  # empty group
    ("$share/g+/a", None),
    ("$share/g#/a", None),
    ("$share/g/a/#/b", None),  # the filter is invalid
    ("a/b", None),
    ("$sharex/g/a", None),
])
def test_split_shared(filter_: str, want: SharedFilter | None) -> None:
    assert split_shared(filter_) == want


@pytest.mark.parametrize(("filter_", "topic", "match"), [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a/", True),  # an empty level is a level
    ("+/+", "/a", True),
    ("a/#", "a", True),  # `#` includes the parent level
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),
    ("#", "a/b", True),
    ("+", "a", True),
    ("+", "a/b", False),
    ("#", "$SYS/x", False),  # `$` topics are not matched by a leading wildcard
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True),
    ("$SYS/+", "$SYS/x", True),
    ("a/#", "a/$x", True),  # only the first level's `$` matters
])
def test_topic_matches(filter_: str, topic: str, match: bool) -> None:
    assert topic_matches(filter_, topic) is match


def test_dollar_topics() -> None:
    assert is_dollar_topic("$SYS/a") and is_dollar_topic("$") and not is_dollar_topic("a/$")
    assert not is_dollar_topic("")


_LEVEL = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="/+#"),
                 max_size=6).filter(lambda s: s not in ("*", ">"))


@given(st.lists(_LEVEL, min_size=1, max_size=6))
def test_mapping_round_trips(levels: list[str]) -> None:
    topic = "/".join(levels)
    if not topic:
        return
    subject = topic_to_subject(topic)
    assert subject is not None
    assert subject_to_topic(subject) == topic
    # a one-level filter of the same topic maps to the same subject (no wildcards, same rules)
    assert filter_to_subject(topic) == subject
