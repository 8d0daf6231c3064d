"""robustmq: one append-only segment log on RocksDB, several protocol front-ends."""

__version__ = "0.1.0"
