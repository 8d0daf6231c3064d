"""Server configuration: one msgspec struct, filled from defaults < TOML file < ROBUSTMQ_* env < flags.

Every limit the server enforces is a field here with its default, so there is one place to look.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

Durability = Literal["wal", "fsync"]


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # listeners (port 0 disables a listener)
    host: str = "0.0.0.0"
    nats_port: int = 4222
    mqtt_port: int = 1883
    kafka_port: int = 9092
    http_port: int = 8222
    server_name: str = ""

    # storage
    data_dir: str = "./robustmq-data"
    durability: Durability = "wal"
    segment_max_records: int = 10_000
    segment_max_age_s: float = 3600.0
    retention_max_age_s: float = 7 * 24 * 3600.0  # 0 = keep forever
    retention_max_bytes: int = 1 << 30  # per stream; 0 = unbounded
    retention_check_interval_s: float = 30.0
    ephemeral_subjects: list[str] = msgspec.field(default_factory=lambda: ["_INBOX.>"])

    # NATS protocol limits (same defaults as nats-server)
    max_payload: int = 1 << 20
    max_control_line: int = 4096
    max_pending: int = 64 << 20  # per-connection outbound bytes before "Slow Consumer"
    max_pending_total: int = 128 << 20  # all connections together; the largest backlogs are cut first
    ping_interval_s: float = 120.0
    max_pings_out: int = 2
    auth_timeout_s: float = 2.0
    user: str = ""
    password: str = ""
    token: str = ""

    # mq9 mailboxes
    mq9_default_ttl_s: int = 3600
    mq9_max_ttl_s: int = 30 * 24 * 3600
    mq9_max_messages: int = 100_000
    mq9_max_bytes: int = 256 << 20
    mq9_sweep_interval_s: float = 0.5

    log_level: str = "info"


ENV_PREFIX = "ROBUSTMQ_"


class ConfigError(ValueError):
    pass


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, ftype in _field_types().items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if ftype is list:
            out[name] = [p.strip() for p in raw.split(",") if p.strip()]
        else:
            out[name] = raw
    return out


def _field_types() -> dict[str, type]:
    info = msgspec.inspect.type_info(Config)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.name: (list if isinstance(f.type, msgspec.inspect.ListType) else str) for f in info.fields}


def load_config(
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective config. `overrides` are flags the user actually gave (None values ignored)."""
    environ = dict(os.environ) if environ is None else environ
    merged: dict[str, Any] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {path} does not exist")
        with p.open("rb") as fh:
            data = tomllib.load(fh)
        # accept both flat keys and a [server] table
        merged.update(data.pop("server", {}))
        merged.update(data)
    merged.update(_env_overrides(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
