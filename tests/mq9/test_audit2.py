"""Second audit of SPEC §4 / §4b with stock clients (nats-py): each test here failed on the code
before its fix. Upstream's dialect is spoken on the wire exactly as its SDKs speak it."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from .helpers import (
    CREATE,
    connect,
    create,
    list_mailbox,
    msg_subject,
    request_json,
    subscribe,
    unique_name,
    up_error,
    up_ok,
)

MSG = "$mq9.AI.MSG."
UPSTREAM_PRIORITY_NAMES = ("critical", "urgent", "normal")


async def up_create(nc: Any, ttl: int = 60) -> str:
    name = unique_name("a2")
    up_ok(await request_json(nc, CREATE, {"name": name, "ttl": ttl}))
    return name


async def up_send(nc: Any, addr: str, payload: bytes = b"x", **hdrs: str) -> int:
    headers = {f"mq9-{k}": v for k, v in hdrs.items()}
    reply = up_ok(await request_json(nc, f"{MSG}SEND.{addr}", payload, headers=headers or None))
    return int(reply["msg_id"])


async def fetch(nc: Any, addr: str, timeout: float = 5.0, **body: Any) -> list[dict[str, Any]]:
    reply = up_ok(await request_json(nc, f"{MSG}FETCH.{addr}", body, timeout=timeout))
    return list(reply["messages"])


def ids(msgs: list[dict[str, Any]]) -> list[int]:
    return [m["msg_id"] for m in msgs]


def no_tracebacks(server: Any) -> None:
    text = server.log_text()
    assert "Traceback" not in text, text[-3000:]


# ---------------------------------------------------------------------------------- bad input

NESTED = b'{"a":' * 3000 + b"1" + b"}" * 3000  # valid JSON, an unknown field nested 3000 deep


async def test_deeply_nested_json_is_an_error_reply_and_the_connection_stays(server) -> None:
    """SPEC §4 'Malformed JSON → error reply, connection stays up', §8. Before: msgspec's
    RecursionError escaped: the server logged a traceback and dropped the connection (CREATE,
    FETCH, ACK, DISCOVER) or never answered (QUERY)."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc)
    for subject in (CREATE, f"{MSG}FETCH.{addr}", f"{MSG}ACK.{addr}", f"{MSG}QUERY.{addr}",
                    "$mq9.AI.AGENT.DISCOVER", f"$mq9.AI.MAILBOX.LIST.{addr}"):
        reply = await request_json(nc, subject, NESTED)
        assert set(reply) == {"error"} and reply["error"].strip(), (subject, reply)
        assert nc.is_connected, subject
    up_ok(await request_json(nc, f"{MSG}QUERY.{addr}", {}))  # same connection, still served
    await nc.close()
    no_tracebacks(server)


