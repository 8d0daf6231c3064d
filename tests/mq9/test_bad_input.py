"""SPEC §4 (and §8 for mq9): bad CREATE bodies, bad names, bad ttl, unknown suffixes, writes to missing
mailboxes, full mailboxes and the configured limits. Every error is a `{"error": ...}` reply and the
connection stays usable."""

from __future__ import annotations

import asyncio

import pytest
from procs import RobustMQ

from .helpers import (
    CREATE,
    RawClient,
    assert_error,
    assert_ok,
    barrier,
    collect,
    connect,
    create,
    delete_subject,
    list_mailbox,
    list_subject,
    msg_subject,
    request_json,
    request_raw,
    send,
    unique_name,
)


@pytest.fixture(scope="module")
def limited():
    s = RobustMQ(extra_args=["--mq9-default-ttl-s", "1", "--mq9-max-ttl-s", "100",
                             "--mq9-max-messages", "5", "--mq9-max-bytes", "4096"]).start()
    yield s
    s.cleanup()


async def still_usable(nc) -> None:
    assert nc.is_connected
    mid = await create(nc, ttl=30)
    await send(nc, mid, b"ok")


# ------------------------------------------------------------------------------------------ CREATE


@pytest.mark.parametrize("body", [
    b"not json", b"{", b'{"ttl": }', b"\xff\xfe\x00", b'{"ttl": 5,}', b"[1, 2]", b"5", b'"str"', b"null",
    b"true",
])
async def test_malformed_create_body_is_an_error_reply(server, body: bytes) -> None:
    nc = await connect(server.nats_url)
    assert_error(await request_json(nc, CREATE, body))
    await still_usable(nc)
    await nc.close()


@pytest.mark.parametrize("ttl", [-1, -3600, 1.5, 0.1, "5", "abc", True, False, [5], {"s": 5},
                                 30 * 24 * 3600 + 1, 10**30])
async def test_bad_ttl_is_an_error(server, ttl) -> None:
    nc = await connect(server.nats_url)
    assert_error(await request_json(nc, CREATE, {"ttl": ttl}))
    assert_error(await request_json(nc, CREATE, {"ttl": ttl, "public": True, "name": unique_name("bt")}))
    await still_usable(nc)
    await nc.close()


async def test_configured_max_and_default_ttl(limited) -> None:
    nc = await connect(limited.nats_url)
    assert_ok(await request_json(nc, CREATE, {"ttl": 100}))
    assert_error(await request_json(nc, CREATE, {"ttl": 101}))
    assert_ok(await request_json(nc, CREATE, {"ttl": 0}))  # 0 = never expires, not "above max"
    # the configured default (1 s) applies when ttl is omitted
    mid = assert_ok(await request_json(nc, CREATE, {}))["mail_id"]
    mid2 = assert_ok(await request_json(nc, CREATE, b""))["mail_id"]
    await send(nc, mid, b"x")
    await asyncio.sleep(1.6)
    for m in (mid, mid2):
        assert_error(await request_json(nc, msg_subject(m), b"y"), "does not exist")
    await nc.close()


@pytest.mark.parametrize("name", [
    "Task.queue", "TASK", "task..queue", ".task", "task.", "..", ".", "", "task queue", "task/queue",
    "task.*", "task.>", "*", ">", "tâche", "a" * 129, "x." + "y" * 127,
    "task.urgent", "task.critical", "task.normal", "urgent", "critical", "normal",
    "mail-abc", "mail-abc.def", "mail-0123456789abcdef-0123456789abcdef",
    "tab\tname", "new\nline",
])
async def test_invalid_public_names_are_refused(server, name: str) -> None:
    nc = await connect(server.nats_url)
    assert_error(await request_json(nc, CREATE, {"ttl": 30, "public": True, "name": name, "desc": "x"}))
    await still_usable(nc)
    await nc.close()


@pytest.mark.parametrize("body", [
    {"ttl": 30, "public": True},
    {"ttl": 30, "public": True, "name": None},
    {"ttl": 30, "public": True, "name": 5},
    {"ttl": 30, "public": "yes", "name": "ok.name"},
])
async def test_public_create_needs_a_proper_name(server, body) -> None:
    nc = await connect(server.nats_url)
    assert_error(await request_json(nc, CREATE, body))
    await still_usable(nc)
    await nc.close()


