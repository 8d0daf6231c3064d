"""SPEC §4b, upstream's current protocol (robustmq/mq9's protocol.md), with raw nats-py requests:
every command is a request, every reply carries `error` (`""` on success); same mailboxes and log
as §4's dialect, so the two see each other's messages."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from procs import RobustMQ

from .helpers import (
    CREATE,
    barrier,
    collect,
    connect,
    create,
    list_mailbox,
    msg_id,
    priority,
    request_json,
    send,
    subscribe,
    unique_name,
    up_error,
    up_ok,
)

MSG = "$mq9.AI.MSG."


async def up_create(nc: Any, name: str | None = None, ttl: int = 60) -> str:
    body: dict[str, Any] = {"ttl": ttl}
    if name is not None:
        body["name"] = name
    reply = await request_json(nc, CREATE, body)
    if name is not None:
        up_ok(reply)
    assert reply["mail_address"] == reply["mail_id"], reply
    return str(reply["mail_address"])


async def up_send(nc: Any, addr: str, payload: bytes = b"x", **hdrs: str) -> int:
    headers = {f"mq9-{k}": v for k, v in hdrs.items()}
    reply = up_ok(await request_json(nc, f"{MSG}SEND.{addr}", payload, headers=headers or None))
    assert set(reply) == {"error", "msg_id"}, reply
    return int(reply["msg_id"])


async def fetch(nc: Any, addr: str, timeout: float = 5.0, **body: Any) -> list[dict[str, Any]]:
    reply = up_ok(await request_json(nc, f"{MSG}FETCH.{addr}", body, timeout=timeout))
    return list(reply["messages"])


def payloads(msgs: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(m["payload"]) for m in msgs]


async def test_create_both_dialects(server) -> None:
    nc = await connect(server.nats_url)
    name = unique_name("up")
    r = up_ok(await request_json(nc, CREATE, {"name": name, "ttl": 60}))
    assert r["mail_address"] == r["mail_id"] == name
    # upstream's create refuses an existing name; §4's public create of the same name is idempotent
    up_error(await request_json(nc, CREATE, {"name": name}), "exists")
    r2 = await request_json(nc, CREATE, {"name": unique_name("pub"), "public": True})
    assert "error" not in r2 and r2["is_new"] is True and r2["mail_address"] == r2["mail_id"]
    # a plain {"ttl"} is both dialects' private create: no `error` key (§4 clients raise on it)
    r3 = await request_json(nc, CREATE, {"ttl": 30})
    assert "error" not in r3 and r3["mail_id"].startswith("mail-") and r3["mail_address"] == r3["mail_id"]
    for bad in (b"{", b'{"name": 5}', b'{"name": "Bad Name"}', b'{"name": "x", "ttl": -1}'):
        up_error(await request_json(nc, CREATE, bad))
    await nc.close()


async def test_send_fetch_priority_order_and_base64(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    ids = [await up_send(nc, addr, b"n1"), await up_send(nc, addr, b"\x00\xffbin", priority="critical"),
           await up_send(nc, addr, b"u1", priority="urgent"), await up_send(nc, addr, b"l1", priority="low"),
           await up_send(nc, addr, b"h1", priority="high")]
    assert ids == sorted(ids) and len(set(ids)) == 5
    msgs = await fetch(nc, addr, deliver="earliest")
    assert payloads(msgs) == [b"\x00\xffbin", b"u1", b"h1", b"n1", b"l1"]
    # upstream's vocabulary (its Python and Rust SDKs fail on any other name): `low` reads `normal`,
    # still after the other normal ones
    assert [m["priority"] for m in msgs] == ["critical", "urgent", "urgent", "normal", "normal"]
    assert all(abs(m["create_time"] - time.time()) < 60 for m in msgs)
    # a `mail-…` id works as an address too
    mid = await create(nc, ttl=60)
    await up_send(nc, mid, b"to-private")
    assert payloads(await fetch(nc, mid, deliver="earliest")) == [b"to-private"]
    await nc.close()


async def test_send_bad_input(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    subj = f"{MSG}SEND.{addr}"
    for hdrs, word in (({"mq9-delay": "-1"}, "mq9-delay"), ({"mq9-ttl": "-5"}, "mq9-ttl"),
                       ({"mq9-ttl": "1.5"}, "mq9-ttl"), ({"mq9-delay": "soon"}, "mq9-delay"),
                       ({"mq9-priority": "whenever"}, "priority"),
                       ({"mq9-tags": ",".join(f"t{i}" for i in range(10_000))}, "mq9-tags"),
                       ({"mq9-tags": ",".join(f"t{i}" for i in range(65))}, "tags")):
        up_error(await request_json(nc, subj, b"x", headers=hdrs), word)
    up_error(await request_json(nc, f"{MSG}SEND.nobody.here", b"x"), "does not exist")
    assert await fetch(nc, addr, deliver="earliest") == []
    await nc.close()


async def test_pipelined_keyed_sends_keep_only_the_latest(server) -> None:
    """Keyed sends in flight together (one unwritten log batch) still keep one message per key,
    and a restart keeps the same one."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("keys"))
    ids = await asyncio.gather(*(up_send(nc, addr, b"v%d" % i, key="k") for i in range(50)))
    await asyncio.gather(*(up_send(nc, addr, b"o%d" % i, key="other") for i in range(5)))
    q = up_ok(await request_json(nc, f"{MSG}QUERY.{addr}", {"key": "k"}))["messages"]
    assert [m["msg_id"] for m in q] == [max(ids)]
    assert payloads(await fetch(nc, addr, deliver="earliest")) == [
        base64.b64decode(q[0]["payload"]), b"o4"]
    await nc.close()


