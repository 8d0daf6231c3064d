"""The key layout, in one place. Every key the log writes is built here.

One keyspace; one-letter prefixes keep a family adjacent for range scans and range deletes, and the
stream id (`sid`, 4 bytes big-endian) keeps one stream's keys adjacent inside a family:

    S<stream name>                 -> StreamMeta (sid, created, retention settings)
    R<sid:4><first offset:8>       -> chunk: msgpack array of Records (offsets first, first+1, ...)
    G<sid:4><first offset:8>       -> SegmentMeta
    D<sid:4><offset:8>             -> tombstone of one deleted record
    T<ts:8><sid:4><first:8>        -> stream name: the time index of segments retention may age out
                                      (ts: the segment's first record's timestamp, a lower bound of
                                      its newest one, so every segment older than a cutoff is found
                                      by one ordered scan up to the cutoff)
    O<stream name>                 -> (empty) the stream grew past its byte limit and awaits a retention
                                      pass (so a restart before that pass still trims it)
    M<namespace>\\0<key>           -> front-end metadata (mailboxes, group offsets, topics, sessions)
    N                              -> the log's state: the next free sid (so startup never scans S keys
                                      to find it), the smallest per-stream age limit ever set, and
                                      whether the T index is complete (one key: startup reads one key)

Big-endian integers make byte order equal numeric order, which the store's ordered scans rely on.
"""

from __future__ import annotations

P_STREAM = b"S"
P_RECORD = b"R"
P_SEGMENT = b"G"
P_META = b"M"
P_DELETED = b"D"
P_TIME = b"T"
P_OVER = b"O"
K_NEXT_SID = b"N"


def sid_bytes(sid: int) -> bytes:
    return sid.to_bytes(4, "big")


def record_prefix(sid: int) -> bytes:
    return P_RECORD + sid.to_bytes(4, "big")


def record_key(sid: int, offset: int) -> bytes:
    return P_RECORD + sid.to_bytes(4, "big") + offset.to_bytes(8, "big")


def record_key_offset(key: bytes) -> int:
    return int.from_bytes(key[5:13], "big")


def segment_prefix(sid: int) -> bytes:
    return P_SEGMENT + sid.to_bytes(4, "big")


def segment_key(sid: int, first: int) -> bytes:
    return P_SEGMENT + sid.to_bytes(4, "big") + first.to_bytes(8, "big")


def deleted_prefix(sid: int) -> bytes:
    return P_DELETED + sid.to_bytes(4, "big")


def deleted_key(sid: int, offset: int) -> bytes:
    return P_DELETED + sid.to_bytes(4, "big") + offset.to_bytes(8, "big")


def time_key(ts: int, sid: int, first: int) -> bytes:
    return P_TIME + max(0, ts).to_bytes(8, "big") + sid.to_bytes(4, "big") + first.to_bytes(8, "big")


def time_bound(ts: int) -> bytes:
    """The smallest time-index key of timestamp `ts`: a scan up to it covers every older segment."""
    return P_TIME + max(0, ts).to_bytes(8, "big")


def time_key_parts(key: bytes) -> tuple[int, int, int]:
    """(ts, sid, first) of a time-index key."""
    b = int.from_bytes
    return b(key[1:9], "big"), b(key[9:13], "big"), b(key[13:21], "big")


def stream_key(name: str) -> bytes:
    return P_STREAM + name.encode()


def over_key(name: str) -> bytes:
    return P_OVER + name.encode()


def stream_key_name(key: bytes) -> str:
    return key[1:].decode()


def meta_key(namespace: str, key: str | bytes) -> bytes:
    k = key.encode() if isinstance(key, str) else key
    return P_META + namespace.encode() + b"\x00" + k


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with prefix."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\xff" * 16

