"""The front-ends a Broker runs, as monitoring sees them: one entry per wire protocol.

Monitoring (/varz, /connz, /subsz, /metrics) iterates this registry instead of reaching into a
particular front-end, so MQTT and Kafka show up beside NATS by registering themselves. Everything
here is read-only and read at request time: a front-end keeps its counters as plain ints on its hot
path and the registry only sums them when asked.
"""

from __future__ import annotations

import itertools
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
    def total_connections(self) -> int: ...  # accepted since start

    def connections(self) -> Collection[ConnectionInfo]:
        """The open connections (a live view: iterate it at once, do not keep it)."""

    def totals(self) -> tuple[int, int, int, int]:
        """(msgs_in, msgs_out, bytes_in, bytes_out) over every connection since start."""

    def is_serving(self) -> bool:
        """Whether the listener accepts connections (what /healthz reports)."""


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


class CountedConnection(Protocol):
    cid: int
    msgs_in: int
    msgs_out: int
    bytes_in: int
    bytes_out: int


C = TypeVar("C", bound=CountedConnection)


class ConnectionTable(Generic[C]):
    """A front-end's open connections by id, and the counters of those that have closed, so that
    totals since start are the closed sums plus the live connections' own counters."""

    def __init__(self) -> None:
        self.conns: dict[int, C] = {}
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
