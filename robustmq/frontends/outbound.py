"""The server-wide cap on outbound bytes, shared by every front-end (SPEC §8: bounded in total).

Each connection keeps its own per-connection limit (`max_pending`); this budget bounds them all
together. A connection is counted only while asyncio has paused writing to it (its transport failed
to hand its buffer to the socket), so every counted byte is a real backlog of a slow reader. Past
the cap the largest backlogs are cut first: they are the slowest readers, whatever their protocol.
"""

from __future__ import annotations

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
