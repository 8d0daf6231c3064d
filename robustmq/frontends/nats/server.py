"""The NATS listener: accepts connections, builds INFO, runs the server-side PING timer."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Collection

import msgspec

from robustmq import __version__
from robustmq.config import Config
from robustmq.frontends.nats.session import NatsSession
from robustmq.frontends.outbound import OutboundBudget
from robustmq.frontends.registry import ConnectionTable
from robustmq.routing.router import Router

log = logging.getLogger("robustmq.nats")

# The NATS protocol level we speak; clients gate features (headers, no_responders) on INFO fields.
PROTOCOL_VERSION = "2.10.0"


class NatsServer:
    protocol = "nats"  # its name in the front-end registry (monitoring's `protocol` label)

    def __init__(self, cfg: Config, router: Router, budget: OutboundBudget | None = None) -> None:
        self.cfg = cfg
        self.router = router
        self.table: ConnectionTable[NatsSession] = ConnectionTable()
        self.conns = self.table.conns  # open connections by id
        self.server_id = "N" + secrets.token_hex(16).upper()[:55]
        self.auth_required = bool(cfg.user or cfg.token)
        self.slow_consumers = 0
        self.stale_connections = 0  # cut for not answering server PINGs
        # queue subscriptions with an UNSUB max still to reach: while there are any, a publisher's
        # pipelined burst is routed one message at a time, so a member that reaches its max in
        # the burst is not picked again (nats-server gives the rest to the other members)
        self.capped_queue_subs = 0
        self._server: asyncio.base_events.Server | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._info_base: dict[str, object] = {}
        self.port = cfg.nats_port
        # outbound bytes of backlogged connections, all together (shared with the other front-ends)
        self.budget: OutboundBudget = budget if budget is not None else OutboundBudget(cfg.max_pending_total)
        self.producer: NatsSession | None = None  # the connection whose data is being handled now

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: NatsSession(self), host, port, backlog=1024,
                                                reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._info_base = {
            "server_id": self.server_id,
            "server_name": self.cfg.server_name or self.server_id,
            "version": PROTOCOL_VERSION,
            "proto": 1,
            "go": f"robustmq {__version__}",
            "host": host,
            "port": self.port,
            "headers": True,
            "max_payload": self.cfg.max_payload,
        }
        if self.auth_required:
            self._info_base["auth_required"] = True
        self._pinger = asyncio.create_task(self._ping_loop())

    def info_line(self, conn: NatsSession) -> bytes:
        info = dict(self._info_base)
        info["client_id"] = conn.cid
        info["client_ip"] = conn.peer[0] if conn.peer else ""
        return b"INFO " + msgspec.json.encode(info) + b"\r\n"

    def register(self, conn: NatsSession) -> int:
        return self.table.add(conn)

    @property
    def total_connections(self) -> int:
        return self.table.total_connections

    def unregister(self, conn: NatsSession) -> None:
        self.table.remove(conn)

    def totals(self) -> tuple[int, int, int, int]:
        """(msgs_in, msgs_out, bytes_in, bytes_out) over every connection since start."""
        return self.table.totals()

    def connections(self) -> Collection[NatsSession]:
        """The open connections (a live view), for monitoring."""
        return self.conns.values()

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def pending_total(self) -> int:
        return self.budget.total

    def check_auth(self, user: str, password: str, token: str) -> bool:
        cfg = self.cfg
        if cfg.token:
            return hmac.compare_digest(token.encode(), cfg.token.encode())
        return hmac.compare_digest(user.encode(), cfg.user.encode()) and hmac.compare_digest(
            password.encode(), cfg.password.encode())

    async def _ping_loop(self) -> None:
        interval = self.cfg.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            for conn in list(self.conns.values()):
                if conn.connected or not self.auth_required:
                    conn.send_ping()

    async def close(self) -> None:
        if self._pinger:
            self._pinger.cancel()
        if self._server:
            self._server.close()
        for conn in list(self.conns.values()):
            conn._flush()
            if conn.transport:
                conn.transport.close()
