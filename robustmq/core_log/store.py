"""The RocksDB implementation of the store seam (`kv.KVStore`); the only module that imports rocksdict.

Key layout: `keys.py`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable, Iterator

from rocksdict import BlockBasedOptions, CompactOptions, Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from robustmq.core_log.keys import prefix_end
from robustmq.core_log.kv import Batch

_WAL_SYNCED = re.compile(r"^rocksdb\.wal\.synced COUNT : (\d+)$", re.MULTILINE)


class Store:
    """A RocksDB database in raw (bytes) mode with one write path: `write(batch)`.

    `statistics=True` turns on RocksDB's own tickers (about 4% slower small writes), which
    `wal_syncs()` reads so tests can prove from RocksDB itself what the durability mode does.
    """

    def __init__(self, path: str, durability: str = "wal", *, statistics: bool = False) -> None:
        os.makedirs(path, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_background_jobs(2)
        opts.set_write_buffer_size(32 << 20)  # memtable; keeps RSS well under 300 MB under floods
        table = BlockBasedOptions()
        # a new stream is a lookup of a name that is not there: bloom filters answer most from memory
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        if statistics:
            opts.enable_statistics()
        self.path = path
        self.statistics = statistics
        self._opts = opts  # shares RocksDB's Statistics object with the open DB
        self._compact_lock = threading.Lock()  # one compaction at a time; close() waits for it
        self._closing = False
        self._compact_opts = CompactOptions()
        # let RocksDB's own compactions run alongside, so a flood does not pile up L0 files and stall
        self._compact_opts.set_exclusive_manual_compaction(False)
        self.db = Rdict(path, opts)
        self.write_opts = WriteOptions()
        # wal: the WAL is written (OS page cache) before a batch is acknowledged -> survives a process
        # crash. fsync: the WAL is fsynced once per batch -> survives power loss.
        self.write_opts.sync = durability == "fsync"
        self.durability = durability

    def new_batch(self) -> WriteBatch:
        # a batch is consumed by its write (rocksdict refuses it again, cleared or not), so each
        # commit needs a new one. `raw_mode` passed by position: its keyword costs ~0.3 us more.
        return WriteBatch(True)

    def write(self, batch: Batch) -> None:
        # rocksdict releases the GIL here, so the loop runs on while the writer thread waits for the disk
        assert isinstance(batch, WriteBatch), "a batch from this store's new_batch()"
        self.db.write(batch, self.write_opts)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [start, end) in order."""
        ro = ReadOptions()
        ro.set_iterate_upper_bound(end)
        yield from self.db.items(from_key=start, read_opt=ro)

    def scan_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from self.scan(prefix, prefix_end(prefix))

    def seek_le(self, key: bytes, low: bytes) -> bytes | None:
        it = self.db.iter()
        it.seek_for_prev(key)
        if not it.valid():
            return None
        k: bytes = it.key()
        return k if k >= low else None

    def compact_ranges(self, ranges: Iterable[tuple[bytes, bytes]]) -> None:
        """Compact each [begin, end) so range-deleted records leave the disk now, not at some later
        compaction. Blocking: call it from a thread (rocksdict releases the GIL while compacting)."""
        with self._compact_lock:
            for begin, end in ranges:
                if self._closing:
                    return
                self.db.compact_range(begin, end, self._compact_opts)

    def wal_syncs(self) -> int:
        """How many times RocksDB synced the WAL (its `rocksdb.wal.synced` ticker) since open."""
        if not self.statistics:
            raise RuntimeError("open the Store with statistics=True to count WAL syncs")
        m = _WAL_SYNCED.search(self._opts.get_statistics() or "")
        if m is None:
            raise RuntimeError("rocksdb.wal.synced missing from RocksDB statistics")
        return int(m.group(1))

    def close(self) -> None:
        self._closing = True
        # closing under a running compaction fails (rocksdict: "Already borrowed"): let it finish first
        with self._compact_lock:
            pass
        with contextlib.suppress(Exception):  # best effort on shutdown
            self.db.flush_wal(True)
        self.db.close()
