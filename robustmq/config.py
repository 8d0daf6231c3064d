"""Server configuration: one msgspec struct, filled from defaults < TOML file < ROBUSTMQ_* env < flags.

Every limit the server enforces is a field here with its default, so there is one place to look.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec

from robustmq.routing.subjects import valid_subscribe_subject

Durability = Literal["wal", "fsync"]


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # listeners (port 0 disables a listener)
    host: str = "0.0.0.0"
    nats_port: int = 4222
    mqtt_port: int = 1883
    kafka_port: int = 9092
    http_port: int = 8222
    server_name: str = ""
    max_pending_total: int = 128 << 20  # all connections of every protocol together; largest cut first

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

    log_level: str = "info"  # one of LOG_LEVELS, any case


ENV_PREFIX = "ROBUSTMQ_"

# One line of help per setting: `robustmq serve --help` is generated from these and the defaults
# above, so every setting has a flag (--<name-with-dashes>), an env var and a TOML key.
HELP: dict[str, str] = {
    "host": "Address to bind",
    "nats_port": "NATS + mq9 port (0 disables)",
    "mqtt_port": "MQTT 3.1.1/5.0 port (0 disables)",
    "kafka_port": "Kafka wire port (0 disables; not built yet)",
    "http_port": "HTTP monitoring port (0 disables)",
    "server_name": "Name announced in INFO and /varz",
    "data_dir": "Data directory (RocksDB)",
    "durability": "wal (survives a process crash) or fsync (survives power loss; one fsync per batch)",
    "segment_max_records": "Records per segment",
    "segment_max_age_s": "Seconds before a stream starts a new segment",
    "retention_max_age_s": "Per-stream retention by age, seconds (0 = forever)",
    "retention_max_bytes": "Per-stream retention by size, bytes (0 = unbounded)",
    "retention_check_interval_s": "Seconds between retention passes",
    "ephemeral_subjects": "Comma-separated subject patterns that are delivered but not logged",
    "max_payload": "Max NATS payload bytes",
    "max_control_line": "Max NATS control line bytes",
    "max_pending": "Unsent bytes per connection before 'Slow Consumer'",
    "max_pending_total": "Unsent bytes of all connections together; past it the largest backlogs are cut",
    "ping_interval_s": "Seconds between server PINGs",
    "max_pings_out": "Unanswered PINGs before 'Stale Connection'",
    "auth_timeout_s": "Seconds a client has to send CONNECT when auth is required",
    "user": "Require this user (with --password; none given = an empty password); also guards monitoring",
    "password": "Password for --user (refused without --user)",
    "token": "Require this auth token (not with --user/--password); also guards monitoring",
    "mq9_default_ttl_s": "mq9 mailbox TTL when a CREATE omits it, seconds",
    "mq9_max_ttl_s": "Largest mq9 mailbox TTL accepted, seconds",
    "mq9_max_messages": "Messages a mailbox holds before it refuses more",
    "mq9_max_bytes": "Bytes a mailbox holds before it refuses more",
    "mq9_sweep_interval_s": "Seconds between mq9 expiry sweeps",
    "log_level": "debug, info, warning or error (any case)",
}

# shorter flags kept from earlier versions, beside the generated --<name> ones
FLAG_ALIASES: dict[str, str] = {
    "ping_interval_s": "--ping-interval",
    "retention_max_age_s": "--retention-max-age",
    "retention_check_interval_s": "--retention-check-interval",
    "segment_max_age_s": "--segment-max-age",
}


class ConfigError(ValueError):
    pass


LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_SECONDS = 100 * 365 * 24 * 3600  # any duration or TTL; finite, so inf/nan and timer overflows are refused


class Bound(NamedTuple):
    """The values a numeric setting accepts: low (or above, when low_open)..high."""

    low: float
    high: float
    low_open: bool
    text: str

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high  # NaN fails both


_PORT = Bound(0, 65535, False, "a port number 0..65535 (0 disables the listener)")
_SIZE = Bound(1, 2**63 - 1, False, "at least 1")
_LIMIT_OR_ZERO = Bound(0, 2**63 - 1, False, "0 or more")
_INTERVAL = Bound(0, MAX_SECONDS, True, f"more than 0 and at most {MAX_SECONDS} seconds")
_AGE_OR_ZERO = Bound(0, MAX_SECONDS, False, f"0..{MAX_SECONDS} seconds")

# Every numeric setting's accepted range; a test checks none is missing.
BOUNDS: dict[str, Bound] = {
    "nats_port": _PORT,
    "mqtt_port": _PORT,
    "kafka_port": _PORT,
    "http_port": _PORT,
    "max_pending_total": _SIZE,
    "segment_max_records": _SIZE,
    "segment_max_age_s": _INTERVAL,
    "retention_max_age_s": _AGE_OR_ZERO,
    "retention_max_bytes": _LIMIT_OR_ZERO,
    "retention_check_interval_s": _INTERVAL,
    "max_payload": _SIZE,
    "max_control_line": _SIZE,
    "max_pending": _SIZE,
    "ping_interval_s": _INTERVAL,
    "max_pings_out": _SIZE,
    "auth_timeout_s": _INTERVAL,
    "mq9_default_ttl_s": _AGE_OR_ZERO,
    "mq9_max_ttl_s": _AGE_OR_ZERO,
    "mq9_max_messages": _SIZE,
    "mq9_max_bytes": _SIZE,
    "mq9_sweep_interval_s": _INTERVAL,
}


def flag_of(name: str) -> str:
    """How a person names a setting in an error: its flag and its key (the env var is the key upper-cased)."""
    return f"--{name.replace('_', '-')} ({name})"


def _check(cfg: Config) -> None:
    """Ranges and combinations msgspec's types cannot say; raises ConfigError naming the setting."""
    for name, bound in BOUNDS.items():
        value = getattr(cfg, name)
        if not bound.admits(value):
            raise ConfigError(f"{flag_of(name)} must be {bound.text}; got {value}")
    level = cfg.log_level.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{flag_of('log_level')} must be one of {', '.join(LOG_LEVELS)}; "
                          f"got {cfg.log_level!r}")
    cfg.log_level = level
    if cfg.server_name and any(c.isspace() for c in cfg.server_name):
        raise ConfigError(f"{flag_of('server_name')} must not contain spaces; got {cfg.server_name!r}")
    if not cfg.data_dir:
        raise ConfigError(f"{flag_of('data_dir')} must not be empty")
    for pattern in cfg.ephemeral_subjects:
        if not valid_subscribe_subject(pattern):
            raise ConfigError(f"{flag_of('ephemeral_subjects')}: {pattern!r} is not a subject pattern")
    # authentication: exactly one way, never a half-configured one that silently means "no auth"
    if cfg.password and not cfg.user:
        raise ConfigError(f"{flag_of('password')} is set but {flag_of('user')} is not: a password "
                          "needs a user (set --user too, or use --token alone)")
    if cfg.token and (cfg.user or cfg.password):
        raise ConfigError(f"{flag_of('token')} cannot be combined with --user/--password: "
                          "choose one way for clients to authenticate")
    if cfg.max_payload > cfg.max_pending:  # as nats-server: a message must fit a connection's buffer
        raise ConfigError(f"{flag_of('max_payload')} ({cfg.max_payload}) cannot be higher than "
                          f"{flag_of('max_pending')} ({cfg.max_pending})")
    if cfg.mq9_default_ttl_s > cfg.mq9_max_ttl_s:
        raise ConfigError(f"{flag_of('mq9_default_ttl_s')} ({cfg.mq9_default_ttl_s}) cannot be higher "
                          f"than {flag_of('mq9_max_ttl_s')} ({cfg.mq9_max_ttl_s})")


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
    return {f.name: (list if isinstance(f.type, msgspec.inspect.ListType) else str) for f in fields()}


