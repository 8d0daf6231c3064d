"""Soak: stock nats-py clients at full rate against a server that PINGs every second.

Three publishers each publish, as fast as they can (bounded by count and by time), a numbered
sequence to their own subject and the same sequence to one shared subject. Five subscriber
connections count every message end to end: one on an exact subject (publisher 0's), one on the
shared subject, one on the `soak.>` wildcard (everything), and a queue group of two members on the
shared subject. Every plain subscriber must get exactly each publisher's sequence, in order, no loss,
no duplicate; the queue group's two members together exactly the shared sequences, no duplicate (and
in order within each member). No client may see a disconnect, a reconnect or an error (before the
fix a full-rate publisher with server PINGs every second was cut off 1-4 times per 10 s); a raw
connection answering the server's PINGs proves they kept coming during the run. The figures are
printed at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from itertools import pairwise

import nats
import pytest
from procs import RobustMQ
from testkit import say

PUBLISHERS = 3
PER_SUBJECT = 50_000  # messages per publisher to its own subject, and as many to the shared subject
PUBLISH_SECONDS = 15.0  # publishers stop at this time even if they have not sent PER_SUBJECT
DRAIN_SECONDS = 15.0  # after the publishers' flush, how long deliveries may take to finish
SHARED = "soak.all"
PAYLOAD_SIZE = 32


@pytest.fixture
def pinging_server():
    s = RobustMQ(extra_args=["--ping-interval", "1"]).start()
    yield s
    s.cleanup()


class Recorder:
    """A subscription callback that keeps (subject, payload) in arrival order."""

    def __init__(self) -> None:
        self.msgs: list[tuple[str, bytes]] = []

    async def cb(self, msg) -> None:
        self.msgs.append((msg.subject, msg.data))


def payload(pid: int, seq: int) -> bytes:
    return (b"%d:%d:" % (pid, seq)).ljust(PAYLOAD_SIZE, b".")


def sequences(msgs: list[tuple[str, bytes]]) -> dict[tuple[str, int], list[int]]:
    """(subject, publisher) -> the sequence numbers received, in arrival order."""
    out: dict[tuple[str, int], list[int]] = defaultdict(list)
    for subject, data in msgs:
        pid, seq, _pad = data.split(b":", 2)
        out[(subject, int(pid))].append(int(seq))
    return dict(out)


async def connect(url: str, name: str, events: list[str]):
    async def disconnected() -> None:
        events.append(f"{name}: disconnected")

    async def reconnected() -> None:
        events.append(f"{name}: reconnected")

    async def error(e: Exception) -> None:
        events.append(f"{name}: error {e!r}")

    return await nats.connect(url, name=name, disconnected_cb=disconnected, reconnected_cb=reconnected,
                              error_cb=error, connect_timeout=5)


async def publish(nc, pid: int, sent: list[int], stop_at: float) -> None:
    own = f"soak.p{pid}"
    seq = 0
    while seq < PER_SUBJECT and time.monotonic() < stop_at:
        for _ in range(200):  # a burst, then let the other clients in this event loop run
            p = payload(pid, seq)
            await nc.publish(own, p)
            await nc.publish(SHARED, p)
            seq += 1
            if seq == PER_SUBJECT:
                break
        sent[pid] = seq
        await asyncio.sleep(0)
    sent[pid] = seq
    await nc.flush(timeout=30)


async def answer_server_pings(url: str, stop: asyncio.Event, deadline: float) -> int:
    """A raw connection that only answers the server's PINGs; returns how many it saw."""
    host, port = url.removeprefix("nats://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    pings = 0
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(b'CONNECT {"verbose":false}\r\n')
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(reader.readline(), 0.25)
            except TimeoutError:
                continue
            assert line, "the server closed the raw PING-answering connection"
            if line == b"PING\r\n":
                pings += 1
                writer.write(b"PONG\r\n")
    finally:
        writer.close()
    return pings


@pytest.mark.timeout(120)
async def test_soak_full_rate_with_server_pings(pinging_server, request) -> None:
    url = pinging_server.nats_url
    events: list[str] = []
    t0 = time.monotonic()
    hard_deadline = t0 + PUBLISH_SECONDS + DRAIN_SECONDS + 30
    stop_pinger = asyncio.Event()
    pinger = asyncio.create_task(answer_server_pings(url, stop_pinger, hard_deadline))

    recorders = {name: Recorder() for name in ("exact", "shared", "wild", "queue-1", "queue-2")}
    subs = {"exact": ("soak.p0", None), "shared": (SHARED, None), "wild": ("soak.>", None),
            "queue-1": (SHARED, "workers"), "queue-2": (SHARED, "workers")}
    sub_conns = {}
    for name, (subject, queue) in subs.items():
        nc = await connect(url, "sub-" + name, events)
        await nc.subscribe(subject, queue=queue or "", cb=recorders[name].cb)
        await nc.flush()
        sub_conns[name] = nc
    pub_conns = [await connect(url, f"pub-{i}", events) for i in range(PUBLISHERS)]

    sent = [0] * PUBLISHERS
    start = time.monotonic()
    await asyncio.gather(*(publish(nc, i, sent, start + PUBLISH_SECONDS) for i, nc in enumerate(pub_conns)))
    published_in = time.monotonic() - start
    total = sum(sent)

    expected = {"exact": sent[0], "shared": total, "wild": 2 * total}
    drain_until = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < drain_until:
        got = {name: len(r.msgs) for name, r in recorders.items()}
        got["queue"] = got.pop("queue-1") + got.pop("queue-2")
        if all(got[k] >= v for k, v in expected.items()) and got["queue"] >= total:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything beyond the expected count (a duplicate) would show up here
    elapsed = time.monotonic() - start

    seen_events = list(events)  # before our own close() triggers disconnected_cb
    reconnects = {nc.options["name"]: nc.stats["reconnects"] for nc in [*sub_conns.values(), *pub_conns]}
    stop_pinger.set()
    pings = await pinger
    for nc in [*pub_conns, *sub_conns.values()]:
        await nc.close()

    received = {name: len(r.msgs) for name, r in recorders.items()}
    delivered = sum(received.values())
    say(request, f"[soak] {PUBLISHERS} publishers sent {2 * total} messages ({sent} to their own subject and as "
                 f"many to {SHARED}) in {published_in:.1f} s = {2 * total / published_in:,.0f} msg/s published; "
                 f"received {received} (expected exact={sent[0]}, shared={total}, wild={2 * total}, "
                 f"queue-1+queue-2={total}); {delivered} deliveries in {elapsed:.1f} s = "
                 f"{delivered / elapsed:,.0f} msg/s; {pings} server PINGs answered; whole test "
                 f"{time.monotonic() - t0:.1f} s")

    log = pinging_server.log_text()
    log_issues = [ln for ln in log.splitlines() if " WARNING " in ln or " ERROR " in ln][:20]
    assert seen_events == [], (seen_events, log_issues)
    assert all(n == 0 for n in reconnects.values()), reconnects
    assert min(sent) > 0
    want_own = {(f"soak.p{i}", i): list(range(sent[i])) for i in range(PUBLISHERS)}
    want_shared = {(SHARED, i): list(range(sent[i])) for i in range(PUBLISHERS)}
    # plain subscribers: each publisher's exact sequence, in order, nothing lost or repeated
    assert sequences(recorders["exact"].msgs) == {("soak.p0", 0): want_own[("soak.p0", 0)]}
    assert sequences(recorders["shared"].msgs) == want_shared
    assert sequences(recorders["wild"].msgs) == {**want_own, **want_shared}
    # the queue group: together exactly the shared sequences, each message once; in order per member
    members = [sequences(recorders[m].msgs) for m in ("queue-1", "queue-2")]
    for m in members:
        for seqs in m.values():
            assert all(a < b for a, b in pairwise(seqs))
    for i in range(PUBLISHERS):
        union = [s for m in members for s in m.get((SHARED, i), [])]
        assert len(union) == sent[i]
        assert set(union) == set(range(sent[i]))
    # the server kept PINGing through the run (the point of the test); fewer than one a second means
    # its event loop was held up (a PING timer starved for seconds), so only a loose bound here
    assert pings >= max(3, int(elapsed / 2)), pings
    for bad in ("Stale Connection", "slow consumer", "Traceback"):
        assert bad not in log, (bad, log_issues)
