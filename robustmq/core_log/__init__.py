"""The one append-only segment log every front-end writes to and reads from (SPEC §2)."""

from robustmq.core_log.kv import Batch, KVStore
from robustmq.core_log.log import SegmentLog, Stream
from robustmq.core_log.records import Record, SegmentMeta
from robustmq.core_log.store import Store
from robustmq.core_log.topics import TopicConfig, TopicRegistry

__all__ = ["Batch", "KVStore", "Record", "SegmentLog", "SegmentMeta", "Store", "Stream", "TopicConfig",
           "TopicRegistry"]
