"""Shared helpers for the mq9 contract tests (SPEC §4), all through unmodified clients.

Everything here is bounded in count and in time: no loop waits forever, no collector grows without
limit. Two clients are used:

* nats-py (announces header support, so mailbox messages arrive as ``HMSG``), and
* :class:`RawClient`, a tiny hand-written NATS client on a raw socket, for the cases nats-py cannot
  show (``CONNECT`` without headers -> plain ``MSG``; exact ``-ERR`` text).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

MQ9 = "$mq9.AI."
CREATE = "$mq9.AI.MAILBOX.CREATE"
PUBLIC_LIST = "$mq9.AI.PUBLIC.LIST"
PRIORITIES = ("critical", "urgent", "normal")
PRIO_RANK = {p: i for i, p in enumerate(PRIORITIES)}


def msg_subject(mail_id: str, priority: str | None = None) -> str:
    """`$mq9.AI.MAILBOX.MSG.<id>` (normal) or `….<priority>` (`*` for a subscription to all)."""
    base = f"$mq9.AI.MAILBOX.MSG.{mail_id}"
    return base if priority is None else f"{base}.{priority}"


def list_subject(mail_id: str) -> str:
    return f"$mq9.AI.MAILBOX.LIST.{mail_id}"


def delete_subject(mail_id: str, msg_id: int | str) -> str:
    return f"$mq9.AI.MAILBOX.DELETE.{mail_id}.{msg_id}"


def unique_name(prefix: str = "t") -> str:
    """A public mailbox name nobody else in this server uses (tests share a module server)."""
    return f"{prefix}.{secrets.token_hex(5)}"


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------- nats-py


class Conn:
    """A nats-py connection that records async errors (e.g. `-ERR 'Permissions Violation …'`)."""

    def __init__(self, nc: Client, errors: list[Exception]) -> None:
        self.nc = nc
        self.errors = errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self.nc, name)


async def connect(url: str, **kw: Any) -> Conn:
    errors: list[Exception] = []

    async def error_cb(e: Exception) -> None:
        errors.append(e)

    kw.setdefault("allow_reconnect", False)
    kw.setdefault("connect_timeout", 5)
    nc = await nats.connect(url, error_cb=error_cb, **kw)
    return Conn(nc, errors)


async def request_raw(nc: Any, subject: str, body: bytes | str | dict | None = None,
                      timeout: float = 3.0, headers: dict[str, str] | None = None) -> bytes:
    if isinstance(body, dict):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body or b""
    nc = getattr(nc, "nc", nc)
    msg = await nc.request(subject, data, timeout=timeout, headers=headers)
    return msg.data


async def request_json(nc: Any, subject: str, body: bytes | str | dict | None = None,
                       timeout: float = 3.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Send a request; the reply must be a JSON object."""
    data = await request_raw(nc, subject, body, timeout, headers)
    obj = json.loads(data)
    assert isinstance(obj, dict), f"reply to {subject} is not a JSON object: {data!r}"
    return obj


def assert_ok(reply: dict[str, Any]) -> dict[str, Any]:
    """A successful reply carries no `error` key at all (SDKs raise when it is present)."""
    assert "error" not in reply, f"unexpected error reply: {reply}"
    return reply


def assert_error(reply: dict[str, Any], *words: str) -> str:
    assert set(reply) == {"error"}, f"expected {{'error': ...}}, got {reply}"
    text = reply["error"]
    assert isinstance(text, str) and text.strip(), f"error must be a clear message: {reply}"
    for w in words:
        assert w.lower() in text.lower(), f"error {text!r} should mention {w!r}"
    return text


async def create(nc: Any, ttl: int | None = 60, **fields: Any) -> str:
    body: dict[str, Any] = dict(fields)
    if ttl is not None:
        body["ttl"] = ttl
    reply = assert_ok(await request_json(nc, CREATE, body))
    assert isinstance(reply.get("mail_id"), str), reply
    return reply["mail_id"]


async def create_public(nc: Any, name: str, ttl: int | None = 60, desc: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"public": True, "name": name, "desc": desc}
    if ttl is not None:
        body["ttl"] = ttl
    return assert_ok(await request_json(nc, CREATE, body))


