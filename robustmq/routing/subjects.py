"""Subject validation, the subscription trie with a match cache, and MQTT topic <-> subject mapping."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

_BAD_CHARS = frozenset(" \t\r\n")


def valid_publish_subject(subject: str) -> bool:
    """A literal subject: non-empty tokens, no wildcards, no whitespace."""
    if not subject or subject[0] == "." or subject[-1] == ".":
        return False
    for tok in subject.split("."):
        if not tok or tok == "*" or tok == ">":
            return False
        if _BAD_CHARS.intersection(tok):
            return False
    return True


def valid_subscribe_subject(subject: str) -> bool:
    """A filter: `*` matches one token, `>` (last token only) one or more."""
    if not subject or subject[0] == "." or subject[-1] == ".":
        return False
    toks = subject.split(".")
    last = len(toks) - 1
    for i, tok in enumerate(toks):
        if not tok or _BAD_CHARS.intersection(tok):
            return False
        if tok == ">" and i != last:
            return False
    return True


def is_literal(subject: str) -> bool:
    return "*" not in subject.split(".") and ">" not in subject.split(".")


def subject_matches(filter_: str, subject: str) -> bool:
    """True when the (possibly wildcard) filter matches the literal subject."""
    f = filter_.split(".")
    s = subject.split(".")
    for i, tok in enumerate(f):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok != "*" and tok != s[i]:
            return False
    return len(f) == len(s)


class SubjectPatterns:
    """A fixed set of filters (e.g. ephemeral subjects) with a cached `matches(subject)`."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = list(patterns)
        self._cache: dict[str, bool] = {}
        # `a.b.>` patterns are plain prefix tests, the common case (`_INBOX.>`)
        simple = [p for p in self.patterns if p.endswith(".>") and not {"*", ">"} & set(p[:-2].split("."))]
        self._prefixes = tuple(p[:-1] for p in simple)
        self._others = [p for p in self.patterns if p not in simple]

    def matches(self, subject: str) -> bool:
        if self._prefixes and subject.startswith(self._prefixes):
            return True  # a valid literal subject never ends with '.', so a token follows the prefix
        if not self._others:
            return False
        r = self._cache.get(subject)
        if r is None:
            r = any(subject_matches(p, subject) for p in self._others)
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[subject] = r
        return r


class _Node:
    __slots__ = ("children", "fwc", "psubs", "pwc", "qsubs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.pwc: _Node | None = None  # '*'
        self.fwc: _Node | None = None  # '>'
        self.psubs: list[Any] = []
        self.qsubs: dict[str, list[Any]] = {}

    def empty(self) -> bool:
        return not (self.children or self.pwc or self.fwc or self.psubs or self.qsubs)


class MatchResult:
    __slots__ = ("psubs", "qsubs")

    def __init__(self, psubs: list[Any], qsubs: list[list[Any]]) -> None:
        self.psubs = psubs
        self.qsubs = qsubs


EMPTY = MatchResult([], [])


class SubjectTrie:
    """Subscriptions by subject filter. `match` is one dict lookup for a cached literal subject.

    Any object with `.subject` and `.queue` (str | None) can be stored.
    """

    CACHE_MAX = 4096

    def __init__(self) -> None:
        self.root = _Node()
        self.cache: dict[str, MatchResult] = {}
        # parent subject -> result, for parents whose match cannot depend on the last token (no
        # literal children where it would be matched). Unique inbox subjects (`_INBOX.x.17`) hit it.
        self.pcache: dict[str, MatchResult] = {}
        self.count = 0

    def insert(self, sub: Any) -> None:
        node = self.root
        for tok in sub.subject.split("."):
            if tok == "*":
                if node.pwc is None:
                    node.pwc = _Node()
                node = node.pwc
            elif tok == ">":
                if node.fwc is None:
                    node.fwc = _Node()
                node = node.fwc
            else:
                nxt = node.children.get(tok)
                if nxt is None:
                    nxt = node.children[tok] = _Node()
                node = nxt
        if sub.queue:
            node.qsubs.setdefault(sub.queue, []).append(sub)
        else:
            node.psubs.append(sub)
        self.count += 1
        self.cache.clear()
        self.pcache.clear()

    def remove(self, sub: Any) -> bool:
        path: list[tuple[_Node, str]] = []
        node = self.root
        for tok in sub.subject.split("."):
            if tok == "*":
                nxt = node.pwc
            elif tok == ">":
                nxt = node.fwc
            else:
                nxt = node.children.get(tok)
            if nxt is None:
                return False
            path.append((node, tok))
            node = nxt
        try:
            if sub.queue:
                members = node.qsubs[sub.queue]
                members.remove(sub)
                if not members:
                    del node.qsubs[sub.queue]
            else:
                node.psubs.remove(sub)
        except (KeyError, ValueError):
            return False
        self.count -= 1
        self.cache.clear()
        self.pcache.clear()
        # prune empty nodes so churned subjects do not leak memory
        while path and node.empty():
            parent, tok = path.pop()
            if tok == "*":
                parent.pwc = None
            elif tok == ">":
                parent.fwc = None
            else:
                del parent.children[tok]
            node = parent
        return True

    def all(self) -> Iterator[Any]:
        """Every stored subscription (depth-first)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield from node.psubs
            for members in node.qsubs.values():
                yield from members
            stack.extend(node.children.values())
            if node.pwc is not None:
                stack.append(node.pwc)
            if node.fwc is not None:
                stack.append(node.fwc)

    def match(self, subject: str, cache: bool = True) -> MatchResult:
        r = self.cache.get(subject)
        if r is not None:
            return r
        parent, dot, last = subject.rpartition(".")
        if dot:
            if not last:
                return EMPTY  # `a.`, `.`: a subject with an empty token matches nothing, as in nats-server
            r = self.pcache.get(parent)  # (never holds a parent with an empty token: see below)
            if r is not None:
                return r
        toks = subject.split(".")
        if "" in toks:  # `a..b`, `.a` (a non-pedantic client's publish): nothing, not even `>`
            return EMPTY
        psubs: list[Any] = []
        qmap: dict[str, list[Any]] = {}
        n = len(toks)
        last_literal = False  # a node that matches the next-to-last level has literal children
        # iterative walk; literal child is pushed last so it is visited before the '*' sibling
        stack = [(self.root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                if node.psubs:
                    psubs.extend(node.psubs)
                for q, members in node.qsubs.items():
                    qmap.setdefault(q, []).extend(members)
                continue
            fwc = node.fwc
            if fwc is not None:
                if fwc.psubs:
                    psubs.extend(fwc.psubs)
                for q, members in fwc.qsubs.items():
                    qmap.setdefault(q, []).extend(members)
            if node.pwc is not None:
                stack.append((node.pwc, i + 1))
            if i == n - 1 and node.children:
                last_literal = True
            child = node.children.get(toks[i])
            if child is not None:
                stack.append((child, i + 1))
        r = MatchResult(psubs, list(qmap.values())) if (psubs or qmap) else EMPTY
        if dot and not last_literal:
            if len(self.pcache) >= self.CACHE_MAX:
                self.pcache.clear()
            self.pcache[parent] = r
        if not cache:
            return r
        if len(self.cache) >= self.CACHE_MAX:
            self.cache.clear()
        self.cache[subject] = r
        return r


def pick(members: list[Any]) -> Any:
    return members[random.randrange(len(members))] if len(members) > 1 else members[0]
