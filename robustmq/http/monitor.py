"""HTTP monitoring on aiohttp, shaped like nats-server's monitoring port.

Endpoints (GET or HEAD, with or without a trailing slash): ``/healthz``, ``/varz``, ``/connz``,
``/subsz`` (alias ``/subscriptionsz``), ``/metrics`` (prometheus-client) and ``/`` (an index).
The JSON views live in `views.py`, the Prometheus collectors in `metrics.py`; this module is the
aiohttp application around them: routes, credentials, JSON error bodies, the listener.

Access: when clients must authenticate (``--user``/``--password`` or ``--token``), every endpoint
except ``/healthz`` requires the same credentials: HTTP Basic ``user:password``, or for a token
``Authorization: Bearer <token>`` (Basic with the token as password, or as user with an empty
password, works too); anything else gets 401, before routing, so an unauthenticated caller learns
nothing (not even which paths exist). ``/healthz`` stays open for liveness probes: it answers only
``{"status": "ok"}`` or 503 and reveals nothing about clients, subjects or mailboxes.

Logging: aiohttp logs each request it cannot parse at ERROR with a traceback, so any remote client
could flood the server log; those become one DEBUG line here. A failure of our own handlers stays a
loud ERROR with its traceback.

Connections: aiohttp keeps them alive between requests; one that has not completed a request within
IDLE_TIMEOUT_S (idle, or stuck in a partial head) is closed, so idle sockets cannot pile up forever,
and each is only a parked parser, so they never delay a health probe.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import HttpVersion10, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from robustmq.http.metrics import CONTENT_TYPE as PROM_CONTENT_TYPE
from robustmq.http.metrics import build_registry, render
from robustmq.http.redact import is_private_subject, redact_subject, redact_text
from robustmq.http.views import HttpError, MonitorViews, Query

if TYPE_CHECKING:
    from robustmq.server import Broker

__all__ = ["MonitorServer", "is_private_subject", "redact_subject", "redact_text"]

log = logging.getLogger("robustmq.http")
# handed to aiohttp as its per-connection logger, with `_ClientErrorFilter` on it
server_log = logging.getLogger("robustmq.http.server")

MAX_REQUEST_LINE = 8 * 1024  # request line, and each header line (aiohttp answers longer ones with 400)
IDLE_TIMEOUT_S = 10.0  # keep-alive idle time, and the time a new connection gets to send a request
SHUTDOWN_TIMEOUT_S = 2.0  # for requests in flight when the broker stops
AUTH_CHALLENGE = 'Basic realm="robustmq"'
OPEN_PATHS = frozenset(("/healthz",))  # answered without credentials (liveness probes)
JSON_CONTENT_TYPE = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_json = msgspec.json.Encoder()


class _ClientErrorFilter(logging.Filter):
    """A request aiohttp could not parse (or a peer gone mid-request) is the client's fault: one DEBUG
    line instead of aiohttp's ERROR and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (HttpProcessingError, ConnectionError)):
            return True
        if log.isEnabledFor(logging.DEBUG):
            reason = " ".join(str(exc).split())[:200]
            log.debug("%s: %s: %s", record.getMessage(), type(exc).__name__, reason)
        return False


server_log.addFilter(_ClientErrorFilter())


def _canonical(path: str) -> str:
    return path.rstrip("/") or "/"


def _json_response(obj: Any, status: int = 200) -> web.Response:
    body = msgspec.json.format(_json.encode(obj), indent=2) + b"\n"
    return web.Response(status=status, body=body, content_type=JSON_CONTENT_TYPE)


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=_json.encode({"error": message, "code": status}) + b"\n",
                        content_type=JSON_CONTENT_TYPE)


class MonitorServer:
    """The monitoring listener of one Broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.views = MonitorViews(broker)
        self.metrics = build_registry(broker)
        self.host = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def req_stats(self) -> dict[str, int]:
        return self.views.req_stats

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        v = self.views
        routes: dict[str, Handler] = {
            "/": self._json_view(v.index),
            "/healthz": self._healthz,
            "/varz": self._json_view(v.varz),
            "/connz": self._json_view(v.connz),
            "/subsz": self._json_view(v.subsz),
            "/subscriptionsz": self._json_view(v.subsz),
            "/metrics": self._metrics,
        }
        for path, handler in routes.items():
            app.router.add_get(path, handler)  # HEAD too
            if path != "/":
                app.router.add_get(path + "/", handler)
        return app

    async def start(self, host: str, port: int) -> None:
        self.host = host
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, logger=server_log,
                               shutdown_timeout=SHUTDOWN_TIMEOUT_S, keepalive_timeout=IDLE_TIMEOUT_S,
                               max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_REQUEST_LINE)
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, host, port, reuse_address=True, backlog=128).start()
        self.port = runner.addresses[0][1]
        self.views.http_host, self.views.http_port = host, self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ middleware
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Credentials first, then the route; every refusal as a JSON body like the views' errors."""
        resp: web.StreamResponse
        if request.version < HttpVersion10:  # aiohttp takes `GET /path` as HTTP/0.9, which has no headers
            resp = _error(400, "malformed request line: HTTP/1.1 wanted")
        elif request.version.major > 1:
            resp = _error(505, f"HTTP/{request.version.major}.{request.version.minor} is not supported; "
                               "use HTTP/1.1")
        elif _canonical(request.path) not in OPEN_PATHS and not self._authorized(
                request.headers.get(hdrs.AUTHORIZATION)):
            resp = _error(401, "authentication required")
            resp.headers[hdrs.WWW_AUTHENTICATE] = AUTH_CHALLENGE
        else:
            try:
                resp = await handler(request)
            except web.HTTPMethodNotAllowed as exc:
                resp = _error(405, f"method {request.method} not allowed; use GET or HEAD")
                resp.headers[hdrs.ALLOW] = ", ".join(sorted(exc.allowed_methods))
            except web.HTTPNotFound:
                resp = _error(404, f"no such endpoint {request.path}; see / for the list")
        resp.headers[hdrs.CACHE_CONTROL] = "no-cache"
        return resp

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
            presented = cred.encode("utf-8", "surrogateescape")  # the bytes as sent
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

    # ------------------------------------------------------------------ handlers
    def _count(self, request: web.Request) -> None:
        path = _canonical(request.path)
        self.req_stats[path] = self.req_stats.get(path, 0) + 1

    def _json_view(self, view: Callable[[Query], Any]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self._count(request)
            query = dict(request.query.items())  # the last of a repeated parameter wins
            try:
                return _json_response(view(query))
            except HttpError as exc:
                return _error(exc.status, exc.message)
        return handle

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        status, body = self.views.healthz({})
        return _json_response(body, status)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        return web.Response(body=render(self.metrics), headers={hdrs.CONTENT_TYPE: PROM_CONTENT_TYPE})
