"""Topics and partitions over the log: a Kafka topic with N partitions is N streams.

Partition 0 is the stream named by the topic itself, so the Kafka topic `a.b.c` is the subject every
other protocol sees as `a.b.c` (SPEC §6). Partition p > 0 is `a.b.c` + NUL + p: a NUL can be in
neither an MQTT topic (the MQTT spec forbids U+0000) nor a NATS subject a client sends, so those
streams never collide with a subject and no subject filter matches them.

The registry is persisted as log metadata (namespace `$topics`), in the same batches as the records.
Retention settings are written onto each partition's stream (`SegmentLog.set_retention`), where
retention passes read them; the registry keeps them too so a topic can be described.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from robustmq.core_log.log import SegmentLog
from robustmq.core_log.records import now_ms

TOPICS_NS = "$topics"
PARTITION_SEP = "\x00"


class TopicConfig(msgspec.Struct, array_like=True, gc=False):
    partitions: int
    retention_ms: int = -1  # -1: the log's default; 0: keep forever
    retention_bytes: int = -1  # per partition
    created_ms: int = 0


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(TopicConfig)


class TopicRegistry:
    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        # topics are few (not one per device): kept in memory, so a create is visible before its commit
        self._topics = {key.decode(): _dec.decode(v) for key, v in log.scan_meta(TOPICS_NS)}

    @staticmethod
    def partition_stream(topic: str, partition: int) -> str:
        return topic if partition == 0 else f"{topic}{PARTITION_SEP}{partition}"

    def get(self, topic: str) -> TopicConfig | None:
        return self._topics.get(topic)

    def list(self) -> Iterator[tuple[str, TopicConfig]]:
        yield from sorted(self._topics.items())

    def create(self, topic: str, partitions: int = 1, retention_ms: int = -1,
               retention_bytes: int = -1) -> TopicConfig | None:
        """Create the topic and its partition streams; None if it already exists."""
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        if self.get(topic) is not None:
            return None
        cfg = TopicConfig(partitions, retention_ms, retention_bytes, now_ms())
        self._apply(topic, cfg, 0)
        return cfg

    def alter(self, topic: str, *, partitions: int | None = None, retention_ms: int | None = None,
              retention_bytes: int | None = None) -> TopicConfig:
        """Change retention or add partitions (never fewer: records would be lost)."""
        cur = self.get(topic)
        if cur is None:
            raise KeyError(topic)
        cfg = msgspec.structs.replace(cur)
        old = cfg.partitions
        if partitions is not None:
            if partitions < old:
                raise ValueError("partitions can only be added")
            cfg.partitions = partitions
        if retention_ms is not None:
            cfg.retention_ms = retention_ms
        if retention_bytes is not None:
            cfg.retention_bytes = retention_bytes
        self._apply(topic, cfg, 0)
        return cfg

    def delete(self, topic: str) -> bool:
        cfg = self.get(topic)
        if cfg is None:
            return False
        for p in range(cfg.partitions):
            self.log.delete_stream(self.partition_stream(topic, p))
        self.log.delete_meta(TOPICS_NS, topic)
        del self._topics[topic]
        return True

    def _apply(self, topic: str, cfg: TopicConfig, first: int) -> None:
        log = self.log
        for p in range(first, cfg.partitions):
            s = log.stream(self.partition_stream(topic, p))
            log.set_retention(s, cfg.retention_ms, cfg.retention_bytes)
        log.put_meta(TOPICS_NS, topic, _enc.encode(cfg))
        self._topics[topic] = cfg
