"""SPEC §4 "Discovery": `$mq9.AI.PUBLIC.LIST` snapshot, live created/expired events, refused writes."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest

from .helpers import (
    CREATE,
    PUBLIC_LIST,
    assert_error,
    assert_ok,
    barrier,
    collect,
    connect,
    create,
    create_public,
    request_json,
    subscribe,
    unique_name,
    wait_until,
)


def events_for(msgs, prefix: str) -> list[dict]:
    out = []
    for m in msgs:
        assert m.subject == PUBLIC_LIST, m.subject
        e = json.loads(m.data)
        if e.get("mail_id", "").startswith(prefix):
            out.append(e)
    return out


async def test_snapshot_lists_current_public_mailboxes_only(server) -> None:
    nc = await connect(server.nats_url)
    prefix = f"snap{secrets.token_hex(3)}"
    names = [f"{prefix}.a", f"{prefix}.b", f"{prefix}.c-d_e"]
    for k, n in enumerate(names):
        await create_public(nc, n, ttl=100 + k, desc=f"desc {k}")
    private = await create(nc, ttl=60)
    msgs = await collect(nc, PUBLIC_LIST, window=0.3)
    evs = events_for(msgs, prefix)
    assert sorted(evs, key=lambda e: e["mail_id"]) == [
        {"event": "created", "mail_id": n, "desc": f"desc {k}", "ttl": 100 + k} for k, n in enumerate(names)]
    every = [json.loads(m.data) for m in msgs]
    assert all(e["event"] == "created" for e in every), "the snapshot only has created events"
    assert not any(e.get("mail_id") == private or e.get("mail_id", "").startswith("mail-") for e in every), \
        "private mailboxes must never be listed"
    # every subscriber gets its own snapshot
    again = events_for(await collect(nc, PUBLIC_LIST, window=0.3), prefix)
    assert len(again) == 3
    await nc.close()


async def test_live_created_event_once_per_mailbox(server) -> None:
    nc = await connect(server.nats_url)
    watcher = await connect(server.nats_url)
    prefix = f"live{secrets.token_hex(3)}"
    inbox = await subscribe(watcher, PUBLIC_LIST)
    await barrier(watcher)
    await inbox.settle(0.3)
    before = len(events_for(inbox.msgs, prefix))
    assert before == 0
    t0 = time.monotonic()
    await create_public(nc, f"{prefix}.capability", ttl=0, desc="translate en->fr")
    assert await wait_until(lambda: events_for(inbox.msgs, prefix), 2.0)
    assert time.monotonic() - t0 < 1.0
    # creating it again is not news
    r = await create_public(nc, f"{prefix}.capability", ttl=5, desc="other")
    assert r["is_new"] is False
    await create(nc, ttl=30)  # private: never announced
    await asyncio.sleep(0.4)
    assert events_for(inbox.msgs, prefix) == [
        {"event": "created", "mail_id": f"{prefix}.capability", "desc": "translate en->fr", "ttl": 0}]
    assert not any(json.loads(m.data)["mail_id"].startswith("mail-") for m in inbox.msgs)
    await watcher.close()
    await nc.close()


async def test_expired_event_within_a_second_of_expiry(server) -> None:
    nc = await connect(server.nats_url)
    watcher = await connect(server.nats_url)
    prefix = f"exp{secrets.token_hex(3)}"
    inbox = await subscribe(watcher, PUBLIC_LIST)
    await barrier(watcher)
    t0 = time.monotonic()
    await create_public(nc, f"{prefix}.worker", ttl=2, desc="worker status")
    t1 = time.monotonic()
    await create_public(nc, f"{prefix}.keeper", ttl=60, desc="stays")
    arrival: dict[str, float] = {}
    deadline = t1 + 2 + 1.0 + 0.3
    while time.monotonic() < deadline and f"{prefix}.worker" not in arrival:
        for e in events_for(inbox.msgs, prefix):
            if e["event"] == "expired":
                arrival.setdefault(e["mail_id"], time.monotonic())
        await asyncio.sleep(0.02)
    assert f"{prefix}.worker" in arrival, "no expired event within a second of expiry"
    assert arrival[f"{prefix}.worker"] >= t0 + 2 - 0.05, "expired event before the ttl elapsed"
    evs = events_for(inbox.msgs, prefix)
    assert {"event": "expired", "mail_id": f"{prefix}.worker"} in evs
    assert not any(e["event"] == "expired" and e["mail_id"] == f"{prefix}.keeper" for e in evs)
    # gone from the snapshot too
    snap = events_for(await collect(nc, PUBLIC_LIST, window=0.4), prefix)
    assert [e["mail_id"] for e in snap] == [f"{prefix}.keeper"]
    # the name is free again: creating it is new
    again = await create_public(nc, f"{prefix}.worker", ttl=30, desc="reborn")
    assert again["is_new"] is True
    await watcher.close()
    await nc.close()


async def test_expired_before_subscribe_not_in_snapshot(server) -> None:
    nc = await connect(server.nats_url)
    prefix = f"gone{secrets.token_hex(3)}"
    await create_public(nc, f"{prefix}.x", ttl=1)
    t1 = time.monotonic()
    await asyncio.sleep(max(0.0, t1 + 1.03 - time.monotonic()))
    # even if the sweep has not run yet, the mailbox is gone on access: no "created" in the snapshot
    # (the live "expired" event may still arrive if the sweep runs while we listen)
    evs = events_for(await collect(nc, PUBLIC_LIST, window=0.4), prefix)
    assert [e for e in evs if e["event"] != "expired"] == [], evs
    await nc.close()


@pytest.mark.timeout(60)
async def test_two_hundred_public_mailboxes_created_and_expired(server) -> None:
    nc = await connect(server.nats_url)
    watcher = await connect(server.nats_url)
    prefix = f"many{secrets.token_hex(3)}"
    inbox = await subscribe(watcher, PUBLIC_LIST)
    await barrier(watcher)
    names = [f"{prefix}.w{i}" for i in range(200)]
    replies = await asyncio.gather(*(
        request_json(nc, CREATE, {"ttl": 1, "public": True, "name": n, "desc": "w"}) for n in names))
    assert all(assert_ok(r)["is_new"] is True for r in replies)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        evs = events_for(inbox.msgs, prefix)
        if sum(e["event"] == "expired" for e in evs) >= 200:
            break
        await asyncio.sleep(0.05)
    evs = events_for(inbox.msgs, prefix)
    created = [e["mail_id"] for e in evs if e["event"] == "created"]
    expired = [e["mail_id"] for e in evs if e["event"] == "expired"]
    assert sorted(created) == sorted(names)
    assert sorted(expired) == sorted(names)
    for n in names:  # each created before it expired
        assert evs.index({"event": "created", "mail_id": n, "desc": "w", "ttl": 1}) < \
            evs.index({"event": "expired", "mail_id": n})
    await watcher.close()
    await nc.close()


async def test_user_writes_to_public_list_are_refused(server) -> None:
    nc = await connect(server.nats_url)
    watcher = await connect(server.nats_url)
    inbox = await subscribe(watcher, PUBLIC_LIST)
    await barrier(watcher)
    await inbox.settle(0.3)
    n0 = len(inbox.msgs)
    fake = json.dumps({"event": "created", "mail_id": "fake.mailbox", "desc": "x", "ttl": 0}).encode()
    assert_error(await request_json(nc, PUBLIC_LIST, fake))
    await nc.publish(PUBLIC_LIST, fake)  # fire-and-forget: refused too
    await nc.publish(PUBLIC_LIST, b'{"event":"expired","mail_id":"whatever"}', headers={"x": "y"})
    await barrier(nc)
    await asyncio.sleep(0.3)
    assert len(inbox.msgs) == n0, [m.data for m in inbox.msgs[n0:]]
    # the publisher's connection is still fine, and the fake mailbox was not created
    assert nc.is_connected
    snap = [json.loads(m.data)["mail_id"] for m in await collect(nc, PUBLIC_LIST, window=0.4)]
    assert "fake.mailbox" not in snap and "whatever" not in snap
    name = unique_name("after")
    await create_public(nc, name, ttl=10)
    await inbox.wait_for(n0 + 1)
    assert json.loads(inbox.msgs[-1].data)["mail_id"] == name
    await watcher.close()
    await nc.close()


async def test_name_recreated_right_after_expiry_announces_expired_then_created(server) -> None:
    nc = await connect(server.nats_url)
    watcher = await connect(server.nats_url)
    inbox = await subscribe(watcher, PUBLIC_LIST)
    await barrier(watcher)
    prefix = f"again{secrets.token_hex(3)}"
    name = f"{prefix}.svc"
    await create_public(nc, name, ttl=1, desc="one")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if (await create_public(nc, name, ttl=30, desc="two"))["is_new"]:
            break
        await asyncio.sleep(0.005)
    assert await wait_until(lambda: len(events_for(inbox.msgs, prefix)) >= 3, 2.0)
    await asyncio.sleep(0.6)
    assert events_for(inbox.msgs, prefix) == [
        {"event": "created", "mail_id": name, "desc": "one", "ttl": 1},
        {"event": "expired", "mail_id": name},
        {"event": "created", "mail_id": name, "desc": "two", "ttl": 30},
    ]
    await watcher.close()
    await nc.close()
