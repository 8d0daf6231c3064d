"""The README's mq9 commands, run with the real Go `nats` CLI (natscli), exactly as a reader would
type them: create, public create, send at each priority, subscribe (replay in priority order), and
PUBLIC.LIST. natscli is built once from the Go module proxy (pinned); without Go the module is skipped
with that reason (CI installs Go)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import RobustMQ

NATSCLI = "github.com/nats-io/natscli/nats@v0.5.0"
GOBIN = Path(os.environ.get("ROBUSTMQ_TEST_GOBIN", Path.home() / ".cache" / "robustmq-tests" / "gobin"))


@pytest.fixture(scope="module")
def nats_cli() -> str:
    exe = GOBIN / "nats"
    if exe.exists():
        return str(exe)
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        pytest.skip("Go is not installed: the natscli test needs `go install` (CI installs Go)")
    GOBIN.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([go, "install", NATSCLI], env={**os.environ, "GOBIN": str(GOBIN)},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"go install {NATSCLI} failed:\n{r.stderr[-3000:]}"
    return str(exe)


@pytest.fixture(scope="module")
def srv() -> Iterator[RobustMQ]:
    s = RobustMQ().start()
    yield s
    s.stop()


def nats(cli: str, srv: RobustMQ, *args: str, timeout: float = 20) -> str:
    r = subprocess.run([cli, "-s", srv.nats_url, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"nats {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_readme_seed_commands(nats_cli: str, srv: RobustMQ) -> None:
    out = nats(nats_cli, srv, "req", "--raw", "$mq9.AI.MAILBOX.CREATE", '{"ttl":3600}')
    created = json.loads(out)
    mail_id = created["mail_id"]
    assert mail_id.startswith("mail-") and created["is_new"] is True

    # sends at each priority, normal first: the subscription replays critical, urgent, normal
    nats(nats_cli, srv, "pub", f"$mq9.AI.MAILBOX.MSG.{mail_id}", "hello")
    nats(nats_cli, srv, "pub", f"$mq9.AI.MAILBOX.MSG.{mail_id}.urgent", "urg")
    nats(nats_cli, srv, "pub", f"$mq9.AI.MAILBOX.MSG.{mail_id}.critical", "abort")
    out = nats(nats_cli, srv, "sub", "--raw", "--count", "3", f"$mq9.AI.MAILBOX.MSG.{mail_id}.*")
    assert [ln for ln in out.splitlines() if ln.strip()] == ["abort", "urg", "hello"]

    # one priority only
    out = nats(nats_cli, srv, "sub", "--raw", "--count", "1", f"$mq9.AI.MAILBOX.MSG.{mail_id}.urgent")
    assert out.split() == ["urg"]


def test_readme_public_mailbox_and_list(nats_cli: str, srv: RobustMQ) -> None:
    body = '{"ttl":3600,"public":true,"name":"task.queue","desc":"Task queue"}'
    created = json.loads(nats(nats_cli, srv, "req", "--raw", "$mq9.AI.MAILBOX.CREATE", body))
    assert created["mail_id"] == "task.queue"
    again = json.loads(nats(nats_cli, srv, "req", "--raw", "$mq9.AI.MAILBOX.CREATE", body))
    assert again["mail_id"] == "task.queue" and again["is_new"] is False
    out = nats(nats_cli, srv, "sub", "--raw", "--count", "1", "$mq9.AI.PUBLIC.LIST")
    event = json.loads(out.strip().splitlines()[0])
    assert event["mail_id"] == "task.queue" and event["desc"] == "Task queue"


def test_bad_request_gets_a_clear_error(nats_cli: str, srv: RobustMQ) -> None:
    out = nats(nats_cli, srv, "req", "--raw", "$mq9.AI.MAILBOX.CREATE", "{not json")
    assert "error" in json.loads(out)



def test_plain_nats_commands(nats_cli: str, srv: RobustMQ) -> None:
    """Plain NATS with the CLI (checked equal to nats-server): rtt, server check connection,
    pub --count into sub --queue, reply + req, no responders."""
    assert srv.nats_url in nats(nats_cli, srv, "rtt", timeout=10)
    assert nats(nats_cli, srv, "server", "check", "connection", timeout=10).startswith("OK Connection")
    out = subprocess.run([nats_cli, "-s", srv.nats_url, "req", "--raw", "--timeout", "1s", "cli.nobody", "x"],
                         capture_output=True, text=True, timeout=10)
    assert "No responders" in out.stdout + out.stderr

    sub = subprocess.Popen([nats_cli, "-s", srv.nats_url, "sub", "--raw", "--queue", "g", "--count", "3", "cli.q"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rep = subprocess.Popen([nats_cli, "-s", srv.nats_url, "reply", "cli.svc", "re {{Count}}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(20):  # until the subscriber is in (it exits after 3 messages)
            nats(nats_cli, srv, "pub", "--count", "3", "cli.q", "m{{Count}}", timeout=10)
            try:
                lines = sub.communicate(timeout=0.3)[0].split()
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise AssertionError("nats sub --queue got no messages")
        assert sub.returncode == 0 and len(lines) == 3 and set(lines) <= {"m1", "m2", "m3"}
        for _ in range(50):  # until the replier is in
            r = subprocess.run([nats_cli, "-s", srv.nats_url, "req", "--raw", "cli.svc", "x"],
                               capture_output=True, text=True, timeout=10)
            if r.stdout.startswith("re "):  # (no responders yet: exit 0 too, with a message)
                break
        assert r.stdout.strip().startswith("re ")
    finally:
        for p in (sub, rep):
            if p.poll() is None:
                p.kill()
            p.communicate()