async def send(nc: Any, mail_id: str, payload: bytes = b"x", priority: str | None = None,
               headers: dict[str, str] | None = None, timeout: float = 3.0) -> int:
    """Send as a request (store-first): returns the msg_id once the message is stored."""
    reply = assert_ok(await request_json(nc, msg_subject(mail_id, priority), payload, timeout, headers))
    assert set(reply) == {"msg_id"}, reply
    assert isinstance(reply["msg_id"], int) and not isinstance(reply["msg_id"], bool), reply
    return reply["msg_id"]


async def list_mailbox(nc: Any, mail_id: str) -> list[dict[str, Any]]:
    reply = assert_ok(await request_json(nc, list_subject(mail_id)))
    assert reply.get("mail_id") == mail_id, reply
    assert isinstance(reply.get("messages"), list), reply
    return reply["messages"]


async def barrier(nc: Any) -> None:
    """Make sure every earlier publish of this connection reached the server.

    nats-py 2.16 writes flush()'s PING ahead of its own buffered PUBs, so one flush only drains the
    buffer; the second one's PING follows the PUBs on the wire.
    """
    nc = getattr(nc, "nc", nc)
    await nc.flush(timeout=5)
    await nc.flush(timeout=5)


class Inbox:
    """Collects messages of one subscription, with bounded waits."""

    def __init__(self, limit: int = 200_000) -> None:
        self.msgs: list[Msg] = []
        self.limit = limit
        self._changed = asyncio.Event()
        self.sub: Any = None

    async def cb(self, msg: Msg) -> None:
        assert len(self.msgs) < self.limit, "inbox overflow"
        self.msgs.append(msg)
        self._changed.set()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[Msg]:
        """Wait until at least n messages arrived (asserts within timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.msgs) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(self.msgs)} of {n} messages within {timeout}s"
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass
        return self.msgs

    async def settle(self, quiet: float = 0.3, timeout: float = 5.0) -> list[Msg]:
        """Wait until nothing new arrived for `quiet` seconds (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = len(self.msgs)
            await asyncio.sleep(quiet)
            if len(self.msgs) == n:
                return self.msgs
        return self.msgs

    @property
    def payloads(self) -> list[bytes]:
        return [m.data for m in self.msgs]

    @property
    def ids(self) -> list[int]:
        return [msg_id(m) for m in self.msgs]

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(m.data) for m in self.msgs]


async def subscribe(nc: Any, subject: str, queue: str = "", limit: int = 200_000) -> Inbox:
    inbox = Inbox(limit)
    nc = getattr(nc, "nc", nc)
    inbox.sub = await nc.subscribe(subject, queue=queue, cb=inbox.cb,
                                   pending_msgs_limit=limit + 1, pending_bytes_limit=1 << 30)
    return inbox


async def collect(nc: Any, subject: str, queue: str = "", n: int | None = None,
                  window: float = 0.5, timeout: float = 5.0) -> list[Msg]:
    """Subscribe, gather messages (until n arrived, or until quiet for `window`), unsubscribe."""
    inbox = await subscribe(nc, subject, queue)
    try:
        if n is not None:
            await inbox.wait_for(n, timeout)
            await asyncio.sleep(min(window, 0.3))  # anything extra would show up here
        else:
            await inbox.settle(window, timeout)
    finally:
        await inbox.sub.unsubscribe()
    return list(inbox.msgs)


def msg_id(m: Msg) -> int:
    assert m.headers and "mq9-msg-id" in m.headers, f"no mq9-msg-id header on {m.subject}: {m.headers}"
    return int(m.headers["mq9-msg-id"])


def priority(m: Msg) -> str:
    assert m.headers and "mq9-priority" in m.headers, m.headers
    return m.headers["mq9-priority"]


def is_mailbox_subject(subject: str) -> bool:
    return subject.startswith("$mq9.AI.MAILBOX.MSG.")


def perm_errors(conn: Conn) -> list[str]:
    return [str(e) for e in conn.errors if "permissions violation" in str(e).lower()]


