"""Stock nats-py against robustmq: every NATS feature a client library exposes."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.errors import MaxPayloadError, NoRespondersError
from procs import RobustMQ


async def connect(server, **kw):
    return await nats.connect(server.nats_url, allow_reconnect=False, **kw)


async def test_pub_sub_and_wildcards(server) -> None:
    nc = await connect(server)
    star = await nc.subscribe("orders.*.created")
    full = await nc.subscribe("orders.>")
    exact = await nc.subscribe("orders.eu.created")
    await nc.publish("orders.eu.created", b"1")
    await nc.publish("orders.us.shipped.late", b"2")
    await nc.flush()
    assert (await star.next_msg(1)).data == b"1"
    assert [(await full.next_msg(1)).data for _ in range(2)] == [b"1", b"2"]
    assert (await exact.next_msg(1)).subject == "orders.eu.created"
    with pytest.raises(nats.errors.TimeoutError):
        await star.next_msg(0.1)
    await nc.close()


async def test_queue_group_delivers_each_message_once(server) -> None:
    nc = await connect(server)
    got: dict[str, list[bytes]] = {"a": [], "b": [], "c": [], "plain": []}

    def cb(name):
        async def handler(msg):
            got[name].append(msg.data)
        return handler

    for name in ("a", "b", "c"):
        await nc.subscribe("work", queue="workers", cb=cb(name))
    await nc.subscribe("work", cb=cb("plain"))
    pub = await connect(server)
    for i in range(300):
        await pub.publish("work", b"%d" % i)
    await pub.flush()
    for _ in range(100):
        if sum(len(got[k]) for k in "abc") == 300 and len(got["plain"]) == 300:
            break
        await asyncio.sleep(0.02)
    members = got["a"] + got["b"] + got["c"]
    assert sorted(members) == sorted(b"%d" % i for i in range(300))
    assert len(got["plain"]) == 300
    assert sum(1 for k in "abc" if got[k]) >= 2  # spread over members
    await pub.close()
    await nc.close()


async def test_request_reply_and_headers(server) -> None:
    nc = await connect(server)

    async def echo(msg):
        await nc.publish(msg.reply, msg.data.upper(), headers={"X-Echo": (msg.headers or {}).get("X-In", "")})

    await nc.subscribe("svc.echo", cb=echo)
    r = await nc.request("svc.echo", b"hello", timeout=2, headers={"X-In": "42"})
    assert r.data == b"HELLO"
    assert r.headers == {"X-Echo": "42"}
    await nc.close()


async def test_no_responders(server) -> None:
    nc = await connect(server)
    with pytest.raises(NoRespondersError):
        await nc.request("nobody.home", b"x", timeout=2)
    await nc.close()


async def test_echo_false(server) -> None:
    nc = await connect(server, no_echo=True)
    other = await connect(server)
    sub = await nc.subscribe("echo.test")
    await nc.flush()
    await nc.publish("echo.test", b"mine")
    await other.publish("echo.test", b"theirs")
    await nc.flush()
    await other.flush()
    assert (await sub.next_msg(1)).data == b"theirs"
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(0.2)
    await other.close()
    await nc.close()


async def test_auto_unsubscribe(server) -> None:
    nc = await connect(server)
    sub = await nc.subscribe("auto", max_msgs=3)
    for i in range(6):
        await nc.publish("auto", b"%d" % i)
    await nc.flush()
    await asyncio.sleep(0.1)
    got = []
    while True:
        try:
            got.append((await sub.next_msg(0.2)).data)
        except (nats.errors.TimeoutError, nats.errors.BadSubscriptionError):
            break
    assert got == [b"0", b"1", b"2"]
    await nc.close()


async def test_unsubscribe_limit_on_server(server) -> None:
    nc = await connect(server)
    sub = await nc.subscribe("lim")
    await sub.unsubscribe(limit=2)
    for i in range(5):
        await nc.publish("lim", b"%d" % i)
    await nc.flush()
    await asyncio.sleep(0.1)
    assert sub.delivered == 2
    await nc.close()


async def test_verbose_and_pedantic_connections_work(server, nats_server) -> None:
    nc = await connect(server, verbose=True, pedantic=True)
    sub = await nc.subscribe("v.x")
    await nc.publish("v.x", b"ok")
    await nc.flush()
    assert (await sub.next_msg(1)).data == b"ok"
    await nc.close()

    async def invalid_publish(url: str) -> bool:
        c = await nats.connect(url, allow_reconnect=False, verbose=True, pedantic=True)
        await c.publish("bad..subject", b"x")
        await c.flush()
        await asyncio.sleep(0.2)
        still = c.is_connected
        await c.close()
        return still

    # whatever nats-py does with the -ERR 'Invalid Publish Subject', it must do it with both servers
    assert await invalid_publish(server.nats_url) == await invalid_publish(nats_server.url)


async def test_max_payload_is_announced_and_enforced_client_side(server) -> None:
    nc = await connect(server)
    assert nc.max_payload == 1 << 20
    with pytest.raises(MaxPayloadError):
        await nc.publish("big", b"x" * ((1 << 20) + 1))
    await nc.close()


async def test_one_mib_and_binary_payloads(server) -> None:
    nc = await connect(server)
    sub = await nc.subscribe("bin")
    big = bytes(range(256)) * 4096
    tricky = b"\r\nMSG fake 1 3\r\nabc\r\n\x00\xff"
    await nc.publish("bin", big)
    await nc.publish("bin", tricky)
    await nc.flush()
    assert (await sub.next_msg(2)).data == big
    assert (await sub.next_msg(2)).data == tricky
    await nc.close()


async def test_drain(server) -> None:
    nc = await connect(server)
    got = []

    async def cb(msg):
        got.append(msg.data)

    await nc.subscribe("drain.me", cb=cb)
    pub = await connect(server)
    for i in range(50):
        await pub.publish("drain.me", b"%d" % i)
    await pub.flush()
    await asyncio.sleep(0.1)
    await nc.drain()
    assert len(got) == 50
    await pub.close()


@pytest.mark.parametrize("args,good,bad", [
    (["--user", "u", "--password", "p"], {"user": "u", "password": "p"}, {"user": "u", "password": "x"}),
    (["--token", "t0k"], {"token": "t0k"}, {"token": "nope"}),
])
async def test_auth(args, good, bad) -> None:
    srv = RobustMQ(extra_args=args).start()
    try:
        nc = await nats.connect(srv.nats_url, allow_reconnect=False, **good)
        sub = await nc.subscribe("x")
        await nc.publish("x", b"1")
        assert (await sub.next_msg(1)).data == b"1"
        await nc.close()
        with pytest.raises(Exception) as exc:
            await nats.connect(srv.nats_url, allow_reconnect=False, max_reconnect_attempts=0, **bad)
        assert "authorization violation" in str(exc.value).lower()
    finally:
        srv.cleanup()


async def test_subject_with_an_empty_token_reaches_no_wildcard(server) -> None:
    """nats-py (not pedantic) publishing to `orders.` (a typo) or `orders..x`: nats-server delivers
    them to nobody; `orders.>` and `orders.*` must not get them here either."""
    nc = await connect(server)
    got: list[str] = []

    async def cb(msg) -> None:
        got.append(msg.subject)

    await nc.subscribe("orders.>", cb=cb)
    await nc.subscribe("orders.*", cb=cb)
    await nc.subscribe(">", cb=cb)
    await nc.flush()
    for subject in ("orders.", "orders..x", ".orders"):
        await nc.publish(subject, b"typo")
    await nc.publish("orders.ok", b"fine")
    await nc.flush()
    await asyncio.sleep(0.1)
    assert got == ["orders.ok"] * 3, got
    await nc.close()


async def test_reserved_reply_subject_is_refused_and_connection_kept(server) -> None:
    nc = await connect(server)
    errs: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errs.append(e)

    nc2 = await connect(server, error_cb=on_error)
    sub = await nc.subscribe("svc")
    await nc.flush()
    await nc2.publish("svc", b"x", reply="_R_.abc")
    await nc2.publish("svc", b"y", reply="ok.1")
    await nc2.flush()
    msg = await sub.next_msg(1)
    assert (msg.data, msg.reply) == (b"y", "ok.1")  # the first was not delivered
    assert any("permissions violation for publish with reply" in str(e).lower() for e in errs), errs
    assert nc2.is_connected
    await nc.close()
    await nc2.close()
