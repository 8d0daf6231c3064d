"""SPEC §2/§4/§8: mailboxes, messages (ids, priorities, headers, payloads), deletions, TTL deadlines and
queue-group progress survive a graceful restart and a kill -9 right after the broker replied."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import pytest
from procs import RobustMQ, disk_usage

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
    delete_subject,
    list_mailbox,
    msg_id,
    msg_subject,
    priority,
    request_json,
    send,
    subscribe,
    unique_name,
)

pytestmark = pytest.mark.timeout(60)


def snapshot(msgs) -> list[tuple]:
    return [(m.subject, msg_id(m), priority(m), m.headers.get("mq9-ts"), m.data,
             tuple(sorted((k, v) for k, v in m.headers.items()))) for m in msgs]


async def test_graceful_restart_keeps_everything(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    mid = await create(nc, ttl=3600)
    name = unique_name("task.queue")
    assert (await create_public(nc, name, ttl=3600, desc="Task queue"))["is_new"] is True
    rnd = random.Random(5)
    ids = []
    for i in range(30):
        p = rnd.choice([None, "urgent", "critical", "normal"])
        payload = rnd.randbytes(rnd.randint(0, 300))
        hdrs = {"x-seq": str(i)} if i % 2 else None
        ids.append(await send(nc, mid, payload, p, headers=hdrs))
    await send(nc, name, b"task-1")
    deleted = ids[7]
    assert await request_json(nc, delete_subject(mid, deleted)) == {"deleted": True}
    before = snapshot(await collect(nc, msg_subject(mid, "*"), n=29))
    listed_before = await list_mailbox(nc, mid)
    await nc.close()

    fresh_server.restart()

    nc = await connect(fresh_server.nats_url)
    after = snapshot(await collect(nc, msg_subject(mid, "*"), n=29))
    assert after == before
    assert await list_mailbox(nc, mid) == listed_before
    assert deleted not in [row[1] for row in after]
    # the public mailbox is still listed (original desc/ttl) and is not new
    evs = [json.loads(m.data) for m in await collect(nc, PUBLIC_LIST, window=0.4)]
    assert {"event": "created", "mail_id": name, "desc": "Task queue", "ttl": 3600} in evs
    assert (await create_public(nc, name, ttl=5, desc="x"))["is_new"] is False
    assert [m.data for m in await collect(nc, msg_subject(name, "*"), n=1)] == [b"task-1"]
    # new messages get fresh ids (unique within the mailbox, including the deleted one)
    new = await send(nc, mid, b"after restart")
    assert new not in ids
    await nc.close()


async def test_kill9_right_after_replies_loses_nothing(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    mid = await create(nc, ttl=3600)
    sent: dict[int, tuple[str, bytes]] = {}
    for start in range(0, 300, 50):
        prios = [random.choice(["critical", "urgent", "normal"]) for _ in range(50)]
        batch = [b"k9-%d" % (start + k) for k in range(50)]
        got = await asyncio.gather(*(send(nc, mid, b, p) for b, p in zip(batch, prios)))
        for i, b, p in zip(got, batch, prios):
            sent[i] = (p, b)
    last_box = await create(nc, ttl=3600)  # the reply came back: it must survive
    last_pub = unique_name("k9")
    await create_public(nc, last_pub, ttl=3600, desc="k9")
    last_msg = await send(nc, last_box, b"last", "critical")
    fresh_server.kill9()
    await nc.close()

    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    got = await collect(nc, msg_subject(mid, "*"), n=300, timeout=10)
    assert {msg_id(m): (priority(m), m.data) for m in got} == sent
    assert len(got) == 300
    assert [msg_id(m) for m in await collect(nc, msg_subject(last_box, "*"), n=1)] == [last_msg]
    assert (await create_public(nc, last_pub, ttl=3600))["is_new"] is False
    await send(nc, mid, b"still writable")
    await nc.close()


async def test_ttl_deadline_is_kept_across_restarts(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    t_req = time.monotonic()
    survivor = await create(nc, ttl=4)
    t1 = time.monotonic()
    dies_while_down = unique_name("down")
    await create_public(nc, dies_while_down, ttl=1, desc="d")
    await send(nc, survivor, b"s")
    await send(nc, dies_while_down, b"d")
    await nc.close()
    fresh_server.stop()
    await asyncio.sleep(max(0.0, t1 + 1.3 - time.monotonic()))
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    # expired while the server was down: gone at once, not listed, not announced as current
    assert_error(await request_json(nc, msg_subject(dies_while_down), b"x"), "does not exist")
    evs = [json.loads(m.data) for m in await collect(nc, PUBLIC_LIST, window=0.4)]
    assert not any(e.get("mail_id") == dies_while_down and e["event"] == "created" for e in evs)
    # the survivor keeps its original deadline (restart does not reset the ttl)
    if time.monotonic() < t_req + 3.8:
        assert len(await list_mailbox(nc, survivor)) == 1
    await asyncio.sleep(max(0.0, t1 + 4.4 - time.monotonic()))
    assert_error(await request_json(nc, msg_subject(survivor), b"x"), "does not exist")
    await nc.close()


async def _group_progress_roundtrip(server: RobustMQ, kill: bool) -> None:
    server.start()
    nc = await connect(server.nats_url)
    name = unique_name("tasks")
    await create_public(nc, name, ttl=3600)
    first = {await send(nc, name, b"a%d" % i, random.choice([None, "urgent"])) for i in range(10)}
    a = await connect(server.nats_url)
    ia = await subscribe(a, msg_subject(name, "*"), queue="workers")
    await ia.wait_for(10)
    await ia.settle(0.3)
    assert set(ia.ids) == first and len(ia.ids) == 10
    await a.close()
    # the group is offline; more tasks arrive (acknowledged), then the broker goes down
    later = {await send(nc, name, b"b%d" % i, random.choice([None, "critical"])) for i in range(7)}
    assert_ok(await request_json(nc, CREATE, {"ttl": 5}))  # one more round trip after the last send
    await nc.close()
    if kill:
        server.kill9()
        server.start()
    else:
        server.restart()
    b = await connect(server.nats_url)
    ib = await subscribe(b, msg_subject(name, "*"), queue="workers")
    await ib.wait_for(len(later), timeout=5)
    await ib.settle(0.5)
    missing = later - set(ib.ids)
    redelivered = set(ib.ids) & first
    assert not missing, f"tasks nobody in the group received were lost: {missing}"
    assert not redelivered, f"tasks already received by the group were delivered again: {redelivered}"
    assert sorted(ib.ids) == sorted(later)
    # a different group still starts from the beginning
    c = await connect(server.nats_url)
    got = await collect(c, msg_subject(name, "*"), queue="auditors", n=17)
    assert {msg_id(m) for m in got} == first | later
    await b.close()
    await c.close()


async def test_queue_group_progress_survives_graceful_restart(fresh_server: RobustMQ) -> None:
    await _group_progress_roundtrip(fresh_server, kill=False)


async def test_queue_group_progress_survives_kill9(fresh_server: RobustMQ) -> None:
    await _group_progress_roundtrip(fresh_server, kill=True)


async def test_sweep_reclaims_expired_mailbox_storage(fresh_server: RobustMQ) -> None:
    """SPEC §4: storage of an expired mailbox is reclaimed by the sweep (checked in the log on disk,
    where each mailbox is the stream named by its canonical subject, SPEC §2)."""
    from robustmq.core_log import SegmentLog, Store

    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    gone = await create(nc, ttl=1)
    kept = await create(nc, ttl=3600)
    for _ in range(50):
        await send(nc, gone, b"x" * 200)
        await send(nc, kept, b"y")
    t_expired = time.monotonic() + 1
    await asyncio.sleep(max(0.0, t_expired + 1.6 - time.monotonic()))  # expiry + a few sweep periods
    assert_error(await request_json(nc, msg_subject(gone), b"x"), "does not exist")
    await nc.close()
    fresh_server.stop()
    log = SegmentLog(Store(fresh_server.data_dir))
    try:
        s = log.get_stream(msg_subject(gone))
        assert s is None or list(log.read(s)) == [], "expired mailbox's records were not reclaimed"
        k = log.get_stream(msg_subject(kept))
        assert k is not None and len(list(log.read(k))) == 50
    finally:
        log.close()


async def test_an_expired_mailbox_gives_its_disk_back_while_the_server_runs(fresh_server: RobustMQ) -> None:
    """40 MB in a mailbox with a 2 s TTL: after the sweep and a retention pass the data directory
    shrinks while the server runs (the sweep's range delete only hid the records; they stayed on
    disk until a restart)."""
    fresh_server.extra_args = ["--retention-check-interval", "1"]
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    mid = await create(nc, ttl=2)
    for _ in range(20):
        for _ in range(500):
            await nc.nc.publish(msg_subject(mid), os.urandom(4000))
        await barrier(nc)
    peak = disk_usage(fresh_server.data_dir)
    assert peak > 30 << 20, peak
    deadline = time.monotonic() + 20
    now = peak
    while now > peak // 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = disk_usage(fresh_server.data_dir)
    assert now <= peak // 3, f"data dir {now >> 20} MiB after the mailbox expired (peak {peak >> 20} MiB)"
    await nc.close()


async def _mixed_sends(nc, mid: str, tag: bytes) -> list[tuple[int, int, bytes]]:
    """Sends of every priority, and a pipelined burst of critical requests to one subject (stored
    and noted as one run): (priority rank, msg_id, payload) of each."""
    rank = {"critical": 0, "urgent": 1, "normal": 2}
    sent = []
    for i, p in enumerate(["normal", "critical", "normal", "urgent"]):
        sent.append((rank[p], await send(nc, mid, tag + b"s%d" % i, p), tag + b"s%d" % i))
    inbox = nc.new_inbox()
    acks = await nc.subscribe(inbox + ".*")
    for i in range(100):
        await nc.publish(msg_subject(mid, "critical"), tag + b"c%d" % i, reply=f"{inbox}.{i}")
    await nc.flush()
    for _ in range(100):
        m = await acks.next_msg(timeout=5)
        i = int(m.subject.rsplit(".", 1)[1])
        sent.append((0, json.loads(m.data)["msg_id"], tag + b"c%d" % i))
    await acks.unsubscribe()
    sent.append((2, await send(nc, mid, tag + b"tail"), tag + b"tail"))
    return sent


def _priority_order(sent: list[tuple[int, int, bytes]]) -> list[tuple[int, bytes]]:
    return [(mid_, data) for _, mid_, data in sorted(sent, key=lambda t: (t[0], t[1]))]


async def test_replay_order_holds_across_a_restart_and_pipelined_bursts(fresh_server: RobustMQ) -> None:
    """A replay reads each priority only up to that priority's last message, from an index the sends
    keep (a mailbox created since the start) or one scan builds (a mailbox from before a restart).
    Either way the order must be exact."""
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    old = await create(nc, ttl=3600)
    sent_old = await _mixed_sends(nc, old, b"a")
    await nc.close()

    fresh_server.restart()

    nc = await connect(fresh_server.nats_url)
    sent_old += await _mixed_sends(nc, old, b"b")
    new = await create(nc, ttl=3600)
    sent_new = await _mixed_sends(nc, new, b"n")
    for mid, sent in ((old, sent_old), (new, sent_new), (new, sent_new)):
        got = await collect(nc, msg_subject(mid, "*"), n=len(sent))
        assert [(msg_id(m), m.data) for m in got] == _priority_order(sent)
    sent_new += await _mixed_sends(nc, new, b"m")  # after a replay built on the index
    got = await collect(nc, msg_subject(new, "*"), n=len(sent_new))
    assert [(msg_id(m), m.data) for m in got] == _priority_order(sent_new)
    await nc.close()
