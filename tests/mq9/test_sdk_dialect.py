"""SPEC §4b, first dialect: the published PyPI SDK (`robustmq==1.0.0`) and the LangChain tools built on
it (`langchain-mq9==0.3.5`), unmodified, against a real server, plus the cross-dialect view from a
seed-style (§4) nats-py client.

The SDK's import name `robustmq` is this project's package name too, and `langchain_mq9` imports
`robustmq.mq9` by absolute name, so the two cannot share one interpreter. Each SDK step therefore runs
in a child interpreter whose `sys.path` starts with the SDK's own install dir (`.cache/mq9sdk`, installed
by the `sdk_dir` fixture with `pip install --target` when missing). The child runs a list of steps and
prints one JSON result per step; the test asserts on them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    barrier,
    collect,
    connect,
    create,
    list_mailbox,
    msg_id,
    msg_subject,
    priority,
    request_json,
    send,
    unique_name,
)

SDK_PINS = ("robustmq==1.0.0", "langchain-mq9==0.3.5")
SDK_DIR = Path(__file__).resolve().parents[2] / ".cache" / "mq9sdk"
_MARKERS = ("robustmq-1.0.0.dist-info", "langchain_mq9-0.3.5.dist-info")

# The child: argv = [sdk_dir, server_url, steps_json]; prints {"results": [...]}: one entry per step,
# {"ok": value} or {"error": "<ExceptionType>: <text>"}.
_DRIVER = r'''
import asyncio, base64, json, sys
sys.path.insert(0, sys.argv[1])
from robustmq.mq9 import Client
URL = sys.argv[2]

def b(payload):
    return base64.b64decode(payload["b64"]) if isinstance(payload, dict) else payload.encode()

async def run(op, args):
    if op == "tool":  # a LangChain tool through its synchronous entry point, as an agent calls it
        raise AssertionError("tool steps run outside the loop")
    async with Client(URL) as c:
        if op == "create":
            mb = await c.create(**args)
            return mb.mail_id
        if op == "send":
            for payload, prio in args["items"]:
                await c.send(args["mail_id"], b(payload), priority=prio)
            return None
        if op == "subscribe":
            got = []
            async def cb(m):
                got.append({"msg_id": m.msg_id, "mail_id": m.mail_id, "priority": m.priority.value,
                            "b64": base64.b64encode(m.payload).decode()})
            await c.subscribe(args["mail_id"], cb, priority=args.get("priority", "*"),
                              queue_group=args.get("queue_group", ""))
            await asyncio.sleep(args.get("window", 0.6))
            return got
        if op == "list":
            return [{"msg_id": m.msg_id, "priority": m.priority.value, "ts": m.ts}
                    for m in await c.list(args["mail_id"])]
        if op == "delete":
            return await c.delete(args["mail_id"], args["msg_id"])
    raise AssertionError(op)

def toolkit_step(args):
    from langchain_mq9 import Mq9Toolkit
    tools = {t.name: t for t in Mq9Toolkit(server=URL).get_tools()}
    if args["name"] == "_names":
        return sorted(tools)
    return tools[args["name"]].invoke(args["input"])

results = []
for op, args in json.loads(sys.argv[3]):
    try:
        value = toolkit_step(args) if op == "tool" else asyncio.run(run(op, args))
        results.append({"ok": value})
    except Exception as exc:
        results.append({"error": f"{type(exc).__name__}: {exc}"})
print(json.dumps({"results": results}))
'''


def _installed(d: Path) -> bool:
    return all((d / m).is_dir() for m in _MARKERS)


@pytest.fixture(scope="session")
def sdk_dir() -> Path:
    """The unmodified SDK and toolkit from PyPI, installed once into `.cache/mq9sdk` (gitignored).
    A failed install fails the tests: these are the clients the dialect exists for."""
    if _installed(SDK_DIR):
        return SDK_DIR
    SDK_DIR.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mq9sdk-", dir=SDK_DIR.parent))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-input", "--target", str(tmp), *SDK_PINS],
        capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not _installed(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"pip install --target {SDK_PINS} failed (rc={proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    if SDK_DIR.exists() and not _installed(SDK_DIR):
        shutil.rmtree(SDK_DIR, ignore_errors=True)  # left half-made by an interrupted older run
    try:
        tmp.rename(SDK_DIR)  # atomic: a concurrent run sees a whole install or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run got there first
    assert _installed(SDK_DIR)
    return SDK_DIR


def sdk(sdk_dir: Path, url: str, *steps: tuple[str, dict[str, Any]]) -> list[Any]:
    """Run SDK steps in a child interpreter; every step must succeed. Returns their values."""
    out = sdk_try(sdk_dir, url, *steps)
    for step, r in zip(steps, out):
        assert "error" not in r, f"SDK step {step} failed: {r['error']}"
    return [r["ok"] for r in out]


def sdk_try(sdk_dir: Path, url: str, *steps: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LANGSMITH_TRACING"] = "false"  # the toolkit must not try to reach LangSmith
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(sdk_dir), url, json.dumps(steps)],
                          capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode == 0, f"SDK driver crashed:\n{proc.stderr[-4000:]}"
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    return results


def payload(m: dict[str, Any]) -> bytes:
    return base64.b64decode(m["b64"])


# --------------------------------------------------------------------------------- the SDK itself


def test_the_sdk_under_test_is_the_published_one(sdk_dir: Path) -> None:
    """Guards the reading the dialect is built on: the SDK's subjects and priority names."""
    src = (sdk_dir / "robustmq" / "mq9" / "client.py").read_text()
    assert '_MAILBOX_MSG = f"{_PREFIX}.MAILBOX.MSG.{{mail_id}}.{{priority}}"' in src
    assert 'HIGH = "high"' in src and 'NORMAL = "normal"' in src and 'LOW = "low"' in src
    assert "await self._nc.publish(subject, data)" in src  # sends are fire-and-forget


