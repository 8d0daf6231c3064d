"""Subject validation, pattern sets and the subscription trie."""

from __future__ import annotations

import pytest

from robustmq.routing.subjects import (
    SubjectPatterns,
    SubjectTrie,
    subject_matches,
    valid_publish_subject,
    valid_subscribe_subject,
)


class Sub:
    def __init__(self, subject: str, queue: str | None = None) -> None:
        self.subject = subject
        self.queue = queue

    def __repr__(self) -> str:
        return f"Sub({self.subject!r}, {self.queue!r})"


@pytest.mark.parametrize("s,ok", [("a", True), ("a.b.c", True), ("a..b", False), (".a", False),
                                  ("a.", False), ("a.*", False), ("a.>", False), ("", False),
                                  ("a b", False), ("$mq9.AI.X", True)])
def test_publish_subjects(s: str, ok: bool) -> None:
    assert valid_publish_subject(s) is ok


@pytest.mark.parametrize("s,ok", [("a.*", True), ("a.>", True), (">", True), ("*", True),
                                  ("a.>.b", False), ("a..b", False), ("a.*.c", True), ("", False)])
def test_subscribe_subjects(s: str, ok: bool) -> None:
    assert valid_subscribe_subject(s) is ok


@pytest.mark.parametrize("f,s,ok", [("a.*", "a.b", True), ("a.*", "a.b.c", False), ("a.>", "a.b.c", True),
                                    ("a.>", "a", False), (">", "x", True), ("a.*.c", "a.b.c", True),
                                    ("a.b", "a.b", True), ("a.b", "a.c", False)])
def test_subject_matches(f: str, s: str, ok: bool) -> None:
    assert subject_matches(f, s) is ok


def test_trie_matches_like_the_reference_function() -> None:
    filters = ["a", "a.b", "a.*", "a.>", "*.b", ">", "a.*.c", "*.*.*", "x.y.z", "a.b.>"]
    trie = SubjectTrie()
    subs = [Sub(f) for f in filters]
    for s in subs:
        trie.insert(s)
    for subject in ["a", "a.b", "a.b.c", "x.y.z", "q", "a.c", "b.b", "a.x.c.d"]:
        got = sorted(s.subject for s in trie.match(subject).psubs)
        want = sorted(f for f in filters if subject_matches(f, subject))
        assert got == want, subject


def test_queue_groups_grouped_by_name_across_nodes() -> None:
    trie = SubjectTrie()
    a, b, c = Sub("q.*", "g"), Sub("q.x", "g"), Sub("q.x", "h")
    for s in (a, b, c):
        trie.insert(s)
    groups = trie.match("q.x").qsubs
    assert sorted(len(g) for g in groups) == [1, 2]


def test_remove_invalidates_cache_and_prunes() -> None:
    trie = SubjectTrie()
    s = Sub("a.b.c")
    trie.insert(s)
    assert trie.match("a.b.c").psubs == [s]
    assert trie.remove(s)
    assert trie.match("a.b.c").psubs == []
    assert trie.root.empty()
    assert not trie.remove(s)


def test_uncached_match_does_not_fill_the_cache() -> None:
    trie = SubjectTrie()
    trie.insert(Sub("_INBOX.x.*"))
    for i in range(100):
        assert len(trie.match(f"_INBOX.x.{i}", cache=False).psubs) == 1
    assert trie.cache == {}


def test_pattern_sets() -> None:
    p = SubjectPatterns(["_INBOX.>", "tmp.*.x"])
    assert p.matches("_INBOX.abc.1")
    assert not p.matches("_INBOX")
    assert p.matches("tmp.a.x")
    assert not p.matches("tmp.a.y")


def test_parent_cache_respects_literal_siblings() -> None:
    trie = SubjectTrie()
    w, lit = Sub("_INBOX.x.*"), Sub("_INBOX.x.7")
    trie.insert(w)
    assert trie.match("_INBOX.x.1", cache=False).psubs == [w]
    assert "_INBOX.x" in trie.pcache
    trie.insert(lit)  # a literal child makes the last token matter again
    assert sorted(map(repr, trie.match("_INBOX.x.7", cache=False).psubs)) == sorted(map(repr, [w, lit]))
    assert trie.match("_INBOX.x.8", cache=False).psubs == [w]
    assert "_INBOX.x" not in trie.pcache


def test_parent_cache_randomised_against_reference() -> None:
    import random

    rnd = random.Random(7)
    toks = ["a", "b", "c", "*"]
    filters = {".".join(rnd.choice(toks) for _ in range(rnd.randint(1, 3))) for _ in range(30)}
    filters |= {f + ".>" for f in list(filters)[:5]}
    trie = SubjectTrie()
    for f in filters:
        trie.insert(Sub(f))
    for _ in range(500):
        subject = ".".join(rnd.choice(["a", "b", "c"]) for _ in range(rnd.randint(1, 4)))
        got = sorted(s.subject for s in trie.match(subject, cache=rnd.random() < 0.5).psubs)
        assert got == sorted(f for f in filters if subject_matches(f, subject)), subject


@pytest.mark.parametrize("subject", ["a..b", "a.", ".a", ".", "a.b.", "..", ""])
def test_subjects_with_an_empty_token_match_nothing(subject: str) -> None:
    """A non-pedantic client may publish `a..b`; nats-server delivers it to no subscription (not to
    `>`, `a.>`, `a.*`). Neither does the trie, and the parent cache never answers for them."""
    trie = SubjectTrie()
    for f in (">", "a.>", "a.*", "*.a", "a.*.b", "*", "*.*", "a.b.>"):
        trie.insert(Sub(f))
    assert trie.match("a.x").psubs  # fills the parent cache for "a"
    assert trie.match("x.a").psubs
    for cache in (True, False, True):
        assert not trie.match(subject, cache=cache).psubs, subject
    assert "" not in trie.pcache and "a." not in trie.pcache
    assert [s.subject for s in trie.match("a.b").psubs]  # valid subjects still match
