"""The store seam: the ordered key-value store the log stands on, as a protocol.

The log needs little from a store: atomic batches (put, delete, delete_range) written with the
configured durability, point gets, ordered forward scans over [start, end) and one reverse seek
(the greatest key <= k, to find the chunk that holds an offset). RocksDB (`store.Store`) implements
it embedded; a distributed ordered store (TiKV, FoundationDB, a PostgreSQL-wire distributed SQL
table keyed by bytes) fits the same shape — see docs/architecture.md.

`write()` blocks and is called from the log's single writer thread, never from the event loop, so an
implementation may take as long as its durability needs. Reads are called from the event loop and
should be fast (local, or cached).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class Batch(Protocol):
    """Writes applied atomically, in order, by `KVStore.write`."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def delete_range(self, begin: bytes, end: bytes) -> None:
        """Delete every key in [begin, end)."""


class KVStore(Protocol):
    durability: str  # "wal" (survives a process crash) or "fsync" (survives power loss)

    def new_batch(self) -> Batch: ...

    def write(self, batch: Batch) -> None:
        """Apply the batch atomically and durably (per `durability`); raise on failure. Blocking."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [start, end), in byte order."""

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def seek_le(self, key: bytes, low: bytes) -> bytes | None:
        """The greatest key k with low <= k <= key, or None."""

    def compact_ranges(self, ranges: Iterable[tuple[bytes, bytes]]) -> None:
        """Give back the space of range-deleted keys (a no-op where the store does it by itself)."""

    def close(self) -> None: ...