async def test_create_without_reply_subject_does_not_break_anything(server) -> None:
    nc = await connect(server.nats_url)
    await nc.publish(CREATE, b'{"ttl": 5}')
    await nc.publish(CREATE, b"garbage")
    await barrier(nc)
    await still_usable(nc)
    await nc.close()


async def test_unknown_mq9_request_is_an_error_reply(server) -> None:
    nc = await connect(server.nats_url)
    for subject in ("$mq9.AI.MAILBOX.BOGUS", "$mq9.AI.NOPE", "$mq9.AI.MAILBOX.CREATE.extra"):
        assert_error(await request_json(nc, subject, b"{}"))
    await still_usable(nc)
    await nc.close()


# -------------------------------------------------------------------------------------------- send


async def test_unknown_priority_suffix_is_an_error_and_not_stored(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc, ttl=30)
    for suffix in ("bogus", "URGENT", "Critical", "HIGH", "0"):
        assert_error(await request_json(nc, msg_subject(mid, suffix), b"x"))
        await nc.publish(msg_subject(mid, suffix), b"ff")
    await barrier(nc)
    assert await list_mailbox(nc, mid) == []
    assert await collect(nc, msg_subject(mid, "*"), window=0.3) == []
    await still_usable(nc)
    await nc.close()


async def test_fire_and_forget_to_missing_mailbox_is_dropped_quietly(server) -> None:
    nc = await connect(server.nats_url)
    missing = "mail-0000000000000000-0000000000000000"
    for i in range(200):
        await nc.publish(msg_subject(missing, ["urgent", None, "critical"][i % 3]), b"lost %d" % i)
    await nc.publish(msg_subject("no.such.box"), b"lost", headers={"x": "1"})
    await barrier(nc)
    # the publisher is not disconnected (and saw no protocol error), the server keeps serving
    assert nc.is_connected and not nc.errors, nc.errors
    await still_usable(nc)
    # a raw client too
    raw = await RawClient.connect(server.nats_port)
    await raw.send(f"PUB {msg_subject(missing)} 4\r\nlost\r\n".encode())
    await raw.ping()
    await raw.close()
    # and the mailbox was not created by the sends
    assert_error(await request_json(nc, list_subject(missing)), "does not exist")
    await nc.close()


async def test_full_mailbox_refuses_and_never_drops_old_messages(limited) -> None:
    nc = await connect(limited.nats_url)
    mid = await create(nc, ttl=60)
    ids = [await send(nc, mid, b"m%d" % i, ["critical", None, "urgent"][i % 3]) for i in range(5)]
    for p in (None, "urgent", "critical"):
        assert_error(await request_json(nc, msg_subject(mid, p), b"overflow"), "full")
    await nc.publish(msg_subject(mid), b"overflow-ff")  # fire-and-forget: refused (dropped), no crash
    await barrier(nc)
    listed = await list_mailbox(nc, mid)
    assert sorted(e["msg_id"] for e in listed) == sorted(ids)
    got = await collect(nc, msg_subject(mid, "*"), n=5)
    assert sorted(m.data for m in got) == sorted(b"m%d" % i for i in range(5))
    assert nc.is_connected
    # deleting a message makes room for exactly one more
    assert await request_json(nc, delete_subject(mid, ids[0])) == {"deleted": True}
    await send(nc, mid, b"fits")
    assert_error(await request_json(nc, msg_subject(mid), b"overflow"), "full")
    # other mailboxes are not affected
    other = await create(nc, ttl=60)
    await send(nc, other, b"fine")
    await nc.close()


async def test_mailbox_byte_limit(limited) -> None:
    nc = await connect(limited.nats_url)
    mid = await create(nc, ttl=60)
    await send(nc, mid, b"a" * 1500)
    await send(nc, mid, b"b" * 1500)
    assert_error(await request_json(nc, msg_subject(mid), b"c" * 1500), "full")
    assert [e["size"] for e in await list_mailbox(nc, mid)] == [1500, 1500]
    await send(nc, mid, b"small")  # still room for a small one
    await nc.close()


async def test_bad_request_storm_keeps_the_connection(server) -> None:
    nc = await connect(server.nats_url)
    bodies = [b"{", b'{"ttl":-1}', b'{"public":true,"name":"Bad"}', b'{"ttl":"x"}'] * 50
    replies = await asyncio.gather(*(request_raw(nc, CREATE, b) for b in bodies))
    assert all(b'"error"' in r for r in replies)
    await still_usable(nc)
    await nc.close()
