"""SPEC §4b through a Go client: upstream's current mq9 protocol as upstream's Go SDK speaks it.

Upstream's Go SDK (module `github.com/robustmq/mq9/go`) is not served by the Go module proxy this
project reaches (its version list and every version are refused), so `go_sdk/wire.go` stands in for
it: a small client on nats.go v1.37.0 (the SDK's own pin) that sends the SDK's exact requests (JSON
bodies as Go maps, e.g. FETCH always with `"group_name": ""`, headers only for non-default options)
and decodes replies the SDK's way (`error` string, base64 payloads, int64 msg_id and create_time).
`go_sdk/main.go` runs a JSON script of steps through it and prints what it saw, including each raw
reply, which these tests check exactly.

The Go program is built once per session (`go build`, modules from the Go module proxy, pinned by
go.sum; the build cache in ~/.cache/go-build keeps later builds to a few seconds). Skipped when no
`go` is installed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from procs import RobustMQ

from .helpers import unique_name

# the first build on a fresh machine downloads nats.go and compiles it: more than the default 120 s
pytestmark = pytest.mark.timeout(600)

GO_SRC = Path(__file__).parent / "go_sdk"
MSG_KEYS = {"msg_id", "payload", "priority", "create_time"}


def _go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


@pytest.fixture(scope="session")
def go_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = _go()
    if go is None:
        pytest.skip("no `go` toolchain installed (needed to build the Go SDK check in tests/mq9/go_sdk)")
    out = tmp_path_factory.mktemp("go-sdk") / "mq9-go-sdk-check"
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}
    env.setdefault("GOTOOLCHAIN", "local")
    proc = subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_SRC, env=env,
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, f"go build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def run_go(binary: Path, url: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proc = subprocess.run([str(binary), url, json.dumps(steps)], capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 0, f"Go client failed ({proc.returncode}):\n{proc.stderr}"
    results = json.loads(proc.stdout)
    assert len(results) == len(steps), results
    return results


def ok(res: dict[str, Any]) -> Any:
    """A step the SDK saw succeed: its reply carried `"error": ""`."""
    assert res["error"] == "", f"{res['op']} failed: {res}"
    return res["value"]


def failed(res: dict[str, Any], *words: str) -> str:
    """A step the SDK saw fail: the reply is `{"error": "<text>"}` and nothing else."""
    assert res["error"], f"{res['op']} should have failed: {res}"
    assert set(res["raw"]) == {"error"} and res["raw"]["error"].strip(), res
    for w in words:
        assert w.lower() in res["error"].lower(), f"{res['error']!r} should mention {w!r}"
    return str(res["error"])


def payloads(msgs: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(m["payload_b64"]) for m in msgs]


def check_messages_reply(res: dict[str, Any]) -> None:
    """FETCH/QUERY replies as SPEC §4b fixes them: `error` "", base64 payload, Unix seconds."""
    raw = res["raw"]
    assert set(raw) == {"error", "messages"} and raw["error"] == "", raw
    for m, seen in zip(raw["messages"], res["value"]):
        assert set(m) == MSG_KEYS, m
        assert type(m["msg_id"]) is int and type(m["create_time"]) is int, m
        assert base64.b64encode(base64.b64decode(m["payload"], validate=True)).decode() == m["payload"]
        assert abs(m["create_time"] - time.time()) < 120, "create_time is in seconds"
        assert m["priority"] in ("critical", "urgent", "normal")  # upstream SDKs know only these
        assert seen["payload_b64"] == m["payload"]  # the SDK decoded it as base64, not raw text


def test_create_with_name_and_ttl(go_sdk: Path, server: RobustMQ) -> None:
    name, short = unique_name("go"), unique_name("go")
    r = run_go(go_sdk, server.nats_url, [
        {"op": "create", "name": name, "ttl": 60},
        {"op": "create", "name": name, "ttl": 60},
        {"op": "create", "ttl": 60},
        {"op": "create", "ttl": 0},
        {"op": "create", "name": short, "ttl": 1},
        {"op": "send", "addr": short, "payload": "in time"},
        {"op": "sleep", "ms": 1600},
        {"op": "send", "addr": short, "payload": "too late"},
        {"op": "send", "addr": name, "payload": "still here"},
    ])
    assert ok(r[0]) == name
    assert r[0]["raw"] == {"error": "", "mail_id": name, "mail_address": name, "is_new": True}
    failed(r[1], "exists")
    for res in (r[2], r[3]):  # no name: a private `mail-…` address, which the SDK reads as success
        assert ok(res).startswith("mail-") and res["raw"]["mail_address"] == res["value"]
        assert res["raw"].get("error", "") == ""
    assert ok(r[4]) == short and type(ok(r[5])) is int
    failed(r[7], "does not exist")
    assert r[8]["raw"] == {"error": "", "msg_id": 0}


def test_send_every_header_then_fetch(go_sdk: Path, server: RobustMQ) -> None:
    addr = unique_name("go")
    binary = b"\x00\xff\xfe binary \x80"
    r = run_go(go_sdk, server.nats_url, [
        {"op": "create", "name": addr, "ttl": 60},
        {"op": "send", "addr": addr, "payload": "plain"},  # 1
        {"op": "send", "addr": addr, "payload_b64": base64.b64encode(binary).decode(),
         "priority": "critical"},  # 2
        {"op": "send", "addr": addr, "payload": "soon", "priority": "urgent"},  # 3
        {"op": "send", "addr": addr, "payload": "state-v1", "key": "state"},  # 4
        {"op": "send", "addr": addr, "payload": "state-v2", "key": "state", "tags": ["a", "b"]},  # 5
        {"op": "send", "addr": addr, "payload": "delayed", "delay": 1},  # 6
        {"op": "send", "addr": addr, "payload": "short-lived", "ttl": 1},  # 7
        {"op": "send", "addr": addr, "payload": "x", "priority": "whenever"},  # 8
        {"op": "send", "addr": "nobody.here", "payload": "x"},  # 9
        {"op": "fetch", "addr": addr, "deliver": "earliest", "wait_ms": 1},  # 10
        {"op": "sleep", "ms": 1300},
        {"op": "fetch", "addr": addr, "deliver": "earliest", "wait_ms": 1},  # 12
    ])
    ids = [ok(res) for res in r[1:8]]
    for res in r[1:8]:
        assert set(res["raw"]) == {"error", "msg_id"} and res["raw"]["error"] == "", res
    assert ids[5] == -1, "a delayed send replies msg_id -1"
    assert all(type(i) is int and i >= 0 for i in ids[:5] + ids[6:])
    failed(r[8], "priority")
    failed(r[9], "does not exist")
    first, later = r[10], r[12]
    check_messages_reply(first)
    check_messages_reply(later)
    # priority order; the older keyed message is gone; the delayed one is not yet visible
    assert payloads(ok(first)) == [binary, b"soon", b"plain", b"state-v2", b"short-lived"]
    assert [m["priority"] for m in ok(first)] == ["critical", "urgent", "normal", "normal", "normal"]
    # a second later the delayed message shows and the 1 s ttl one has expired
    assert payloads(ok(later)) == [binary, b"soon", b"plain", b"state-v2", b"delayed"]


def test_group_fetch_ack_across_restart(go_sdk: Path, fresh_server: RobustMQ) -> None:
    fresh_server.start()
    addr = unique_name("go")
    r = run_go(go_sdk, fresh_server.nats_url, [
        {"op": "create", "name": addr, "ttl": 3600},
        *({"op": "send", "addr": addr, "payload": f"m{i}"} for i in range(4)),  # 1..4
        {"op": "send", "addr": addr, "payload": "crit", "priority": "critical"},  # 5
        {"op": "fetch", "addr": addr, "group": "workers", "deliver": "earliest"},  # 6
        {"op": "ack", "addr": addr, "group": "workers", "msg_id": "@5"},
        {"op": "ack", "addr": addr, "group": "workers", "msg_id": "@1"},
        {"op": "ack", "addr": addr, "group": "workers", "msg_id": "@3"},  # above an unacked one
        {"op": "fetch", "addr": addr, "group": "workers"},  # 10
        {"op": "ack", "addr": addr, "group": "workers", "msg_id": 99},  # 11: never fetched
        {"op": "ack", "addr": addr, "group": "nobody", "msg_id": "@1"},  # 12
    ])
    ids = [ok(res) for res in r[1:6]]
    check_messages_reply(r[6])
    assert [m["msg_id"] for m in ok(r[6])] == [ids[4], *ids[:4]]
    for res in r[7:10]:
        ok(res)
        assert res["raw"] == {"error": ""}
    assert [m["msg_id"] for m in ok(r[10])] == [ids[1], ids[3]], "unacked ones come again"
    failed(r[11], "never fetched")
    failed(r[12], "never fetched")

    fresh_server.restart()
    r = run_go(go_sdk, fresh_server.nats_url, [
        {"op": "fetch", "addr": addr, "group": "workers"},  # 0: acked stay acked, unacked come back
        {"op": "ack", "addr": addr, "group": "workers", "msg_id": ids[3]},
        {"op": "fetch", "addr": addr, "group": "workers"},  # 2
        {"op": "ack", "addr": addr, "group": "workers", "msg_id": ids[1]},
        {"op": "fetch", "addr": addr, "group": "workers", "wait_ms": 100},  # 4
        {"op": "fetch", "addr": addr, "group": "late", "deliver": "earliest"},  # 5: its own offset
        {"op": "fetch", "addr": addr, "deliver": "earliest", "wait_ms": 1},  # 6: stateless
        # the SDK's Consume loop (AutoAck): new messages, each fetched once and acked
        *({"op": "send", "addr": addr, "payload": f"n{i}"} for i in range(3)),  # 7..9
        {"op": "consume", "addr": addr, "group": "workers", "count": 3, "num": 2, "wait_ms": 200,
         "timeout_ms": 5000},  # 10
        {"op": "fetch", "addr": addr, "group": "workers", "wait_ms": 100},  # 11
    ])
    assert [m["msg_id"] for m in ok(r[0])] == [ids[1], ids[3]]
    assert payloads(ok(r[0])) == [b"m1", b"m3"]
    assert [m["msg_id"] for m in ok(r[2])] == [ids[1]]
    assert ok(r[4]) == []
    assert len(ok(r[5])) == 5 and len(ok(r[6])) == 5
    new_ids = [ok(res) for res in r[7:10]]
    assert [m["msg_id"] for m in ok(r[10])] == new_ids
    assert ok(r[11]) == []


def test_stateless_fetch_deliver_policies(go_sdk: Path, server: RobustMQ) -> None:
    addr = unique_name("go")
    now = int(time.time())
    r = run_go(go_sdk, server.nats_url, [
        {"op": "create", "name": addr, "ttl": 60},
        *({"op": "send", "addr": addr, "payload": f"m{i}"} for i in range(4)),  # 1..4
        {"op": "fetch", "addr": addr, "deliver": "from_id", "from_id": "@3", "wait_ms": 1},  # 5
        {"op": "fetch", "addr": addr, "deliver": "from_time", "from_time": now - 60, "wait_ms": 1},
        {"op": "fetch", "addr": addr, "deliver": "from_time", "from_time": now + 60, "wait_ms": 1},
        {"op": "fetch", "addr": addr, "wait_ms": 200},  # 8: latest (the default): nothing new
        {"op": "fetch", "addr": addr, "deliver": "earliest", "num": 3, "wait_ms": 1},  # 9
        {"op": "fetch", "addr": addr, "deliver": "earliest", "wait_ms": 1},  # 10: not consumed
        {"op": "fetch", "addr": addr, "deliver": "sometimes"},  # 11
    ])
    assert payloads(ok(r[5])) == [b"m2", b"m3"]
    assert len(ok(r[6])) == 4 and ok(r[7]) == [] and ok(r[8]) == []
    assert payloads(ok(r[9])) == [b"m0", b"m1", b"m2"]
    assert len(ok(r[10])) == 4, "a stateless fetch moves no offset"
    failed(r[11], "deliver")
    for res in r[5:11]:
        check_messages_reply(res)


def test_fetch_priority_order_in_a_large_mailbox(go_sdk: Path, server: RobustMQ) -> None:
    """FETCH stops scanning once no later message can be among the ones it returns (the mailbox's
    priority index): a critical message stored after hundreds of normal ones still comes first,
    for a stateless fetch, a group, and a message sent after the index was built."""
    addr = unique_name("go")
    steps: list[dict[str, Any]] = [{"op": "create", "name": addr, "ttl": 60}]
    steps += [{"op": "send", "addr": addr, "payload": f"n{i}"} for i in range(300)]  # 1..300
    steps += [{"op": "send", "addr": addr, "payload": "late-critical", "priority": "critical"},  # 301
              {"op": "send", "addr": addr, "payload": "late-urgent", "priority": "urgent"},  # 302
              {"op": "fetch", "addr": addr, "deliver": "earliest", "num": 5, "wait_ms": 1},  # 303
              {"op": "fetch", "addr": addr, "group": "g", "deliver": "earliest", "num": 4},  # 304
              *({"op": "ack", "addr": addr, "group": "g", "msg_id": f"@{i}"} for i in (301, 302, 1, 2)),
              {"op": "fetch", "addr": addr, "group": "g", "num": 3},  # 309
              {"op": "send", "addr": addr, "payload": "newest-critical", "priority": "critical"},  # 310
              {"op": "fetch", "addr": addr, "group": "g", "num": 3},  # 311
              {"op": "delete", "addr": addr, "msg_id": "@310"},
              {"op": "fetch", "addr": addr, "group": "g", "num": 3},  # 313
              {"op": "fetch", "addr": addr, "deliver": "from_id", "from_id": "@299", "num": 3,
               "wait_ms": 1}]  # 314
    r = run_go(go_sdk, server.nats_url, steps)
    assert payloads(ok(r[303])) == [b"late-critical", b"late-urgent", b"n0", b"n1", b"n2"]
    assert payloads(ok(r[304])) == [b"late-critical", b"late-urgent", b"n0", b"n1"]
    for res in r[305:309]:
        ok(res)
    assert payloads(ok(r[309])) == [b"n2", b"n3", b"n4"]
    assert payloads(ok(r[311])) == [b"newest-critical", b"n2", b"n3"]
    assert payloads(ok(r[313])) == [b"n2", b"n3", b"n4"]
    assert payloads(ok(r[314])) == [b"late-critical", b"late-urgent", b"n298"]


def test_query_key_tags_since_limit(go_sdk: Path, server: RobustMQ) -> None:
    addr = unique_name("go")
    now = int(time.time())
    r = run_go(go_sdk, server.nats_url, [
        {"op": "create", "name": addr, "ttl": 60},
        {"op": "send", "addr": addr, "payload": "v1", "key": "state"},
        {"op": "send", "addr": addr, "payload": "other", "tags": ["a", "b"]},
        {"op": "send", "addr": addr, "payload": "v2", "key": "state", "tags": ["a"]},  # 3
        {"op": "send", "addr": addr, "payload": "urgent", "priority": "urgent"},
        {"op": "query", "addr": addr, "key": "state"},  # 5
        {"op": "query", "addr": addr, "tags": ["a"]},  # 6 (beyond the Go SDK: its Query has no tags)
        {"op": "query", "addr": addr, "tags": ["a", "b"]},
        {"op": "query", "addr": addr, "since": now - 60},  # 8
        {"op": "query", "addr": addr, "since": now + 60},
        {"op": "query", "addr": addr, "limit": 2},  # 10
        {"op": "query", "addr": addr},
        {"op": "fetch", "addr": addr, "group": "g", "deliver": "earliest"},  # 12
    ])
    assert [(m["msg_id"], base64.b64decode(m["payload_b64"])) for m in ok(r[5])] == [(ok(r[3]), b"v2")]
    assert payloads(ok(r[6])) == [b"other", b"v2"]
    assert payloads(ok(r[7])) == [b"other"]
    assert payloads(ok(r[8])) == [b"urgent", b"other", b"v2"]
    assert ok(r[9]) == []
    assert payloads(ok(r[10])) == [b"urgent", b"other"]
    assert payloads(ok(r[11])) == [b"urgent", b"other", b"v2"]
    assert len(ok(r[12])) == 3, "queries move no group offset"
    for res in r[5:12]:
        check_messages_reply(res)


def test_delete(go_sdk: Path, server: RobustMQ) -> None:
    addr = unique_name("go")
    r = run_go(go_sdk, server.nats_url, [
        {"op": "create", "name": addr, "ttl": 60},
        {"op": "send", "addr": addr, "payload": "gone"},
        {"op": "send", "addr": addr, "payload": "kept"},
        {"op": "delete", "addr": addr, "msg_id": "@1"},  # 3
        {"op": "delete", "addr": addr, "msg_id": "@1"},  # 4: already deleted: not an error
        {"op": "fetch", "addr": addr, "deliver": "earliest", "wait_ms": 1},
        {"op": "query", "addr": addr},
        {"op": "delete", "addr": "nobody.here", "msg_id": 0},  # 7
    ])
    ok(r[3])
    assert r[3]["raw"] == {"error": "", "deleted": True}
    ok(r[4])
    assert r[4]["raw"] == {"error": "", "deleted": False}
    assert payloads(ok(r[5])) == [b"kept"] and payloads(ok(r[6])) == [b"kept"]
    failed(r[7], "does not exist")


def test_agent_register_report_discover(go_sdk: Path, server: RobustMQ) -> None:
    addr = unique_name("go")
    word = f"translator{int(time.time() * 1000) % 1_000_000}"
    card = {"name": f"{word}-agent", "description": f"a {word} for French and German",
            "mailbox": addr, "skills": [{"id": "translate", "name": "translate text"}],
            "version": "1.0.0"}
    r = run_go(go_sdk, server.nats_url, [
        {"op": "create", "name": addr, "ttl": 60},
        {"op": "register", "card": card},  # 1
        {"op": "discover", "text": word},  # 2
        {"op": "report", "card": {"mailbox": addr, "status": "busy", "load": 0.5}},  # 3
        {"op": "discover"},  # 4: no filter, the broker's default page
        {"op": "discover", "text": word, "limit": 1, "page": 1},  # 5
        {"op": "unregister", "mailbox": addr},  # 6
        {"op": "discover", "text": word},  # 7
    ])
    ok(r[1])
    assert r[1]["raw"] == {"error": ""}
    assert ok(r[2]) == [card], "DISCOVER returns the card as it was registered"
    assert set(r[2]["raw"]) == {"error", "agents"}
    ok(r[3])
    assert any(a.get("mailbox") == addr for a in ok(r[4]))
    assert ok(r[5]) == [card]
    ok(r[6])
    assert ok(r[7]) == []
