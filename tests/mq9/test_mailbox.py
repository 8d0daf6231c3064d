"""SPEC §4 "Mailboxes": CREATE (private and public), ids, idempotent public create, TTL and expiry."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter

import pytest

from .helpers import (
    CREATE,
    PUBLIC_LIST,
    assert_error,
    assert_ok,
    collect,
    connect,
    create,
    create_public,
    list_mailbox,
    list_subject,
    msg_subject,
    request_json,
    send,
    subscribe,
    unique_name,
)

PRIVATE_ID = re.compile(r"^mail-[a-z0-9]+-[a-z0-9]+$")


def random_part(mail_id: str) -> str:
    assert PRIVATE_ID.match(mail_id), mail_id
    return mail_id[len("mail-"):].replace("-", "")


async def test_private_create_reply_shape(server) -> None:
    nc = await connect(server.nats_url)
    reply = await request_json(nc, CREATE, {"ttl": 3600})
    assert_ok(reply)
    # SPEC §4b: CREATE serves upstream's dialect too, so the id is also under `mail_address`
    assert set(reply) == {"mail_id", "mail_address", "is_new"}, reply
    assert reply["mail_address"] == reply["mail_id"], reply
    assert reply["is_new"] is True
    assert PRIVATE_ID.match(reply["mail_id"]), reply
    assert len(random_part(reply["mail_id"])) >= 32, "≥160 bits needs ≥32 chars of [a-z0-9]"
    await nc.close()


async def test_private_ids_unique_and_high_entropy(server) -> None:
    """1000 ids: all distinct, ≥32 random [a-z0-9] chars each, and every character position looks
    random. The per-position empirical entropy (summed) must be near the ≥160 bits the contract asks
    for; a timestamp, counter or host prefix (like an xid) shows up as low-entropy positions."""
    nc = await connect(server.nats_url)
    ids: list[str] = []
    for _start in range(0, 1000, 200):
        replies = await asyncio.gather(*(request_json(nc, CREATE, {"ttl": 30}) for _ in range(200)))
        ids += [assert_ok(r)["mail_id"] for r in replies]
    assert len(set(ids)) == 1000
    parts = [random_part(i) for i in ids]
    n = min(len(p) for p in parts)
    assert n >= 32
    total = 0.0
    for pos in range(n):
        counts = Counter(p[pos] for p in parts)
        h = -sum(c / 1000 * math.log2(c / 1000) for c in counts.values())
        total += h
    # Uniform base32 (exactly 160 bits) estimates to about 159.3 bits from 1000 samples; leave room
    # for sampling bias but not for a structured prefix (an 8-char timestamp costs ~35 bits).
    assert total >= 150, f"estimated entropy {total:.1f} bits over {n} positions"
    # no shared prefixes: the first 8 random characters are already (almost surely) all distinct
    assert len({p[:8] for p in parts}) >= 995
    await nc.close()


async def test_public_create_then_again_is_not_new_and_keeps_ttl_and_desc(server) -> None:
    nc = await connect(server.nats_url)
    name = unique_name("task.queue")
    r1 = await create_public(nc, name, ttl=1, desc="Task queue")
    assert r1 == {"mail_id": name, "mail_address": name, "is_new": True}
    t_created = time.monotonic()
    r2 = await create_public(nc, name, ttl=3600, desc="something else")
    assert r2 == {"mail_id": name, "mail_address": name, "is_new": False}
    # desc and ttl as PUBLIC.LIST reports them are the originals
    events = [json.loads(m.data) for m in await collect(nc, PUBLIC_LIST, window=0.4)]
    evs = [e for e in events if e.get("mail_id") == name]
    assert evs == [{"event": "created", "mail_id": name, "desc": "Task queue", "ttl": 1}], evs
    # and the original ttl still governs expiry: gone after ~1 s, not 3600
    await asyncio.sleep(max(0.0, t_created + 1.05 - time.monotonic()))
    reply = await request_json(nc, msg_subject(name), b"late")
    assert_error(reply, "does not exist")
    await nc.close()


async def test_public_create_accepts_valid_names(server) -> None:
    nc = await connect(server.nats_url)
    suffix = unique_name("v").split(".")[1]
    names = [
        f"a{suffix}",
        f"task-queue_1.{suffix}",
        f"a.b.c.d.{suffix}",
        f"x{suffix}." + "y" * (128 - len(suffix) - 2),  # exactly 128 chars
        f"{suffix}.urgent.x",  # priority word not in the last position is fine
        f"0{suffix}",
    ]
    assert len(names[3]) == 128
    for name in names:
        reply = await create_public(nc, name, ttl=30, desc="ok")
        assert reply == {"mail_id": name, "mail_address": name, "is_new": True}, (name, reply)
    await nc.close()


async def test_ttl_zero_never_expires_and_omitted_ttl_uses_default(server) -> None:
    nc = await connect(server.nats_url)
    forever = await create(nc, ttl=0)
    default = await create(nc, ttl=None)  # server default is 3600 s
    short = await create(nc, ttl=1)
    for mid in (forever, default, short):
        await send(nc, mid, b"hello")
    await asyncio.sleep(1.1)
    assert_error(await request_json(nc, msg_subject(short), b"x"), "does not exist")
    for mid in (forever, default):
        msgs = await list_mailbox(nc, mid)
        assert [m["size"] for m in msgs] == [5]
        await send(nc, mid, b"still here")
    await nc.close()


async def test_empty_body_creates_with_default_ttl(server) -> None:
    nc = await connect(server.nats_url)
    reply = assert_ok(await request_json(nc, CREATE, b""))
    assert reply["is_new"] is True and PRIVATE_ID.match(reply["mail_id"])
    await send(nc, reply["mail_id"], b"x")
    reply = assert_ok(await request_json(nc, CREATE, b"{}"))
    assert reply["is_new"] is True and PRIVATE_ID.match(reply["mail_id"])
    await nc.close()


async def test_expiry_removes_mailbox_for_every_operation_at_once(server) -> None:
    """Checked on access: right after created+ttl, send/LIST/DELETE/subscribe all see nothing."""
    nc = await connect(server.nats_url)
    t0 = time.monotonic()
    pub_name = unique_name("exp")
    await create_public(nc, pub_name, ttl=2, desc="d")
    mid = await create(nc, ttl=2)
    t1 = time.monotonic()
    ids = [await send(nc, mid, b"m%d" % i, p) for i, p in enumerate(["critical", "urgent", None])]
    await send(nc, pub_name, b"pub")
    # still alive well before the deadline
    await asyncio.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    assert len(await list_mailbox(nc, mid)) == 3
    # 50 ms after the latest possible expiry instant: gone on access, whether or not a sweep ran
    await asyncio.sleep(max(0.0, t1 + 2.05 - time.monotonic()))
    for target in (mid, pub_name):
        assert_error(await request_json(nc, msg_subject(target), b"late"), "does not exist")
        assert_error(await request_json(nc, msg_subject(target, "critical"), b"late"), "does not exist")
        assert_error(await request_json(nc, list_subject(target)), "does not exist")
    del_reply = await request_json(nc, f"$mq9.AI.MAILBOX.DELETE.{mid}.{ids[0]}")
    assert del_reply == {"deleted": False} or set(del_reply) == {"error"}, del_reply
    assert await collect(nc, msg_subject(mid, "*"), window=0.4) == []
    await nc.close()


async def test_ttl_expiry_while_subscriber_attached(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc, ttl=2)
    t1 = time.monotonic()
    inbox = await subscribe(nc, msg_subject(mid, "*"))
    await send(nc, mid, b"before", "urgent")
    await inbox.wait_for(1)
    # a second connection keeps trying to send right through the expiry
    sender = await connect(server.nats_url)
    # The server created the mailbox before its reply reached us (t1), so it expires no later than
    # t1 + 2 s: a send *issued* after that (plus 30 ms of clock slack) must be refused, whether or not
    # a background sweep has run yet (expiry is checked on access).
    stored_after_deadline: list[tuple[float, bytes]] = []
    accepted = refused = 0
    deadline = t1 + 2.6
    i = 0
    while time.monotonic() < deadline and i < 2000:
        t_send = time.monotonic()
        reply = await request_json(sender, msg_subject(mid), b"s%d" % i)
        if "error" not in reply:
            accepted += 1
            if t_send > t1 + 2.03:
                stored_after_deadline.append((round(t_send - t1, 3), b"s%d" % i))
        else:
            assert_error(reply, "does not exist")
            refused += 1
        i += 1
        await asyncio.sleep(0.01)
    assert accepted > 0 and refused > 0
    assert not stored_after_deadline, f"sends accepted after expiry: {stored_after_deadline[:5]}"
    assert_error(await request_json(sender, msg_subject(mid), b"after"), "does not exist")
    await asyncio.sleep(0.3)
    n = len(inbox.msgs)
    assert all(m.data != b"after" for m in inbox.msgs)
    await asyncio.sleep(0.5)
    assert len(inbox.msgs) == n, "subscriber got messages after expiry"
    assert nc.is_connected and sender.is_connected
    await sender.close()
    await nc.close()


@pytest.mark.timeout(60)
async def test_thousand_mailboxes_created_and_expired(server) -> None:
    nc = await connect(server.nats_url)
    t_start = time.monotonic()
    ids: list[str] = []
    for _start in range(0, 1000, 250):
        replies = await asyncio.gather(*(request_json(nc, CREATE, {"ttl": 1}) for _ in range(250)))
        ids += [assert_ok(r)["mail_id"] for r in replies]
    t_created = time.monotonic()
    assert len(set(ids)) == 1000
    keeper = await create(nc, ttl=0)
    # one message each, as requests (stored), concurrently in batches
    await asyncio.gather(*(send(nc, mid, b"x") for mid in ids[:500]))
    assert t_created - t_start < 20, "creating 1000 mailboxes took too long"
    # wait until every one is past its ttl
    await asyncio.sleep(max(0.0, t_created + 1.5 - time.monotonic()))
    replies = []
    for start in range(0, 1000, 250):
        replies += await asyncio.gather(*(request_json(nc, msg_subject(mid), b"late")
                                          for mid in ids[start:start + 250]))
    assert all(set(r) == {"error"} and "does not exist" in r["error"] for r in replies), \
        [r for r in replies if "error" not in r][:3]
    lists = await asyncio.gather(*(request_json(nc, list_subject(mid)) for mid in ids[:200]))
    assert all(set(r) == {"error"} for r in lists)
    # the server is healthy and the ttl=0 mailbox is untouched
    await send(nc, keeper, b"alive")
    assert len(await list_mailbox(nc, keeper)) == 1
    assert time.monotonic() - t_start < 45
    await nc.close()


async def recreate_as_soon_as_expired(nc, name: str, ttl: int, desc: str, timeout: float) -> float:
    """Poll CREATE for `name` until it is new again (i.e. right at expiry, usually before any sweep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await create_public(nc, name, ttl=ttl, desc=desc))["is_new"]:
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise AssertionError(f"{name} did not expire within {timeout}s")


