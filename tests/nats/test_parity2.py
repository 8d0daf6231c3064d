"""Second differential audit against nats-server: what tests/nats/test_parity.py does not cover.

Raw bytes only where a stock client cannot send them (a CONNECT `protocol` other than 1); the rest
with nats-py, on a real nats-server and on robustmq side by side.
"""

from __future__ import annotations

import asyncio

import nats
import pytest
from test_parity import exchange

C = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
PED = b'CONNECT {"verbose":false,"pedantic":true,"headers":true}\r\n'
CASES = {
    # pedantic: nats-server reports an invalid publish subject, then handles the message like a
    # non-pedantic client's (delivered where it matches; +OK when verbose)
    "pedantic_invalid_pub_still_delivered": PED + b"SUB > 1\r\nPUB a.* 1\r\nx\r\nPUB a.> r 1\r\ny\r\n"
                                            b"PUB a..b 1\r\nz\r\nPUB * 1\r\nw\r\nPING\r\n",
    "pedantic_verbose_invalid_pub": b'CONNECT {"verbose":true,"pedantic":true}\r\nSUB a.* 1\r\n'
                                    b"PUB a.> 1\r\nx\r\nPING\r\n",
    "pedantic_invalid_pub_hpub": PED + b"SUB > 1\r\nHPUB a.* 12 13\r\nNATS/1.0\r\n\r\nx\r\nPING\r\n",
    # a CONNECT `protocol` nats-server does not know
    "connect_protocol_2": b'CONNECT {"verbose":false,"protocol":2}\r\nPING\r\n',
    "connect_protocol_negative": b'CONNECT {"verbose":true,"protocol":-1}\r\nPING\r\n',
    "connect_protocol_0": b'CONNECT {"verbose":false,"protocol":0}\r\nPING\r\n',
    "connect_protocol_beyond_int64": b'CONNECT {"verbose":false,"protocol":99999999999999999999}\r\nPING\r\n',
    "connect_protocol_2_no_responders": b'CONNECT {"protocol":3,"no_responders":true}\r\nPING\r\n',
    # a queue subscription's UNSUB max holds inside one pipelined burst of publishes
    "queue_unsub_max_in_a_burst": C + b"SUB q g 1\r\nUNSUB 1 2\r\nPUB q 1\r\na\r\nPUB q 1\r\nb\r\n"
                                  b"PUB q 1\r\nc\r\nPUB q 1\r\nd\r\nPING\r\n",
    # found equal in the audit; kept as guards
    "verbose_every_op": b'CONNECT {"verbose":true}\r\nSUB a 1\r\nSUB a..b 2\r\nUNSUB 1\r\nUNSUB 99\r\n'
                        b"UNSUB 98 5\r\nPUB a 1\r\nx\r\nPONG\r\nPING\r\n",
    "star_and_gt_inside_tokens": C + b"SUB a*b 1\r\nSUB a.b> 2\r\nSUB >a 3\r\nSUB a.* 4\r\n"
                                b"PUB a*b 1\r\nx\r\nPUB a.b> 1\r\ny\r\nPUB >a 1\r\nz\r\nPUB axb 1\r\nw\r\nPING\r\n",
    "gt_only_last": C + b"SUB a.>.b 1\r\nSUB >.a 2\r\nSUB a.> 3\r\nPUB a 1\r\nx\r\nPUB a.b.c 1\r\ny\r\nPING\r\n",
    # full-width letters and a full-width asterisk (U+FF0A) are literal tokens
    "full_width_tokens": C + "SUB \uff41.\uff0a 1\r\nSUB \uff41.> 2\r\nPUB \uff41.\uff42 1\r\nx\r\n"
                             "PUB \uff41.\uff0a 1\r\ny\r\nPING\r\n".encode(),
    "duplicate_sid_other_subject": C + b"SUB a 1\r\nSUB b 1\r\nPUB a 1\r\nx\r\nPUB b 1\r\ny\r\nPING\r\n",
    "queue_names_with_wildcards": C + b"SUB a q.* 1\r\nPUB a 1\r\nx\r\nPING\r\n",
    "unsub_max_zero_and_negative": C + b"SUB a 1\r\nUNSUB 1 0\r\nSUB b 2\r\nUNSUB 2 -1\r\n"
                                   b"PUB a 1\r\nx\r\nPUB b 1\r\ny\r\nPING\r\n",
    "control_line_4096_args": C + b"SUB > 1\r\nPUB " + b"s" * 4094 + b" 1\r\nx\r\nPING\r\n",
    "control_line_4097_args": C + b"PUB " + b"s" * 4095 + b" 1\r\nx\r\nPING\r\n",
    "max_payload_plus_one": C + b"PUB a 1048577\r\n",
    "payload_shorter_than_declared": C + b"PUB a 5\r\nabc\r\nPING\r\n",
    "ping_flood": C + b"PING\r\n" * 500,
    "echo_false_queue_request": b'CONNECT {"echo":false,"verbose":false,"headers":true,"no_responders":true}\r\n'
                                b"SUB svc g 1\r\nSUB _INBOX.a 2\r\nPUB svc _INBOX.a 1\r\nx\r\nPING\r\n",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_replies_as_nats_server(pair, case: str) -> None:
    ref, ours = pair
    assert exchange(ours.nats_port, CASES[case])[1] == exchange(ref.port, CASES[case])[1]


async def _pedantic_publish(url: str) -> list[str]:
    """A pedantic nats-py publisher sends wildcard subjects; what does a `>` subscriber get?"""
    sub_nc = await nats.connect(url, allow_reconnect=False)
    spy = await sub_nc.subscribe(">")
    await sub_nc.flush()
    pub = await nats.connect(url, allow_reconnect=False, pedantic=True)
    await pub.publish("orders.*", b"1")
    await pub.publish("orders.>", b"2")
    try:
        await pub.flush(timeout=1)
    except (TimeoutError, nats.errors.Error):  # nats-py closes on the -ERR; flush may see that
        pass
    got = []
    try:
        while True:
            got.append((await spy.next_msg(0.3)).subject)
    except nats.errors.TimeoutError:
        pass
    await pub.close()
    await sub_nc.close()
    return got


async def test_pedantic_publisher_invalid_subject_still_reaches_subscribers(pair) -> None:
    ref, ours = pair
    expected = await _pedantic_publish(ref.url)
    assert expected == ["orders.*", "orders.>"]  # what nats-server does (after an -ERR to the publisher)
    assert await _pedantic_publish(ours.nats_url) == expected


async def _queue_member_with_max(url: str) -> tuple[int, int]:
    a = await nats.connect(url, allow_reconnect=False)
    b = await nats.connect(url, allow_reconnect=False)
    got = {"a": 0, "b": 0}

    def count(name: str):
        async def cb(_msg) -> None:
            got[name] += 1
        return cb

    capped = await a.subscribe("work", queue="g", cb=count("a"))
    await capped.unsubscribe(limit=1)  # (UNSUB sid 1 to the server; subscribe(max_msgs=) is client-side)
    await b.subscribe("work", queue="g", cb=count("b"))
    await a.flush()
    await b.flush()
    pub = await nats.connect(url, allow_reconnect=False)
    for i in range(50):  # buffered by nats-py, written in one go: one burst for the server
        await pub.publish("work", b"%d" % i)
    await pub.flush()
    for _ in range(100):
        if got["a"] + got["b"] >= 50:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    for nc in (pub, a, b):
        await nc.close()
    return got["a"], got["b"]


async def test_queue_member_with_max_msgs_leaves_the_rest_to_other_members(pair) -> None:
    ref, ours = pair
    assert await _queue_member_with_max(ref.url) == (1, 49)
    assert await _queue_member_with_max(ours.nats_url) == (1, 49)
