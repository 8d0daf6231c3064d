"""The `robustmq` command line (typer)."""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any, Optional

import msgspec
import typer

from robustmq import __version__, client_cli
from robustmq.config import (
    ENV_PREFIX,
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
        cfg = load_config(config, settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _setup_logging(cfg.log_level)
    from robustmq.server import run

    run(cfg)


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
        shown = (",".join(value) if isinstance(value, list) else str(value)) or "none"
        names = ["--" + f.name.replace("_", "-")]
        if f.name in FLAG_ALIASES:
            names.append(FLAG_ALIASES[f.name])
        params.append(inspect.Parameter(f.name, kw, annotation=Optional[py], default=typer.Option(  # noqa: UP045
            None, *names, help=f"{HELP[f.name]} (default {shown}; env {ENV_PREFIX}{f.name.upper()})",
            rich_help_panel=f"{SECTION_OF[f.name]} settings (TOML table {SECTION_OF[f.name]})")))
    return inspect.Signature(params, return_annotation=None)


serve.__signature__ = _serve_signature()  # type: ignore[attr-defined]
app.command()(serve)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"robustmq {__version__}")


client_cli.register(app)
