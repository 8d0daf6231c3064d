"""The server-wide cap on outbound bytes, shared by every front-end (SPEC §8: bounded in total).

Each connection keeps its own per-connection limit (`max_pending`); this budget bounds them all
together. A connection is counted only while asyncio has paused writing to it (its transport failed
to hand its buffer to the socket), so every counted byte is a real backlog of a slow reader. Past
the cap the largest backlogs are cut first: they are the slowest readers, whatever their protocol.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Backlogged(Protocol):
    """What a connection of any front-end offers the budget."""

    closed: bool
    _backlog: int  # its share of the budget's total, kept by the budget

    def backlog_size(self) -> int:
        """Outbound bytes not yet handed to the socket (transport buffer and queued frames)."""
        ...

    def slow_consumer(self) -> None:
        """Cut this connection (it must call `account(self, 0)` or be closed)."""
        ...


class OutboundBudget:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0  # backlog bytes of all counted connections together
        self._backlogged: set[Backlogged] = set()
        self._enforcing = False
        self.cuts = 0  # connections cut by the server-wide cap (not by their own limit)

    def account(self, conn: Backlogged, size: int) -> None:
        """Record one connection's backlog; past the cap, cut the largest ones."""
        self.total += size - conn._backlog
        conn._backlog = size
        if size:
            self._backlogged.add(conn)
        else:
            self._backlogged.discard(conn)
        if self.total > self.cap and not self._enforcing:
            self._enforcing = True
            try:
                self._enforce()
            finally:
                self._enforcing = False

    def _enforce(self) -> None:
        for c in list(self._backlogged):  # refresh: a backlog may have drained since it was counted
            size = 0 if c.closed else c.backlog_size()
            self.total += size - c._backlog
            c._backlog = size
            if not size:
                self._backlogged.discard(c)
        for c in sorted(self._backlogged, key=lambda c: c._backlog, reverse=True):
            if self.total <= self.cap:
                break
            self.cuts += 1
            c.slow_consumer()
            if c._backlog:  # a connection that did not account itself out
                self.account(c, 0)


class BufferedConnection(asyncio.Protocol):
    """The outbound side every front-end's session shares: frames are queued and written in one
    `writelines` per loop turn; a connection whose socket holds more than `max_pending` unsent bytes
    is cut (`slow_consumer`, protocol-specific); while it carries a backlog it keeps its count in the
    server-wide `budget` current."""

    transport: asyncio.Transport | None
    closed: bool
    max_pending: int
    budget: OutboundBudget
    bytes_out: int
    _loop: asyncio.AbstractEventLoop

    def _init_outbound(self, budget: OutboundBudget, max_pending: int) -> None:
        self.budget = budget
        self.max_pending = max_pending
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._backlog = 0  # this connection's share of the budget's total
        self._over_since = 0.0  # loop time the unsent bytes passed max_pending (0: they are under it)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        self._out_size += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        t = self.transport
        if self.closed or not self._out or t is None:
            return
        out, self._out = self._out, []
        self.bytes_out += self._out_size
        self._out_size = 0
        t.writelines(out) if len(out) > 1 else t.write(out[0])
        size = t.get_write_buffer_size()
        if size > self.max_pending:
            self._over_limit(size)
            return
        self._over_since = 0.0
        if self._backlog:  # writing is paused: keep this backlog's count current
            self.budget.account(self, self.backlog_size())

    def _over_limit(self, size: int) -> None:
        """The socket holds `size` (> max_pending) bytes the client has not taken: a slow consumer
        (a front-end may allow a burst some grace first)."""
        self.slow_consumer()

    def backlog_size(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() + self._out_size if t is not None and not self.closed else 0

    def slow_consumer(self) -> None:
        raise NotImplementedError
