"""SPEC §4 "Inspect and delete": LIST in delivery order, DELETE by msg_id, deleted never delivered."""

from __future__ import annotations

import asyncio

from .helpers import (
    assert_error,
    collect,
    connect,
    create,
    create_public,
    delete_subject,
    list_subject,
    msg_id,
    msg_subject,
    now_ms,
    request_json,
    send,
    subscribe,
    unique_name,
)


async def test_list_shape_and_delivery_order(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    t0 = now_ms()
    plan = [(None, b"n1"), ("urgent", b"u-1"), ("critical", b"c--1"), ("normal", b"n2---"), ("urgent", b"")]
    ids = [await send(nc, mid, data, p) for p, data in plan]
    t1 = now_ms()
    reply = await request_json(nc, list_subject(mid))
    assert set(reply) == {"mail_id", "messages", "total"} and reply["mail_id"] == mid
    msgs = reply["messages"]
    for e in msgs:
        assert set(e) == {"msg_id", "priority", "ts", "size"}, e
        assert isinstance(e["msg_id"], int) and isinstance(e["ts"], int) and isinstance(e["size"], int)
        assert t0 - 1000 <= e["ts"] <= t1 + 1000
    assert [(e["msg_id"], e["priority"], e["size"]) for e in msgs] == [
        (ids[2], "critical", 4), (ids[1], "urgent", 3), (ids[4], "urgent", 0),
        (ids[0], "normal", 2), (ids[3], "normal", 5)]
    # the same order a subscriber gets
    got = await collect(nc, msg_subject(mid, "*"), n=5)
    assert [msg_id(m) for m in got] == [e["msg_id"] for e in msgs]
    await nc.close()


async def test_list_empty_missing_and_public(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    assert await request_json(nc, list_subject(mid)) == {"mail_id": mid, "messages": [], "total": 0}
    missing = "mail-zzzzzzzzzzzzzzzz-zzzzzzzzzzzzzzzz"
    assert_error(await request_json(nc, list_subject(missing)), "does not exist")
    name = unique_name("pub.list")
    await create_public(nc, name, ttl=30)
    i = await send(nc, name, b"abc", "critical")
    reply = await request_json(nc, list_subject(name))
    assert reply["mail_id"] == name
    assert [(e["msg_id"], e["priority"], e["size"]) for e in reply["messages"]] == [(i, "critical", 3)]
    await nc.close()


async def test_delete_then_never_delivered_again(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    ids = [await send(nc, mid, b"m%d" % k, p) for k, p in enumerate([None, "critical", "urgent", None])]
    live = await subscribe(nc, msg_subject(mid, "*"))
    await live.wait_for(4)
    assert await request_json(nc, delete_subject(mid, ids[1])) == {"deleted": True}
    assert await request_json(nc, delete_subject(mid, ids[1])) == {"deleted": False}
    assert await request_json(nc, delete_subject(mid, 987654)) == {"deleted": False}
    assert [e["msg_id"] for e in (await request_json(nc, list_subject(mid)))["messages"]] == \
        [ids[2], ids[0], ids[3]]
    # fresh subscribers (plain, filtered, and a new queue group) never see it again
    replay = await collect(nc, msg_subject(mid, "*"), n=3)
    assert [msg_id(m) for m in replay] == [ids[2], ids[0], ids[3]]
    assert await collect(nc, msg_subject(mid, "critical"), window=0.3) == []
    group = await collect(nc, msg_subject(mid, "*"), queue="late-group", n=3)
    assert ids[1] not in [msg_id(m) for m in group]
    # a new message never reuses a deleted msg_id
    new = await send(nc, mid, b"new", "critical")
    assert new not in ids
    await asyncio.sleep(0.2)
    assert len(live.msgs) == 5 and live.ids[-1] == new
    await nc.close()


async def test_delete_in_dotted_public_mailbox(server) -> None:
    """The last subject token is the msg_id; everything before it is the mail_id."""
    nc = await connect(server.nats_url)
    name = unique_name("a.b.c")
    await create_public(nc, name, ttl=30)
    i = await send(nc, name, b"x")
    j = await send(nc, name, b"y")
    assert await request_json(nc, delete_subject(name, i)) == {"deleted": True}
    got = await collect(nc, msg_subject(name, "*"), n=1)
    assert [msg_id(m) for m in got] == [j]
    await nc.close()


async def test_delete_bad_input(server) -> None:
    """Non-numeric msg_id or a missing mailbox: an error reply or deleted=false, never a crash, and
    nothing is deleted."""
    nc = await connect(server.nats_url)
    mid = await create(nc)
    i = await send(nc, mid, b"keep")
    for subject in (delete_subject(mid, "abc"), delete_subject(mid, "-1"), delete_subject(mid, "1.5"),
                    delete_subject("mail-nope0000000000000-nope0000000000000", 0),
                    f"$mq9.AI.MAILBOX.DELETE.{mid}"):
        reply = await request_json(nc, subject)
        assert reply == {"deleted": False} or set(reply) == {"error"}, (subject, reply)
    assert [e["msg_id"] for e in (await request_json(nc, list_subject(mid)))["messages"]] == [i]
    await nc.close()