def fields() -> tuple[msgspec.inspect.Field, ...]:
    """Every setting, in declaration order."""
    info = msgspec.inspect.type_info(Config)
    assert isinstance(info, msgspec.inspect.StructType)
    return info.fields


# The parts of the server, each a TOML table and a group of `serve --help`. A key inside a table may
# drop the table's prefix: `[mq9] default_ttl_s = 60` is `mq9_default_ttl_s`.
SECTIONS: dict[str, tuple[str, ...]] = {
    "server": ("host", "nats_port", "mqtt_port", "kafka_port", "http_port", "server_name", "log_level",
               "max_pending_total"),
    "log": ("data_dir", "durability", "segment_max_records", "segment_max_age_s", "retention_max_age_s",
            "retention_max_bytes", "retention_check_interval_s", "ephemeral_subjects"),
    "nats": ("max_payload", "max_control_line", "max_pending", "ping_interval_s",
             "max_pings_out", "auth_timeout_s"),
    "auth": ("user", "password", "token"),
    "mq9": ("mq9_default_ttl_s", "mq9_max_ttl_s", "mq9_max_messages", "mq9_max_bytes",
            "mq9_sweep_interval_s"),
}
SECTION_OF: dict[str, str] = {name: sec for sec, names in SECTIONS.items() for name in names}


def _flatten(data: dict[str, Any], path: str) -> dict[str, Any]:
    """A TOML document (flat keys and/or per-part tables) -> Config field names."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                name = sub if sub in SECTIONS[key] else f"{key}_{sub}"
                if SECTION_OF.get(name) != key:
                    raise ConfigError(f"{path}: [{key}] has no setting {sub!r} "
                                      f"(it takes: {', '.join(SECTIONS[key])})")
                out[name] = v
        elif key in SECTION_OF:
            out[key] = value  # a flat key
        else:
            raise ConfigError(f"{path}: unknown setting {key!r} (settings are flat keys such as "
                              f"nats_port, or keys of the tables {', '.join(f'[{t}]' for t in SECTIONS)}; "
                              "`robustmq serve --help` lists them)")
    for name, ftype in _field_types().items():  # a list may be written as the flag takes it: "a.>,b"
        if ftype is list and isinstance(out.get(name), str):
            out[name] = [p.strip() for p in out[name].split(",") if p.strip()]
    return out


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
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        except OSError as exc:  # a directory, no permission, ...
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        merged.update(_flatten(data, path))
    merged.update(_env_overrides(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        cfg = msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, merged)) from None
    _check(cfg)
    return cfg


def _describe(exc: msgspec.ValidationError, merged: dict[str, Any]) -> str:
    """msgspec's `Expected `int`, got `str` - at `$.nats_port`` as `--nats-port (nats_port): ...`."""
    text = str(exc)
    reason, sep, where = text.rpartition(" - at `$.")
    name = where.rstrip("`").split(".", 1)[0].split("[", 1)[0] if sep else ""
    if name not in SECTION_OF:
        return f"invalid configuration: {text}"
    return f"{flag_of(name)} has an invalid value {merged.get(name)!r}: {reason[:1].lower()}{reason[1:]}"
