"""The client CLI (SPEC §7): `robustmq mailbox create / send / sub / list / delete / public / status`,
run as real subprocesses against a running robustmq, the way a person or a script would."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from procs import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIL_ID_RE = re.compile(r"^mail-[a-z0-9-]+$")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROBUSTMQ_URL", "NATS_URL", "ROBUSTMQ_HTTP_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli(*args: str, server: Any = None, input: bytes | None = None, timeout: float = 20,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m robustmq <args>` (with --server when given) and capture its output."""
    argv = [sys.executable, "-m", "robustmq", *args]
    if server is not None:
        argv += ["--server", server if isinstance(server, str) else server.nats_url]
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, cwd=ROOT,
                          env=env or _env())


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    return res.stdout.decode()


def json_lines(res: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    out = ok(res)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def create_private(server: Any) -> str:
    (reply,) = json_lines(cli("mailbox", "create", "--ttl", "300", "--json", server=server))
    return reply["mail_id"]


def unique_name(prefix: str) -> str:
    return f"{prefix}.{os.urandom(5).hex()}"


# ------------------------------------------------------------------------------------------ create


def test_create_private_mailbox(server: Any) -> None:
    out = ok(cli("mailbox", "create", "--ttl", "60", server=server))
    m = re.search(r"mail_id:\s+(\S+)", out)
    assert m and MAIL_ID_RE.match(m.group(1)), out
    assert re.search(r"is_new:\s+true", out), out

    (reply,) = json_lines(cli("mailbox", "create", "--json", server=server))
    assert MAIL_ID_RE.match(reply["mail_id"]) and reply["is_new"] is True
    assert "error" not in reply

    quiet = ok(cli("mailbox", "create", "-q", server=server)).strip()
    assert MAIL_ID_RE.match(quiet), quiet


def test_create_public_mailbox_twice(server: Any) -> None:
    name = unique_name("cli.queue")
    (first,) = json_lines(cli("mailbox", "create", "--public", "--name", name, "--desc", "Task queue",
                              "--ttl", "300", "--json", server=server))
    assert first == {"mail_id": name, "mail_address": name, "is_new": True}  # both dialects
    out = ok(cli("mailbox", "create", "--public", "--name", name, "--desc", "other", server=server))
    assert f"mail_id: {name}" in out and re.search(r"is_new:\s+false", out), out


def test_create_usage_errors(server: Any) -> None:
    res = cli("mailbox", "create", "--public", server=server)
    assert res.returncode == 2 and b"--name" in res.stderr
    bad = cli("mailbox", "create", "--public", "--name", "x.urgent", server=server)
    assert bad.returncode == 1 and bad.stderr.startswith(b"error: "), bad.stderr


# ------------------------------------------------------------------------------- send / sub / list


def test_send_priorities_sub_critical_first(server: Any) -> None:
    mail_id = create_private(server)
    ids = {}
    for prio, payload in (("normal", "n1"), ("urgent", "u1"), ("critical", "c1")):
        (reply,) = json_lines(cli("send", mail_id, payload, "--priority", prio, "--json",
                                  server=server))
        assert reply["priority"] == prio and isinstance(reply["msg_id"], int), reply
        ids[payload] = reply["msg_id"]
    assert len(set(ids.values())) == 3

    human = ok(cli("sub", mail_id, "--count", "3", "--timeout", "5", server=server)).splitlines()
    assert human == [f"#{ids['c1']} [critical] c1", f"#{ids['u1']} [urgent] u1",
                     f"#{ids['n1']} [normal] n1"], human

    msgs = json_lines(cli("sub", mail_id, "--count", "3", "--timeout", "5", "--json", server=server))
    assert [m["priority"] for m in msgs] == ["critical", "urgent", "normal"]
    assert [m["payload"] for m in msgs] == ["c1", "u1", "n1"]
    for m in msgs:
        assert set(m) == {"msg_id", "priority", "ts", "subject", "payload", "headers"}
        assert isinstance(m["ts"], int) and m["ts"] > 0
        assert m["subject"].startswith(f"$mq9.AI.MAILBOX.MSG.{mail_id}")

    # a single priority, then exit after 1 s idle
    only = json_lines(cli("sub", mail_id, "--priority", "critical", "--timeout", "1", "--json",
                          server=server))
    assert [m["payload"] for m in only] == ["c1"]
    normal = json_lines(cli("sub", mail_id, "--priority", "normal", "--timeout", "1", "--json",
                            server=server))
    assert [m["payload"] for m in normal] == ["n1"]


def test_send_and_sub_take_the_pypi_sdks_priority_names(server: Any) -> None:
    """The server serves the PyPI SDK's `.high` / `.low` (SPEC §4b): the CLI takes them too. A `high`
    send is urgent, `low` comes after normal; `sub --priority high` is the SDK's view (critical and
    urgent)."""
    mail_id = create_private(server)
    for prio, payload in (("low", "l1"), ("normal", "n1"), ("high", "h1"), ("critical", "c1")):
        (reply,) = json_lines(cli("send", mail_id, payload, "-p", prio, "--json", server=server))
        assert isinstance(reply["msg_id"], int), reply
    msgs = json_lines(cli("sub", mail_id, "--count", "4", "--timeout", "5", "--json", server=server))
    assert [m["payload"] for m in msgs] == ["c1", "h1", "n1", "l1"], msgs
    high = json_lines(cli("sub", mail_id, "-p", "high", "--timeout", "1", "--json", server=server))
    assert [m["payload"] for m in high] == ["c1", "h1"], high


def test_send_stdin_headers_and_no_ack(server: Any) -> None:
    mail_id = create_private(server)
    payload = "line one\nünïcode ✓\n".encode()
    out = ok(cli("send", mail_id, "-", "-H", "trace=abc", "--header", "k=v=w", input=payload,
                 server=server))
    assert re.match(r"msg_id: \d+$", out.strip()), out
    ok(cli("send", mail_id, "fire", "--no-ack", "-p", "urgent", server=server))

    msgs = json_lines(cli("sub", mail_id, "-n", "2", "-t", "5", "--json", server=server))
    assert [m["payload"] for m in msgs] == ["fire", payload.decode()]
    assert msgs[1]["headers"] == {"trace": "abc", "k": "v=w"}
    assert msgs[0]["priority"] == "urgent"


def test_binary_payload_is_shown_with_replacement(server: Any) -> None:
    mail_id = create_private(server)
    ok(cli("send", mail_id, "-", input=b"\xff\xfeok", server=server))
    (m,) = json_lines(cli("sub", mail_id, "-n", "1", "-t", "5", "--json", server=server))
    assert m["payload"] == "\ufffd\ufffdok"


def test_list_and_delete(server: Any) -> None:
    mail_id = create_private(server)
    sent = [json_lines(cli("send", mail_id, p, "-p", prio, "--json", server=server))[0]["msg_id"]
            for p, prio in (("a", "normal"), ("bb", "critical"), ("ccc", "normal"))]

    rows = json_lines(cli("list", mail_id, "--json", server=server))
    assert [r["msg_id"] for r in rows] == [sent[1], sent[0], sent[2]]
    assert [r["size"] for r in rows] == [2, 1, 3]
    assert all(r["mail_id"] == mail_id for r in rows)

    table = ok(cli("list", mail_id, server=server)).splitlines()
    assert table[0].split() == ["MSG_ID", "PRIORITY", "TS", "SIZE"]
    assert table[1].split()[:2] == [str(sent[1]), "critical"]
    assert table[-1] == "3 messages"

    assert "deleted: true" in ok(cli("delete", mail_id, str(sent[0]), server=server))
    (again,) = json_lines(cli("delete", mail_id, str(sent[0]), "--json", server=server))
    assert again["deleted"] is False
    rows = json_lines(cli("list", mail_id, "--json", server=server))
    assert [r["msg_id"] for r in rows] == [sent[1], sent[2]]

    empty = create_private(server)
    assert f"mailbox {empty} is empty" in ok(cli("list", empty, server=server))


def test_queue_group_members_share_messages(server: Any) -> None:
    mail_id = create_private(server)
    ok(cli("send", mail_id, "task-1", server=server))
    (got,) = json_lines(cli("sub", mail_id, "--queue", "workers", "-n", "1", "-t", "5", "--json",
                            server=server))
    assert got["payload"] == "task-1"
    # the group already received it: a later member of the same group gets nothing
    assert json_lines(cli("sub", mail_id, "--queue", "workers", "-t", "1", "--json",
                          server=server)) == []


def test_sub_follows_live_until_ctrl_c(server: Any) -> None:
    mail_id = create_private(server)
    proc = subprocess.Popen([sys.executable, "-m", "robustmq", "sub", mail_id, "--json",
                             "--server", server.nats_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=_env())
    try:
        time.sleep(0.3)  # the subscription may start before or after the send: both deliver
        ok(cli("send", mail_id, "live", server=server))
        line = proc.stdout.readline()
        assert json.loads(line)["payload"] == "live"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_env_var_selects_server(server: Any) -> None:
    out = ok(cli("mailbox", "create", "-q", env=_env(ROBUSTMQ_URL=server.nats_url)))
    assert MAIL_ID_RE.match(out.strip())
    out = ok(cli("mailbox", "create", "-q", env=_env(NATS_URL=server.nats_url)))
    assert MAIL_ID_RE.match(out.strip())


# ------------------------------------------------------------------------------------------ public


def test_public_watch(server: Any) -> None:
    name = unique_name("cli.pub")
    ok(cli("mailbox", "create", "--public", "--name", name, "--desc", "Watch me", "--ttl", "300",
           server=server))
    (first,) = json_lines(cli("public", "--count", "1", "--timeout", "5", "--json", server=server))
    assert first["event"] == "created" and isinstance(first["mail_id"], str)

    events = json_lines(cli("public", "--timeout", "1", "--json", server=server))
    mine = [e for e in events if e.get("mail_id") == name]
    assert mine == [{"event": "created", "mail_id": name, "desc": "Watch me", "ttl": 300}]

    human = ok(cli("public", "--timeout", "1", server=server))
    assert re.search(rf"^created\s+{re.escape(name)}\s+ttl=300s\s+\"Watch me\"$", human, re.M), human


def test_public_expired_event(server: Any) -> None:
    name = unique_name("cli.short")
    proc = subprocess.Popen([sys.executable, "-m", "robustmq", "public", "--json",
                             "--server", server.nats_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=_env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        ok(cli("mailbox", "create", "--public", "--name", name, "--ttl", "1", server=server))
        mine: list[str] = []
        deadline = time.monotonic() + 5
        while "expired" not in mine:
            left = deadline - time.monotonic()
            assert left > 0, f"no expired event for {name}; got {mine}"
            try:
                event = json.loads(lines.get(timeout=left))
            except queue.Empty:
                continue
            if event.get("mail_id") == name:
                mine.append(event["event"])
        assert mine == ["created", "expired"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ errors


def test_send_to_missing_mailbox_fails(server: Any) -> None:
    res = cli("send", "mail-doesnotexist-0000", "x", server=server)
    assert res.returncode == 1
    assert b"does not exist" in res.stderr and res.stderr.startswith(b"error: "), res.stderr
    res = cli("send", "mail-doesnotexist-0000", "x", "--json", server=server)
    assert res.returncode == 1
    reply = json.loads(res.stdout)
    assert set(reply) == {"error"} and "does not exist" in reply["error"]
    res = cli("list", "mail-doesnotexist-0000", server=server)
    assert res.returncode == 1 and b"does not exist" in res.stderr


def test_usage_errors_exit_2(server: Any) -> None:
    for args in (("send", "m", "x", "--priority", "highest"), ("send", "m", "x", "-H", "novalue"),
                 ("sub", "*"), ("sub", "m", "--priority", "lowest"), ("delete", "m", "abc")):
        res = cli(*args, server=server)
        assert res.returncode == 2, (args, res.stderr)


def test_server_down_is_a_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    for args in (("mailbox", "create"), ("send", "m", "x"), ("sub", "m", "-t", "1"), ("public",)):
        res = cli(*args, server=url)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert f"cannot connect to {url}".encode() in res.stderr, res.stderr
    assert time.monotonic() - t0 < 15


def test_password_is_not_printed() -> None:
    res = cli("mailbox", "create", server=f"nats://bob:s3cret@127.0.0.1:{free_port()}")
    assert res.returncode == 1 and b"s3cret" not in res.stderr and b"bob:***@" in res.stderr


# ------------------------------------------------------------------------------------------ status


def test_status_falls_back_to_nats_info(server: Any) -> None:
    http = f"http://127.0.0.1:{free_port()}"
    out = ok(cli("status", "--http", http, server=server))
    assert "HTTP monitoring unavailable" in out
    assert f"port:          {server.nats_port}" in out, out

    (report,) = json_lines(cli("status", "--http", http, "--json", server=server))
    assert report["source"] == "nats" and "unavailable" in report["http_error"]
    assert report["server_info"]["port"] == server.nats_port


def test_status_everything_down() -> None:
    res = cli("status", "--http", f"http://127.0.0.1:{free_port()}",
              server=f"nats://127.0.0.1:{free_port()}")
    assert res.returncode == 1 and b"cannot connect to nats://127.0.0.1:" in res.stderr


class _Varz(BaseHTTPRequestHandler):
    body = json.dumps({"server_id": "NTEST", "version": "2.10.0", "uptime": "1m2s",
                       "connections": 3, "in_msgs": 10, "out_msgs": 20, "in_bytes": 100,
                       "out_bytes": 200, "mq9": {"mailboxes": 7}}).encode()

    def do_GET(self) -> None:
        if self.path != "/varz":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def varz_http():
    httpd = HTTPServer(("127.0.0.1", 0), _Varz)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_status_from_http_varz(varz_http: str) -> None:
    down = f"nats://127.0.0.1:{free_port()}"  # not needed when HTTP answers
    out = ok(cli("status", "--http", varz_http, server=down))
    for text in ("uptime:", "1m2s", "connections:", "msgs in:", "10", "msgs out:", "20",
                 "mailboxes:", "7"):
        assert text in out, out
    (report,) = json_lines(cli("status", "--json", server=down,
                               env=_env(ROBUSTMQ_HTTP_URL=varz_http + "/varz")))
    assert report["source"] == "http" and report["mailboxes"] == 7 and report["connections"] == 3


def test_every_setting_has_a_flag_and_the_flags_work(tmp_path: Any) -> None:
    """`serve --help` is generated from the Config struct: each field has its --flag; a flag that had
    none before (--mq9-sweep-interval-s) is accepted, and a bad value gets a clear error, exit 2."""
    from robustmq.config import fields

    out = subprocess.run([sys.executable, "-m", "robustmq", "serve", "--help"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "COLUMNS": "250"}).stdout
    for f in fields():
        assert "--" + f.name.replace("_", "-") in out, f.name
    for alias in ("--ping-interval", "--retention-max-age", "--segment-max-age"):
        assert alias in out
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "robustmq", "serve", "--host", "127.0.0.1",
                             "--nats-port", str(port), "--http-port", "0", "--mqtt-port", "0",
                             "--kafka-port", "0", "--data-dir", str(tmp_path / "d"),
                             "--mq9-sweep-interval-s", "0.05", "--durability", "nonsense"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2 and "durability" in out  # validated, with a clear error


def test_serve_help_is_readable_on_an_80_column_terminal() -> None:
    """On an 80-column terminal `serve --help` cut the long flags short (`--segment-max-age-s,--segmen…`,
    `--retention-check-interval-s…` without its alias) and the env names (`ROBUSTMQ_RETENTION_CHECK_INTE…`);
    every flag and alias must show in full, with the rule that names the environment variables."""
    from robustmq.config import FLAG_ALIASES, fields

    out = subprocess.run([sys.executable, "-m", "robustmq", "serve", "--help"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "COLUMNS": "80"}).stdout
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80
    words = set(re.findall(r"--[a-z0-9-]+|ROBUSTMQ_[A-Z_]+", out))
    for f in fields():
        assert "--" + f.name.replace("_", "-") in words, f.name
    assert set(FLAG_ALIASES.values()) <= words
    assert "ROBUSTMQ_PING_INTERVAL_S" in words and "[mq9] default_ttl_s" in out
    assert "(default none)" not in out.split("--server-name", 1)[1].split("--", 1)[0]


def test_short_flag_aliases_set_the_same_setting(tmp_path: Any) -> None:
    """`--ping-interval` is `--ping-interval-s`: checked like it, and both at once must agree."""
    res = subprocess.run(_serve_argv("--nats-port", "0", "--data-dir", str(tmp_path / "d"),
                                     "--ping-interval", "0"), capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "ping-interval" in res.stderr and "more than 0" in res.stderr, res.stderr
    res = subprocess.run(_serve_argv("--nats-port", "0", "--data-dir", str(tmp_path / "d"),
                                     "--retention-max-age", "5", "--retention-max-age-s", "6"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "same setting" in res.stderr, res.stderr


# ------------------------------------------------------------------------------ serve: start-up failures


def _serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "robustmq", "serve", "--host", "127.0.0.1", "--mqtt-port", "0",
            "--kafka-port", "0", "--http-port", "0", *args]


def test_startup_failures_are_one_line_errors(tmp_path: Any) -> None:
    """The mistakes an operator makes at start-up: one `error: ...` line naming the cause, exit 2,
    never a traceback (they used to print a ~75-line rich traceback and exit 1)."""
    from procs import RobustMQ

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    running = RobustMQ(data_dir=str(tmp_path / "locked")).start()
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("nats_port = \n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    dirs = iter(str(tmp_path / f"d{i}") for i in range(100))  # each its own: they run at once
    cases = {
        "port in use": (["--nats-port", str(busy), "--data-dir", next(dirs)],
                        f"127.0.0.1:{busy} (--nats-port)", "already in use"),
        "data dir in use": (["--nats-port", str(free_port()), "--data-dir", running.data_dir],
                            f"data directory {running.data_dir} is in use by another robustmq", ""),
        "invalid toml": (["--config", str(bad_toml), "--data-dir", next(dirs)], "not valid TOML", "line 1"),
        "config is a directory": (["--config", str(tmp_path), "--data-dir", next(dirs)],
                                  "cannot read config file", ""),
        "data dir is a file": (["--nats-port", str(free_port()), "--data-dir", str(a_file)],
                               "is not a directory", "--data-dir"),
        "data dir cannot be made": (["--nats-port", str(free_port()), "--data-dir", "/proc/nope/data"],
                                    "cannot create data directory /proc/nope/data", ""),
        "bad host": (["--host", "no-such-host.invalid", "--nats-port", str(free_port()), "--data-dir", next(dirs)],
                     "cannot resolve --host 'no-such-host.invalid'", ""),
        "port out of range": (["--nats-port", "81414", "--data-dir", next(dirs)], "--nats-port", "0..65535"),
        "negative port": (["--http-port", "-1", "--data-dir", next(dirs)], "--http-port", "0..65535"),
        "zero interval": (["--ping-interval", "0", "--data-dir", next(dirs)], "--ping-interval-s", "more than 0"),
        "unknown log level": (["--log-level", "verbose", "--data-dir", next(dirs)], "--log-level", "verbose"),
    }
    try:
        procs = {name: subprocess.Popen(_serve_argv(*args), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name, (args, _, _) in cases.items()}
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=30)
            finally:
                proc.kill()
            _, want, also = cases[name]
            lines = [line for line in err.splitlines() if " INFO " not in line]
            assert proc.returncode == 2, (name, proc.returncode, out, err)
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
            assert want in lines[0] and also in lines[0], (name, lines[0])
            assert "Traceback" not in err + out
        assert running.proc is not None and running.proc.poll() is None  # untouched
    finally:
        holder.close()
        running.cleanup()


def test_password_without_user_refuses_to_start(tmp_path: Any) -> None:
    """ROBUSTMQ_PASSWORD without a user used to start a server with no authentication at all."""
    res = subprocess.run(_serve_argv("--nats-port", str(free_port()), "--data-dir", str(tmp_path / "d")),
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "ROBUSTMQ_PASSWORD": "s3cret"})
    assert res.returncode == 2 and "--password" in res.stderr and "--user" in res.stderr, res.stderr
    res = subprocess.run(_serve_argv("--token", "t", "--user", "u", "--data-dir", str(tmp_path / "d")),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--token" in res.stderr and "cannot be combined" in res.stderr


# ------------------------------------------------------------------------------ status with auth


def test_status_reads_varz_with_the_servers_credentials() -> None:
    """`status` passes the --server URL's credentials to /varz (Basic user:pass, Bearer token) and
    never prints a password."""
    from procs import RobustMQ

    for args, good, bad in (
        (["--user", "alice", "--password", "s3cret"], "alice:s3cret@", "alice:wrong@"),
        (["--token", "s3cret"], "s3cret@", "wrong@"),
    ):
        srv = RobustMQ(http=True, extra_args=args).start()
        try:
            http = f"http://127.0.0.1:{srv.http_port}"
            nats_url = f"nats://{good}127.0.0.1:{srv.nats_port}"
            (report,) = json_lines(cli("status", "--http", http, "--json", server=nats_url))
            assert report["source"] == "http" and report["url"] == http + "/varz", report
            assert report["server_id"], report
            out = ok(cli("status", "--http", http, server=nats_url))
            assert "connections:" in out and "s3cret" not in out, out
            # credentials in the --http URL itself: used, and shown redacted
            out = ok(cli("status", "--http", f"http://{good}127.0.0.1:{srv.http_port}",
                         server=f"nats://127.0.0.1:{free_port()}"))
            assert "s3cret" not in out and "***@127.0.0.1" in out and "connections:" in out, out
            # wrong credentials: a clear error, not a fallback that hides why
            res = cli("status", "--http", http, server=f"nats://{bad}127.0.0.1:{srv.nats_port}")
            assert res.returncode == 1 and b"error: " in res.stderr and b"refused" in res.stderr, res
            assert b"wrong" not in res.stderr and b"Traceback" not in res.stderr
        finally:
            srv.cleanup()


def test_status_with_a_bad_http_url_is_a_clear_error(server: Any) -> None:
    """--http at a non-HTTP port, or with a bad port, used to crash with a traceback."""
    for http, words in ((f"http://127.0.0.1:{server.nats_port}", (b"did not answer HTTP", b"--http")),
                        ("http://127.0.0.1:abc", (b"invalid --http URL",)),
                        ("http://127.0.0.1:99999", (b"invalid --http URL", b"65535")),
                        ("ftp://127.0.0.1:21", (b"invalid --http URL",))):
        res = cli("status", "--http", http, server=server)
        assert res.returncode == 1, (http, res)
        assert res.stderr.startswith(b"error: ") and b"Traceback" not in res.stderr, (http, res.stderr)
        for w in words:
            assert w in res.stderr, (http, res.stderr)
        res = cli("status", "--http", http, "--json", server=server)
        assert res.returncode == 1 and "error" in json.loads(res.stdout), (http, res)


# ------------------------------------------------------------------------------ serve: signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly_and_keeps_acked_messages(tmp_path: Any, sig: int) -> None:
    """SIGTERM / SIGINT with NATS and MQTT clients connected and acknowledged mq9 sends in flight: the
    server is gone within a few seconds, exit 0, no traceback; every acknowledged message is there
    after a restart on the same data directory."""
    import asyncio

    import nats
    import paho.mqtt.client as mqtt
    from procs import RobustMQ

    s = RobustMQ(data_dir=str(tmp_path / "data"), http=True, mqtt=True).start()
    m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sig-dev")

    async def before_and_during() -> tuple[str, int]:
        nc = await nats.connect(s.nats_url, allow_reconnect=False)
        mail_id = json.loads((await nc.request("$mq9.AI.MAILBOX.CREATE", b'{"ttl":600}')).data)["mail_id"]
        await nc.subscribe("sig.>")
        for i in range(20):
            await nc.request(f"$mq9.AI.MAILBOX.MSG.{mail_id}", b"before %d" % i, timeout=5)
        in_flight = [asyncio.ensure_future(nc.request(f"$mq9.AI.MAILBOX.MSG.{mail_id}", b"in flight %d" % i,
                                                      timeout=1)) for i in range(500)]
        await asyncio.sleep(0)
        s.proc.send_signal(sig)  # type: ignore[union-attr]
        done = await asyncio.gather(*in_flight, return_exceptions=True)
        try:
            await nc.close()
        except Exception:  # noqa: BLE001 - the server is going away
            pass
        return mail_id, 20 + sum(1 for r in done if not isinstance(r, BaseException))

    try:
        m.connect("127.0.0.1", s.mqtt_port)
        m.loop_start()
        mail_id, acked = asyncio.run(before_and_during())
        t0 = time.monotonic()
        rc = s.proc.wait(5)  # type: ignore[union-attr]
        assert rc == 0 and time.monotonic() - t0 < 5
        log = s.log_text()
        assert "Traceback" not in log and "shutting down" in log, log[-2000:]
        s.proc = None
        s.start()

        async def stored() -> int:
            nc = await nats.connect(s.nats_url, allow_reconnect=False)
            reply = json.loads((await nc.request(f"$mq9.AI.MAILBOX.LIST.{mail_id}", b'{"limit":10000}')).data)
            await nc.close()
            return len(reply["messages"])
        assert asyncio.run(stored()) >= acked
    finally:
        m.loop_stop()
        s.cleanup()
