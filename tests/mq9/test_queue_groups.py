"""SPEC §4 "Queue groups": each stored message to exactly one member; progress kept by the broker, so
a member that joins later gets what nobody in its group received. (Restart persistence of group
progress is in test_persistence.py.)"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from .helpers import (
    PRIO_RANK,
    barrier,
    collect,
    connect,
    create,
    create_public,
    msg_id,
    msg_subject,
    priority,
    send,
    subscribe,
    unique_name,
)


def exactly_once(groups: list[list[int]], expected: set[int]) -> None:
    counts = Counter(i for g in groups for i in g)
    dups = {i: c for i, c in counts.items() if c > 1}
    assert not dups, f"delivered to more than one member: {dups}"
    assert set(counts) == expected, f"missing {sorted(expected - set(counts))[:10]}, " \
                                    f"unexpected {sorted(set(counts) - expected)[:10]}"


async def test_stored_messages_go_to_exactly_one_member(server) -> None:
    url = server.nats_url
    nc = await connect(url)
    name = unique_name("task.queue")
    await create_public(nc, name, ttl=60, desc="Task queue")
    rnd = random.Random(1)
    ids = {await send(nc, name, b"t%d" % i, rnd.choice([None, "urgent", "critical"])) for i in range(40)}
    workers = [await connect(url) for _ in range(3)]
    inboxes = await asyncio.gather(*(subscribe(w, msg_subject(name, "*"), queue="workers") for w in workers))
    await asyncio.sleep(0.1)
    for inbox in inboxes:
        await inbox.settle(0.3)
    exactly_once([i.ids for i in inboxes], ids)
    # a plain subscriber (not in the group) still gets every message
    plain = await collect(nc, msg_subject(name, "*"), n=40)
    assert {msg_id(m) for m in plain} == ids
    for w in workers:
        await w.close()
    await nc.close()


async def test_live_messages_each_to_exactly_one_online_member(server) -> None:
    url = server.nats_url
    nc = await connect(url)
    name = unique_name("jobs")
    await create_public(nc, name, ttl=60)
    workers = [await connect(url) for _ in range(3)]
    inboxes = [await subscribe(w, msg_subject(name, "*"), queue="workers") for w in workers]
    for w in workers:
        await barrier(w)
    ids = set()
    for i in range(90):
        ids.add(await send(nc, name, b"job%d" % i, random.choice([None, "urgent"])))
    await asyncio.sleep(0.2)
    for inbox in inboxes:
        await inbox.settle(0.3)
    exactly_once([i.ids for i in inboxes], ids)
    # competing consumers: with several members online the work is shared
    assert all(len(i.msgs) > 0 for i in inboxes), [len(i.msgs) for i in inboxes]
    for w in workers:
        await w.close()
    await nc.close()


async def test_single_member_gets_backlog_in_priority_order(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    plan = ["normal", "critical", "urgent", "normal", "critical", "urgent"]
    sent = [(p, await send(nc, mid, p.encode(), p)) for p in plan]
    w = await connect(server.nats_url)
    inbox = await subscribe(w, msg_subject(mid, "*"), queue="solo")
    await inbox.wait_for(6)
    await inbox.settle(0.2)
    expected = sorted(sent, key=lambda t: PRIO_RANK[t[0]])
    assert [(priority(m), msg_id(m)) for m in inbox.msgs] == expected
    await w.close()
    await nc.close()


async def test_offline_group_member_gets_what_nobody_in_its_group_received(server) -> None:
    url = server.nats_url
    nc = await connect(url)
    name = unique_name("tasks")
    await create_public(nc, name, ttl=60)
    first = {await send(nc, name, b"a%d" % i) for i in range(10)}
    a = await connect(url)
    a_inbox = await subscribe(a, msg_subject(name, "*"), queue="workers")
    await a_inbox.wait_for(10)
    for i in range(5):  # live while A is online
        first.add(await send(nc, name, b"b%d" % i, "urgent"))
    await a_inbox.wait_for(15)
    await a_inbox.settle(0.3)
    assert set(a_inbox.ids) == first and len(a_inbox.ids) == 15
    await a.close()  # the whole group is offline now: an ordinary case
    later = {await send(nc, name, b"c%d" % i, random.choice([None, "critical"])) for i in range(12)}
    b = await connect(url)
    b_inbox = await subscribe(b, msg_subject(name, "*"), queue="workers")
    await b_inbox.wait_for(12)
    await b_inbox.settle(0.4)
    assert set(b_inbox.ids) == later and len(b_inbox.ids) == 12, "B must get exactly the unreceived tasks"
    # another group is independent: it starts with every stored message
    c = await connect(url)
    c_inbox = await subscribe(c, msg_subject(name, "*"), queue="auditors")
    await c_inbox.wait_for(27)
    await c_inbox.settle(0.3)
    assert set(c_inbox.ids) == first | later and len(c_inbox.ids) == 27
    for x in (b, c):
        await x.close()
    await nc.close()


async def test_remaining_member_takes_over_when_one_leaves(server) -> None:
    url = server.nats_url
    nc = await connect(url)
    mid = await create(nc)
    a, b = await connect(url), await connect(url)
    ia = await subscribe(a, msg_subject(mid, "*"), queue="g")
    ib = await subscribe(b, msg_subject(mid, "*"), queue="g")
    await barrier(a)
    await barrier(b)
    ids = {await send(nc, mid, b"%d" % i) for i in range(10)}
    await asyncio.sleep(0.2)
    await ia.settle(0.2)
    await ib.settle(0.2)
    exactly_once([ia.ids, ib.ids], ids)
    await ia.sub.unsubscribe()
    await barrier(a)
    more = {await send(nc, mid, b"m%d" % i) for i in range(10)}
    await ib.settle(0.4)
    exactly_once([ia.ids, ib.ids], ids | more)
    assert more <= set(ib.ids)
    await a.close()
    await b.close()
    await nc.close()


async def test_plain_subscribers_and_group_members_mixed(server) -> None:
    url = server.nats_url
    nc = await connect(url)
    mid = await create(nc)
    conns = [await connect(url) for _ in range(4)]
    plain = [await subscribe(conns[0], msg_subject(mid, "*")),
             await subscribe(conns[1], msg_subject(mid, "*"))]
    group = [await subscribe(conns[2], msg_subject(mid, "*"), queue="w"),
             await subscribe(conns[3], msg_subject(mid, "*"), queue="w")]
    for c in conns:
        await barrier(c)
    ids = [await send(nc, mid, b"%d" % i) for i in range(20)]
    for p in plain:
        await p.wait_for(20)
    for g in group:
        await g.settle(0.3)
    for p in plain:
        assert p.ids == ids
    exactly_once([g.ids for g in group], set(ids))
    for c in conns:
        await c.close()
    await nc.close()


async def test_a_member_on_one_priority_gets_its_stored_messages_when_others_are_stored(server) -> None:
    """Members that take only some priorities: each priority's stored messages go to a member that
    takes it, whatever is stored at the other priorities (the replay went through the priorities in
    order and stopped at the first one no member took, so normal-only members got nothing)."""
    nc = await connect(server.nats_url)
    mb = await create(nc, ttl=60)
    crit = await send(nc, mb, b"c", "critical")
    norm = await send(nc, mb, b"n", None)
    urg = await send(nc, mb, b"u", "urgent")
    w1, w2 = await connect(server.nats_url), await connect(server.nats_url)
    normal_only = await subscribe(w1, msg_subject(mb), queue="workers")
    urgent_only = await subscribe(w2, msg_subject(mb, "urgent"), queue="urgent-workers")
    await normal_only.wait_for(1)
    await urgent_only.wait_for(1)
    await asyncio.sleep(0.3)
    assert normal_only.ids == [norm]
    assert urgent_only.ids == [urg]
    # critical and urgent are still group "workers"' to hand out: a member taking every level gets
    # them, in priority order (urgent went to the other group only)
    w3 = await connect(server.nats_url)
    every = await subscribe(w3, msg_subject(mb, "*"), queue="workers")
    await every.wait_for(2)
    await asyncio.sleep(0.3)
    assert every.ids == [crit, urg]
    for c in (nc, w1, w2, w3):
        await c.close()


async def test_a_member_joining_a_live_group_gets_what_the_group_left_undelivered(server) -> None:
    """A group whose only member takes critical: a normal message waits. A second member that takes
    every level joins the same group later and gets it (only the first member's join used to
    replay)."""
    nc = await connect(server.nats_url)
    mb = await create(nc, ttl=60)
    a_conn, b_conn = await connect(server.nats_url), await connect(server.nats_url)
    a = await subscribe(a_conn, msg_subject(mb, "critical"), queue="q")
    await barrier(a_conn)
    norm = await send(nc, mb, b"normal-task", None)
    await asyncio.sleep(0.2)
    assert a.ids == []
    b = await subscribe(b_conn, msg_subject(mb, "*"), queue="q")
    await b.wait_for(1)
    crit = await send(nc, mb, b"alarm", "critical")
    await asyncio.sleep(0.3)
    assert b.ids[0] == norm
    assert sorted(a.ids + b.ids[1:]) == [crit]  # and each message once, to one member
    for c in (nc, a_conn, b_conn):
        await c.close()
