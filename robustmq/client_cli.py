"""Client commands of the `robustmq` CLI: the seed's `nats req/pub/sub` mq9 examples without the Go
`nats` tool (SPEC §4, §7), plus `status`.

Every command talks to a running server over plain NATS (nats-py). Output is for people by default;
`--json` prints one JSON object per line for scripts. Failures print `error: <reason>` on stderr (and
`{"error": "<reason>"}` on stdout with `--json`) and exit 1; usage mistakes exit 2.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import typer

DEFAULT_SERVER = "nats://127.0.0.1:4222"
SERVER_ENV = ["ROBUSTMQ_URL", "NATS_URL"]
DEFAULT_HTTP = "http://127.0.0.1:8222"
HTTP_ENV = "ROBUSTMQ_HTTP_URL"
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 2.0
PENDING_MSGS_LIMIT = 1_000_000
PENDING_BYTES_LIMIT = 1 << 30

MQ9_CREATE = "$mq9.AI.MAILBOX.CREATE"
MQ9_MSG = "$mq9.AI.MAILBOX.MSG."
MQ9_LIST = "$mq9.AI.MAILBOX.LIST."
LIST_MAX_PAGES = 1000  # a mailbox holds at most --mq9-max-messages; this bounds the loop
MQ9_DELETE = "$mq9.AI.MAILBOX.DELETE."
MQ9_PUBLIC_LIST = "$mq9.AI.PUBLIC.LIST"
# the seed's levels, then the PyPI SDK's names: low after normal, high = urgent
PRIORITIES = ("normal", "urgent", "critical", "low", "high")
SUB_PRIORITIES = ("all",) + PRIORITIES
MQ9_HEADERS = ("mq9-msg-id", "mq9-priority", "mq9-ts")

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report to the user as `error: <message>` with exit code 1."""


# ------------------------------------------------------------------------------------------ options

def _server_opt() -> Any:
    return typer.Option(DEFAULT_SERVER, "--server", "-s", envvar=SERVER_ENV, show_envvar=True,
                        help="NATS URL of the server; credentials may be in it: "
                        "nats://user:pass@host:port")


def _json_opt() -> Any:
    return typer.Option(False, "--json", help="One JSON object per line, for scripts")


# ------------------------------------------------------------------------------------------- output

def _emit(as_json: bool, obj: Any, text: str) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False) if as_json else text)