async def test_key_delay_ttl_tags_and_query(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    await up_send(nc, addr, b"v1", key="state")
    await up_send(nc, addr, b"other", tags="a,b")
    last = await up_send(nc, addr, b"v2", key="state", tags="a")
    assert await up_send(nc, addr, b"later", delay="1") == -1
    await up_send(nc, addr, b"short", ttl="1")
    assert payloads(await fetch(nc, addr, deliver="earliest")) == [b"other", b"v2", b"short"]
    q = up_ok(await request_json(nc, f"{MSG}QUERY.{addr}", {"key": "state"}))["messages"]
    assert [(m["msg_id"], base64.b64decode(m["payload"])) for m in q] == [(last, b"v2")]
    q = up_ok(await request_json(nc, f"{MSG}QUERY.{addr}", {"tags": ["a"]}))["messages"]
    assert payloads(q) == [b"other", b"v2"]
    q = up_ok(await request_json(nc, f"{MSG}QUERY.{addr}", {"tags": ["a", "b"], "limit": 5}))
    assert payloads(q["messages"]) == [b"other"]
    await asyncio.sleep(1.3)
    assert payloads(await fetch(nc, addr, deliver="earliest")) == [b"other", b"v2", b"later"]
    # LIST and QUERY agree on what the mailbox holds
    listed = [m["msg_id"] for m in await list_mailbox(nc, addr)]
    queried = [m["msg_id"] for m in up_ok(await request_json(nc, f"{MSG}QUERY.{addr}", {}))["messages"]]
    assert listed == queried
    for bad in (b"{", b'{"limit": 0}', b'{"key": 5}', b'{"since": "yesterday"}'):
        up_error(await request_json(nc, f"{MSG}QUERY.{addr}", bad))
    await nc.close()


async def test_fetch_bad_input(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    subj = f"{MSG}FETCH.{addr}"
    for bad, word in ((b"{", "json"), (b'{"deliver": "sometimes"}', "deliver"),
                      (b'{"group_name": 7}', "group_name"), (b'{"config": {"num_msgs": 0}}', "num_msgs"),
                      (b'{"config": {"max_wait_ms": 3600000}}', "max_wait_ms"),
                      (b'{"deliver": "from_id"}', "from_id"), (b'{"deliver": "from_time"}', "from_time")):
        up_error(await request_json(nc, subj, bad), word)
    up_error(await request_json(nc, f"{MSG}FETCH.nobody.here", b"{}"), "does not exist")
    await nc.close()


async def test_stateless_deliver_policies(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    ids = [await up_send(nc, addr, b"m%d" % i) for i in range(4)]
    assert payloads(await fetch(nc, addr, deliver="from_id", from_id=ids[2])) == [b"m2", b"m3"]
    assert len(await fetch(nc, addr, deliver="from_time", from_time=int(time.time()) - 60)) == 4
    assert await fetch(nc, addr, deliver="from_time", from_time=int(time.time()) + 60,
                       config={"max_wait_ms": 0}) == []
    # latest (the default): only what arrives from now on, so an idle fetch times out empty
    t0 = time.monotonic()
    assert await fetch(nc, addr, config={"max_wait_ms": 200}) == []
    assert time.monotonic() - t0 >= 0.18
    assert len(await fetch(nc, addr, deliver="earliest", config={"num_msgs": 3})) == 3
    await nc.close()


async def test_long_poll_wakes_on_new_message(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    t0 = time.monotonic()
    waiting = asyncio.create_task(fetch(nc, addr, timeout=10, group_name="g",
                                        config={"max_wait_ms": 5000}))
    await asyncio.sleep(0.3)
    sent = await up_send(nc, addr, b"wake")
    msgs = await waiting
    assert [m["msg_id"] for m in msgs] == [sent] and payloads(msgs) == [b"wake"]
    assert time.monotonic() - t0 < 3, "the long poll should end when the message arrives"
    await nc.close()


async def test_group_ack_at_least_once(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    ids = [await up_send(nc, addr, b"a"), await up_send(nc, addr, b"b", priority="critical")]
    first = await fetch(nc, addr, group_name="w", deliver="earliest")
    assert [m["msg_id"] for m in first] == [ids[1], ids[0]]
    # not acked: handed out again
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="w")] == [ids[1], ids[0]]
    ack = f"{MSG}ACK.{addr}"
    assert await request_json(nc, ack, {"group_name": "w", "mail_address": addr, "msg_id": ids[1]}) \
        == {"error": ""}
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="w")] == [ids[0]]
    up_ok(await request_json(nc, ack, {"group_name": "w", "mail_address": addr, "msg_id": ids[0]}))
    assert await fetch(nc, addr, group_name="w", config={"max_wait_ms": 0}) == []
    # another group has its own offset
    assert len(await fetch(nc, addr, group_name="other", deliver="earliest")) == 2
    up_error(await request_json(nc, ack, {"group_name": "w", "mail_address": addr, "msg_id": 99}),
             "never fetched")
    up_error(await request_json(nc, ack, {"group_name": "nobody", "msg_id": 0}), "never fetched")
    up_error(await request_json(nc, ack, {"group_name": "w", "msg_id": "x"}), "msg_id")
    up_error(await request_json(nc, ack, b"{"), "json")
    await nc.close()


async def test_delete(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    mid = await up_send(nc, addr, b"gone")
    assert await request_json(nc, f"{MSG}DELETE.{addr}.{mid}") == {"error": "", "deleted": True}
    assert await request_json(nc, f"{MSG}DELETE.{addr}.{mid}") == {"error": "", "deleted": False}
    assert await fetch(nc, addr, deliver="earliest", config={"max_wait_ms": 0}) == []
    up_error(await request_json(nc, f"{MSG}DELETE.{addr}.x"), "msg_id")
    await nc.close()


async def test_cross_dialect(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    up_id = await up_send(nc, addr, b"from-upstream", priority="critical")
    seed_id = await send(nc, addr, b"from-seed", "urgent")
    got = await collect(nc, f"$mq9.AI.MAILBOX.MSG.{addr}.*", n=2)
    assert [(m.data, msg_id(m), priority(m)) for m in got] == [
        (b"from-upstream", up_id, "critical"), (b"from-seed", seed_id, "urgent")]
    msgs = await fetch(nc, addr, deliver="earliest")
    assert [(m["msg_id"], m["priority"]) for m in msgs] == [(up_id, "critical"), (seed_id, "urgent")]
    listed = await list_mailbox(nc, addr)
    assert [(m["msg_id"], m["priority"]) for m in listed] == [(up_id, "critical"), (seed_id, "urgent")]
    await nc.close()


async def test_group_offset_survives_restart(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    addr = await up_create(nc, unique_name("up"), ttl=3600)
    ids = [await up_send(nc, addr, b"m%d" % i) for i in range(3)]
    assert len(await fetch(nc, addr, group_name="g", deliver="earliest")) == 3
    up_ok(await request_json(nc, f"{MSG}ACK.{addr}", {"group_name": "g", "msg_id": ids[0]}))
    await nc.close()
    fresh_server.restart()
    nc = await connect(fresh_server.nats_url)
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g")] == ids[1:]
    # handed out before the restart: ACK still knows it was fetched
    up_ok(await request_json(nc, f"{MSG}ACK.{addr}", {"group_name": "g", "msg_id": ids[2]}))
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g")] == [ids[1]]
    await nc.close()


@pytest.mark.parametrize("body", [b"[]", b"null", b'"x"'])
async def test_non_object_bodies(server, body: bytes) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    for cmd in ("FETCH", "QUERY", "ACK"):
        reply = json.loads((await nc.request(f"{MSG}{cmd}.{addr}", body, timeout=3)).data)
        up_error(reply)
    await nc.close()


async def test_fetch_reply_is_bounded_in_bytes(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    ids = [await up_send(nc, addr, bytes([i]) * 300_000) for i in range(3)]
    got = await fetch(nc, addr, deliver="earliest")
    assert [m["msg_id"] for m in got] == ids[:1], "about 512 KiB per reply; the first always goes"
    assert [m["msg_id"] for m in await fetch(nc, addr, deliver="from_id", from_id=ids[1])] == ids[1:2]
    await nc.close()


async def test_delayed_send_is_pushed_to_seed_subscriber_when_due(server) -> None:
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("up"))
    inbox = await subscribe(nc, f"$mq9.AI.MAILBOX.MSG.{addr}.*")
    t0 = time.monotonic()
    assert await up_send(nc, addr, b"later", delay="1", priority="urgent") == -1
    await asyncio.sleep(0.5)
    assert inbox.msgs == [], "a delayed message is invisible until due"
    assert await list_mailbox(nc, addr) == []
    msgs = await inbox.wait_for(1, timeout=3)
    assert time.monotonic() - t0 >= 0.9
    assert [(m.data, priority(m)) for m in msgs] == [(b"later", "urgent")]
    assert [m["msg_id"] for m in await list_mailbox(nc, addr)] == [msg_id(msgs[0])]
    await nc.close()


async def ack(nc: Any, addr: str, group: str, mid: int) -> dict[str, Any]:
    return await request_json(nc, f"{MSG}ACK.{addr}", {"group_name": group, "mail_address": addr,
                                                        "msg_id": mid})


async def test_ack_accepts_exactly_what_the_group_was_handed(server) -> None:
    """Issue: ACK of a msg_id never fetched is a clear error, also below the highest one fetched:
    a lower priority left out by num_msgs, a delayed one still hidden, a deleted one."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("ack"))
    n0 = await up_send(nc, addr, b"n0")
    n1 = await up_send(nc, addr, b"n1")
    assert await up_send(nc, addr, b"later", delay="60") == -1
    delayed = n1 + 1  # msg_ids are dense: the delayed send took the next one
    gone = await up_send(nc, addr, b"gone")
    n2 = await up_send(nc, addr, b"n2")
    crit = await up_send(nc, addr, b"crit", priority="critical")
    assert [delayed, gone, n2, crit] == [n1 + 1, n1 + 2, n1 + 3, n1 + 4]
    assert (await request_json(nc, f"{MSG}DELETE.{addr}.{gone}"))["deleted"] is True
    got = await fetch(nc, addr, group_name="g", deliver="earliest", config={"num_msgs": 2})
    assert [m["msg_id"] for m in got] == [crit, n0]
    for never in (n1, delayed, gone, n2, crit + 1, -1):
        up_error(await ack(nc, addr, "g", never), "never fetched", str(never))
    # what it was handed is accepted, again too (an ACK whose reply was lost is retried)
    for mid in (crit, crit, n0, n0):
        assert await ack(nc, addr, "g", mid) == {"error": ""}
    # handed out, then deleted by someone else before the worker acked it: still accepted
    got = await fetch(nc, addr, group_name="g", config={"num_msgs": 1})
    assert [m["msg_id"] for m in got] == [n1]
    assert (await request_json(nc, f"{MSG}DELETE.{addr}.{n1}"))["deleted"] is True
    assert await ack(nc, addr, "g", n1) == {"error": ""}
    up_error(await ack(nc, addr, "g", n2), "never fetched")
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g")] == [n2]
    assert await ack(nc, addr, "g", n2) == {"error": ""}
    # another group was handed nothing
    up_error(await ack(nc, addr, "other", n0), "never fetched")
    await nc.close()


async def test_ack_of_a_delivery_whose_message_expired(server) -> None:
    """A message handed out and expired (mq9-ttl) before its ACK is still acked; the group's floor
    passes expired messages, so acking it again is a clear error, not silently accepted."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("ack"))
    short = await up_send(nc, addr, b"short", ttl="1")
    never = await up_send(nc, addr, b"never-fetched", ttl="1")
    kept = await up_send(nc, addr, b"kept")
    got = await fetch(nc, addr, group_name="g", deliver="earliest", config={"num_msgs": 1})
    assert [m["msg_id"] for m in got] == [short]
    await asyncio.sleep(1.2)
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g")] == [kept]
    assert await ack(nc, addr, "g", short) == {"error": ""}
    assert await ack(nc, addr, "g", kept) == {"error": ""}
    up_error(await ack(nc, addr, "g", short), "expired")
    up_error(await ack(nc, addr, "g", never), "expired")
    assert await fetch(nc, addr, group_name="g", config={"max_wait_ms": 0}) == []
    await nc.close()


async def test_ack_of_a_delivery_made_before_a_restart(fresh_server: RobustMQ) -> None:
    """Deliveries awaiting an ACK are persisted: acked after a restart without fetching again."""
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    addr = await up_create(nc, unique_name("ack"), ttl=3600)
    ids = [await up_send(nc, addr, b"m%d" % i) for i in range(4)]
    crit = await up_send(nc, addr, b"crit", priority="critical")
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g", deliver="earliest",
                                             config={"num_msgs": 3})] == [crit, *ids[:2]]
    assert await ack(nc, addr, "g", ids[0]) == {"error": ""}
    await nc.close()
    fresh_server.restart()
    nc = await connect(fresh_server.nats_url)
    for never in (ids[2], ids[3]):  # below the highest id handed out, but never handed out
        up_error(await ack(nc, addr, "g", never), "never fetched")
    for mid in (crit, ids[1], ids[0]):
        assert await ack(nc, addr, "g", mid) == {"error": ""}
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g")] == ids[2:]
    await nc.close()


async def test_delayed_message_reaches_queue_groups_once(server) -> None:
    """SPEC §4 queue groups and upstream's mq9-delay: a message sent after a delayed one moves the
    group's cursor past it; the delayed one still reaches exactly one member when due, and a plain
    subscriber gets it pushed once."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("dq"))
    subj = f"$mq9.AI.MAILBOX.MSG.{addr}.*"
    workers = [await connect(server.nats_url) for _ in range(2)]
    members = [await subscribe(w, subj, queue="w") for w in workers]
    plain = await subscribe(nc, subj)
    for w in workers:
        await barrier(w)
    await barrier(nc)
    assert await up_send(nc, addr, b"later", delay="1") == -1
    now_id = await up_send(nc, addr, b"now")
    await plain.wait_for(1)
    await asyncio.sleep(0.2)
    assert sorted(i for m in members for i in m.ids) == [now_id]
    msgs = await plain.wait_for(2, timeout=4)
    assert [m.data for m in msgs] == [b"now", b"later"]
    await asyncio.sleep(0.3)
    for m in members:
        await m.settle(0.2)
    got = sorted((i, d) for m in members for i, d in zip(m.ids, m.payloads))
    assert got == [(now_id - 1, b"later"), (now_id, b"now")]
    assert len(plain.msgs) == 2
    for w in workers:
        await w.close()
    await nc.close()


async def test_delayed_message_due_while_the_queue_group_was_away(server) -> None:
    """A queue group whose cursor passed a hidden delayed message and whose members all left gets it
    from its next replay, once, after it came due."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("dq"))
    subj = f"$mq9.AI.MAILBOX.MSG.{addr}.*"
    w = await connect(server.nats_url)
    member = await subscribe(w, subj, queue="w")
    await barrier(w)
    await up_send(nc, addr, b"later", delay="1")
    now_id = await up_send(nc, addr, b"now")
    assert [m.data for m in await member.wait_for(1)] == [b"now"]
    await member.sub.unsubscribe()
    await barrier(w)
    await asyncio.sleep(1.3)
    back = await subscribe(w, subj, queue="w")
    await back.wait_for(1)
    await back.settle(0.3)
    assert [(i, d) for i, d in zip(back.ids, back.payloads)] == [(now_id - 1, b"later")]
    await w.close()
    await nc.close()


async def test_delayed_message_pushed_when_due_after_a_restart(fresh_server: RobustMQ) -> None:
    """A delayed message sent before a restart is pushed, once, to §4 subscribers and to one member
    of a queue group (whose cursor passed it before the restart) when it comes due after it."""
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    addr = await up_create(nc, unique_name("dr"), ttl=3600)
    subj = f"$mq9.AI.MAILBOX.MSG.{addr}.*"
    member = await subscribe(nc, subj, queue="w")
    await barrier(nc)
    delay = 8
    due = time.time() + delay
    assert await up_send(nc, addr, b"later", delay=str(delay), priority="urgent") == -1
    now_id = await up_send(nc, addr, b"now", priority="urgent")
    assert [m.data for m in await member.wait_for(1)] == [b"now"]
    await nc.close()
    fresh_server.restart()
    nc = await connect(fresh_server.nats_url)
    plain = await subscribe(nc, subj)
    group = [await subscribe(nc, subj, queue="w") for _ in range(2)]
    await barrier(nc)
    assert time.time() < due - 1, "the restart took too long for this test to mean anything"
    await plain.wait_for(1)  # the replay: only what is visible
    assert plain.payloads == [b"now"]
    assert [m.msgs for m in group] == [[], []]
    msgs = await plain.wait_for(2, timeout=delay + 5)
    assert time.time() >= due - 0.1
    assert [(m.data, msg_id(m), priority(m)) for m in msgs] == [
        (b"now", now_id, "urgent"), (b"later", now_id - 1, "urgent")]
    await asyncio.sleep(0.3)
    assert len(plain.msgs) == 2
    got = [(i, d) for m in group for i, d in zip(m.ids, m.payloads)]
    assert got == [(now_id - 1, b"later")]
    await nc.close()


def test_group_state_from_the_previous_release_and_its_bounds(tmp_path: Any) -> None:
    """A group state saved as `[floor, hi, acked]` (before deliveries were tracked) loads with every
    unacked offset up to `hi` awaiting an ACK; the deliveries remembered are capped."""
    import msgspec

    from robustmq.core_log import Record, SegmentLog, Store
    from robustmq.frontends.mq9.mailboxes import CreateRequest, MailboxRegistry
    from robustmq.frontends.mq9.upstream import (
        FETCH_NS,
        MAX_PENDING,
        MAX_STALE_PENDING,
        GroupState,
        Upstream,
        _gkey,
    )

    log = SegmentLog(Store(str(tmp_path)))
    try:
        reg = MailboxRegistry(log, 3600, 86400)
        mb = reg.create(CreateRequest(ttl=3600))[0]
        log.append_many(log.stream(mb.stream_name), [Record(0, b"m", None, None, {"p": 2})] * 12)
        log.put_meta(FETCH_NS, _gkey(mb.mail_id, "old"), msgspec.msgpack.encode([5, 9, [7]]))
        log.flush()
        up = Upstream(log, reg)
        g = up._group(mb, "old")
        assert g is not None and (g.floor, g.hi, g.acked, g.start) == (5, 9, {7}, 0)
        assert g.pending == {5, 6, 8, 9}
        for mid in (6, 5, 5, 7):
            assert up.ack(mb.mail_id, b'{"group_name": "old", "msg_id": %d}' % mid) == b'{"error":""}'
        assert (g.floor, g.acked, g.pending) == (8, set(), {8, 9})
        up.save_dirty()
        log.flush()
        again = Upstream(log, reg)._group(mb, "old")  # saved in the new form: read back the same
        assert again is not None and (again.floor, again.pending) == (8, {8, 9})

        big = GroupState(0, -1, set())
        big.pending = set(range(MAX_PENDING + 500))
        big.trim()
        assert len(big.pending) == MAX_PENDING and min(big.pending) == 500
        stale = GroupState(MAX_STALE_PENDING + 300, 0, set())
        stale.pending = set(range(MAX_STALE_PENDING + 400))
        stale.trim()  # below the floor: deliveries of messages deleted or expired since
        assert min(stale.pending) == 300 and len(stale.pending) == MAX_STALE_PENDING + 100
    finally:
        log.close()


async def test_force_deliver_during_a_long_poll_is_not_undone(server) -> None:
    """A FETCH long-polling for group g while another FETCH restarts g (`force_deliver`) must not
    write its old view of g back when it wakes: the restart stands."""
    nc = await connect(server.nats_url)
    addr = await up_create(nc, unique_name("force"))
    a = await up_send(nc, addr, b"a")
    assert [m["msg_id"] for m in await fetch(nc, addr, group_name="g", deliver="earliest")] == [a]
    assert await ack(nc, addr, "g", a) == {"error": ""}
    waiting = asyncio.create_task(fetch(nc, addr, timeout=10, group_name="g", config={"max_wait_ms": 5000}))
    await asyncio.sleep(0.3)  # the long poll is waiting: everything g was handed is acked
    restarted = await fetch(nc, addr, group_name="g", deliver="earliest", force_deliver=True)
    assert [m["msg_id"] for m in restarted] == [a]
    b = await up_send(nc, addr, b"b")
    woke = await waiting
    assert b in [m["msg_id"] for m in woke]
    # g as restarted: a was handed out again and not acked since, so it comes again, with b
    again = await fetch(nc, addr, group_name="g", config={"max_wait_ms": 0})
    assert [m["msg_id"] for m in again] == [a, b]
    assert await ack(nc, addr, "g", a) == {"error": ""}
    assert await ack(nc, addr, "g", b) == {"error": ""}
    assert await fetch(nc, addr, group_name="g", config={"max_wait_ms": 0}) == []
    await nc.close()
