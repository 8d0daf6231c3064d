"""Third audit of upstream's FETCH/ACK path (SPEC §4b) with stock clients, as a stranger drives it:
group leases when a member's connection closes, the number of groups a mailbox may hold, ACKs from
the "wrong" member, a member that never acks, and long polls that time out. Tests marked *before*
failed on the code before their fix; the others pin behaviour that was checked and found right."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from procs import RobustMQ

from .helpers import CREATE, connect, create, request_json, unique_name, up_error, up_ok

MSG = "$mq9.AI.MSG."


async def up_create(nc: Any, ttl: int = 120) -> str:
    name = unique_name("fl")
    up_ok(await request_json(nc, CREATE, {"name": name, "ttl": ttl}))
    return name


async def up_send(nc: Any, addr: str, payload: bytes = b"x") -> int:
    return int(up_ok(await request_json(nc, f"{MSG}SEND.{addr}", payload))["msg_id"])


async def fetch(nc: Any, addr: str, timeout: float = 8.0, **body: Any) -> list[dict[str, Any]]:
    return list(up_ok(await request_json(nc, f"{MSG}FETCH.{addr}", body, timeout=timeout))["messages"])


async def ack(nc: Any, addr: str, group: str, msg_id: int) -> dict[str, Any]:
    return await request_json(nc, f"{MSG}ACK.{addr}", {"group_name": group, "mail_address": addr,
                                                       "msg_id": msg_id})


def ids(msgs: list[dict[str, Any]]) -> list[int]:
    return [m["msg_id"] for m in msgs]


NOW = {"max_wait_ms": 0}


# ------------------------------------------------------------------ a lease holder's connection closes

async def test_closing_a_lease_holder_wakes_a_waiting_member(server) -> None:
    """*before*: member B long-polling (max_wait_ms 5000) while member A holds the group's only
    messages got them only when its wait ended (5 s), although A's connection closing ended A's
    leases at once."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(b)
    sent = [await up_send(b, addr, b"job%d" % i) for i in range(3)]
    assert ids(await fetch(a, addr, group_name="g", deliver="earliest", config=NOW)) == sent
    waiting = asyncio.create_task(fetch(b, addr, group_name="g", config={"max_wait_ms": 5000}))
    await asyncio.sleep(0.3)  # B is waiting: everything is leased to A
    assert not waiting.done()
    t0 = time.monotonic()
    await a.close()
    got = await waiting
    assert ids(got) == sent
    assert time.monotonic() - t0 < 2.0
    for i in sent:
        assert await ack(b, addr, "g", i) == {"error": ""}
    assert await fetch(b, addr, group_name="g", config=NOW) == []
    await b.close()