async def wait_until(pred: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(interval)
    return bool(pred())


# ---------------------------------------------------------------------------------------- raw socket

_CTRL = re.compile(rb"^(MSG|HMSG) (\S+) (\S+)(?: (\S+))?(?: (\S+))? (\d+)\r\n$")


class RawClient:
    """A minimal NATS protocol client on a raw socket (answers PINGs, parses MSG/HMSG/-ERR)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.info: dict[str, Any] = {}
        self._pending: list[tuple] = []

    @classmethod
    async def connect(cls, port: int, headers: bool = False, verbose: bool = False) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        c = cls(reader, writer)
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"INFO "), line
        c.info = json.loads(line[5:])
        opts = {"verbose": verbose, "pedantic": False, "headers": headers, "lang": "raw", "version": "0",
                "protocol": 1}
        await c.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
        await c.ping()
        return c

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ping(self, timeout: float = 5.0) -> None:
        """PING and wait for the PONG (skipping anything else, which is returned by read_frames)."""
        await self.send(b"PING\r\n")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no PONG"
            f = await self._read_socket_frame(left)
            if f[0] == "PONG":
                return
            self._pending.append(f)

    async def read_frame(self, timeout: float = 5.0) -> tuple:
        """Next frame: ("MSG", subject, sid, reply, payload), ("HMSG", subject, sid, reply, hdr,
        payload), ("ERR", text), ("OK",), ("PONG",). PINGs are answered and skipped."""
        if self._pending:
            return self._pending.pop(0)
        return await self._read_socket_frame(timeout)

    async def _read_socket_frame(self, timeout: float) -> tuple:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("connection closed by server")
            if line == b"PING\r\n":
                await self.send(b"PONG\r\n")
                continue
            if line == b"PONG\r\n":
                return ("PONG",)
            if line == b"+OK\r\n":
                return ("OK",)
            if line.startswith(b"-ERR"):
                return ("ERR", line[4:].strip().decode())
            if line.startswith(b"INFO "):
                continue
            m = _CTRL.match(line)
            assert m, f"unexpected line from server: {line!r}"
            op, subject, sid = m.group(1).decode(), m.group(2).decode(), m.group(3).decode()
            rest = [g for g in (m.group(4), m.group(5)) if g is not None]
            total = int(m.group(6))
            if op == "MSG":
                reply = rest[0].decode() if rest else ""
                body = await asyncio.wait_for(self.reader.readexactly(total + 2), timeout)
                return ("MSG", subject, sid, reply, body[:-2])
            # HMSG <subject> <sid> [reply] <hdr_len> <total_len>
            reply = rest[0].decode() if len(rest) == 2 else ""
            hdr_len = int(rest[-1])
            body = await asyncio.wait_for(self.reader.readexactly(total + 2), timeout)
            return ("HMSG", subject, sid, reply, body[:hdr_len], body[hdr_len:-2])

    async def read_until(self, pred: Any, timeout: float = 5.0) -> list[tuple]:
        out: list[tuple] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; got {out}"
            f = await self.read_frame(left)
            out.append(f)
            if pred(f):
                return out

    async def frames_for(self, seconds: float, max_frames: int = 10_000) -> list[tuple]:
        """Everything that arrives within `seconds` (PING-answered), bounded in count."""
        out: list[tuple] = []
        deadline = time.monotonic() + seconds
        while len(out) < max_frames:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(await self.read_frame(left))
            except TimeoutError:
                break
        return out

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ConnectionError):  # already gone
            pass


def up_ok(reply: dict[str, Any]) -> dict[str, Any]:
    """An upstream-dialect success reply (`error` is "")."""
    assert reply.get("error") == "", f"expected an upstream success reply: {reply}"
    return reply


def up_error(reply: dict[str, Any], *words: str) -> str:
    """An upstream-dialect error reply: only `error`, a clear text mentioning each of `words`."""
    assert set(reply) == {"error"}, f"expected {{'error': ...}}, got {reply}"
    text = reply["error"]
    assert isinstance(text, str) and text.strip(), reply
    for w in words:
        assert w.lower() in text.lower(), f"error {text!r} should mention {w!r}"
    return text
