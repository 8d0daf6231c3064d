"""The `robustmq` command line (typer)."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from robustmq import __version__, client_cli
from robustmq.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="robustmq: one RocksDB log; NATS, mq9 agent mailboxes, MQTT and Kafka on top.")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@app.command()
def serve(
    nats_port: Optional[int] = typer.Option(None, help="NATS + mq9 port (0 disables) [4222]"),
    mqtt_port: Optional[int] = typer.Option(None, help="MQTT port (0 disables) [1883]"),
    kafka_port: Optional[int] = typer.Option(None, help="Kafka wire port (0 disables) [9092]"),
    http_port: Optional[int] = typer.Option(None, help="HTTP monitoring port (0 disables) [8222]"),
    host: Optional[str] = typer.Option(None, help="Address to bind [0.0.0.0]"),
    data_dir: Optional[str] = typer.Option(None, help="Data directory [./robustmq-data]"),
    config: Optional[str] = typer.Option(None, help="TOML config file"),
    durability: Optional[str] = typer.Option(None, help="wal (survives a crash) or fsync (power loss)"),
    max_payload: Optional[int] = typer.Option(None, help="Max NATS payload bytes [1048576]"),
    max_control_line: Optional[int] = typer.Option(None, help="Max NATS control line [4096]"),
    max_pending: Optional[int] = typer.Option(None, help="Outbound bytes per connection before "
                                              "'Slow Consumer' [64 MiB]"),
    max_pending_total: Optional[int] = typer.Option(None, help="Outbound bytes of all connections "
                                                    "together; the largest backlogs are cut first "
                                                    "[128 MiB]"),
    ping_interval: Optional[float] = typer.Option(None, help="Seconds between server PINGs [120]"),
    max_pings_out: Optional[int] = typer.Option(None, help="Unanswered PINGs before "
                                                "'Stale Connection' [2]"),
    user: Optional[str] = typer.Option(None, help="Require this user (with --password)"),
    password: Optional[str] = typer.Option(None, help="Password for --user"),
    token: Optional[str] = typer.Option(None, help="Require this auth token"),
    retention_max_age: Optional[float] = typer.Option(None, help="Per-stream retention, seconds "
                                                      "(0 = forever) [604800]"),
    retention_max_bytes: Optional[int] = typer.Option(None, help="Per-stream retention, bytes "
                                                      "(0 = unbounded) [1 GiB]"),
    retention_check_interval: Optional[float] = typer.Option(None, help="Seconds between retention "
                                                             "passes [30]"),
    segment_max_records: Optional[int] = typer.Option(None, help="Records per segment [10000]"),
    segment_max_age: Optional[float] = typer.Option(None, help="Seconds before a new segment [3600]"),
    ephemeral_subjects: Optional[str] = typer.Option(None, help="Comma-separated subject patterns "
                                                     "that are not logged [_INBOX.>]"),
    mq9_default_ttl_s: Optional[int] = typer.Option(None, help="mq9 mailbox TTL when omitted [3600]"),
    mq9_max_ttl_s: Optional[int] = typer.Option(None, help="Largest mq9 TTL accepted [2592000]"),
    mq9_max_messages: Optional[int] = typer.Option(None, help="Messages per mailbox [100000]"),
    mq9_max_bytes: Optional[int] = typer.Option(None, help="Bytes per mailbox [256 MiB]"),
    log_level: Optional[str] = typer.Option(None, help="debug, info, warning, error [info]"),
) -> None:
    """Run the server. Flags > ROBUSTMQ_* environment > TOML file > defaults."""
    overrides = {
        "nats_port": nats_port, "mqtt_port": mqtt_port, "kafka_port": kafka_port,
        "http_port": http_port, "host": host, "data_dir": data_dir, "durability": durability,
        "max_payload": max_payload, "max_control_line": max_control_line, "max_pending": max_pending,
        "max_pending_total": max_pending_total,
        "ping_interval_s": ping_interval, "max_pings_out": max_pings_out, "user": user,
        "password": password, "token": token, "retention_max_age_s": retention_max_age,
        "retention_max_bytes": retention_max_bytes,
        "retention_check_interval_s": retention_check_interval,
        "segment_max_records": segment_max_records, "segment_max_age_s": segment_max_age,
        "ephemeral_subjects": [p for p in ephemeral_subjects.split(",") if p] if ephemeral_subjects
        is not None else None,
        "mq9_default_ttl_s": mq9_default_ttl_s, "mq9_max_ttl_s": mq9_max_ttl_s,
        "mq9_max_messages": mq9_max_messages, "mq9_max_bytes": mq9_max_bytes, "log_level": log_level,
    }
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _setup_logging(cfg.log_level)
    from robustmq.server import run

    run(cfg)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"robustmq {__version__}")


client_cli.register(app)