async def test_sdk_create_send_each_priority_subscribe_list_delete(server, sdk_dir: Path) -> None:
    url = server.nats_url
    [mid] = sdk(sdk_dir, url, ("create", {"ttl": 120}))
    assert mid.startswith("mail-")
    sends = [("l1", "low"), ("n1", "normal"), ("h1", "high"), ("n2", "normal"), ("l2", "low"),
             ("h2", "high")]
    _, got, listed = sdk(sdk_dir, url, ("send", {"mail_id": mid, "items": sends}),
                         ("subscribe", {"mail_id": mid}), ("list", {"mail_id": mid}))
    # high before normal before low, FIFO within each; nothing lost to a `<id>.high` mailbox
    assert [payload(m) for m in got] == [b"h1", b"h2", b"n1", b"n2", b"l1", b"l2"]
    assert [m["priority"] for m in got] == ["high", "high", "normal", "normal", "low", "low"]
    assert {m["mail_id"] for m in got} == {mid}
    ids = [m["msg_id"] for m in got]
    assert all(isinstance(i, str) and i.isdigit() for i in ids) and len(set(ids)) == 6
    # LIST in the same order, in the SDK's names, with the same msg_ids (its MessageMeta.msg_id is str)
    assert [(e["msg_id"], e["priority"]) for e in listed] == [(m["msg_id"], m["priority"]) for m in got]
    assert all(e["ts"] > 0 for e in listed)
    # delete by the msg_id the subscription handed out: gone from LIST and from the next replay
    _, listed2, got2 = sdk(sdk_dir, url, ("delete", {"mail_id": mid, "msg_id": ids[0]}),
                           ("list", {"mail_id": mid}), ("subscribe", {"mail_id": mid}))
    assert [e["msg_id"] for e in listed2] == ids[1:]
    assert [payload(m) for m in got2] == [b"h2", b"n1", b"n2", b"l1", b"l2"]


async def test_sdk_priority_filters(server, sdk_dir: Path) -> None:
    url = server.nats_url
    nc = await connect(url)
    mid = await create(nc, ttl=120)
    await send(nc, mid, b"c", "critical")
    await nc.close()
    sends = [("h", "high"), ("n", "normal"), ("l", "low")]
    _, high, normal, low = sdk(sdk_dir, url, ("send", {"mail_id": mid, "items": sends}),
                               ("subscribe", {"mail_id": mid, "priority": "high"}),
                               ("subscribe", {"mail_id": mid, "priority": "normal"}),
                               ("subscribe", {"mail_id": mid, "priority": "low"}))
    # `.high` takes every level the SDK calls high: critical, then urgent
    assert [(payload(m), m["priority"]) for m in high] == [(b"c", "high"), (b"h", "high")]
    assert [(payload(m), m["priority"]) for m in normal] == [(b"n", "normal")]
    assert [(payload(m), m["priority"]) for m in low] == [(b"l", "low")]