async def test_closing_wakes_only_what_it_frees(server) -> None:
    """A member of another group, or of the same group waiting while the closing connection held
    nothing there, is not handed anything by the close: it keeps waiting for a message."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(b)
    sent = await up_send(b, addr, b"one")
    assert ids(await fetch(a, addr, group_name="g1", deliver="earliest", config=NOW)) == [sent]
    assert ids(await fetch(b, addr, group_name="g2", deliver="earliest", config=NOW)) == [sent]
    up_ok(await ack(b, addr, "g2", sent))
    other_group = asyncio.create_task(fetch(b, addr, group_name="g2", config={"max_wait_ms": 1500}))
    await asyncio.sleep(0.2)
    await a.close()
    await asyncio.sleep(0.3)
    assert not other_group.done()  # g2 owes nothing new: still waiting
    later = await up_send(b, addr, b"two")
    assert ids(await other_group) == [later]
    await b.close()


async def test_an_mqtt_lease_holder_closing_wakes_a_nats_member() -> None:
    """MQTT 5 clients can FETCH too (a PUBLISH with a Response Topic): when such a client's
    connection closes, its leases end and a NATS member waiting in the group is woken at once."""
    srv = RobustMQ(mqtt=True).start()
    try:
        nc = await connect(srv.nats_url)
        mid = await create(nc, ttl=120)  # a `mail-…` id: no dots, so one MQTT topic level
        sent = [await up_send(nc, mid, b"m%d" % i) for i in range(2)]
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "resp/fetch"
        async with aiomqtt.Client("127.0.0.1", srv.mqtt_port, identifier="fetcher",
                                  protocol=aiomqtt.ProtocolVersion.V5) as c:
            await c.subscribe("resp/fetch", qos=1)
            await c.publish(f"$mq9/AI/MSG/FETCH/{mid}", b'{"group_name":"g","deliver":"earliest",'
                            b'"config":{"max_wait_ms":0}}', qos=1, properties=props)
            async with asyncio.timeout(5):
                async for m in c.messages:
                    assert b'"msg_id":0' in bytes(m.payload)  # type: ignore[arg-type]
                    break
            waiting = asyncio.create_task(fetch(nc, mid, group_name="g", config={"max_wait_ms": 5000}))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            t0 = time.monotonic()
        got = await waiting  # the MQTT client disconnected as the `async with` ended
        assert ids(got) == sent
        assert time.monotonic() - t0 < 2.0
        await nc.close()
    finally:
        srv.cleanup()


# ------------------------------------------------------------------ how many groups a mailbox holds

MAX_GROUPS = 1000  # upstream.MAX_GROUPS_PER_MAILBOX, as docs/mq9.md states it


async def _make_groups(nc: Any, addr: str, names: list[str]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*[request_json(nc, f"{MSG}FETCH.{addr}",
                                                    {"group_name": n, "config": NOW}, timeout=8)
                                       for n in names]))


async def test_fetch_groups_per_mailbox_are_bounded(fresh_server: RobustMQ) -> None:
    """*before*: every new group name a FETCH named added persisted state to the mailbox, without
    limit (1,500 groups in 0.2 s). Now a mailbox holds at most 1,000 groups: a FETCH naming one
    more gets a clear error, existing groups and other mailboxes carry on, and the count holds
    across a restart."""
    from robustmq.frontends.mq9.upstream import MAX_GROUPS_PER_MAILBOX
    assert MAX_GROUPS_PER_MAILBOX == MAX_GROUPS
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    addr = await up_create(nc, ttl=600)
    replies = await _make_groups(nc, addr, [f"w{i}" for i in range(MAX_GROUPS)])
    assert all(r == {"error": "", "messages": []} for r in replies), \
        [r for r in replies if r.get("error")][:3]
    extra = await request_json(nc, f"{MSG}FETCH.{addr}", {"group_name": "one-more", "config": NOW})
    up_error(extra, "1000", "group", addr)
    # an ACK naming an unknown group creates nothing and is refused as before
    up_error(await ack(nc, addr, "one-more", 0), "never fetched")
    # existing groups work; stateless FETCH is not a group
    sent = await up_send(nc, addr, b"still")
    assert ids(await fetch(nc, addr, group_name="w7", config=NOW)) == [sent]
    assert await fetch(nc, addr, config=NOW) == []
    other = await up_create(nc)
    assert await fetch(nc, other, group_name="one-more", config=NOW) == []
    await nc.close()
    fresh_server.restart()
    nc = await connect(fresh_server.nats_url)
    up_error(await request_json(nc, f"{MSG}FETCH.{addr}", {"group_name": "again", "config": NOW}),
             "1000", "group")
    assert ids(await fetch(nc, addr, group_name="w999", config=NOW)) == [sent]
    await nc.close()
    assert "Traceback" not in fresh_server.log_text()


# ------------------------------------------------------------------ checked and found right

async def test_an_ack_is_the_groups_whoever_sends_it(server) -> None:
    """ACK names a group, not a member (upstream's body has no member identity): a member's ACK of
    a delivery leased to another member settles it for the group, and the holder's own ACK after
    it is answered as an ACK repeated."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(a)
    sent = await up_send(a, addr)
    assert ids(await fetch(a, addr, group_name="g", deliver="earliest", config=NOW)) == [sent]
    assert await fetch(b, addr, group_name="g", config=NOW) == []  # leased to a
    assert await ack(b, addr, "g", sent) == {"error": ""}
    assert await ack(a, addr, "g", sent) == {"error": ""}
    assert await fetch(a, addr, group_name="g", config=NOW) == []
    await a.close()
    await b.close()


async def test_a_late_ack_after_the_lease_ran_out_and_another_member_got_it(server) -> None:
    """A's lease runs out, B gets the message; A's late ACK and then B's are both accepted (the
    message was processed, at least once), and nobody gets it again."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(a)
    sent = await up_send(a, addr)
    cfg = {"max_wait_ms": 0, "ack_wait_ms": 100}
    assert ids(await fetch(a, addr, group_name="g", deliver="earliest", config=cfg)) == [sent]
    assert ids(await fetch(b, addr, group_name="g", config={"max_wait_ms": 2000})) == [sent]
    assert await ack(a, addr, "g", sent) == {"error": ""}
    assert await ack(b, addr, "g", sent) == {"error": ""}
    assert await fetch(a, addr, group_name="g", config=NOW) == []
    assert await fetch(b, addr, group_name="g", config=NOW) == []
    await a.close()
    await b.close()


async def test_a_thousand_unacked_deliveries_go_to_another_member_when_their_lease_ends(server) -> None:
    """A member fetches 1,000 messages (ack_wait_ms 200) and never acks; another member waiting
    in the group gets all 1,000 about 200 ms later."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(a)
    await asyncio.gather(*[request_json(a, f"{MSG}SEND.{addr}", b"t%d" % i, timeout=8)
                           for i in range(1000)])
    got = await fetch(a, addr, group_name="g", deliver="earliest",
                      config={"num_msgs": 1000, "max_wait_ms": 0, "ack_wait_ms": 200})
    assert len(got) == 1000
    t0 = time.monotonic()
    again = await fetch(b, addr, group_name="g", config={"num_msgs": 1000, "max_wait_ms": 3000})
    took = time.monotonic() - t0
    assert sorted(ids(again)) == sorted(ids(got))
    assert 0.1 < took < 1.5, took
    await a.close()
    await b.close()


# ------------------------------------------------------------------ long polls that time out

async def test_long_polls_that_time_out_leave_nothing_behind(tmp_path: Any) -> None:
    """*before*: each FETCH long poll that timed out on an idle mailbox left its future in the
    stream's waiter list until the next message came, so a consumer polling an idle mailbox grew
    the broker's memory without bound (and pinned the stream in the log's cache)."""
    from robustmq.core_log import SegmentLog, Store
    from robustmq.frontends.mq9.mailboxes import CreateRequest, MailboxRegistry
    from robustmq.frontends.mq9.upstream import Upstream

    log = SegmentLog(Store(str(tmp_path)))
    try:
        reg = MailboxRegistry(log, 3600, 86400)
        mb = reg.create(CreateRequest(ttl=3600))[0]
        up = Upstream(log, reg)

        class Origin:
            closed = False

        for body in (b'{"config":{"max_wait_ms":1}}', b'{"group_name":"g","config":{"max_wait_ms":1}}'):
            for _ in range(20):
                req = up.parse_fetch(body)
                assert await up.fetch(mb.mail_id, req, Origin()) == b'{"error":"","messages":[]}'
        stream = log.stream(mb.stream_name)
        assert len(stream.waiters) == 0
    finally:
        log.close()


@pytest.mark.parametrize("closed_first", [True, False])
async def test_a_closed_connections_long_poll_hands_nothing_out(server, closed_first: bool) -> None:
    """A FETCH long-polling for a connection that closes takes nothing from its group: the next
    message goes to a live member (at once, with no lease on the dead one)."""
    a, b = await connect(server.nats_url), await connect(server.nats_url)
    addr = await up_create(b)
    await fetch(a, addr, group_name="g", config=NOW)  # the group starts at the (empty) end
    dead = asyncio.create_task(fetch(a, addr, timeout=3, group_name="g", config={"max_wait_ms": 2000}))
    live = None if closed_first else \
        asyncio.create_task(fetch(b, addr, group_name="g", config={"max_wait_ms": 3000}))
    await asyncio.sleep(0.2)
    await a.close()
    await asyncio.sleep(0.2)
    sent = await up_send(b, addr, b"for the living")
    got = await live if live is not None else await fetch(b, addr, group_name="g", config=NOW)
    assert ids(got) == [sent]
    dead.cancel()
    await asyncio.gather(dead, return_exceptions=True)
    await b.close()
