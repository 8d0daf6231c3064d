"""Configuration: defaults < TOML (flat keys or per-part tables) < ROBUSTMQ_* env < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmq.config import SECTION_OF, ConfigError, fields, load_config


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "robustmq.toml"
    p.write_text(text)
    return str(p)


def test_every_setting_belongs_to_one_part() -> None:
    assert sorted(SECTION_OF) == sorted(f.name for f in fields())


def test_per_part_tables_flat_keys_and_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, """
nats_port = 5000
[server]
http_port = 0
[nats]
max_payload = 2048
ping_interval_s = 5.5
[mq9]
default_ttl_s = 60          # the table's prefix may be dropped
mq9_max_messages = 10       # or kept
[log]
durability = "fsync"
ephemeral_subjects = ["_INBOX.>", "tmp.>"]
[auth]
user = "u"
password = "p"
""")
    cfg = load_config(path, {"max_payload": 4096}, environ={"ROBUSTMQ_MQ9_MAX_MESSAGES": "20"})
    assert (cfg.nats_port, cfg.http_port, cfg.ping_interval_s) == (5000, 0, 5.5)
    assert cfg.max_payload == 4096  # flag over file
    assert cfg.mq9_default_ttl_s == 60 and cfg.mq9_max_messages == 20  # env over file
    assert cfg.durability == "fsync" and cfg.ephemeral_subjects == ["_INBOX.>", "tmp.>"]
    assert (cfg.user, cfg.password) == ("u", "p")


@pytest.mark.parametrize("text,words", [
    ("[nats]\nmq9_max_messages = 1\n", ("[nats]", "mq9_max_messages")),
    ("[mq9]\nbogus = 1\n", ("[mq9]", "bogus")),
    ("no_such_setting = 1\n", ("no_such_setting",)),
    ('[log]\ndurability = "sometimes"\n', ("durability",)),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    for w in words:
        assert w in str(err.value)


# ------------------------------------------------------------------------------ validation (bad values)

def test_every_numeric_setting_has_a_range() -> None:
    import msgspec

    from robustmq.config import BOUNDS

    numeric = {f.name for f in fields() if isinstance(f.type, (msgspec.inspect.IntType, msgspec.inspect.FloatType))}
    assert numeric == set(BOUNDS)


@pytest.mark.parametrize("name,bad,good", [
    ("nats_port", 81414, 65535), ("nats_port", -1, 0), ("mqtt_port", 65536, 1883),
    ("kafka_port", 70000, 0), ("http_port", -5, 8222),
    ("ping_interval_s", 0, 0.05), ("ping_interval_s", -1, 1), ("ping_interval_s", "nan", 1),
    ("ping_interval_s", "inf", 1), ("retention_check_interval_s", 0, 0.5),
    ("mq9_sweep_interval_s", 0, 0.01), ("segment_max_age_s", 0, 1), ("auth_timeout_s", 0, 0.1),
    ("max_payload", 0, 1), ("max_payload", -5, 64), ("max_control_line", 0, 48),
    ("max_pending", 0, 1 << 20), ("max_pending_total", -1, 1), ("segment_max_records", 0, 1),
    ("max_pings_out", 0, 1), ("mq9_max_messages", 0, 1), ("mq9_max_bytes", 0, 1),
    ("retention_max_age_s", -1, 0), ("retention_max_bytes", -1, 0),
    ("mq9_default_ttl_s", -1, 0), ("mq9_max_ttl_s", -1, 3600),
])
def test_out_of_range_numbers_are_refused(name: str, bad: object, good: object) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {name: bad}, environ={})
    flag = "--" + name.replace("_", "-")
    assert flag in str(err.value) and name in str(err.value), err.value
    # the same through the environment, as a string
    with pytest.raises(ConfigError):
        load_config(None, environ={"ROBUSTMQ_" + name.upper(): str(bad)})
    assert getattr(load_config(None, {name: good}, environ={}), name) == float(good)


def test_log_level_is_one_of_four_any_case() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"log_level": "verbose"}, environ={})
    assert "--log-level" in str(err.value) and "debug, info, warning, error" in str(err.value)
    assert load_config(None, environ={"ROBUSTMQ_LOG_LEVEL": "WARNING"}).log_level == "warning"


def test_password_without_user_is_refused() -> None:
    """A password alone used to switch authentication off silently (auth needs a user or a token)."""
    for kw in ({"overrides": {"password": "s3cret"}, "environ": {}},
               {"environ": {"ROBUSTMQ_PASSWORD": "s3cret"}}):
        with pytest.raises(ConfigError) as err:
            load_config(None, **kw)
        assert "--password" in str(err.value) and "--user" in str(err.value)


def test_token_with_user_or_password_is_refused() -> None:
    """A token silently won over --user/--password; now the mix is refused."""
    for extra in ({"user": "u"}, {"user": "u", "password": "p"}):
        with pytest.raises(ConfigError) as err:
            load_config(None, {"token": "t", **extra}, environ={})
        assert "--token" in str(err.value) and "--user/--password" in str(err.value)
    assert load_config(None, {"token": "t"}, environ={}).token == "t"
    # a user with an empty password is allowed (clients present the user name and no password)
    cfg = load_config(None, {"user": "u"}, environ={})
    assert (cfg.user, cfg.password) == ("u", "")


@pytest.mark.parametrize("overrides,words", [
    ({"max_payload": 2 << 20, "max_pending": 1 << 20}, ("--max-payload", "--max-pending")),
    ({"mq9_default_ttl_s": 200, "mq9_max_ttl_s": 100}, ("--mq9-default-ttl-s", "--mq9-max-ttl-s")),
    ({"ephemeral_subjects": ["ok.>", "bad..subject"]}, ("--ephemeral-subjects", "bad..subject")),
    ({"server_name": "two words"}, ("--server-name",)),
    ({"data_dir": ""}, ("--data-dir",)),
    ({"nats_port": "abc"}, ("--nats-port", "'abc'")),
])
def test_inconsistent_settings_are_refused(overrides: dict[str, object], words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides, environ={})
    for w in words:
        assert w in str(err.value), err.value


def test_unreadable_or_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "nats_port = \n"), environ={})
    assert "not valid TOML" in str(err.value) and "line 1" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path), environ={})  # a directory
    assert "cannot read config file" in str(err.value)


@pytest.mark.parametrize("text", ["[mqtt]\nport = 1\n", "nats_prot = 4222\n"])
def test_unknown_toml_key_names_the_file_and_the_tables(tmp_path: Path, text: str) -> None:
    """A `[mqtt]` table or a misspelt key used to be `invalid configuration: Object contains unknown
    field ...`, naming neither the file nor what it may hold."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    msg = str(err.value)
    assert path in msg and "unknown setting" in msg and "[server]" in msg and "[mq9]" in msg, msg


