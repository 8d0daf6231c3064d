"""Retained messages live in the store, not in memory: pages read them back by a prefix scan,
sees changes whose batch is not written yet, and agrees with MQTT matching over every topic."""

from __future__ import annotations

import random

import pytest

from robustmq.core_log import SegmentLog, Store
from robustmq.frontends.mqtt.retained import RetainedMessage, RetainedStore, literal_prefix
from robustmq.frontends.mqtt.topics import topic_matches


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data"))
    yield s
    s.close()


def matching(rs: RetainedStore, filter_: str) -> list[tuple[str, RetainedMessage]]:
    """Every retained message the filter matches, read page by page as a SUBSCRIBE does (small
    pages, so the tests cross page boundaries)."""
    out: list[tuple[str, RetainedMessage]] = []
    after: bytes | None = None
    while True:
        page, after = rs.page(filter_, after, 7)
        out.extend(page)
        if after is None:
            return out


def topics_of(rs: RetainedStore, filter_: str) -> list[str]:
    return [t for t, _ in matching(rs, filter_)]


@pytest.mark.parametrize(("filter_", "prefix"), [
    ("#", ""), ("+", ""), ("+/a", ""), ("a/#", "a"), ("a/b/#", "a/b"), ("a/+/c", "a/"),
    ("a/b/+", "a/b/"), ("/#", ""), ("a//#", "a/"), ("$SYS/#", "$SYS"), ("a/+/#", "a/"),
])
def test_literal_prefix_starts_every_matching_topic(filter_: str, prefix: str) -> None:
    assert literal_prefix(filter_) == prefix


def test_unwritten_changes_are_seen_and_survive_their_write(store) -> None:
    log = SegmentLog(store, writer_thread=False)
    rs = RetainedStore(log)
    rs.set("dev/1/state", b"on", 1, [(b"k", b"v")])
    rs.set("dev/2/state", b"off", 0, None)
    # not written yet: only the overlay knows them
    assert log.get_meta("mqtt.retained", "dev/1/state") is None
    assert topics_of(rs, "dev/+/state") == ["dev/1/state", "dev/2/state"]
    assert rs.get("dev/1/state").headers == [(b"k", b"v")]  # type: ignore[union-attr]
    log.flush()
    assert rs._unwritten == {}  # the write dropped them from memory
    assert topics_of(rs, "dev/+/state") == ["dev/1/state", "dev/2/state"]
    # a clear not written yet hides the stored copy; a replacement shows instead of it
    rs.set("dev/1/state", b"", 0, None)
    rs.set("dev/2/state", b"again", 1, None)
    got = list(matching(rs, "dev/#"))
    assert [(t, m.payload) for t, m in got] == [("dev/2/state", b"again")]
    assert rs.get("dev/1/state") is None
    log.flush()
    assert [(t, m.payload) for t, m in matching(rs, "#")] == [("dev/2/state", b"again")]
    # a new store over the same data (a restart) reads the same
    assert [t for t, _ in matching(RetainedStore(SegmentLog(store, writer_thread=False)), "#")] == ["dev/2/state"]


def test_matching_agrees_with_mqtt_matching_over_every_topic(store) -> None:
    rnd = random.Random(7)
    levels = ["a", "b", "ab", "", "$SYS", "x.y", "c"]
    topics = sorted({"/".join(rnd.choice(levels) for _ in range(rnd.randint(1, 4))) for _ in range(400)})
    log = SegmentLog(store, writer_thread=False)
    rs = RetainedStore(log)
    for i, t in enumerate(topics):
        rs.set(t, b"%d" % i, 0, None)
        if i == len(topics) // 2:
            log.flush()  # half written, half still in the overlay
    filters = ["#", "+", "a/#", "a/+", "+/b", "a/+/#", "$SYS/#", "+/+/+", "ab/#", "/#", "a//#", "a/b"]
    for f in filters:
        want = sorted(t for t in topics if topic_matches(f, t))
        assert sorted(topics_of(rs, f)) == want, f
        assert len(topics_of(rs, f)) == len(set(topics_of(rs, f))), f
    log.flush()
    for f in filters:
        assert topics_of(rs, f) == sorted(t for t in topics if topic_matches(f, t)), f
