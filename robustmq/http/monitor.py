"""HTTP monitoring on plain asyncio, shaped like nats-server's monitoring port.

Endpoints (GET or HEAD): ``/healthz``, ``/varz``, ``/connz``, ``/subsz`` (alias ``/subscriptionsz``),
``/metrics`` (Prometheus text format 0.0.4) and ``/`` (an index). JSON field names follow
nats-server so existing tooling and habits carry over; robustmq-only figures (mailboxes, log) are
extra fields.

Everything is read from counters the broker already keeps on its event loop; a request never
touches the publish path. The HTTP side is deliberately small: one request per connection
(``Connection: close``), request line + headers bounded to 8 KiB, bodies ignored.

Access: when clients must authenticate (``--user``/``--password`` or ``--token``), every endpoint
except ``/healthz`` requires the same credentials: HTTP Basic ``user:password``, or for a token
``Authorization: Bearer <token>`` (Basic with the token as password, or as user with an empty
password, works too); anything else gets 401. ``/healthz`` stays open for liveness probes: it
answers only ``{"status": "ok"}`` or 503 and reveals nothing about clients, subjects or mailboxes.

Secrecy (SPEC §4, §8): a private mailbox id (``mail-…``) is a capability, so no endpoint shows one.
Subjects under ``$mq9.AI.MAILBOX.`` are cut at their ``mail-`` token (``$mq9.AI.MAILBOX.MSG.mail-…``),
anything shaped like a private id in other client-supplied strings (connection names, subjects, queue
groups, sids) is replaced by ``mail-…``, and ``/subsz?test=`` never matches such subscriptions.
Public mailbox names are not secret and stay visible.

Capacity: at most MAX_CLIENTS monitoring connections are open at once. When a new one arrives at the
cap, the oldest connection that has not sent a complete request head is closed to make room (failing
that, the oldest one lingering after its response), so idle sockets cannot lock out a health probe.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import logging
import math
import os
import platform
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from robustmq import __version__
from robustmq.frontends.nats.server import PROTOCOL_VERSION
from robustmq.routing.subjects import subject_matches, valid_publish_subject

if TYPE_CHECKING:
    from robustmq.server import Broker

log = logging.getLogger("robustmq.http")

MAX_REQUEST_HEAD = 8 * 1024  # request line + headers
READ_TIMEOUT_S = 10.0  # a client gets this long to send its request head
LINGER_S = 1.0  # after the response: read (and discard) what the client still sends, then close
MAX_CLIENTS = 256  # open monitoring connections; the oldest idle one is closed to admit a new one
DEFAULT_LIMIT = 1024  # /connz and /subsz page size, as nats-server
ALLOW = "GET, HEAD"
PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
_METHOD_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSION_RE = re.compile(r"^HTTP/(\d)\.(\d)$")
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("", "0", "false", "no", "off"))
AUTH_CHALLENGE = 'Basic realm="robustmq"'
OPEN_PATHS = frozenset(("/healthz",))  # answered without credentials (liveness probes)

MAILBOX_PREFIX = "$mq9.AI.MAILBOX."
PRIVATE_ID_PREFIX = "mail-"
REDACTED_ID = "mail-…"
# the shape of a private id (`mail-<16 base36>-<16 base36>`), loosely, wherever a client may have put one
_PRIVATE_ID_RE = re.compile(r"mail-[0-9a-z]{8,}-[0-9a-z]{8,}", re.IGNORECASE)

_json = msgspec.json.Encoder()


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------ secrecy

def redact_text(text: str) -> str:
    """Replace anything shaped like a private mailbox id in a client-supplied string."""
    if "mail-" not in text.lower():
        return text
    return _PRIVATE_ID_RE.sub(REDACTED_ID, text)


def redact_subject(subject: str) -> str:
    """`$mq9.AI.MAILBOX.<KIND>.mail-…` for a private mailbox's subject; keeps no character of the id
    (nor what follows it). Public mailbox names and other subjects pass through `redact_text`."""
    if subject.startswith(MAILBOX_PREFIX):
        tokens = subject.split(".")
        for i in range(4, len(tokens)):  # after `$mq9`, `AI`, `MAILBOX`
            if tokens[i].lower().startswith(PRIVATE_ID_PREFIX):
                return ".".join(tokens[:i]) + "." + REDACTED_ID
    return redact_text(subject)


def is_private_subject(subject: str) -> bool:
    return redact_subject(subject) != subject


class _Conn:
    """One monitoring connection; `evicted` is set when it was closed to make room for another."""

    __slots__ = ("evicted", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.evicted = False


# ---------------------------------------------------------------------------------------- formatting

def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def uptime_str(seconds: float) -> str:
    """nats-server's uptime format: `45s`, `3m2s`, `1h2m3s`, `2d1h2m3s`, `1y2d1h2m3s`."""
    s = int(max(seconds, 0))
    mins, hrs, days = s // 60, s // 3600, s // 86400
    yrs = days // 365
    if yrs:
        return f"{yrs}y{days % 365}d{hrs % 24}h{mins % 60}m{s % 60}s"
    if days:
        return f"{days}d{hrs % 24}h{mins % 60}m{s % 60}s"
    if hrs:
        return f"{hrs}h{mins % 60}m{s % 60}s"
    if mins:
        return f"{mins}m{s % 60}s"
    return f"{s}s"


