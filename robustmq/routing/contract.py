"""The neutral contract between the router and the front-ends: nothing here knows a wire format.

A front-end (NATS today; MQTT and Kafka next) implements `Connection` for each client connection and
hands the router objects that satisfy `Subscription`. It publishes with plain values (subject,
payload, headers as ordered byte pairs) and gets a `Receipt` back: where the message went in the log
and a way to wait until it is durable, which is what a PUBACK, a ProduceResponse or an mq9 reply
waits on. A refusal comes back as a `Refusal`, which each front-end renders in its own wire format
(`-ERR '…'` for NATS, a reason code for MQTT 5, an error code for Kafka).

A `SubjectOwner` (mq9) owns a subject prefix: publishes and subscriptions under it go to the owner,
not to the general subject match, through this one interface.

Closing: when a client connection of any protocol is gone, its front-end unsubscribes each of its
subscriptions (`Router.unsubscribe`) and then calls `Router.connection_closed(conn)` once, which tells
every owner (`SubjectOwner.on_connection_closed`). An owner that keeps per-connection state beyond
subscriptions (mq9's FETCH leases) releases it there, at once, instead of noticing `conn.closed` the
next time it looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from robustmq.core_log import SegmentLog

Headers = list[tuple[bytes, bytes]]  # ordered name/value pairs; a name may repeat


class RefusalKind(Enum):
    PERMISSION_PUBLISH = "permission-publish"  # the subject is not open to publishers
    PERMISSION_SUBSCRIBE = "permission-subscribe"  # the filter could reveal what it must not
    INVALID_SUBJECT = "invalid-subject"
    # a publish an owner could not take: no destination under that subject (a missing mailbox), or
    # the destination is full. Protocols that acknowledge publishes say it in the ack (MQTT 5); a
    # NATS fire-and-forget publish is dropped silently, as SPEC §4 says (and counted in metrics)
    NO_DESTINATION = "no-destination"
    QUOTA_EXCEEDED = "quota-exceeded"


class Refusal:
    """Why the router refused an operation; the front-end decides how to say it."""

    __slots__ = ("detail", "kind", "subject")

    def __init__(self, kind: RefusalKind, subject: str, detail: str = "") -> None:
        self.kind = kind
        self.subject = subject
        self.detail = detail

    def __repr__(self) -> str:
        return f"Refusal({self.kind.value}, {self.subject!r}, {self.detail!r})"


class Connection(Protocol):
    """One client connection of any protocol, as the router and subject owners see it."""

    protocol: str  # "nats", "mqtt", "kafka"
    name: str  # what the client calls itself (NATS CONNECT name, MQTT client id), "" when unknown
    closed: bool
    no_echo: bool  # do not deliver this connection's own publishes back to it

    def deliver(self, sub: Any, subject: str, reply: str | None, headers: Headers | None,
                payload: bytes) -> None:
        """Queue one message for `sub` (a subscription of this connection)."""

    def deliver_many(self, sub: Any, subject: str, payloads: list[bytes]) -> None:
        """Queue several header-less, reply-less messages for `sub` at once."""

    def reply(self, subject: str, payload: bytes) -> bool:
        """A broker reply for this connection only (never through the subject match); False when
        the connection has no subscription that would receive `subject`."""

    def reply_many(self, subjects: list[str], payloads: list[bytes]) -> None:
        """Several broker replies at once (a pipelined burst of requests), in order."""

    def refuse(self, refusal: Refusal) -> None:
        """Tell the client, in its protocol, that an operation was refused; the connection stays."""

    def outbound_size(self) -> int:
        """Bytes queued for this client and not yet taken by the socket."""


class Subscription(Protocol):
    @property
    def subject(self) -> str:
        """A filter in subject form (`*`, `>` wildcards)."""

    @property
    def queue(self) -> str | None:
        """A queue group (NATS) or shared-subscription group (MQTT)."""

    @property
    def conn(self) -> Connection: ...


class SubjectOwner(Protocol):
    """A layer that owns every subject under `prefix` (mq9 owns `$mq9.AI.`)."""

    prefix: str

    def claims(self, subject: str) -> bool:
        """Whether a subscription to this filter is the owner's to handle."""

    def on_subscribe(self, sub: Subscription) -> Refusal | None:
        """Take the subscription (None) or refuse it."""

    def on_unsubscribe(self, sub: Subscription) -> None: ...

    def on_publish(self, subject: str, reply: str | None, headers: Headers | None, payload: bytes,
                   origin: Connection | None) -> None: ...

    def on_publish_requests(self, subject: str, replies: list[str], payloads: list[bytes],
                            origin: Connection | None) -> None:
        """A pipelined burst of requests (each with its reply subject) to one subject."""

    def on_connection_closed(self, conn: Connection) -> None:
        """`conn` (any protocol) has closed and will make no more requests: release whatever the
        owner keeps for it beyond its subscriptions (those were unsubscribed first), and wake what
        waits on that. Called once per connection by `Router.connection_closed`, for every
        connection, whether or not it ever used the owner's subjects: keep it cheap then."""


class Receipt:
    """What a publish became: the stream and first offset it was logged at (stream None when the
    subject is ephemeral or an owner took it), how many live subscribers got it, and when it is
    durable."""

    __slots__ = ("_log", "_seq", "count", "delivered", "offset", "stream")

    def __init__(self, log: SegmentLog, seq: int, stream: str | None = None, offset: int = -1,
                 count: int = 1, delivered: int = 0) -> None:
        self.stream = stream
        self.offset = offset
        self.count = count
        self.delivered = delivered
        self._log = log
        self._seq = seq  # the log batch that carries it

    @property
    def is_durable(self) -> bool:
        return self.stream is None or self._log.is_committed(self._seq)

    def on_durable(self, callback: Callable[[], Any]) -> None:
        """Run callback once the record is written (at once if it already is)."""
        if self.stream is None:
            callback()
        else:
            self._log.on_commit(self._seq, callback)

    async def durable(self) -> None:
        if self.is_durable:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not fut.done():
                fut.set_result(None)

        def failed(exc: BaseException) -> None:  # the store refused the batch: not durable, say so
            if not fut.done():
                fut.set_exception(exc)

        self._log.on_commit(self._seq, done, failed)
        await fut