async def test_sdk_public_create_is_idempotent_and_high_low_names_are_reserved(server, sdk_dir: Path) -> None:
    url = server.nats_url
    name = unique_name("sdk")
    out = sdk_try(sdk_dir, url,
                  ("create", {"ttl": 120, "public": True, "name": name, "desc": "SDK queue"}),
                  ("create", {"ttl": 5, "public": True, "name": name}),
                  ("create", {"ttl": 60, "public": True, "name": name + ".high"}),
                  ("create", {"ttl": 60, "public": True, "name": name + ".low"}),
                  ("send", {"mail_id": name, "items": [("task", "high")]}))
    assert out[0] == {"ok": name} and out[1] == {"ok": name}
    for r in out[2:4]:  # the last token would read as the SDK's priority suffix
        assert "Mq9Error" in r.get("error", "") and "last token" in r["error"], r
    assert out[4] == {"ok": None}
    nc = await connect(url)
    got = await collect(nc, msg_subject(name, "*"), n=1)
    assert [(m.data, priority(m)) for m in got] == [(b"task", "urgent")]
    await nc.close()


async def test_sdk_send_to_missing_mailbox_creates_nothing(server, sdk_dir: Path) -> None:
    url = server.nats_url
    missing = "mail-" + "c" * 16 + "-" + "d" * 16
    sdk(sdk_dir, url, ("send", {"mail_id": missing, "items": [("x", "high"), ("y", "low")]}))
    nc = await connect(url)
    for mb in (missing, missing + ".high", missing + ".low"):
        assert "error" in await request_json(nc, f"$mq9.AI.MAILBOX.LIST.{mb}", b"")
    await nc.close()


async def test_sdk_queue_group_keeps_progress(server, sdk_dir: Path) -> None:
    url = server.nats_url
    [mid] = sdk(sdk_dir, url, ("create", {"ttl": 120}))
    sends = [("t1", "low"), ("t2", "high"), ("t3", "normal")]
    _, first, again, other = sdk(
        sdk_dir, url, ("send", {"mail_id": mid, "items": sends}),
        ("subscribe", {"mail_id": mid, "queue_group": "workers"}),
        ("subscribe", {"mail_id": mid, "queue_group": "workers", "window": 0.4}),
        ("subscribe", {"mail_id": mid, "queue_group": "auditors"}))
    assert [(payload(m), m["priority"]) for m in first] == [(b"t2", "high"), (b"t3", "normal"),
                                                           (b"t1", "low")]
    assert again == []  # the group's progress covers the fourth level too
    assert [payload(m) for m in other] == [b"t2", b"t3", b"t1"]


# ------------------------------------------------------------------------------- cross-dialect view


async def test_seed_subscriber_sees_sdk_sends_in_order_with_section4_names(server, sdk_dir: Path) -> None:
    url = server.nats_url
    nc = await connect(url)
    mid = await create(nc, ttl=120)
    raw = bytes(range(256))
    sends = [("l", "low"), ("n", "normal"), ({"b64": base64.b64encode(raw).decode()}, "high")]
    sdk(sdk_dir, url, ("send", {"mail_id": mid, "items": sends}))
    got = await collect(nc, msg_subject(mid, "*"), n=3)
    # payloads untouched (no SDK envelope for a §4 client), §4 names on subject and header
    assert [m.data for m in got] == [raw, b"n", b"l"]
    assert [priority(m) for m in got] == ["urgent", "normal", "low"]
    assert [m.subject for m in got] == [msg_subject(mid, p) for p in ("urgent", "normal", "low")]
    listed = await list_mailbox(nc, mid)
    assert [(e["msg_id"], e["priority"]) for e in listed] == [(msg_id(m), priority(m)) for m in got]
    assert [m.data for m in await collect(nc, msg_subject(mid, "urgent"), n=1)] == [raw]
    assert [m.data for m in await collect(nc, msg_subject(mid), n=1)] == [b"n"]  # bare: normal only
    await nc.close()


async def test_sdk_subscriber_sees_seed_sends_sensibly(server, sdk_dir: Path) -> None:
    url = server.nats_url
    nc = await connect(url)
    mid = await create(nc, ttl=120)
    hazard = json.dumps({"msg_id": 7, "payload": "not base64!"}).encode()  # looks like an envelope
    sent = [(b"plain", None), (b"u", "urgent"), (b"c", "critical"), (hazard, "normal"), (b"", None)]
    ids = [await send(nc, mid, data, prio) for data, prio in sent]
    await nc.publish(msg_subject(mid, "urgent"), b"with header", headers={"trace": "t1"})
    await barrier(nc)
    await nc.close()
    got, listed = sdk(sdk_dir, url, ("subscribe", {"mail_id": mid}), ("list", {"mail_id": mid}))
    # critical and urgent both read as the SDK's high (its best word), still delivered critical first
    assert [(payload(m), m["priority"]) for m in got] == [
        (b"c", "high"), (b"u", "high"), (b"with header", "high"),
        (b"plain", "normal"), (hazard, "normal"), (b"", "normal")]
    # msg_ids arrive in the SDK's envelope, as it types them (str); an empty payload travels raw,
    # since the SDK reads an empty envelope payload as "no envelope"
    by_payload = {payload(m): m["msg_id"] for m in got}
    assert by_payload[b"c"] == str(ids[2]) and by_payload[b"u"] == str(ids[1])
    assert by_payload[hazard] == str(ids[3]) and by_payload[b""] == ""
    # the SDK's LIST raises on any priority it does not know: it gets its own names
    assert [e["priority"] for e in listed] == ["high", "high", "high", "normal", "normal", "normal"]
    assert [e["msg_id"] for e in listed][:2] == [str(ids[2]), str(ids[1])]