def _prom_value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _prom_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Prom:
    """Accumulates metric families in the Prometheus text exposition format 0.0.4."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, mtype: str, help_: str,
               samples: list[tuple[dict[str, str], float]] | float) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {mtype}")
        if not isinstance(samples, list):
            samples = [({}, samples)]
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        if labels:
            lab = ",".join(f'{k}="{_prom_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_prom_value(value)}")
        else:
            self.lines.append(f"{name} {_prom_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# ------------------------------------------------------------------------------------ process figures

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:  # noqa: BLE001 - best effort on odd platforms
            return 0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


# ---------------------------------------------------------------------------------------- the server

class MonitorServer:
    """The monitoring listener of one Broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.port = 0
        self.host = ""
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # open connections; those still waiting for a request head; those lingering after the response.
        # Dicts keep insertion order, so the first key is the oldest (the one to evict first).
        self._conns: dict[_Conn, None] = {}
        self._idle: dict[_Conn, None] = {}
        self._lingering: dict[_Conn, None] = {}
        self._cpu_mark = (time.monotonic(), _cpu_seconds())
        self._cpu_pct = 0.0
        self.req_stats: dict[str, int] = {}
        self.routes: dict[str, Callable[[dict[str, list[str]]], tuple[int, bytes, str]]] = {
            "/": self._index,
            "/healthz": self._healthz,
            "/varz": self._varz,
            "/connz": self._connz,
            "/subsz": self._subsz,
            "/subscriptionsz": self._subsz,
            "/metrics": self._metrics,
        }

    async def start(self, host: str, port: int) -> None:
        self.host = host
        self._server = await asyncio.start_server(self._client, host, port, limit=MAX_REQUEST_HEAD,
                                                  reuse_address=True, backlog=128)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # ------------------------------------------------------------------ HTTP
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Conn(writer)
        if len(self._conns) >= MAX_CLIENTS:
            self._evict_one()
        over = len(self._conns) >= MAX_CLIENTS
        self._conns[conn] = None
        try:
            if over:  # only when every slot is answering a request right now
                self._send(writer, 503, *self._error_body(503, "too many monitoring connections"))
            else:
                self._idle[conn] = None
                await self._serve_one(reader, writer, conn)
            if not conn.evicted:
                self._idle.pop(conn, None)  # still there after an error answered before a full head
                self._lingering[conn] = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._linger(reader, writer), LINGER_S)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad request must not take the listener down
            log.exception("monitoring request failed")
        finally:
            self._conns.pop(conn, None)
            self._idle.pop(conn, None)
            self._lingering.pop(conn, None)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), LINGER_S)

    def _evict_one(self) -> None:
        """Free a slot now: close the oldest connection still waiting for its request head, else the
        oldest one lingering after its response (it has had the longest to read it).

        Aborting the socket wakes every read or drain it waits in, so its task ends on its own."""
        pool = self._idle or self._lingering
        if not pool:
            return
        victim = next(iter(pool))
        del pool[victim]
        self._conns.pop(victim, None)
        victim.evicted = True
        victim.writer.transport.abort()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then drain what the client still sends (an ignored body, the rest of a bad
        request): closing with unread data would reset the connection and could lose the response."""
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        while await reader.read(65536):
            pass

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         conn: _Conn) -> None:
        try:
            lines = await asyncio.wait_for(self._read_head(reader, conn), READ_TIMEOUT_S)
        except TimeoutError:
            if not conn.evicted:
                self._send(writer, 408, *self._error_body(408, "request head not received in time"))
            return
        except HttpError as exc:
            if not conn.evicted:
                self._send(writer, exc.status, *self._error_body(exc.status, exc.message))
            return
        if lines is None or conn.evicted:
            return  # the client went away before sending anything, or was closed to make room
        head_only = False
        extra: list[str] = []
        try:
            method, target, headers = self._parse_head(lines)
            head_only = method == "HEAD"
            parts = urlsplit(target)
            path = parts.path or "/"
            if len(path) > 1:
                path = path.rstrip("/") or "/"
            # before anything else, so an unauthenticated caller learns nothing (not even which paths exist)
            if path not in OPEN_PATHS and not self._authorized(headers.get("authorization")):
                extra.append(f"WWW-Authenticate: {AUTH_CHALLENGE}")
                raise HttpError(401, "authentication required")
            if method not in ("GET", "HEAD"):
                raise HttpError(405, f"method {method} not allowed; use GET or HEAD")
            handler = self.routes.get(path)
            if handler is None:
                raise HttpError(404, f"no such endpoint {path}; see / for the list")
            self.req_stats[path] = self.req_stats.get(path, 0) + 1
            query = parse_qs(parts.query, keep_blank_values=True)
            status, body, ctype = handler(query)
        except HttpError as exc:
            status, body, ctype = exc.status, *self._error_body(exc.status, exc.message)
        self._send(writer, status, body, ctype, head_only, extra)

    def _authorized(self, authorization: str | None) -> bool:
        """The client credentials of the broker, presented as HTTP Basic or Bearer (for a token)."""
        cfg = self.broker.cfg
        if not (cfg.user or cfg.token):
            return True
        if authorization is None:
            return False
        scheme, _, cred = authorization.strip().partition(" ")
        scheme, cred = scheme.lower(), cred.strip()
        user = password = b""
        if scheme == "bearer":
            if not cfg.token:
                return False
            presented = cred.encode("latin-1")
        elif scheme == "basic":
            try:
                user, _, password = base64.b64decode(cred, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            presented = password or user  # `curl -u :TOKEN` or `curl -u TOKEN:`
        else:
            return False
        if cfg.token:  # as the NATS side: a configured token is the only credential
            return hmac.compare_digest(presented, cfg.token.encode())
        # both compared every time: which of the two was wrong must not show in the timing
        ok_user = hmac.compare_digest(user, cfg.user.encode())
        ok_password = hmac.compare_digest(password, cfg.password.encode())
        return ok_user and ok_password

    async def _read_head(self, reader: asyncio.StreamReader, conn: _Conn) -> list[bytes] | None:
        """Request line and header lines (without line ends); None on EOF before any byte.

        The connection stops being idle (evictable) in the same step that completes its head."""
        lines: list[bytes] = []
        total = 0
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError) as exc:
                raise HttpError(431, f"request head is larger than {MAX_REQUEST_HEAD} bytes") from exc
            total += len(line)
            if total > MAX_REQUEST_HEAD:
                raise HttpError(431, f"request head is larger than {MAX_REQUEST_HEAD} bytes")
            if not line:
                if not lines and total == 0:
                    return None
                raise HttpError(400, "incomplete request head")
            if not line.endswith(b"\n"):
                raise HttpError(400, "incomplete request head")
            line = line.rstrip(b"\r\n")
            if not line:
                if not lines:
                    continue  # tolerate empty lines before the request line (RFC 9112 §2.2)
                self._idle.pop(conn, None)
                return lines
            lines.append(line)

    @staticmethod
    def _parse_head(lines: list[bytes]) -> tuple[str, str, dict[str, str]]:
        """(method, target, headers by lower-case name; the last of repeated ones wins)."""
        try:
            request_line = lines[0].decode("ascii")
        except UnicodeDecodeError as exc:
            raise HttpError(400, "malformed request line") from exc
        parts = request_line.split(" ")
        if len(parts) != 3 or not _METHOD_RE.match(parts[0]) or not parts[1]:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        m = _VERSION_RE.match(version)
        if m is None:
            raise HttpError(400, "malformed request line")
        if m.group(1) != "1":
            raise HttpError(505, f"{version} is not supported; use HTTP/1.1")
        if not (target.startswith(("/", "http://", "https://")) or target == "*"):
            raise HttpError(400, "malformed request target")
        if any(ord(c) <= 32 or ord(c) == 127 for c in target):
            raise HttpError(400, "malformed request target")
        headers: dict[str, str] = {}
        for h in lines[1:]:
            name, colon, value = h.partition(b":")
            if not colon or not name or name != name.strip() or b" " in name:
                raise HttpError(400, "malformed header line")
            headers[name.decode("latin-1").lower()] = value.strip(b" \t").decode("latin-1")
        return method, target, headers

    @staticmethod
    def _error_body(status: int, message: str) -> tuple[bytes, str]:
        return _json.encode({"error": message, "code": status}) + b"\n", JSON_CONTENT_TYPE

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
              head_only: bool = False, extra: list[str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}",
                "Cache-Control: no-cache",
                "Connection: close"]
        if status == 405:
            head.append(f"Allow: {ALLOW}")
        if extra:
            head.extend(extra)
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        writer.write(data if head_only else data + body)

    # ------------------------------------------------------------------ query helpers
    @staticmethod
    def _param(q: dict[str, list[str]], name: str) -> str | None:
        vals = q.get(name)
        return vals[-1] if vals else None

    def _int(self, q: dict[str, list[str]], name: str, default: int) -> int:
        raw = self._param(q, name)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw, 10)
        except ValueError:
            raise HttpError(400, f"invalid {name} {raw!r}: want a non-negative integer") from None
        if v < 0:
            raise HttpError(400, f"invalid {name} {raw!r}: want a non-negative integer")
        return v

    def _subs_mode(self, q: dict[str, list[str]]) -> str:
        """'' (no list), 'list' (subjects) or 'detail'."""
        raw = self._param(q, "subs")
        if raw is None:
            return ""
        raw = raw.lower()
        if raw == "detail":
            return "detail"
        if raw in _TRUE:
            return "list"
        if raw in _FALSE:
            return ""
        raise HttpError(400, f"invalid subs {raw!r}: want 1, 0 or detail")

    @staticmethod
    def _json(obj: Any) -> tuple[int, bytes, str]:
        return 200, msgspec.json.format(_json.encode(obj), indent=2) + b"\n", JSON_CONTENT_TYPE

    # ------------------------------------------------------------------ broker figures
    def _server_id(self) -> str:
        return self.broker.nats.server_id

    def _server_name(self) -> str:
        return self.broker.cfg.server_name or self.broker.nats.server_id

    def _subscription_count(self) -> int:
        return sum(len(c.subs) for c in self.broker.nats.conns.values())

    def _cpu_percent(self) -> float:
        """CPU use (% of one core) since the previous call, like `ps`-style sampling in nats-server."""
        now, cpu = time.monotonic(), _cpu_seconds()
        t0, c0 = self._cpu_mark
        if now - t0 >= 0.5:
            self._cpu_pct = round(100.0 * (cpu - c0) / (now - t0), 1)
            self._cpu_mark = (now, cpu)
        return self._cpu_pct

    def _log_summary(self) -> dict[str, Any]:
        lg = self.broker.log
        st = lg.stats
        return {
            "appends": st.appends,
            "bytes": st.bytes_appended,
            "batches": st.batches,
            "commit_avg_us": round(st.commit_seconds_total / st.batches * 1e6, 1) if st.batches else 0.0,
            "commit_max_us": round(st.commit_seconds_max * 1e6, 1),
            "streams": len(lg.streams),
            "segments_dropped": st.segments_dropped,
            "durability": self.broker.cfg.durability,
        }

    # ------------------------------------------------------------------ endpoints
    def _index(self, q: dict[str, list[str]]) -> tuple[int, bytes, str]:
        return self._json({
            "server_id": self._server_id(),
            "version": __version__,
            "endpoints": ["/healthz", "/varz", "/connz", "/subsz", "/metrics"],
        })

    def _healthz(self, q: dict[str, list[str]]) -> tuple[int, bytes, str]:
        nats = self.broker.nats
        srv = getattr(nats, "_server", None)
        if self.broker.cfg.nats_port and (srv is None or not srv.is_serving()):
            _, body, ctype = self._json({"status": "unavailable", "error": "NATS listener is down"})
            return 503, body, ctype
        return self._json({"status": "ok"})

    def _varz(self, q: dict[str, list[str]]) -> tuple[int, bytes, str]:
        b = self.broker
        cfg = b.cfg
        nats = b.nats
        now = time.time()
        in_msgs, out_msgs, in_bytes, out_bytes = nats.totals()
        mq9 = b.mq9
        varz: dict[str, Any] = {
            "server_id": nats.server_id,
            "server_name": self._server_name(),
            "version": PROTOCOL_VERSION,  # as in INFO: the NATS protocol level clients check
            "robustmq_version": __version__,
            "proto": 1,
            "go": f"robustmq {__version__} (python {platform.python_version()})",
            "host": cfg.host,
            "port": nats.port if cfg.nats_port else 0,
            "auth_required": nats.auth_required,
            "tls_required": False,
            "max_connections": 0,  # not limited
            "ping_interval": int(cfg.ping_interval_s * 1e9),  # nanoseconds, as nats-server
            "ping_max": cfg.max_pings_out,
            "http_host": self.host,
            "http_port": self.port,
            "auth_timeout": cfg.auth_timeout_s,
            "max_control_line": cfg.max_control_line,
            "max_payload": cfg.max_payload,
            "max_pending": cfg.max_pending,
            "start": rfc3339(b.started),
            "now": rfc3339(now),
            "uptime": uptime_str(now - b.started),
            "mem": _rss_bytes(),
            "cores": os.cpu_count() or 1,
            "cpu": self._cpu_percent(),
            "connections": len(nats.conns),
            "total_connections": nats.total_connections,
            "routes": 0,
            "remotes": 0,
            "leafnodes": 0,
            "in_msgs": in_msgs,
            "out_msgs": out_msgs,
            "in_bytes": in_bytes,
            "out_bytes": out_bytes,
            "slow_consumers": nats.slow_consumers,
            "subscriptions": self._subscription_count(),
            "http_req_stats": dict(self.req_stats),
            # robustmq extras
            "mailboxes": mq9.mailbox_count() if mq9 is not None else 0,
            "mailboxes_expired": mq9.stats.mailboxes_expired if mq9 is not None else 0,
            "log": self._log_summary(),
            "router": msgspec.structs.asdict(b.router.stats),
        }
        if mq9 is not None:
            varz["mq9"] = msgspec.structs.asdict(mq9.stats)
        return self._json(varz)

    def _connz(self, q: dict[str, list[str]]) -> tuple[int, bytes, str]:
        nats = self.broker.nats
        offset = self._int(q, "offset", 0)
        limit = self._int(q, "limit", DEFAULT_LIMIT)
        subs = self._subs_mode(q)
        sort = (self._param(q, "sort") or "cid").lower()
        keys: dict[str, tuple[Callable[[Any], Any], bool]] = {
            "cid": (lambda c: c.cid, False),
            "start": (lambda c: c.start_time, False),
            "uptime": (lambda c: c.start_time, False),  # longest-lived first
            "subs": (lambda c: len(c.subs), True),
            "pending": (lambda c: c.outbound_size(), True),
            "msgs_to": (lambda c: c.msgs_out, True),
            "msgs_from": (lambda c: c.msgs_in, True),
            "bytes_to": (lambda c: c.bytes_out, True),
            "bytes_from": (lambda c: c.bytes_in, True),
        }
        if sort not in keys:
            raise HttpError(400, f"invalid sort {sort!r}: want one of {', '.join(keys)}")
        conns = list(nats.conns.values())
        cid_raw = self._param(q, "cid")
        if cid_raw not in (None, ""):
            cid = self._int(q, "cid", 0)
            conns = [c for c in conns if c.cid == cid]
        key, desc = keys[sort]
        conns.sort(key=key, reverse=desc)
        total = len(conns)
        page = conns[offset:offset + limit]
        now = time.time()
        out = []
        for c in page:
            peer = c.peer if isinstance(c.peer, tuple) else ("", 0)
            info: dict[str, Any] = {
                "cid": c.cid,
                "kind": "Client",
                "type": "nats",
                "ip": str(peer[0]) if peer else "",
                "port": int(peer[1]) if len(peer) > 1 else 0,
                "start": rfc3339(c.start_time),
                "uptime": uptime_str(now - c.start_time),
                "pending_bytes": c.outbound_size(),
                "in_msgs": c.msgs_in,
                "out_msgs": c.msgs_out,
                "in_bytes": c.bytes_in,
                "out_bytes": c.bytes_out,
                "subscriptions": len(c.subs),
                "name": redact_text(c.name),
                "lang": redact_text(c.lang),
                "version": redact_text(c.version),
            }
            if subs == "list":
                info["subscriptions_list"] = [redact_subject(s.subject) for s in c.subs.values()]
            elif subs == "detail":
                info["subscriptions_list_detail"] = [self._sub_detail(s) for s in c.subs.values()]
            out.append(info)
        return self._json({
            "server_id": nats.server_id,
            "now": rfc3339(now),
            "num_connections": len(out),
            "total": total,
            "offset": offset,
            "limit": limit,
            "connections": out,
        })

    @staticmethod
    def _sub_detail(s: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"subject": redact_subject(s.subject)}
        if s.queue:
            d["qgroup"] = redact_text(s.queue)
        d["sid"] = redact_text(s.sid)
        d["msgs"] = s.delivered
        if s.max_msgs:
            d["max"] = s.max_msgs
        d["cid"] = s.conn.cid
        return d

    def _subsz(self, q: dict[str, list[str]]) -> tuple[int, bytes, str]:
        b = self.broker
        offset = self._int(q, "offset", 0)
        limit = self._int(q, "limit", DEFAULT_LIMIT)
        subs = self._subs_mode(q)
        test = self._param(q, "test")
        if test is not None and not valid_publish_subject(test):
            raise HttpError(400, f"invalid test subject {test!r}: want a literal subject")
        total = self._subscription_count()
        fanouts = b.router.cached_fanouts()
        res: dict[str, Any] = {
            "server_id": b.nats.server_id,
            "now": rfc3339(time.time()),
            "num_subscriptions": total,
            "num_cache": len(fanouts),
            "max_fanout": max(fanouts, default=0),
            "avg_fanout": round(sum(fanouts) / len(fanouts), 2) if fanouts else 0.0,
            # robustmq: plain subscriptions live in the subject trie, mailbox ones in the mq9 layer
            "num_trie": b.router.subscription_count,
            "num_mq9": max(total - b.router.subscription_count, 0),
        }
        if subs or test is not None:
            every = [s for c in sorted(b.nats.conns.values(), key=lambda c: c.cid) for s in c.subs.values()]
            if test is not None:
                # a private mailbox's subscriptions never match: ?test= must not confirm that an id is live
                every = [s for s in every
                         if not is_private_subject(s.subject) and subject_matches(s.subject, test)]
            page = every[offset:offset + limit]
            res["total"] = len(every)
            res["offset"] = offset
            res["limit"] = limit
            res["subscriptions_list"] = [self._sub_detail(s) for s in page]
        return self._json(res)

    def _metrics(self, q: dict[str, list[str]]) -> tuple[int, bytes, str]:
        b = self.broker
        nats = b.nats
        in_msgs, out_msgs, in_bytes, out_bytes = nats.totals()
        nl = {"protocol": "nats"}
        p = _Prom()
        p.family("robustmq_info", "gauge", "Server identity (always 1).",
                 [({"version": __version__, "server_id": nats.server_id,
                    "server_name": self._server_name()}, 1)])
        p.family("robustmq_connections", "gauge", "Open client connections.",
                 [(nl, len(nats.conns))])
        p.family("robustmq_connections_total", "counter", "Client connections accepted since start.",
                 [(nl, nats.total_connections)])
        p.family("robustmq_subscriptions", "gauge", "Live client subscriptions.",
                 [(nl, self._subscription_count())])
        p.family("robustmq_messages_in_total", "counter", "Messages published by clients.",
                 [(nl, in_msgs)])
        p.family("robustmq_messages_out_total", "counter", "Messages delivered to clients.",
                 [(nl, out_msgs)])
        p.family("robustmq_bytes_in_total", "counter", "Bytes received from clients (wire bytes).",
                 [(nl, in_bytes)])
        p.family("robustmq_bytes_out_total", "counter", "Bytes sent to clients (wire bytes).",
                 [(nl, out_bytes)])
        p.family("robustmq_slow_consumers_total", "counter",
                 "Connections closed because they did not read fast enough.",
                 [(nl, nats.slow_consumers)])
        p.family("robustmq_messages_no_subscribers_total", "counter",
                 "Publishes that reached no live subscriber (still logged unless ephemeral).",
                 b.router.stats.no_subscribers)
        mq9 = b.mq9
        if mq9 is not None:
            ms = mq9.stats
            dropped: list[tuple[dict[str, str], float]] = [
                ({"reason": "mq9_no_mailbox"}, ms.dropped_no_mailbox),
                ({"reason": "mq9_mailbox_full"}, ms.refused_full)]
        else:
            dropped = [({"reason": "mq9_no_mailbox"}, 0), ({"reason": "mq9_mailbox_full"}, 0)]
        p.family("robustmq_dropped_messages_total", "counter",
                 "Messages not stored: sent to a missing mailbox or refused by a full one "
                 "(the backlog of a slow consumer is counted by robustmq_slow_consumers_total).",
                 dropped)
        st = b.log.stats
        p.family("robustmq_log_appends_total", "counter", "Records appended to the log.", st.appends)
        p.family("robustmq_log_append_bytes_total", "counter", "Payload bytes appended to the log.",
                 st.bytes_appended)
        p.family("robustmq_log_batches_total", "counter", "Write batches committed to the store.",
                 st.batches)
        p.lines.append("# HELP robustmq_log_commit_seconds Time to commit one write batch "
                       "(what an acknowledged publish waits for).")
        p.lines.append("# TYPE robustmq_log_commit_seconds summary")
        p.sample("robustmq_log_commit_seconds_sum", {}, float(st.commit_seconds_total))
        p.sample("robustmq_log_commit_seconds_count", {}, st.batches)
        p.family("robustmq_log_commit_seconds_max", "gauge", "Longest batch commit since start.",
                 float(st.commit_seconds_max))
        p.family("robustmq_log_streams", "gauge", "Streams in the log.", len(b.log.streams))
        p.family("robustmq_log_segments_dropped_total", "counter", "Segments removed by retention.",
                 st.segments_dropped)
        if mq9 is not None:
            ms = mq9.stats
            p.family("robustmq_mq9_mailboxes", "gauge", "Live mq9 mailboxes.", mq9.mailbox_count())
            p.family("robustmq_mq9_mailboxes_created_total", "counter", "mq9 mailboxes created.",
                     ms.mailboxes_created)
            p.family("robustmq_mq9_mailboxes_expired_total", "counter",
                     "mq9 mailboxes removed at the end of their TTL.", ms.mailboxes_expired)
            p.family("robustmq_mq9_messages_stored_total", "counter", "Messages stored in mailboxes.",
                     ms.messages_stored)
            p.family("robustmq_mq9_messages_delivered_total", "counter",
                     "Live mailbox messages delivered to subscribers.", ms.messages_delivered)
            p.family("robustmq_mq9_replays_total", "counter",
                     "Subscriptions that replayed a mailbox's stored messages.", ms.replays)
        p.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                 _rss_bytes())
        p.family("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.",
                 _cpu_seconds())
        p.family("process_start_time_seconds", "gauge", "Start time of the process since the epoch.",
                 float(b.started))
        fds = _open_fds()
        if fds is not None:
            p.family("process_open_fds", "gauge", "Open file descriptors.", fds)
        return 200, p.text().encode(), PROM_CONTENT_TYPE
