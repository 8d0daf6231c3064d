"""The `robustmq` command line (typer)."""

from __future__ import annotations

import errno
import inspect
import logging
import os
import re
import socket
import sys
from typing import Any, NoReturn, Optional

import msgspec
import typer

from robustmq import __version__, client_cli
from robustmq.config import (
    FLAG_ALIASES,
    HELP,
    SECTION_OF,
    Config,
    ConfigError,
    fields,
    load_config,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="robustmq: one RocksDB log; NATS, mq9 agent mailboxes, MQTT and Kafka on top.")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def serve(config: str | None = None, **settings: Any) -> None:
    """Run the server. Flags > ROBUSTMQ_* environment > TOML file > defaults."""
    raw = settings.get("ephemeral_subjects")
    if raw is not None:
        settings["ephemeral_subjects"] = [p for p in raw.split(",") if p]
    try:
        _merge_aliases(settings)
        cfg = load_config(config, settings)
        _check_data_dir(cfg.data_dir)
    except ConfigError as exc:
        _exit_error(str(exc))
    _setup_logging(cfg.log_level)
    from robustmq.server import run

    try:
        run(cfg)
    except Exception as exc:
        message = startup_error(exc, cfg)
        if message is None:
            raise  # not an operator mistake: a bug, keep its traceback
        _exit_error(message)


EXIT_USAGE = 2  # bad settings, or an environment the server cannot start in


def _exit_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _check_data_dir(path: str) -> None:
    """Create the data directory now, so that a bad path is one clear line, not a RocksDB traceback."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"data directory {path} exists and is not a directory (--data-dir)") from None
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {path}: {exc.strerror or exc} "
                          "(choose another --data-dir)") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data directory {path} is not writable (--data-dir)")


_BIND_ADDRESS = re.compile(r"address \('([^']*)', (\d+)")  # asyncio/uvloop's "error while attempting to bind"
LISTENERS = ("nats_port", "mqtt_port", "kafka_port", "http_port")


def startup_error(exc: BaseException, cfg: Config) -> str | None:
    """One line for the failures an operator causes and can fix at start-up; None for anything else."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve --host {cfg.host!r}: {exc.strerror or exc} (use an address of this machine)"
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
        m = _BIND_ADDRESS.search(str(exc))
        if m is None:
            return None
        host, port = m.group(1), int(m.group(2))
        flags = [f"--{n.replace('_', '-')}" for n in LISTENERS if getattr(cfg, n) == port]
        what = f"{host}:{port}" + (f" ({' / '.join(flags)})" if flags else "")
        if exc.errno == errno.EADDRINUSE:
            return (f"cannot listen on {what}: the address is already in use by another process; "
                    "stop it or choose another port (0 disables a listener)")
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"cannot listen on {what}: --host {host} is not an address of this machine"
        return f"cannot listen on {what}: permission denied (ports below 1024 need privileges)"
    # rocksdict raises plain Exceptions carrying RocksDB's status text
    text = str(exc)
    if type(exc) is Exception and text.startswith("IO error:"):
        if "lock" in text.lower():
            return (f"data directory {cfg.data_dir} is in use by another robustmq process; stop it "
                    "or choose another --data-dir")
        return f"cannot open data directory {cfg.data_dir}: {text}"
    return None


def _serve_signature() -> inspect.Signature:
    """One option per Config field (`--nats-port`, ...), generated so that none can be missing."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("config", kw, annotation=Optional[str],  # noqa: UP045 - typer reads it at run time
                                default=typer.Option(None, "--config", help="TOML config file"))]
    defaults = Config()
    for f in fields():
        value = getattr(defaults, f.name)
        if isinstance(f.type, msgspec.inspect.IntType):
            py: type = int
        elif isinstance(f.type, msgspec.inspect.FloatType):
            py = float
        else:
            py = str
        shown = ",".join(value) if isinstance(value, list) else str(value)
        shown = shown or EMPTY_SHOWN.get(f.name, "none")
        flag = "--" + f.name.replace("_", "-")
        alias = FLAG_ALIASES.get(f.name)
        panel = f"{SECTION_OF[f.name]} settings (TOML table {SECTION_OF[f.name]})"
        also = f"; also {alias}" if alias else ""
        params.append(inspect.Parameter(f.name, kw, annotation=Optional[py], default=typer.Option(  # noqa: UP045
            None, flag, help=f"{HELP[f.name]} (default {shown}{also})",
            rich_help_panel=panel)))
        if alias:
            # a separate hidden option, so that the help's flag column holds one name per setting and
            # is not cut short on an 80-column terminal; the visible line names the alias
            params.append(inspect.Parameter(f.name + ALIAS_SUFFIX, kw, annotation=Optional[py],  # noqa: UP045
                                            default=typer.Option(None, alias, hidden=True)))
    return inspect.Signature(params, return_annotation=None)


ALIAS_SUFFIX = "__alias"
EMPTY_SHOWN = {"server_name": "the server id"}  # what an empty default means, in `serve --help`


def _merge_aliases(settings: dict[str, Any]) -> None:
    """`--ping-interval 5` is `--ping-interval-s 5`; giving both with different values is refused."""
    for name, alias in FLAG_ALIASES.items():
        value = settings.pop(name + ALIAS_SUFFIX, None)
        if value is None:
            continue
        if settings.get(name) is not None and settings[name] != value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{alias} and {flag} are the same setting; give one of them")
        settings[name] = value


# `serve --help`: paragraphs are single lines, for rich to wrap at the terminal's width; a backslash
# keeps a bracket literal (rich markup otherwise)
SERVE_HELP = "\n\n".join((
    "Run the server. Flags > ROBUSTMQ_* environment > TOML file > defaults.",
    "Every flag has an environment variable: ROBUSTMQ_ and the flag's name in capitals, dashes as "
    "underscores (--ping-interval-s: ROBUSTMQ_PING_INTERVAL_S; ROBUSTMQ_CONFIG for --config).",
    "Every flag is a key of the TOML file too: flat (ping_interval_s = 5), or in its group's table, "
    "where a key may drop the group's prefix (\\[nats] ping_interval_s = 5, \\[mq9] default_ttl_s = 60).",
))

serve.__signature__ = _serve_signature()  # type: ignore[attr-defined]
app.command(help=SERVE_HELP)(serve)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"robustmq {__version__}")


client_cli.register(app)