def test_list_setting_takes_the_flags_comma_form_in_toml(tmp_path: Path) -> None:
    """`--ephemeral-subjects` and its env var are comma-separated; the TOML key takes that form too, as
    well as an array."""
    cfg = load_config(write(tmp_path, '[log]\nephemeral_subjects = "_INBOX.>, tmp.>"\n'), environ={})
    assert cfg.ephemeral_subjects == ["_INBOX.>", "tmp.>"]


def test_every_section_env_and_flag_precedence(tmp_path: Path) -> None:
    """One TOML file with a value for every setting; each env var beats it, each flag beats both."""
    from robustmq.config import SECTIONS

    lines: list[str] = []
    for sec, names in SECTIONS.items():
        lines.append(f"[{sec}]")
        for n in names:
            if n in ("password", "token"):
                continue
            lines.append(f"{n} = {_sample(n, 1)!r}".replace("'", '"'))
    path = write(tmp_path, "\n".join(lines) + "\n")
    cfg = load_config(path, environ={})
    for f in fields():
        if f.name not in ("password", "token"):
            assert getattr(cfg, f.name) == _sample(f.name, 1) or f.name == "ephemeral_subjects", f.name
    env = {f"ROBUSTMQ_{n.upper()}": str(_sample(n, 2)) for n in SECTION_OF if n not in ("password", "token")}
    env["ROBUSTMQ_EPHEMERAL_SUBJECTS"] = "env.>"
    cfg = load_config(path, environ=env)
    assert cfg.nats_port == _sample("nats_port", 2) and cfg.ephemeral_subjects == ["env.>"]
    assert cfg.mq9_sweep_interval_s == _sample("mq9_sweep_interval_s", 2)
    cfg = load_config(path, {"nats_port": 7, "mq9_sweep_interval_s": 0.25}, environ=env)
    assert cfg.nats_port == 7 and cfg.mq9_sweep_interval_s == 0.25 and cfg.host == _sample("host", 2)


def _sample(name: str, n: int) -> object:
    """A valid, distinct value of setting `name` for layer n."""
    special: dict[str, object] = {
        "host": f"127.0.0.{n}", "server_name": f"s{n}", "log_level": ["debug", "warning"][n - 1],
        "data_dir": f"/tmp/robustmq-cfg-{n}", "durability": ["fsync", "wal"][n - 1],
        "ephemeral_subjects": "_INBOX.>", "user": f"u{n}", "max_payload": 1000 + n,
        "mq9_default_ttl_s": 60 + n,
    }
    if name in special:
        return special[name]
    default = getattr(load_config(environ={}), name)
    return type(default)(default + n) if isinstance(default, (int, float)) else default
