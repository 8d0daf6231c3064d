"""The front-ends a Broker runs, as monitoring sees them: one entry per wire protocol.

Monitoring (/varz, /connz, /subsz, /metrics) iterates this registry instead of reaching into a
particular front-end, so MQTT and Kafka show up beside NATS by registering themselves. Everything
here is read-only and read at request time: a front-end keeps its counters as plain ints on its hot
path and the registry only sums them when asked.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar


class SubscriptionInfo(Protocol):
    """One subscription of a client, as listed by /connz and /subsz."""

    @property
    def subject(self) -> str: ...  # a filter in subject form (`*`, `>` wildcards)

    @property
    def queue(self) -> str | None: ...

    @property
    def sid(self) -> str: ...

    @property
    def delivered(self) -> int: ...

    @property
    def max_msgs(self) -> int: ...  # 0: unlimited


class ConnectionInfo(Protocol):
    """One client connection of any protocol; protocols without a field leave it empty or 0."""

    @property
    def cid(self) -> int: ...  # unique within its front-end

    @property
    def peer(self) -> tuple[Any, ...]: ...  # (ip, port, ...) as asyncio reports it

    @property
    def start_time(self) -> float: ...  # wall clock at accept

    @property
    def name(self) -> str: ...

    @property
    def lang(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def msgs_in(self) -> int: ...

    @property
    def msgs_out(self) -> int: ...

    @property
    def bytes_in(self) -> int: ...

    @property
    def bytes_out(self) -> int: ...

    @property
    def subs(self) -> Mapping[str, SubscriptionInfo]: ...

    def outbound_size(self) -> int: ...


class FrontEnd(Protocol):
    """A protocol listener as monitoring sees it."""

    @property
    def protocol(self) -> str: ...  # "nats", "mqtt", "kafka": the `protocol` label and /connz `type`

    @property
    def port(self) -> int: ...

    @property
    def slow_consumers(self) -> int: ...  # connections cut for not reading, since start

    @property
    def stale_connections(self) -> int: ...  # connections cut for silence (no PONG, keep-alive), since start

    @property
    def total_connections(self) -> int: ...  # accepted since start

    def connections(self) -> Collection[ConnectionInfo]:
        """The open connections (a live view: iterate it at once, do not keep it)."""

    def totals(self) -> tuple[int, int, int, int]:
        """(msgs_in, msgs_out, bytes_in, bytes_out) over every connection since start."""

    def is_serving(self) -> bool:
        """Whether the listener accepts connections (what /healthz reports)."""


# closed connections a front-end remembers for /connz?state=closed (nats-server keeps 10 000 too)
MAX_CLOSED = 10_000
MAX_CLOSED_TEXT = 256
_NO_SUBS: Mapping[str, SubscriptionInfo] = {}


class ClosedConnection:
    """What /connz?state=closed shows of a connection that has gone: a snapshot taken at close."""

    __slots__ = ("bytes_in", "bytes_out", "cid", "lang", "last_activity", "msgs_in", "msgs_out", "name",
                 "peer", "reason", "start_time", "stop_time", "version")

    def __init__(self, conn: Any, stop_time: float) -> None:
        self.cid: int = conn.cid
        peer = getattr(conn, "peer", None)
        self.peer: tuple[Any, ...] = tuple(peer[:2]) if isinstance(peer, tuple) else ()
        self.start_time: float = getattr(conn, "start_time", 0.0) or stop_time
        self.stop_time = stop_time
        self.last_activity: float = getattr(conn, "last_activity", 0.0) or self.start_time
        # a front-end may say why it closed a connection (nats-server's reasons: "Client Closed",
        # "Slow Consumer", "Stale Connection", ...); empty when it does not
        self.reason: str = (getattr(conn, "close_reason", "") or "")[:MAX_CLOSED_TEXT]
        # client-chosen strings are cut, so MAX_CLOSED snapshots stay a few MiB whatever clients send
        self.name: str = (getattr(conn, "name", "") or "")[:MAX_CLOSED_TEXT]
        self.lang: str = (getattr(conn, "lang", "") or "")[:MAX_CLOSED_TEXT]
        self.version: str = (getattr(conn, "version", "") or "")[:MAX_CLOSED_TEXT]
        self.msgs_in: int = conn.msgs_in
        self.msgs_out: int = conn.msgs_out
        self.bytes_in: int = conn.bytes_in
        self.bytes_out: int = conn.bytes_out

    @property
    def subs(self) -> Mapping[str, SubscriptionInfo]:
        return _NO_SUBS

    def outbound_size(self) -> int:
        return 0


def closed_connections(frontend: FrontEnd) -> Collection[ClosedConnection]:
    """The front-end's most recently closed connections, oldest first (those of its ConnectionTable)."""
    table = getattr(frontend, "table", None)
    closed = getattr(table, "closed", None)
    return list(closed) if closed is not None else []