async def test_out_of_range_ids_and_times_are_clear_errors(server) -> None:
    """§4b FETCH/QUERY with values no client means: before, a group FETCH `from_id` 2**70 answered
    `fetch failed: can't serialize ints…` with a traceback in the log (and left the group in memory
    at that offset); a negative `from_time` / `since` was taken as 'from the start'."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc)
    await up_send(nc, addr, b"m")
    f, q = f"{MSG}FETCH.{addr}", f"{MSG}QUERY.{addr}"
    for body, word in (({"group_name": "g", "deliver": "from_id", "from_id": 2**70}, "from_id"),
                       ({"deliver": "from_id", "from_id": 2**64}, "from_id"),
                       ({"group_name": "g", "deliver": "from_time", "from_time": 2**70}, "from_time"),
                       ({"deliver": "from_time", "from_time": -5}, "from_time"),
                       ({"group_name": "g" * 300}, "group_name"),
                       ({"config": {"ack_wait_ms": 0}}, "ack_wait_ms")):
        up_error(await request_json(nc, f, body), word)
    for body, word in (({"since": -1}, "since"), ({"since": 2**70}, "since")):
        up_error(await request_json(nc, q, body), word)
    up_error(await request_json(nc, f"{MSG}ACK.{addr}", {"group_name": "g" * 300, "msg_id": 0}),
             "group_name")
    # the refused group FETCH left no group behind: the group starts where a good request says
    assert ids(await fetch(nc, addr, group_name="g", deliver="earliest")) == [0]
    await nc.close()
    no_tracebacks(server)


# ---------------------------------------------------------------------------------- SEND headers

async def test_message_ttl_zero_means_no_ttl(server) -> None:
    """§4b `mq9-ttl`. Upstream's Python SDK sends `mq9-ttl: 0` for `send(ttl=0)` and its Go SDK
    documents `TTL 0 = no TTL` (a mailbox's ttl 0 never expires too). Before: the message was
    stored, acknowledged with a msg_id, and invisible to every reader at once."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc)
    mid = await up_send(nc, addr, b"keep me", ttl="0")
    got = await fetch(nc, addr, deliver="earliest", config={"max_wait_ms": 0})
    assert ids(got) == [mid] and base64.b64decode(got[0]["payload"]) == b"keep me"
    assert [m["msg_id"] for m in await list_mailbox(nc, addr)] == [mid]
    inbox = await subscribe(nc, msg_subject(addr, "*"))
    assert (await inbox.wait_for(1, timeout=3))[0].data == b"keep me"
    # a real ttl still hides the message once it has passed
    short = await up_send(nc, addr, b"short", ttl="1")
    await asyncio.sleep(1.1)
    assert short not in ids(await fetch(nc, addr, deliver="earliest", config={"max_wait_ms": 0}))
    await nc.close()


# ---------------------------------------------------------------------------------- interop

async def test_fetch_and_query_name_priorities_in_upstreams_vocabulary(server) -> None:
    """§4b interop: a PyPI-SDK client's `.low` send (or `mq9-priority: low`) in a mailbox must not
    break an upstream consumer. Upstream's Python SDK builds `Priority(item["priority"])` from
    critical/urgent/normal and its Rust SDK decodes a serde enum of the same three, so a `"low"`
    entry made the whole FETCH/QUERY fail for them. Now `low` is told as `normal`, still last."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc)
    await nc.publish(msg_subject(addr, "low"), b"sdk-low")  # the PyPI SDK's fire-and-forget send
    await nc.flush()
    await up_send(nc, addr, b"up-low", priority="low")
    await up_send(nc, addr, b"normal")
    await up_send(nc, addr, b"crit", priority="critical")
    for subject, body in ((f"{MSG}FETCH.{addr}", {"deliver": "earliest", "config": {"max_wait_ms": 0}}),
                          (f"{MSG}QUERY.{addr}", {})):
        msgs = up_ok(await request_json(nc, subject, body))["messages"]
        assert [base64.b64decode(m["payload"]) for m in msgs] == [b"crit", b"normal", b"sdk-low", b"up-low"]
        assert all(m["priority"] in UPSTREAM_PRIORITY_NAMES for m in msgs), msgs
        assert [m["priority"] for m in msgs] == ["critical", "normal", "normal", "normal"]
    # §4 readers still see the fourth level by its name
    assert [m["priority"] for m in await list_mailbox(nc, addr)] == ["critical", "normal", "low", "low"]
    await nc.close()


# ---------------------------------------------------------------------------------- FETCH groups

async def test_two_members_of_a_group_never_get_the_same_message(server) -> None:
    """§4b FETCH with `group_name` (shared offset): two workers (two connections) fetching at the
    same time each get different messages. Before: both got every message (a FETCH handed out
    whatever was not acked yet), so 'competing' workers each processed everything."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(a)
    sent = [await up_send(a, addr, b"t%d" % i) for i in range(6)]
    cfg = {"num_msgs": 3, "max_wait_ms": 0}
    got_a, got_b = await asyncio.gather(
        fetch(a, addr, group_name="w", deliver="earliest", config=cfg),
        fetch(b, addr, group_name="w", deliver="earliest", config=cfg))
    assert not set(ids(got_a)) & set(ids(got_b)), (ids(got_a), ids(got_b))
    assert sorted(ids(got_a) + ids(got_b)) == sent
    # more FETCHes by b while a holds its messages: nothing of a's comes to b
    assert set(ids(await fetch(b, addr, group_name="w", config={"max_wait_ms": 0}))) == set(ids(got_b))
    for m in got_b:
        up_ok(await request_json(b, f"{MSG}ACK.{addr}", {"group_name": "w", "msg_id": m["msg_id"]}))
    assert await fetch(b, addr, group_name="w", config={"max_wait_ms": 0}) == []
    # a's own FETCH hands its unacked deliveries back to it (at-least-once, as upstream does)
    assert ids(await fetch(a, addr, group_name="w", config={"max_wait_ms": 0})) == ids(got_a)
    # a dies without acking: its messages go to the next member that asks, at once
    await a.close()
    assert sorted(ids(await fetch(b, addr, group_name="w", config={"max_wait_ms": 0}))) == \
        sorted(ids(got_a))
    await b.close()


async def test_waiting_members_share_new_messages_and_leases_run_out(server) -> None:
    """Two long-polling members of one group: a message that lands wakes one of them, not both;
    a delivery not acked within `ack_wait_ms` goes to another member (a stuck worker's tasks are
    not lost), and the waiting member gets it as soon as the lease runs out."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(a)
    # the lease (1 s) outlasts the other member's long poll, which so ends empty
    cfg = {"max_wait_ms": 1000, "ack_wait_ms": 1000}
    t0 = time.monotonic()
    wait_a = asyncio.create_task(fetch(a, addr, group_name="g", config=cfg))
    wait_b = asyncio.create_task(fetch(b, addr, group_name="g", config=cfg))
    await asyncio.sleep(0.3)
    sent = await up_send(a, addr, b"job")
    got_a, got_b = await asyncio.gather(wait_a, wait_b)
    assert sorted([ids(got_a), ids(got_b)]) == [[], [sent]], (got_a, got_b)
    holder, other = (a, b) if got_a else (b, a)
    assert time.monotonic() - t0 < 2.5
    # the holder never acks; the other member waits and gets it once the lease ends
    t1 = time.monotonic()
    again = await fetch(other, addr, group_name="g", config={"max_wait_ms": 3000})
    assert ids(again) == [sent]
    assert 0.1 < time.monotonic() - t1 < 2.0
    up_ok(await request_json(other, f"{MSG}ACK.{addr}", {"group_name": "g", "msg_id": sent}))
    assert await fetch(holder, addr, group_name="g", config={"max_wait_ms": 0}) == []
    await a.close()
    await b.close()


async def test_stateless_fetches_are_not_leased(server) -> None:
    """Without `group_name` a FETCH reads and moves nothing: two readers both see everything."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(a)
    sent = [await up_send(a, addr, b"s%d" % i) for i in range(3)]
    body = {"deliver": "earliest", "config": {"max_wait_ms": 0}}
    got = await asyncio.gather(fetch(a, addr, **body), fetch(b, addr, **body))
    assert ids(got[0]) == ids(got[1]) == sent
    await a.close()
    await b.close()


async def test_group_member_reconnecting_after_restart_gets_its_deliveries(fresh_server) -> None:
    """Leases live in memory: after a restart every unacked delivery is free for any member at
    once (the worker that held it is gone), and ACKs made before the restart still hold."""
    fresh_server.start()
    a = await connect(fresh_server.nats_url)
    mid = await create(a, ttl=600)  # a §4 private mailbox: upstream's dialect addresses it too
    sent = [await up_send(a, mid, b"r%d" % i) for i in range(3)]
    got = await fetch(a, mid, group_name="g", deliver="earliest", config={"max_wait_ms": 0})
    assert ids(got) == sent
    up_ok(await request_json(a, f"{MSG}ACK.{mid}", {"group_name": "g", "msg_id": sent[0]}))
    fresh_server.kill9()
    fresh_server.start()
    b = await connect(fresh_server.nats_url)
    assert ids(await fetch(b, mid, group_name="g", config={"max_wait_ms": 0})) == sent[1:]
    for i in sent[1:]:
        up_ok(await request_json(b, f"{MSG}ACK.{mid}", {"group_name": "g", "msg_id": i}))
    assert await fetch(b, mid, group_name="g", config={"max_wait_ms": 0}) == []
    await b.close()
    assert "Traceback" not in fresh_server.log_text()

