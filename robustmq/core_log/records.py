"""Record and segment structs and their on-disk encoding (msgpack, array-like for compactness)."""

from __future__ import annotations

import time

import msgspec


class Record(msgspec.Struct, array_like=True, gc=False):
    """One log entry. The payload is opaque bytes; the log never parses it."""

    ts: int  # milliseconds since the epoch
    payload: bytes
    key: bytes | None = None
    headers: list[tuple[bytes, bytes]] | None = None  # ordered name/value pairs
    # small protocol metadata: mq9 priority ("p"), MQTT qos/retain, expiry ("exp", ms), ...
    meta: dict[str, int | str] | None = None


class SegmentMeta(msgspec.Struct, array_like=True, gc=False):
    """Index entry for one segment: a contiguous offset range of one stream."""

    first: int
    last: int  # last offset written; first - 1 when empty
    min_ts: int
    max_ts: int
    nbytes: int
    created_ms: int
    # the timestamp of its time-index key (T), -1 when not indexed (trailing: older values decode)
    indexed_ts: int = -1

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class StreamMeta(msgspec.Struct, array_like=True, gc=False):
    sid: int
    created_ms: int
    # per-stream retention: -1 = the log's default, 0 = unlimited (trailing, so older values decode)
    retention_age_ms: int = -1
    retention_bytes: int = -1
    # the end of the last range retention dropped: the next offset of a stream left with no
    # segment, so offsets are never handed out again after a restart or a cache eviction
    floor: int = 0


_rec_enc = msgspec.msgpack.Encoder()
_rec_dec = msgspec.msgpack.Decoder(Record)
_chunk_dec = msgspec.msgpack.Decoder(list[Record])
_seg_dec = msgspec.msgpack.Decoder(SegmentMeta)
_stream_dec = msgspec.msgpack.Decoder(StreamMeta)

encode = _rec_enc.encode
decode_record = _rec_dec.decode
decode_chunk = _chunk_dec.decode
decode_segment = _seg_dec.decode
decode_stream = _stream_dec.decode


def now_ms() -> int:
    return time.time_ns() // 1_000_000
