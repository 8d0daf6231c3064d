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
