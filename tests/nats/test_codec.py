"""Sans-IO codec tests: byte strings in, operations out; every split point."""

from __future__ import annotations

import pytest
from testkit import normalise

from robustmq.frontends.nats import errors
from robustmq.frontends.nats.codec import (
    OP_CONNECT,
    OP_ERR,
    OP_PING,
    OP_PONG,
    OP_PUB,
    OP_PUBR,
    OP_PUBS,
    OP_SUB,
    OP_UNSUB,
    NatsParser,
)

STREAM = (
    b'CONNECT {"verbose":false,"headers":true}\r\n'
    b"PING\r\n"
    b"SUB foo.* q1 7\r\n"
    b"PUB foo.bar 5\r\nhello\r\n"
    b"PUB foo.bar 5\r\nworld\r\n"
    b"PUB foo.baz _INBOX.1 4\r\na\r\nb\r\n"
    b"HPUB foo.h 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
    b"UNSUB 7 10\r\n"
    b"pong\r\n"
)



def parse_all(chunks: list[bytes]) -> list[tuple]:
    p = NatsParser()
    ops: list[tuple] = []
    for c in chunks:
        ops.extend(p.feed(c))
    return normalise(ops)


EXPECTED = [
    (OP_CONNECT, b'{"verbose":false,"headers":true}'),
    (OP_PING,),
    (OP_SUB, "foo.*", "q1", "7"),
    (OP_PUB, "foo.bar", None, b"hello", None),
    (OP_PUB, "foo.bar", None, b"world", None),
    (OP_PUB, "foo.baz", "_INBOX.1", b"a\r\nb", None),
    (OP_PUB, "foo.h", None, b"hi", b"NATS/1.0\r\n\r\n"),
    (OP_UNSUB, "7", 10),
    (OP_PONG,),
]


def test_whole_stream() -> None:
    assert parse_all([STREAM]) == EXPECTED


def test_consecutive_pubs_are_batched() -> None:
    ops = NatsParser().feed(b"PUB a 1\r\nx\r\nPUB a 1\r\ny\r\nPUB b 1\r\nz\r\n"
                            b"PUB c r1 1\r\n1\r\nPUB c r2 1\r\n2\r\nPUB a 1\r\nw\r\n")
    assert [op[0] for op in ops] == [OP_PUBS, OP_PUBS, OP_PUBR, OP_PUBS]
    assert ops[0][3] == [b"x", b"y"]
    assert ops[2][2:] == (["r1", "r2"], [b"1", b"2"])


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut: int) -> None:
    assert parse_all([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert parse_all([STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize(
    "data,text",
    [
        (b"FOO bar\r\n", errors.UNKNOWN_OP),
        (b"PUB foo 3\r\nabcdef\r\n", errors.UNKNOWN_OP),
        (b"PUB foo x\r\nabc\r\n", None),  # bad arguments: nats-server closes without -ERR
        (b"PUB foo 2000000\r\n", errors.MAX_PAYLOAD),
        (b"PUB " + b"a" * 5000 + b" 1\r\nx\r\n", errors.MAX_CONTROL_LINE),
        (b"SUB " + b"a" * 5000, errors.MAX_CONTROL_LINE),
        (b"\x00\x01\x02garbage\r\n", errors.UNKNOWN_OP),
        (b"HPUB foo 10 5\r\n", None),
        (b"SUB\r\n", errors.UNKNOWN_OP),  # no blank after the name: nats-server says Unknown Protocol Operation
        (b"UNSUB 1 2 3\r\n", None),
        (b"CONNECT {\"name\":\"" + b"a" * 5000 + b"\"}\r\n", errors.MAX_CONTROL_LINE),
    ],
)
def test_errors(data: bytes, text: str | None) -> None:
    p = NatsParser()
    ops = p.feed(data)
    assert ops[-1] == (OP_ERR, text, True)
    assert p.feed(b"PING\r\n") == []  # dead after a fatal error


def test_lowercase_and_bare_newline() -> None:
    ops = normalise(NatsParser().feed(b"ping\npub a 1\r\nx\r\nsub a 1\n"))
    assert ops == [(OP_PING,), (OP_PUB, "a", None, b"x", None), (OP_SUB, "a", None, "1")]


def test_large_payload_across_many_reads() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = b"PUB big %d\r\n" % len(payload) + payload + b"\r\n"
    assert parse_all([data[i:i + 65536] for i in range(0, len(data), 65536)]) == [
        (OP_PUB, "big", None, payload, None)]


def test_idle_tells_whether_a_frame_is_partial() -> None:
    p = NatsParser()
    assert p.idle
    p.feed(b"PUB a 5\r\nhel")
    assert not p.idle
    p.feed(b"lo\r\nPI")
    assert not p.idle
    assert p.feed(b"NG\r\n") == [(OP_PING,)]
    assert p.idle


def test_control_op_between_same_subject_pubs() -> None:
    """A PING/PONG/UNSUB between two PUBs to one subject used to crash the batching (IndexError)."""
    for mid, op in ((b"PING\r\n", (OP_PING,)), (b"PONG\r\n", (OP_PONG,)),
                    (b"UNSUB 9\r\n", (OP_UNSUB, "9", None))):
        ops = normalise(NatsParser().feed(b"PUB a 1\r\nx\r\n" + mid + b"PUB a 1\r\ny\r\n"))
        assert ops == [(OP_PUB, "a", None, b"x", None), op, (OP_PUB, "a", None, b"y", None)]
        ops = normalise(NatsParser().feed(b"PUB a r1 1\r\nx\r\n" + mid + b"PUB a r2 1\r\ny\r\n"))
        assert ops == [(OP_PUB, "a", "r1", b"x", None), op, (OP_PUB, "a", "r2", b"y", None)]


def test_unsub_with_a_bad_max_unsubscribes() -> None:
    assert NatsParser().feed(b"UNSUB 1 -5\r\nUNSUB 2 x\r\n") == [(OP_UNSUB, "1", None),
                                                                  (OP_UNSUB, "2", None)]


@pytest.mark.parametrize("data,text", [
    (b"PUB bad.\xfe 1\r\nx\r\n", errors.INVALID_PUB_SUBJECT),
    (b"PUB a \xfe 1\r\nx\r\n", errors.INVALID_PUB_SUBJECT),
    (b"HPUB bad.\xfe 12 13\r\nNATS/1.0\r\n\r\nx\r\n", errors.INVALID_PUB_SUBJECT),
    (b"SUB bad.\xff 1\r\n", errors.INVALID_SUBJECT),
    (b"SUB a q\xff 1\r\n", errors.INVALID_SUBJECT),
])
def test_invalid_utf8_is_refused_not_replaced(data: bytes, text: str) -> None:
    p = NatsParser()
    ops = p.feed(data + b"PING\r\n")
    assert ops == [(OP_ERR, text, False), (OP_PING,)]
