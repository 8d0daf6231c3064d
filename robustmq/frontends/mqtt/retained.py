"""Retained messages: the last retained PUBLISH per topic, in memory and in the log's metadata.

A retain publish with a payload replaces the topic's message, one with an empty payload clears
it (spec 3.3.1.3). Every change is written to the log's metadata (namespace `mqtt.retained`, key
the topic) in the same batch as the publish, so the PUBACK that waits for that batch also covers
the retained copy, and a restart reloads them.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from robustmq.core_log import SegmentLog
from robustmq.frontends.mqtt.topics import topic_matches

META_NAMESPACE = "mqtt.retained"


class RetainedMessage(msgspec.Struct, array_like=True):
    payload: bytes
    qos: int = 0
    headers: list[tuple[bytes, bytes]] | None = None  # v5 user properties, as neutral headers


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RetainedMessage)


class RetainedStore:
    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        self.messages: dict[str, RetainedMessage] = {}

    def load(self) -> None:
        for key, value in self.log.scan_meta(META_NAMESPACE):
            try:
                self.messages[key.decode()] = _decoder.decode(value)
            except (msgspec.DecodeError, UnicodeDecodeError):  # a damaged entry costs only itself
                continue

    def set(self, topic: str, payload: bytes, qos: int, headers: list[tuple[bytes, bytes]] | None) -> None:
        if not payload:
            if self.messages.pop(topic, None) is not None:
                self.log.delete_meta(META_NAMESPACE, topic)
            return
        msg = RetainedMessage(payload, qos, headers)
        self.messages[topic] = msg
        self.log.put_meta(META_NAMESPACE, topic, _encoder.encode(msg))

    def matching(self, filter_: str) -> Iterator[tuple[str, RetainedMessage]]:
        """The retained messages a (non-shared, valid) filter matches."""
        if "+" not in filter_ and "#" not in filter_:
            msg = self.messages.get(filter_)
            if msg is not None:
                yield filter_, msg
            return
        # a linear scan: fine for thousands of retained topics; a topic trie is the next step
        for topic, msg in list(self.messages.items()):
            if topic_matches(filter_, topic):
                yield topic, msg

    def __len__(self) -> int:
        return len(self.messages)