class FrontEndRegistry:
    """The running front-ends of one Broker, in registration order, at most one per protocol."""

    def __init__(self) -> None:
        self._by_protocol: dict[str, FrontEnd] = {}

    def register(self, frontend: FrontEnd) -> None:
        if frontend.protocol in self._by_protocol:
            raise ValueError(f"a {frontend.protocol} front-end is already registered")
        self._by_protocol[frontend.protocol] = frontend

    def get(self, protocol: str) -> FrontEnd | None:
        return self._by_protocol.get(protocol)

    def __iter__(self) -> Iterator[FrontEnd]:
        return iter(list(self._by_protocol.values()))

    def __len__(self) -> int:
        return len(self._by_protocol)

    def connections(self) -> Iterator[tuple[FrontEnd, ConnectionInfo]]:
        """Every open connection of every front-end, with the front-end it belongs to."""
        for fe in self:
            for conn in list(fe.connections()):
                yield fe, conn

    def closed_connections(self) -> Iterator[tuple[FrontEnd, ClosedConnection]]:
        """The recently closed connections of every front-end (at most MAX_CLOSED each)."""
        for fe in self:
            for conn in closed_connections(fe):
                yield fe, conn


class CountedConnection(Protocol):
    cid: int
    msgs_in: int
    msgs_out: int
    bytes_in: int
    bytes_out: int


C = TypeVar("C", bound=CountedConnection)


class ConnectionTable(Generic[C]):
    """A front-end's open connections by id, and the counters of those that have closed, so that
    totals since start are the closed sums plus the live connections' own counters; the last
    MAX_CLOSED closed ones are kept as snapshots for /connz?state=closed."""

    def __init__(self, max_closed: int = MAX_CLOSED) -> None:
        self.conns: dict[int, C] = {}
        self.closed: deque[ClosedConnection] = deque(maxlen=max_closed)
        self.total_connections = 0  # accepted since start
        self._cids = itertools.count(1)
        self._closed = [0, 0, 0, 0]  # msgs_in, msgs_out, bytes_in, bytes_out

    def add(self, conn: C) -> int:
        cid = next(self._cids)
        self.conns[cid] = conn
        self.total_connections += 1
        return cid

    def remove(self, conn: C) -> bool:
        if self.conns.pop(conn.cid, None) is not conn:
            return False
        closed = self._closed
        closed[0] += conn.msgs_in
        closed[1] += conn.msgs_out
        closed[2] += conn.bytes_in
        closed[3] += conn.bytes_out
        self.closed.append(ClosedConnection(conn, time.time()))
        return True

    def totals(self) -> tuple[int, int, int, int]:
        """(msgs_in, msgs_out, bytes_in, bytes_out) over every connection since start."""
        mi, mo, bi, bo = self._closed
        for c in self.conns.values():
            mi += c.msgs_in
            mo += c.msgs_out
            bi += c.bytes_in
            bo += c.bytes_out
        return mi, mo, bi, bo
