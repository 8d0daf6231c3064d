"""SPEC §4 "Send" and "Subscribe": store-first sends, priorities, replay then live with no gap and no
duplicate, filters per priority, headers, payloads, plain MSG, wildcard refusal."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from .helpers import (
    PRIO_RANK,
    RawClient,
    assert_error,
    barrier,
    collect,
    connect,
    create,
    create_public,
    is_mailbox_subject,
    list_mailbox,
    msg_id,
    msg_subject,
    now_ms,
    perm_errors,
    priority,
    request_json,
    send,
    subscribe,
    unique_name,
)

# --------------------------------------------------------------------------------------------- send


async def test_send_as_request_replies_distinct_integer_msg_ids(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    ids = [await send(nc, mid, b"m%d" % i, p) for i, p in
           enumerate([None, "urgent", "critical", "normal", None, "critical"])]
    assert len(set(ids)) == len(ids)
    await nc.close()


async def test_send_to_missing_mailbox_is_an_error(server) -> None:
    nc = await connect(server.nats_url)
    missing = "mail-" + "a" * 16 + "-" + "b" * 16
    for prio in (None, "urgent", "critical", "normal"):
        reply = await request_json(nc, msg_subject(missing, prio), b"x")
        assert reply == {"error": f"mailbox {missing} does not exist"}, reply
    reply = await request_json(nc, msg_subject("no.such.public"), b"x")
    assert reply == {"error": "mailbox no.such.public does not exist"}, reply
    await nc.close()


async def test_store_first_the_reply_means_listed_and_replayable(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    for i in range(20):
        mid_i = await send(nc, mid, b"p%d" % i)
        listed = await list_mailbox(nc, mid)
        assert listed[-1]["msg_id"] == mid_i and len(listed) == i + 1
    got = await collect(nc, msg_subject(mid, "*"), n=20)
    assert [m.data for m in got] == [b"p%d" % i for i in range(20)]
    await nc.close()


async def test_fire_and_forget_publish_is_stored_and_delivered(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    live = await subscribe(nc, msg_subject(mid, "*"))
    for i in range(50):
        await nc.publish(msg_subject(mid, random.choice([None, "urgent", "critical"])), b"f%d" % i)
    await barrier(nc)
    await live.wait_for(50)
    assert sorted(live.payloads) == sorted(b"f%d" % i for i in range(50))
    assert len(await list_mailbox(nc, mid)) == 50
    await nc.close()


# ------------------------------------------------------------------------------------ replay order


async def test_replay_is_critical_then_urgent_then_normal_fifo(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    plan = ["normal", "urgent", None, "critical", "urgent", "normal", "critical", None, "urgent", "critical"]
    sent = []
    for i, p in enumerate(plan):
        sent.append((p or "normal", await send(nc, mid, b"%d" % i, p), b"%d" % i))
    expected = sorted(sent, key=lambda t: PRIO_RANK[t[0]])  # stable: FIFO within a priority
    got = await collect(nc, msg_subject(mid, "*"), n=len(plan))
    assert [(priority(m), msg_id(m), m.data) for m in got] == expected
    # LIST reports the same delivery order
    assert [(e["priority"], e["msg_id"]) for e in await list_mailbox(nc, mid)] == \
        [(p, i) for p, i, _ in expected]
    await nc.close()


async def test_priority_order_under_concurrent_publishers(server) -> None:
    url = server.nats_url
    owner = await connect(url)
    mid = await create(owner)
    pubs = [await connect(url) for _ in range(5)]
    sent: dict[int, tuple[str, int, int]] = {}

    async def publisher(k: int, nc) -> None:
        rnd = random.Random(k)
        for seq in range(60):
            p = rnd.choice(["critical", "urgent", "normal", None])
            i = await send(nc, mid, b"%d:%d" % (k, seq), p)
            sent[i] = (p or "normal", k, seq)

    await asyncio.gather(*(publisher(k, nc) for k, nc in enumerate(pubs)))
    assert len(sent) == 300, "msg_ids must be unique within the mailbox"
    got = await collect(owner, msg_subject(mid, "*"), n=300, timeout=10)
    assert len(got) == 300
    assert len({msg_id(m) for m in got}) == 300
    ranks = [PRIO_RANK[priority(m)] for m in got]
    assert ranks == sorted(ranks), "replay must be critical, then urgent, then normal"
    last_seq: dict[tuple[str, int], int] = {}
    for m in got:
        p, k, seq = sent[msg_id(m)]
        assert priority(m) == p and m.data == b"%d:%d" % (k, seq)
        assert last_seq.get((p, k), -1) < seq, "FIFO within a priority (per publisher order) violated"
        last_seq[(p, k)] = seq
    listed = await list_mailbox(owner, mid)
    assert [e["msg_id"] for e in listed] == [msg_id(m) for m in got], "LIST order == delivery order"
    for nc in pubs:
        await nc.close()
    await owner.close()


async def test_subject_filters_pick_one_priority(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    ids = {}
    for p in ("critical", "urgent", None, "normal", "urgent", "critical"):
        ids.setdefault(p or "normal", []).append(await send(nc, mid, (p or "bare").encode(), p))
    normal = await collect(nc, msg_subject(mid), n=2)
    assert [msg_id(m) for m in normal] == ids["normal"] and {priority(m) for m in normal} == {"normal"}
    urgent = await collect(nc, msg_subject(mid, "urgent"), n=2)
    assert [msg_id(m) for m in urgent] == ids["urgent"] and {priority(m) for m in urgent} == {"urgent"}
    crit = await collect(nc, msg_subject(mid, "critical"), n=2)
    assert [msg_id(m) for m in crit] == ids["critical"] and {priority(m) for m in crit} == {"critical"}
    # live: each filter only gets its own level
    inboxes = {p: await subscribe(nc, msg_subject(mid, None if p == "normal" else p))
               for p in ("normal", "urgent", "critical")}
    for inbox in inboxes.values():
        await inbox.wait_for(2)
    for p in ("critical", "urgent", "normal"):
        await send(nc, mid, b"live-" + p.encode(), p)
    await asyncio.sleep(0.4)
    for p, inbox in inboxes.items():
        assert [priority(m) for m in inbox.msgs] == [p, p, p]
        assert inbox.msgs[-1].data == b"live-" + p.encode()
    await nc.close()


# ------------------------------------------------------------------------- delivered message shape


async def test_delivered_headers_subject_and_publisher_headers(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    before = now_ms()
    i_norm = await send(nc, mid, b"n", None, headers={"x-trace": "t-1", "Content-Type": "text/plain"})
    i_expl = await send(nc, mid, b"e", "normal")
    i_urg = await send(nc, mid, b"u", "urgent", headers={"x-trace": "t-2"})
    i_crit = await send(nc, mid, b"c", "critical")
    after = now_ms()
    got = {msg_id(m): m for m in await collect(nc, msg_subject(mid, "*"), n=4)}
    assert set(got) == {i_norm, i_expl, i_urg, i_crit}
    expect = {
        i_norm: (msg_subject(mid), "normal", b"n"),
        i_expl: (msg_subject(mid, "normal"), "normal", b"e"),
        i_urg: (msg_subject(mid, "urgent"), "urgent", b"u"),
        i_crit: (msg_subject(mid, "critical"), "critical", b"c"),
    }
    listed = {e["msg_id"]: e for e in await list_mailbox(nc, mid)}
    for i, (subject, prio, data) in expect.items():
        m = got[i]
        assert m.subject == subject
        assert m.data == data
        assert m.headers["mq9-msg-id"] == str(i)
        assert m.headers["mq9-priority"] == prio
        ts = int(m.headers["mq9-ts"])
        assert before - 1000 <= ts <= after + 1000, (ts, before, after)
        assert listed[i]["ts"] == ts and listed[i]["priority"] == prio and listed[i]["size"] == len(data)
    assert got[i_norm].headers["x-trace"] == "t-1"
    assert got[i_norm].headers["Content-Type"] == "text/plain"
    assert got[i_urg].headers["x-trace"] == "t-2"
    assert "x-trace" not in got[i_crit].headers
    await nc.close()


async def test_binary_and_empty_payloads_are_untouched(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    payloads = [bytes(range(256)) * 4, b"\r\nMSG x 1 2\r\n\x00\xff", b"", b"\x00", "ünïcødé ✓".encode()]
    for p in payloads:
        await send(nc, mid, p)
    got = await collect(nc, msg_subject(mid, "*"), n=len(payloads))
    assert [m.data for m in got] == payloads
    assert [e["size"] for e in await list_mailbox(nc, mid)] == [len(p) for p in payloads]
    await nc.close()


async def test_one_mebibyte_payload(server) -> None:
    """nats-py checks payload <= max_payload (1 MiB) but the server checks the whole HPUB (headers +
    payload), so with a publisher header we stay 1 KiB under the limit."""
    nc = await connect(server.nats_url)
    assert nc.max_payload == 1 << 20
    mid = await create(nc)
    big = random.Random(7).randbytes((1 << 20) - 1024)
    i = await send(nc, mid, big, "urgent", headers={"x-kind": "blob"}, timeout=10)
    live_and_replay = await subscribe(nc, msg_subject(mid, "*"))
    await live_and_replay.wait_for(1, timeout=10)
    m = live_and_replay.msgs[0]
    assert msg_id(m) == i and m.data == big and m.headers["x-kind"] == "blob"
    j = await send(nc, mid, big[::-1], timeout=10)
    await live_and_replay.wait_for(2, timeout=10)
    assert msg_id(live_and_replay.msgs[1]) == j and live_and_replay.msgs[1].data == big[::-1]
    assert [e["size"] for e in await list_mailbox(nc, mid)] == [len(big), len(big)]
    await nc.close()


# ----------------------------------------------------------------------------- replay and live


async def test_live_delivery_and_every_subscribe_replays_again(server) -> None:
    nc = await connect(server.nats_url)
    other = await connect(server.nats_url)
    mid = await create(nc)
    first = await subscribe(nc, msg_subject(mid, "*"))
    await asyncio.sleep(0.1)
    assert first.msgs == []
    a = await send(other, mid, b"a")
    await first.wait_for(1)
    assert first.ids == [a]
    b = await send(other, mid, b"b", "critical")
    await first.wait_for(2)
    assert first.ids == [a, b]  # live: arrival order
    # a second subscription on the same connection and one on another connection both replay
    second = await subscribe(nc, msg_subject(mid, "*"))
    third = await subscribe(other, msg_subject(mid, "*"))
    for inbox in (second, third):
        await inbox.wait_for(2)
        assert inbox.ids == [b, a]  # replay: critical first
    c = await send(other, mid, b"c")
    for inbox in (first, second, third):
        await inbox.wait_for(3)
        assert inbox.ids[-1] == c
    await asyncio.sleep(0.3)
    assert [len(x.msgs) for x in (first, second, third)] == [3, 3, 3]
    # no read/unread state: a fresh subscribe later still gets everything
    again = await collect(other, msg_subject(mid, "*"), n=3)
    assert [msg_id(m) for m in again] == [b, a, c]
    await other.close()
    await nc.close()


async def test_unsubscribe_stops_delivery(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    inbox = await subscribe(nc, msg_subject(mid, "*"))
    await send(nc, mid, b"1")
    await inbox.wait_for(1)
    await inbox.sub.unsubscribe()
    await send(nc, mid, b"2")
    await asyncio.sleep(0.3)
    assert inbox.payloads == [b"1"]
    await nc.close()


@pytest.mark.timeout(60)
async def test_switch_from_replay_to_live_has_no_gap_and_no_duplicate(server) -> None:
    """A publisher keeps sending while subscribers attach mid-stream (during their replay): each one
    gets every message exactly once, FIFO (one priority, one publisher)."""
    url = server.nats_url
    owner = await connect(url)
    mid = await create(owner)
    pub = await connect(url)
    prefill = 3000
    for i in range(prefill):
        await pub.publish(msg_subject(mid), b"%06d" % i)
    await barrier(pub)
    await send(pub, mid, b"%06d" % prefill)  # a request: everything before it is stored too
    stop = asyncio.Event()
    sent = prefill + 1

    async def publisher() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 20_000:  # keeps going until every subscriber attached
            for _ in range(10):
                await pub.publish(msg_subject(mid), b"%06d" % sent)
                sent += 1
            await pub.flush(timeout=5)
            await asyncio.sleep(0.005)
        await barrier(pub)

    subs = [await connect(url) for _ in range(4)]
    ptask = asyncio.create_task(publisher())
    inboxes = []
    for k, (delay, subj) in enumerate([(0.0, msg_subject(mid, "*")), (0.05, msg_subject(mid)),
                                       (0.15, msg_subject(mid, "*")), (0.3, msg_subject(mid))]):
        await asyncio.sleep(delay)
        inboxes.append(await subscribe(subs[k], subj))
    await asyncio.sleep(0.3)
    # on a loaded machine the publisher is slower: let it go on (bounded) until it has sent enough
    # for the subscribers' replays to have overlapped it, instead of failing the check below
    deadline = time.monotonic() + 10
    while sent <= prefill + 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(ptask, 30)
    total = sent
    assert total > prefill + 200, "the publisher must still be running while subscribers attach"
    expected = [b"%06d" % i for i in range(total)]
    for k, inbox in enumerate(inboxes):
        await inbox.wait_for(total, timeout=20)
        await inbox.settle(0.3)
        got = inbox.payloads
        dups = len(got) - len(set(got))
        missing = sorted(set(expected) - set(got))
        assert dups == 0 and not missing, f"subscriber {k}: {dups} duplicates, missing {missing[:5]}"
        assert got == expected, f"subscriber {k}: FIFO order broken"
        assert len(set(inbox.ids)) == total
    for nc in subs:
        await nc.close()
    await pub.close()
    await owner.close()


@pytest.mark.timeout(60)
async def test_switch_with_mixed_priorities_delivers_each_exactly_once(server) -> None:
    url = server.nats_url
    owner = await connect(url)
    mid = await create(owner)
    pub = await connect(url)
    rnd = random.Random(3)
    sent: list[bytes] = []

    async def put(i: int) -> None:
        await pub.publish(msg_subject(mid, rnd.choice(["critical", "urgent", None, "normal"])), b"%d" % i)
        sent.append(b"%d" % i)

    for i in range(1500):
        await put(i)
    await barrier(pub)
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set() and len(sent) < 20_000:
            for _ in range(10):
                await put(len(sent))
            await pub.flush(timeout=5)
            await asyncio.sleep(0.005)
        await barrier(pub)

    sub = await connect(url)
    ptask = asyncio.create_task(publisher())
    await asyncio.sleep(0.05)
    inbox = await subscribe(sub, msg_subject(mid, "*"))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(ptask, 30)
    total = len(sent)
    assert total > 1700
    await inbox.wait_for(total, timeout=20)
    await inbox.settle(0.3)
    got = inbox.payloads
    assert len(got) == total and set(got) == set(sent), "each message exactly once"
    assert len(set(inbox.ids)) == total
    await sub.close()
    await pub.close()
    await owner.close()


async def test_subscribe_before_public_mailbox_exists_then_live(server) -> None:
    nc = await connect(server.nats_url)
    name = unique_name("later")
    inbox = await subscribe(nc, msg_subject(name, "*"))
    await asyncio.sleep(0.1)
    await create_public(nc, name, ttl=30, desc="")
    i = await send(nc, name, b"hi", "urgent")
    await inbox.wait_for(1)
    assert inbox.ids == [i] and inbox.payloads == [b"hi"]
    await nc.close()


async def test_many_live_subscribers_each_get_every_message(server) -> None:
    url = server.nats_url
    conns = [await connect(url) for _ in range(5)]
    mid = await create(conns[0])
    inboxes = [await subscribe(c, msg_subject(mid, "*")) for c in conns]
    await barrier(conns[-1])
    ids = [await send(conns[0], mid, b"%d" % i) for i in range(30)]
    for inbox in inboxes:
        await inbox.wait_for(30)
    await asyncio.sleep(0.2)
    for inbox in inboxes:
        assert inbox.ids == ids
    for c in conns:
        await c.close()


# ---------------------------------------------------------------------------------- raw protocol


async def test_client_without_headers_gets_plain_msg_with_raw_payload(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    blob = bytes(range(256))
    await send(nc, mid, b"normal-1")
    await send(nc, mid, blob, "critical", headers={"x-h": "v"})
    raw = await RawClient.connect(server.nats_port, headers=False)
    await raw.send(f"SUB {msg_subject(mid, '*')} 7\r\n".encode())
    frames = await raw.read_until(lambda f: f[0] in ("MSG", "HMSG") and f[4] == b"normal-1", 5)
    msgs = [f for f in frames if f[0] in ("MSG", "HMSG", "ERR")]
    assert [f[0] for f in msgs] == ["MSG", "MSG"], msgs
    assert msgs[0][1] == msg_subject(mid, "critical") and msgs[0][2] == "7" and msgs[0][4] == blob
    assert msgs[1][1] == msg_subject(mid) and msgs[1][4] == b"normal-1"
    await send(nc, mid, b"live", "urgent")
    f = await raw.read_frame(5)
    assert f[0] == "MSG" and f[1] == msg_subject(mid, "urgent") and f[4] == b"live", f
    await raw.close()
    await nc.close()


async def test_client_with_headers_gets_hmsg(server) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    i = await send(nc, mid, b"payload", "urgent", headers={"x-a": "1"})
    raw = await RawClient.connect(server.nats_port, headers=True)
    await raw.send(f"SUB {msg_subject(mid, '*')} 1\r\n".encode())
    f = await raw.read_frame(5)
    assert f[0] == "HMSG" and f[1] == msg_subject(mid, "urgent"), f
    hdr, payload = f[4], f[5]
    assert payload == b"payload"
    assert hdr.startswith(b"NATS/1.0\r\n") and hdr.endswith(b"\r\n\r\n")
    lines = dict(line.split(b":", 1) for line in hdr.split(b"\r\n")[1:] if line)
    lines = {k.strip(): v.strip() for k, v in lines.items()}
    assert lines[b"mq9-msg-id"] == str(i).encode()
    assert lines[b"mq9-priority"] == b"urgent"
    assert int(lines[b"mq9-ts"]) > 1_600_000_000_000
    assert lines[b"x-a"] == b"1"
    await raw.close()
    await nc.close()


# --------------------------------------------------------------------------------------- wildcards


@pytest.mark.parametrize("subject", ["$mq9.AI.MAILBOX.MSG.*", "$mq9.AI.MAILBOX.MSG.>", "$mq9.AI.MAILBOX.MSG.#"])
async def test_wildcard_in_mail_id_position_is_refused(server, subject: str) -> None:
    nc = await connect(server.nats_url)
    mid = await create(nc)
    inbox = await subscribe(nc, subject)
    await barrier(nc)
    ok = False
    for _ in range(40):
        if perm_errors(nc):
            ok = True
            break
        await asyncio.sleep(0.05)
    assert ok, f"no permissions violation for {subject}: {nc.errors}"
    text = perm_errors(nc)[0].lower()
    assert f'subscription to "{subject.lower()}"' in text, text
    # the connection stays open and usable, and the refused subscription sees nothing
    assert nc.is_connected
    await send(nc, mid, b"secret", "critical")
    await send(nc, mid, b"secret2")
    await asyncio.sleep(0.3)
    assert inbox.msgs == []
    assert nc.is_connected
    await nc.close()


@pytest.mark.parametrize("subject", ["$mq9.AI.MAILBOX.MSG.*", "$mq9.AI.MAILBOX.MSG.>", "$mq9.AI.MAILBOX.MSG.#"])
async def test_wildcard_refusal_exact_err_text(server, subject: str) -> None:
    raw = await RawClient.connect(server.nats_port, headers=True)
    await raw.send(f"SUB {subject} 1\r\n".encode())
    f = await raw.read_frame(5)
    assert f == ("ERR", f"'Permissions Violation for Subscription to \"{subject}\"'"), f
    await raw.ping()  # still connected
    await raw.close()


@pytest.mark.parametrize("subject", [">", "$mq9.>", "$mq9.AI.>", "$mq9.AI.MAILBOX.>",
                                     "$mq9.AI.MAILBOX.MSG.*.urgent", "$mq9.AI.MAILBOX.MSG.*.*",
                                     "$mq9.*.MAILBOX.MSG.>", "*.AI.MAILBOX.MSG.>"])
async def test_broad_wildcards_never_see_mailbox_traffic(server, subject: str) -> None:
    """Accepted or refused (either is fine where the filter could match other things), but never a
    single mailbox message, whatever the priority, whether stored before or sent live."""
    watcher = await connect(server.nats_url)
    nc = await connect(server.nats_url)
    mid = await create(nc)
    name = unique_name("bw")
    await create_public(nc, name, ttl=30)
    await send(nc, mid, b"stored", "critical")
    inbox = await subscribe(watcher, subject)
    await barrier(watcher)
    for target in (mid, name):
        for p in (None, "urgent", "critical", "normal"):
            await send(nc, target, b"live", p)
            await nc.publish(msg_subject(target, p), b"live-ff")
    await barrier(nc)
    await asyncio.sleep(0.3)
    leaked = [m.subject for m in inbox.msgs
              if is_mailbox_subject(m.subject) or m.data in (b"live", b"live-ff", b"stored")]
    assert leaked == [], f"{subject} revealed mailbox traffic: {leaked[:5]}"
    assert watcher.is_connected
    if subject == ">":
        # sanity: the broad subscription itself works for ordinary subjects
        await nc.publish("plain.subject", b"visible")
        await barrier(nc)
        await asyncio.sleep(0.2)
        assert any(m.subject == "plain.subject" for m in inbox.msgs)
    await watcher.close()
    await nc.close()


async def test_exact_subscription_does_not_leak_other_mailboxes(server) -> None:
    nc = await connect(server.nats_url)
    a, b = await create(nc), await create(nc)
    await send(nc, b, b"for-b", "critical")
    inbox = await subscribe(nc, msg_subject(a, "*"))
    await send(nc, b, b"for-b-live")
    await send(nc, a, b"for-a")
    await inbox.wait_for(1)
    await asyncio.sleep(0.2)
    assert inbox.payloads == [b"for-a"]
    await nc.close()


async def test_send_reply_error_for_expired_after_subscribe(server) -> None:
    """Sanity for the error text on an id that once existed."""
    nc = await connect(server.nats_url)
    mid = await create(nc, ttl=1)
    await send(nc, mid, b"x")
    await asyncio.sleep(1.5)
    assert_error(await request_json(nc, msg_subject(mid, "urgent"), b"y"), "does not exist", mid)
    await nc.close()


async def test_a_replay_of_big_messages_is_paced_by_bytes(server) -> None:
    """80 messages of 1 MB (80 MB: under the default mailbox byte limit, over the default 64 MiB
    per-connection outbound cap): the replay pauses by bytes as well as by count, so the
    subscriber reads them all instead of being cut as a slow consumer."""
    nc = await connect(server.nats_url)
    mb = await create(nc, ttl=60)
    big = b"b" * 1_000_000
    for i in range(80):
        await send(nc, mb, big[:-3] + b"%03d" % i)
    reader = await connect(server.nats_url)
    inbox = await subscribe(reader, msg_subject(mb, "*"))
    await inbox.wait_for(80, timeout=60)
    assert [m.data[-3:] for m in inbox.msgs] == [b"%03d" % i for i in range(80)]
    assert not reader.nc.is_closed
    await reader.close()
    await nc.close()


async def test_nothing_arrives_after_unsubscribe_even_mid_replay(server) -> None:
    """Raw protocol: UNSUB while the replay of 20,000 messages is running, and `UNSUB <sid> 2`
    before a replay: no MSG for that sid after the UNSUB's PONG, and at most 2 for the limit."""
    nc = await connect(server.nats_url)
    mb = await create(nc, ttl=60)
    for i in range(0, 20_000, 1000):
        await asyncio.gather(*(nc.nc.publish(msg_subject(mb), b"m%d" % j) for j in range(i, i + 1000)))
    await barrier(nc)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.nats_port)
    await reader.readline()
    subject = msg_subject(mb, "*").encode()
    writer.write(b'CONNECT {"verbose":false}\r\nSUB %s 1\r\nPING\r\n' % subject)
    buf = b""
    while buf.count(b"MSG ") < 100:  # the replay is under way
        buf += await asyncio.wait_for(reader.read(1 << 16), 10)
    writer.write(b"UNSUB 1\r\nPING\r\n")
    while b"PONG\r\n" not in buf[buf.index(b"PONG\r\n") + 6:]:
        buf += await asyncio.wait_for(reader.read(1 << 16), 10)
    after = buf[buf.rindex(b"PONG\r\n"):]
    for _ in range(5):
        try:
            after += await asyncio.wait_for(reader.read(1 << 16), 0.2)
        except TimeoutError:
            break
    assert b"MSG " not in after, after[:200]
    writer.write(b"SUB %s 7\r\nUNSUB 7 2\r\nPING\r\n" % subject)
    got = b""
    while True:
        try:
            got += await asyncio.wait_for(reader.read(1 << 16), 0.5)
        except TimeoutError:
            break
    assert got.count(b"MSG ") == 2, got.count(b"MSG ")
    writer.close()
    await nc.close()