def _fail(message: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": message}, ensure_ascii=False))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_FAILURE)


def _run(main: Coroutine[Any, Any, None], as_json: bool, interrupt_ok: bool = False) -> None:
    """Run one command's coroutine, turning failures into messages and exit codes."""
    try:
        asyncio.run(main)
    except CliError as exc:
        _fail(str(exc), as_json)
    except KeyboardInterrupt:
        raise typer.Exit(0 if interrupt_ok else EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # `robustmq sub … | head`: the reader went away; stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None


def _redact(url: str) -> str:
    """The URL without a password or token, for messages."""
    try:
        parts = urlsplit(url if "://" in url else "nats://" + url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not text:
        return "timed out"
    return text or type(exc).__name__


def _decode_payload(data: bytes) -> tuple[str, bool]:
    """(text, clean): utf-8 with replacement; clean is False when bytes had to be replaced."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), False


def _format_ts(ts: Any) -> str:
    if not isinstance(ts, int) or isinstance(ts, bool):
        return "-" if ts is None else str(ts)
    try:
        return datetime.fromtimestamp(ts / 1000).astimezone().isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return str(ts)


# ---------------------------------------------------------------------------------------------- NATS

@asynccontextmanager
async def _connection(server: str, problems: asyncio.Queue | None = None) -> AsyncIterator[Any]:
    """A nats-py connection that fails fast (no reconnect loop) with `cannot connect to <url>`.

    Asynchronous server errors (e.g. a refused subscription) and a lost connection are put on
    `problems` as CliError, for commands that wait on messages.
    """
    import nats
    import nats.errors

    last_error: list[BaseException] = []
    connected = False
    closing = False

    async def error_cb(exc: Exception) -> None:
        last_error.append(exc)
        if connected and not closing and problems is not None:
            if isinstance(exc, (OSError, nats.errors.UnexpectedEOF, nats.errors.StaleConnectionError,
                                nats.errors.ConnectionClosedError)):
                problems.put_nowait(CliError(f"connection to {_redact(server)} lost: "
                                             f"{_describe(exc)}"))
            else:
                problems.put_nowait(CliError(f"server error: {_describe(exc)}"))

    async def disconnected_cb() -> None:
        if connected and not closing and problems is not None:
            problems.put_nowait(CliError(f"connection to {_redact(server)} lost"))

    try:
        # nats-py retries each server until reconnects > max_reconnect_attempts even on the first
        # connect, so 1 attempt + 1 immediate retry is the shortest finite setting.
        nc = await asyncio.wait_for(
            nats.connect(server, name="robustmq-cli", allow_reconnect=False,
                         max_reconnect_attempts=1, reconnect_time_wait=0,
                         connect_timeout=CONNECT_TIMEOUT_S, error_cb=error_cb,
                         disconnected_cb=disconnected_cb),
            CONNECT_TIMEOUT_S * 2 + 1)
    except Exception as exc:  # noqa: BLE001 - every failure here means "cannot connect"
        cause = last_error[-1] if last_error else exc
        raise CliError(f"cannot connect to {_redact(server)}: {_describe(cause)}") from None
    connected = True
    try:
        yield nc
    finally:
        closing = True
        try:
            await asyncio.wait_for(nc.close(), 2)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


async def _request(nc: Any, subject: str, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An mq9 request; the reply must be a JSON object without an `error` key."""
    from nats import errors

    try:
        msg = await nc.request(subject, body, timeout=REQUEST_TIMEOUT_S, headers=headers)
    except errors.NoRespondersError:
        raise CliError(f"no responder for {subject} (is this a robustmq server?)") from None
    except (TimeoutError, errors.TimeoutError):
        raise CliError(f"no reply to {subject} within {REQUEST_TIMEOUT_S:g}s") from None
    except errors.MaxPayloadError:
        raise CliError("payload is larger than the server's max_payload "
                       f"({nc.max_payload} bytes)") from None
    except (errors.Error, OSError) as exc:
        raise CliError(f"request to {subject} failed: {_describe(exc)}") from None
    try:
        reply = json.loads(msg.data)
    except ValueError:
        raise CliError(f"invalid reply to {subject}: {msg.data[:200]!r}") from None
    if not isinstance(reply, dict):
        raise CliError(f"invalid reply to {subject}: {msg.data[:200]!r}")
    if "error" in reply:
        raise CliError(str(reply["error"]))
    return reply


async def _follow(nc: Any, subject: str, queue: str, count: int | None, timeout: float | None,
                  problems: asyncio.Queue, on_msg: Callable[[Any], None]) -> int:
    """Subscribe and hand each message to on_msg until `count` messages, `timeout` seconds with
    nothing new, or Ctrl-C. Returns how many arrived; a refused subscription raises CliError."""
    if count is not None and count <= 0:
        return 0

    async def cb(msg: Any) -> None:
        problems.put_nowait(msg)

    sub = await nc.subscribe(subject, queue=queue, cb=cb, pending_msgs_limit=PENDING_MSGS_LIMIT,
                             pending_bytes_limit=PENDING_BYTES_LIMIT)
    try:
        await nc.flush(REQUEST_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        raise CliError(f"subscribe to {subject} failed: {_describe(exc)}") from None
    received = 0
    while count is None or received < count:
        try:
            item = await asyncio.wait_for(problems.get(), timeout)
        except TimeoutError:
            if count is not None:
                typer.echo(f"timed out after {timeout:g}s idle: received {received} of {count}",
                           err=True)
            break
        if isinstance(item, CliError):
            raise item
        on_msg(item)
        received += 1
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - the connection is closed next anyway
        pass
    return received


def _check_mail_id(mail_id: str) -> str:
    tokens = mail_id.split(".")
    if not mail_id or any(not t or t in ("*", ">") or any(c.isspace() for c in t) for t in tokens):
        raise typer.BadParameter(f"{mail_id!r} is not a mailbox id (wildcards are not allowed)",
                                 param_hint="MAIL_ID")
    return mail_id


def _check_choice(value: str, choices: tuple[str, ...], hint: str) -> str:
    v = value.lower()
    if v not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=hint)
    return v


# ------------------------------------------------------------------------------------------ commands

mailbox_app = typer.Typer(no_args_is_help=True, help="Create mq9 mailboxes.")


@mailbox_app.command("create")
def mailbox_create(
    ttl: int | None = typer.Option(None, "--ttl", help="Lifetime in seconds (0 = never expires; "
                                      "omitted = the server's default)"),
    public: bool = typer.Option(False, "--public", help="A public mailbox, listed in PUBLIC.LIST"),
    name: str | None = typer.Option(None, "--name", help="Public mailbox name, e.g. task.queue"),
    desc: str | None = typer.Option(None, "--desc", help="Public mailbox description"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the mail_id"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Create a mailbox ($mq9.AI.MAILBOX.CREATE) and print its mail_id."""
    if (name is not None or desc is not None) and not public:
        raise typer.BadParameter("--name and --desc need --public", param_hint="--name")
    if public and not name:
        raise typer.BadParameter("a public mailbox needs --name", param_hint="--name")
    body: dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = ttl
    if public:
        body.update({"public": True, "name": name, "desc": desc or ""})

    async def main() -> None:
        async with _connection(server) as nc:
            reply = await _request(nc, MQ9_CREATE, json.dumps(body).encode())
        mail_id = reply.get("mail_id")
        if not isinstance(mail_id, str):
            raise CliError(f"invalid reply to {MQ9_CREATE}: {reply}")
        if as_json:
            _emit(True, reply, "")
        elif quiet:
            typer.echo(mail_id)
        else:
            lines = [f"mail_id: {mail_id}"]
            if "is_new" in reply:
                lines.append(f"is_new:  {str(bool(reply['is_new'])).lower()}"
                             + ("" if reply["is_new"] else "  (already existed; TTL and desc kept)"))
            typer.echo("\n".join(lines))

    _run(main(), as_json)


def send(
    mail_id: str = typer.Argument(..., help="Mailbox id"),
    payload: str = typer.Argument(..., help="Message payload ('-' reads stdin)"),
    priority: str = typer.Option("normal", "--priority", "-p",
                                 help="normal, urgent, critical, or the PyPI SDK's low / high"),
    header: list[str] | None = typer.Option(None, "--header", "-H", help="K=V header (repeatable)"),
    no_ack: bool = typer.Option(False, "--no-ack", help="Publish fire-and-forget (no msg_id; a "
                                "missing mailbox is not reported)"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Send a message to a mailbox and print its msg_id once stored."""
    _check_mail_id(mail_id)
    priority = _check_choice(priority, PRIORITIES, "--priority")
    headers: dict[str, str] = {}
    for item in header or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() or c == ":" for c in key):
            raise typer.BadParameter(f"{item!r} is not K=V", param_hint="--header")
        headers[key] = value
    data = sys.stdin.buffer.read() if payload == "-" else payload.encode()
    subject = MQ9_MSG + mail_id + ("" if priority == "normal" else "." + priority)

    async def main() -> None:
        from nats import errors

        async with _connection(server) as nc:
            if no_ack:
                try:
                    await nc.publish(subject, data, headers=headers or None)
                    # nats-py 2.16 may write flush()'s PING ahead of buffered PUBs; the second
                    # flush's PING is behind them, so its PONG proves the server read the PUB.
                    await nc.flush(REQUEST_TIMEOUT_S)
                    await nc.flush(REQUEST_TIMEOUT_S)
                except errors.MaxPayloadError:
                    raise CliError("payload is larger than the server's max_payload "
                                   f"({nc.max_payload} bytes)") from None
                except (TimeoutError, errors.Error, OSError) as exc:
                    raise CliError(f"publish to {subject} failed: {_describe(exc)}") from None
                _emit(as_json, {"mail_id": mail_id, "priority": priority, "msg_id": None},
                      f"published to {mail_id} ({priority}, no ack)")
                return
            reply = await _request(nc, subject, data, headers or None)
        _emit(as_json, {"mail_id": mail_id, "priority": priority, **reply},
              f"msg_id: {reply.get('msg_id')}")

    _run(main(), as_json)


def sub(
    mail_id: str = typer.Argument(..., help="Mailbox id"),
    priority: str = typer.Option("all", "--priority", "-p",
                                 help="all, normal, urgent, critical, or the PyPI SDK's low / high"),
    queue: str = typer.Option("", "--queue", "-q", help="Queue group: each message goes to one member"),
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Exit after N messages"),
    timeout: float | None = typer.Option(None, "--timeout", "-t", min=0.0,
                                            help="Exit after S seconds with no message"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Subscribe to a mailbox: stored messages first (critical, urgent, normal), then live ones.

    Follows until Ctrl-C unless --count or --timeout is given.
    """
    _check_mail_id(mail_id)
    priority = _check_choice(priority, SUB_PRIORITIES, "--priority")
    subject = MQ9_MSG + mail_id + {"all": ".*", "normal": ""}.get(priority, "." + priority)

    def show(msg: Any) -> None:
        hdrs = dict(msg.headers or {})
        raw_id = hdrs.get("mq9-msg-id")
        msg_id: Any = int(raw_id) if raw_id is not None and raw_id.isascii() and raw_id.isdigit() else raw_id
        prio = hdrs.get("mq9-priority") or _priority_from_subject(msg.subject)
        raw_ts = hdrs.get("mq9-ts")
        ts: Any = int(raw_ts) if raw_ts is not None and raw_ts.isascii() and raw_ts.isdigit() else raw_ts
        text, clean = _decode_payload(msg.data)
        if as_json:
            obj = {"msg_id": msg_id, "priority": prio, "ts": ts, "subject": msg.subject,
                   "payload": text,
                   "headers": {k: v for k, v in hdrs.items() if k not in MQ9_HEADERS}}
            if not clean:
                obj["payload_base64"] = base64.b64encode(msg.data).decode()
            typer.echo(json.dumps(obj, ensure_ascii=False))
        else:
            text = text[:-1] if text.endswith("\n") else text
            typer.echo(f"#{msg_id if msg_id is not None else '?'} [{prio}] {text}")

    async def main() -> None:
        problems: asyncio.Queue = asyncio.Queue()
        async with _connection(server, problems) as nc:
            await _follow(nc, subject, queue, count, timeout, problems, show)

    _run(main(), as_json, interrupt_ok=True)


def _priority_from_subject(subject: str) -> str:
    last = subject.rsplit(".", 1)[-1]
    return last if last in PRIORITIES else "normal"


def list_messages(
    mail_id: str = typer.Argument(..., help="Mailbox id"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """List a mailbox's stored messages in delivery order (msg_id, priority, ts, size)."""
    _check_mail_id(mail_id)

    async def main() -> None:
        messages: list[Any] = []
        async with _connection(server) as nc:
            body = b""
            for _ in range(LIST_MAX_PAGES):  # LIST is paged: follow `next` to the end
                reply = await _request(nc, MQ9_LIST + mail_id, body)
                page = reply.get("messages")
                if not isinstance(page, list):
                    raise CliError(f"invalid reply to {MQ9_LIST + mail_id}: {reply}")
                messages.extend(page)
                if not isinstance(reply.get("next"), str):
                    break
                body = json.dumps({"limit": 10_000, "cursor": reply["next"]}).encode()
        if as_json:
            for m in messages:
                typer.echo(json.dumps({"mail_id": reply.get("mail_id", mail_id), **m},
                                      ensure_ascii=False))
            return
        if not messages:
            typer.echo(f"mailbox {mail_id} is empty")
            return
        rows = [("MSG_ID", "PRIORITY", "TS", "SIZE")]
        rows += [(str(m.get("msg_id")), str(m.get("priority")), _format_ts(m.get("ts")),
                  str(m.get("size"))) for m in messages]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        typer.echo(f"{len(messages)} message{'s' if len(messages) != 1 else ''}")

    _run(main(), as_json)


def delete(
    mail_id: str = typer.Argument(..., help="Mailbox id"),
    msg_id: str = typer.Argument(..., help="Message id (from send, sub or list)"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Delete one message from a mailbox; it is never delivered again."""
    _check_mail_id(mail_id)
    if not (msg_id.isascii() and msg_id.isdigit()):
        raise typer.BadParameter(f"{msg_id!r} is not a message id (a number)", param_hint="MSG_ID")

    async def main() -> None:
        async with _connection(server) as nc:
            reply = await _request(nc, f"{MQ9_DELETE}{mail_id}.{msg_id}")
        deleted = bool(reply.get("deleted"))
        _emit(as_json, {"mail_id": mail_id, "msg_id": int(msg_id), **reply},
              f"deleted: {str(deleted).lower()}" + ("" if deleted else "  (no such message)"))

    _run(main(), as_json)


def public(
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Exit after N events"),
    timeout: float | None = typer.Option(None, "--timeout", "-t", min=0.0,
                                            help="Exit after S seconds with no event"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Watch public mailboxes: current ones first, then live created/expired events."""

    def show(msg: Any) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            text, _ = _decode_payload(msg.data)
            _emit(as_json, {"event": None, "raw": text}, f"?        {text}")
            return
        if as_json:
            typer.echo(json.dumps(event, ensure_ascii=False))
            return
        kind = str(event.get("event", "?"))
        line = f"{kind:<8} {event.get('mail_id')}"
        if "ttl" in event:
            ttl = event["ttl"]
            line += "  ttl=never" if ttl == 0 else f"  ttl={ttl}s"
        if event.get("desc"):
            line += f"  {json.dumps(event['desc'], ensure_ascii=False)}"
        typer.echo(line)

    async def main() -> None:
        problems: asyncio.Queue = asyncio.Queue()
        async with _connection(server, problems) as nc:
            await _follow(nc, MQ9_PUBLIC_LIST, "", count, timeout, problems, show)

    _run(main(), as_json, interrupt_ok=True)


# -------------------------------------------------------------------------------------------- status

def _varz_url(http: str) -> str:
    base = http if "://" in http else "http://" + http
    return base if base.rstrip("/").endswith("/varz") else base.rstrip("/") + "/varz"


class VarzRequest:
    """GET <--http>/varz: the URL without credentials, the URL to show (password redacted), and the
    Authorization header. Credentials come from the --http URL, else from the --server NATS URL
    (`user:pass@` -> HTTP Basic, `token@` -> Bearer), as the monitoring port takes the client's."""

    def __init__(self, http: str, server: str) -> None:
        url = _varz_url(http)
        self.shown = _redact(url)
        try:
            parts = urlsplit(url)
            port = parts.port  # raises ValueError when out of range or not a number
        except ValueError as exc:
            raise CliError(f"invalid --http URL {self.shown}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"invalid --http URL {self.shown}: want http://host:port")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self.url = urlunsplit(parts._replace(netloc=host if port is None else f"{host}:{port}"))
        self.authorization = _authorization(parts) or _authorization(_split_server(server))


def _split_server(server: str) -> SplitResult | None:
    try:
        return urlsplit(server if "://" in server else "nats://" + server)
    except ValueError:
        return None


def _authorization(parts: SplitResult | None) -> str | None:
    if parts is None or (not parts.username and parts.password is None):
        return None
    user = unquote(parts.username or "")
    if parts.password is None:  # nats://TOKEN@host
        return f"Bearer {user}"
    cred = f"{user}:{unquote(parts.password)}".encode()
    return "Basic " + base64.b64encode(cred).decode()


def _fetch_varz(req: VarzRequest) -> dict[str, Any]:
    headers = {"Authorization": req.authorization} if req.authorization else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(req.url, headers=headers),
                                    timeout=HTTP_TIMEOUT_S) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            how = ("the credentials given were refused" if req.authorization else
                   "give them in --server (nats://user:pass@host:port or nats://token@host:port)")
            raise CliError(f"{req.shown} requires the server's client credentials: {how}") from None
        raise
    except http.client.HTTPException as exc:  # something answered, but not HTTP
        got = _describe(exc)
        got = got if len(got) <= 60 else got[:60] + "…"
        raise CliError(f"{req.shown} did not answer HTTP ({got}); --http must point at "
                       "the monitoring port (--http-port, 8222 by default)") from None
    varz = json.loads(body)
    if not isinstance(varz, dict):
        raise ValueError("/varz did not return a JSON object")
    return varz


def _pick(d: dict[str, Any], *paths: str) -> Any:
    """The first present value among dotted paths (robustmq and nats-server name things alike)."""
    for path in paths:
        cur: Any = d
        for part in path.split("."):
            if not isinstance(cur, dict) or part not in cur:
                break
            cur = cur[part]
        else:
            return cur
    return None


def _varz_summary(varz: dict[str, Any]) -> dict[str, Any]:
    return {
        "server_id": _pick(varz, "server_id"),
        "server_name": _pick(varz, "server_name"),
        "version": _pick(varz, "robustmq_version", "version"),
        "uptime": _pick(varz, "uptime"),
        "connections": _pick(varz, "connections"),
        "total_connections": _pick(varz, "total_connections"),
        "in_msgs": _pick(varz, "in_msgs"),
        "out_msgs": _pick(varz, "out_msgs"),
        "in_bytes": _pick(varz, "in_bytes"),
        "out_bytes": _pick(varz, "out_bytes"),
        "slow_consumers": _pick(varz, "slow_consumers"),
        "mailboxes": _pick(varz, "mailboxes", "mq9.mailboxes", "mq9_mailboxes"),
    }


def status(
    http: str = typer.Option(DEFAULT_HTTP, "--http", envvar=HTTP_ENV, show_envvar=True,
                             help="HTTP monitoring URL (GET <url>/varz)"),
    server: str = _server_opt(),
    as_json: bool = _json_opt(),
) -> None:
    """Show server status from HTTP /varz; falls back to the NATS INFO if HTTP is unreachable.

    The HTTP request carries the credentials of --server (or of the --http URL) when it has any.
    """
    try:
        req = VarzRequest(http, server)
        summary = _varz_summary(_fetch_varz(req))
    except CliError as exc:
        _fail(str(exc), as_json)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = _describe(getattr(exc, "reason", None) or exc) if isinstance(
            exc, urllib.error.URLError) else _describe(exc)
        _run(_status_from_nats(server, req.shown, reason, as_json), as_json)
        return
    url = req.shown
    if as_json:
        typer.echo(json.dumps({"source": "http", "url": url, **summary}, ensure_ascii=False))
        return
    labels = [("server", "server_name"), ("server id", "server_id"), ("version", "version"),
              ("uptime", "uptime"), ("connections", "connections"),
              ("total connections", "total_connections"), ("msgs in", "in_msgs"),
              ("msgs out", "out_msgs"), ("bytes in", "in_bytes"), ("bytes out", "out_bytes"),
              ("slow consumers", "slow_consumers"), ("mailboxes", "mailboxes")]
    typer.echo(f"robustmq status ({url})")
    for label, key in labels:
        if summary.get(key) not in (None, ""):
            typer.echo(f"  {label + ':':<19}{summary[key]}")


async def _status_from_nats(server: str, url: str, reason: str, as_json: bool) -> None:
    async with _connection(server) as nc:
        info = dict(getattr(nc, "_server_info", None) or {})
    if as_json:
        typer.echo(json.dumps({"source": "nats", "url": _redact(server), "http_error":
                               f"HTTP monitoring unavailable at {url}: {reason}",
                               "server_info": info}, ensure_ascii=False))
        return
    typer.echo(f"HTTP monitoring unavailable at {url} ({reason}); showing the NATS server INFO")
    typer.echo(f"robustmq at {_redact(server)}: reachable")
    for key in ("server_name", "server_id", "version", "proto", "go", "host", "port", "max_payload",
                "headers", "auth_required", "client_id", "client_ip"):
        if key in info and info[key] not in (None, ""):
            typer.echo(f"  {key + ':':<15}{info[key]}")


# ------------------------------------------------------------------------------------------ register

def register(app: typer.Typer) -> None:
    """Add the client commands to the `robustmq` typer app."""
    app.add_typer(mailbox_app, name="mailbox")
    app.command("send")(send)
    app.command("sub")(sub)
    app.command("list")(list_messages)
    app.command("delete")(delete)
    app.command("public")(public)
    app.command("status")(status)
