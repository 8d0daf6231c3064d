"""Retained messages: the last retained PUBLISH per topic, kept in the log's metadata only.

A retain publish with a payload replaces the topic's message, one with an empty payload clears
it (spec 3.3.1.3). Every change is written to the log's metadata (namespace `mqtt.retained`, key
the topic) in the same batch as the publish, so the PUBACK that waits for that batch also covers
the retained copy, and a restart finds them where they are.

Nothing is loaded at startup and nothing is held in memory but the changes of the batches not yet
written (a subscriber must see a retained message published a moment before, while its batch is
still being written): a million devices each retaining their state cost disk, not memory (SPEC §8).
A SUBSCRIBE reads what it matches from the store: one get for a filter without wildcards, one
ordered scan of the topics under the filter's literal leading levels otherwise (`a/b/+/c` scans
`a/b/…`; a filter starting with a wildcard scans every retained topic, as it must deliver them all).
"""

from __future__ import annotations

import msgspec

from robustmq.core_log import SegmentLog
from robustmq.frontends.mqtt.topics import topic_matches

META_NAMESPACE = "mqtt.retained"


class RetainedMessage(msgspec.Struct, array_like=True):
    """Stored as a msgpack array: a field is only ever added at the end, with a default, so the
    entries an earlier version wrote (without it) still decode."""

    payload: bytes
    qos: int = 0
    headers: list[tuple[bytes, bytes]] | None = None  # v5 user properties, as neutral headers
    reply: str | None = None  # v5 Response Topic, as its subject (sent unaltered, 3.3.2-15)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RetainedMessage)


def _decode(value: bytes) -> RetainedMessage | None:
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError:  # a damaged entry costs only itself
        return None


def literal_prefix(filter_: str) -> str:
    """The leading levels of a filter before its first wildcard: every topic it matches starts so
    (`a/+/b` -> `a/`; `a/#` -> `a`, since `a/#` also matches `a`; `#` -> '')."""
    cut = len(filter_)
    for wc in ("+", "#"):
        i = filter_.find(wc)
        if 0 <= i < cut:
            cut = i
    prefix = filter_[:cut]
    if filter_[cut:cut + 1] == "#" and prefix.endswith("/"):
        prefix = prefix[:-1]
    return prefix


class RetainedStore:
    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        # changes in batches not written yet: topic -> (batch, message or None for a clear)
        self._unwritten: dict[str, tuple[int, RetainedMessage | None]] = {}
        self._watched = 0  # the last batch whose write drops its changes from _unwritten

    def set(self, topic: str, payload: bytes, qos: int, headers: list[tuple[bytes, bytes]] | None,
            reply: str | None = None) -> None:
        log = self.log
        if not payload:
            log.delete_meta(META_NAMESPACE, topic)
            msg = None
        else:
            msg = RetainedMessage(payload, qos, headers, reply)
            log.put_meta(META_NAMESPACE, topic, _encoder.encode(msg))
        seq = log.batch_seq
        self._unwritten[topic] = (seq, msg)
        if self._watched != seq:
            self._watched = seq
            log.on_commit(seq, lambda: self._written(seq), lambda _exc: self._written(seq))

    def drop_prefix(self, prefix: str) -> None:
        """Clear every retained message whose topic starts with `prefix` (one range delete)."""
        self.log.delete_meta_prefix(META_NAMESPACE, prefix)
        for topic in [t for t in self._unwritten if t.startswith(prefix)]:
            del self._unwritten[topic]

    def _written(self, seq: int) -> None:
        """Batch `seq` is written (or failed: its changes are lost with the publishes that made them)."""
        done = [t for t, (s, _) in self._unwritten.items() if s <= seq]
        for t in done:
            del self._unwritten[t]

    def get(self, topic: str) -> RetainedMessage | None:
        hit = self._unwritten.get(topic)
        if hit is not None:
            return hit[1]
        raw = self.log.get_meta(META_NAMESPACE, topic)
        return None if raw is None else _decode(raw)

    def page(self, filter_: str, after: bytes | None, limit: int
             ) -> tuple[list[tuple[str, RetainedMessage]], bytes | None]:
        """The next retained messages a (non-shared, valid) filter matches, in topic order: those
        stored under topics after `after` (None: from the start), at most `limit` topics scanned.
        Returns them and where the next page starts, or None when this was the last page (which
        adds the changes of batches still being written: the store does not show those yet).

        Each page reads the store afresh, so a subscriber served page by page across loop turns
        (a wildcard over a million retained topics) gets each topic's value as of its page: a
        retained message replaced meanwhile arrives as its newer value, never as the older one
        after the newer was delivered live."""
        unwritten = self._unwritten
        out: list[tuple[str, RetainedMessage]] = []
        if "+" not in filter_ and "#" not in filter_:
            msg = self.get(filter_)
            if msg is not None:
                out.append((filter_, msg))
            return out, None
        prefix = literal_prefix(filter_)
        scanned = 0
        for key, value in self.log.scan_meta(META_NAMESPACE, prefix, after):
            if scanned >= limit:
                return out, after
            scanned += 1
            after = key
            try:
                topic = key.decode()
            except UnicodeDecodeError:
                continue
            if topic in unwritten or not topic_matches(filter_, topic):
                continue
            msg = _decode(value)
            if msg is not None:
                out.append((topic, msg))
        for topic, (_, pending) in list(unwritten.items()):
            if pending is not None and topic.startswith(prefix) and topic_matches(filter_, topic):
                out.append((topic, pending))
        return out, None