async def test_public_name_recreated_right_after_expiry_is_a_new_empty_mailbox(server) -> None:
    """The old incarnation's messages (and queue-group progress) are gone at once at expiry, even
    if the name is taken again before the background sweep has reclaimed them."""
    nc = await connect(server.nats_url)
    names = [unique_name("reborn") for _ in range(2)]
    for name in names:
        await create_public(nc, name, ttl=1, desc="first life")
        for i in range(3):
            await send(nc, name, b"old-%d" % i, "critical" if i == 1 else None)
        got = await collect(nc, msg_subject(name, "*"), queue="workers", n=3)
        assert len(got) == 3
    for name in names:
        await recreate_as_soon_as_expired(nc, name, ttl=30, desc="second life", timeout=3)
        assert await list_mailbox(nc, name) == [], "old messages leaked into the new mailbox"
        new_id = await send(nc, name, b"new")
        got = await collect(nc, msg_subject(name, "*"), window=0.3)
        assert [m.data for m in got] == [b"new"]
        # the old group's progress does not apply to the new mailbox: the group gets the new task
        grp = await collect(nc, msg_subject(name, "*"), queue="workers", n=1)
        assert [(m.data, int(m.headers["mq9-msg-id"])) for m in grp] == [(b"new", new_id)]
    # the new incarnation is not removed by the sweep of the old one (sweep period: 0.5 s)
    await asyncio.sleep(0.7)
    for name in names:
        assert [e["size"] for e in await list_mailbox(nc, name)] == [3]
        evs = [json.loads(m.data) for m in await collect(nc, PUBLIC_LIST, window=0.3)]
        assert {"event": "created", "mail_id": name, "desc": "second life", "ttl": 30} in evs
    await nc.close()
