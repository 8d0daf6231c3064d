"""Starts the log and the listeners, runs housekeeping, shuts down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time

from robustmq.config import Config
from robustmq.core_log import SegmentLog, Store
from robustmq.frontends.mq9 import Mq9Layer
from robustmq.frontends.mq9 import attach as attach_mq9
from robustmq.frontends.mqtt.server import MqttServer
from robustmq.frontends.nats.server import NatsServer
from robustmq.frontends.outbound import OutboundBudget
from robustmq.frontends.registry import FrontEndRegistry
from robustmq.http.monitor import MonitorServer
from robustmq.routing.router import Router

log = logging.getLogger("robustmq")

# time-index entries (or grown streams) one retention pass checks; the next pass goes on from there,
# so a burst of aged-out segments costs the loop a few tens of milliseconds per pass, not seconds
RETENTION_PASS_STREAMS = 20_000


class Broker:
    """Everything one `robustmq serve` process runs."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started = time.time()
        self.store = Store(cfg.data_dir, cfg.durability)
        self.log = SegmentLog(
            self.store,
            segment_max_records=cfg.segment_max_records,
            segment_max_age_s=cfg.segment_max_age_s,
            retention_max_age_s=cfg.retention_max_age_s,
            retention_max_bytes=cfg.retention_max_bytes,
            retention_pass_max=RETENTION_PASS_STREAMS,
            writer_thread=cfg.durability == "fsync",  # see SegmentLog: wal writes are cheap inline
        )
        self.router = Router(self.log, cfg.ephemeral_subjects)
        # outbound bytes of all connections of every front-end together (SPEC §8: bounded in total)
        self.outbound = OutboundBudget(cfg.max_pending_total)
        self.nats = NatsServer(cfg, self.router, self.outbound)
        self.frontends = FrontEndRegistry()  # the listeners that run, for monitoring
        self.mq9: Mq9Layer | None = None
        self.http: MonitorServer | None = None
        self.mqtt: MqttServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        cfg = self.cfg
        self.mq9 = attach_mq9(self)
        if cfg.nats_port:
            await self.nats.start(cfg.host, cfg.nats_port)
            self.frontends.register(self.nats)
            log.info("NATS (with mq9) listening on %s:%d", cfg.host, self.nats.port)
        if cfg.mqtt_port:
            self.mqtt = MqttServer(cfg, self.router, self.outbound)
            await self.mqtt.start(cfg.host, cfg.mqtt_port)
            self.frontends.register(self.mqtt)
            log.info("MQTT listening on %s:%d", cfg.host, self.mqtt.port)
        if cfg.kafka_port:
            log.info("Kafka listener on port %d: not built yet in this version, skipped", cfg.kafka_port)
        if cfg.http_port:
            self.http = MonitorServer(self)
            await self.http.start(cfg.host, cfg.http_port)
            log.info("HTTP monitoring listening on %s:%d", cfg.host, self.http.port)
        self._tasks.append(asyncio.create_task(self._retention_loop()))
        log.info("data directory %s (durability=%s)", cfg.data_dir, cfg.durability)

    async def _retention_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.cfg.retention_check_interval_s)
            try:
                # a pass that dropped nothing may still find ranges to compact: deleted streams
                # (an expired mailbox) leave theirs for it
                if not self.log.apply_retention() and not self.log.has_reclaimable:
                    continue
                await self.log.committed()  # the range deletes must be on disk before compacting them
                # range deletes only hide records; compacting the ranges frees the disk now. In a thread
                # (rocksdict releases the GIL), awaited, so passes and compactions never overlap.
                await loop.run_in_executor(None, self.store.compact_ranges, self.log.take_reclaimable())
            except Exception:  # housekeeping must not kill the server
                log.exception("retention pass failed")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.mq9 is not None:
            self.mq9.close()
        await self.nats.close()
        if self.mqtt is not None:
            await self.mqtt.close()
        if self.http is not None:
            await self.http.close()
        await asyncio.sleep(0)
        self.log.close()


# The cyclic garbage collector is tuned for a broker: per-message objects are freed by reference
# counting, so a collection every 700 allocations (CPython's default) is pure cost on the hot path
# (about a third of the time with a million distinct subjects). Startup objects are frozen out of
# every later collection.
GC_GEN0_THRESHOLD = 50_000


async def serve(cfg: Config) -> None:
    broker = Broker(cfg)
    await broker.start()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover - non-Unix
            pass
    await stop.wait()
    log.info("shutting down")
    await broker.stop()


def run(cfg: Config) -> None:
    if sys.platform != "win32":  # uvloop is a declared dependency there; its absence is an error
        import uvloop

        uvloop.install()
    asyncio.run(serve(cfg))