async def test_a_seed_client_is_not_given_the_sdk_dialect(server) -> None:
    """The SDK dialect is chosen by the SDK's CONNECT name only: a §4 client's `.*` and its `.low`
    filter (the nats CLI's, robustmq's own CLI's) get raw payloads and §4 names."""
    nc = await connect(server.nats_url)
    mid = await create(nc, ttl=120)
    await nc.publish(msg_subject(mid, "low"), b"bg")
    await barrier(nc)
    [m] = await collect(nc, msg_subject(mid, "*"), n=1)
    assert (m.subject, m.data, priority(m)) == (msg_subject(mid, "low"), b"bg", "low")
    [m] = await collect(nc, msg_subject(mid, "low"), n=1)
    assert (m.subject, m.data, priority(m)) == (msg_subject(mid, "low"), b"bg", "low")
    await nc.close()
    named = await connect(server.nats_url, name="robustmq-mq9-python")
    [m] = await collect(named, msg_subject(mid, "*"), n=1)
    assert base64.b64decode(json.loads(m.data)["payload"]) == b"bg"
    listed = await list_mailbox(named, mid)
    assert [(e["msg_id"], e["priority"]) for e in listed] == [(str(msg_id(m)), "low")]
    await named.close()


# ------------------------------------------------------------------------------- LangChain toolkit


async def test_langchain_toolkit_tools_end_to_end(server, sdk_dir: Path) -> None:
    url = server.nats_url
    name = unique_name("lc")
    names, created, public, *sent = sdk(
        sdk_dir, url,
        ("tool", {"name": "_names"}),
        ("tool", {"name": "create_mailbox", "input": {"ttl": 120}}),
        ("tool", {"name": "create_public_mailbox", "input": {"name": name, "desc": "LangChain"}}),
        ("tool", {"name": "send_message", "input": {"mail_id": name, "content": "later", "priority": "low"}}),
        ("tool", {"name": "send_message", "input": {"mail_id": name, "content": "now", "priority": "high"}}),
        ("tool", {"name": "send_message", "input": {"mail_id": name, "content": "soon"}}),
        ("tool", {"name": "send_message", "input": {"mail_id": name, "content": "odd", "priority": "bogus"}}),
    )
    assert names == ["create_mailbox", "create_public_mailbox", "delete_message", "get_messages",
                     "list_messages", "send_message"]
    assert created.startswith("mail-")
    assert public == f"Public mailbox created. mail_id='{name}'"
    assert sent[1] == f"Message sent to '{name}' with priority 'high'."
    assert sent[3].endswith("with priority 'normal'.")  # the tool maps an unknown priority to normal
    got, listed = sdk(sdk_dir, url,
                      ("tool", {"name": "get_messages", "input": {"mail_id": name}}),
                      ("tool", {"name": "list_messages", "input": {"mail_id": name}}))
    assert got.splitlines() == [
        f"Found 4 message(s) in mailbox '{name}':",
        "  [1] priority=high  content=now",
        "  [2] priority=normal  content=soon",
        "  [3] priority=normal  content=odd",
        "  [4] priority=low  content=later"]
    lines = listed.splitlines()
    assert lines[0] == f"4 message(s) in mailbox '{name}':"
    entries = [dict(kv.split("=", 1) for kv in ln.split()) for ln in lines[1:]]
    assert [e["priority"] for e in entries] == ["high", "normal", "normal", "low"]
    first = entries[0]["msg_id"]
    deleted, listed2 = sdk(sdk_dir, url,
                           ("tool", {"name": "delete_message", "input": {"mail_id": name, "msg_id": first}}),
                           ("tool", {"name": "list_messages", "input": {"mail_id": name}}))
    assert deleted == f"Message '{first}' deleted from mailbox '{name}'."
    assert listed2.splitlines()[0] == f"3 message(s) in mailbox '{name}':"
    assert f"msg_id={first} " not in listed2
