"""Property-based fuzzing of the NATS codec (sans-IO) and of the server behind it (hypothesis).

1. Random interleavings of valid commands, serialised with the spellings nats-server accepts (any case,
   tabs or several blanks between arguments, bare LF line ends), parse to exactly the expected
   operations, whole, one byte at a time, and in random splits. PING/PONG/UNSUB/SUB between two PUBs
   to one subject (the batching that once crashed with IndexError) is generated on purpose.
2. Random garbage and mutated valid streams (truncation, byte flips, inserted CR/LF, huge sizes,
   deletions, duplications) never make the parser raise: it returns operations, a fatal
   (OP_ERR, text, True) last and nothing after it, the same result for every split of the input, and
   carries at most one bounded partial frame between reads.
3. The same valid command sequences sent to a real nats-server and to robustmq give the same MSG/HMSG
   frames per subscription (queue members folded into their group), the same number of PONG, +OK and
   -ERR lines; after random garbage on one connection robustmq still answers PING on another.

Every run is derandomized (fixed examples) and leaves no example database behind. The number of
fuzz cases run is printed at the end of the module.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procs import NatsServer, RobustMQ
from testkit import normalise, say

from robustmq.frontends.nats import errors
from robustmq.frontends.nats.codec import (
    OP_CONNECT,
    OP_ERR,
    OP_OK,
    OP_PING,
    OP_PONG,
    OP_PUB,
    OP_PUBR,
    OP_PUBS,
    OP_SUB,
    OP_UNSUB,
    NatsParser,
)

CASES: Counter[str] = Counter()  # fuzz cases run, by test
FIGURES: Counter[str] = Counter()  # what the server differential compared


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def report_case_count(request):
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{k}={v}" for k, v in sorted(CASES.items()))
    say(request, f"[fuzz] {total} fuzz cases run ({detail}); {FIGURES['batched']} sandwich PUBs parsed "
                 f"in batches of 2 or more; server differential compared {FIGURES['msgs']} MSG/HMSG frames, "
                 f"{FIGURES['pongs']} PONGs, {FIGURES['oks']} +OKs")


# ---------------------------------------------------------------------------------------- helpers

def check_batches(ops: list[tuple]) -> None:
    for op in ops:
        if op[0] == OP_PUBS:
            assert op[2] is None and len(op[3]) >= 1
        elif op[0] == OP_PUBR:
            assert len(op[2]) == len(op[3]) >= 1


def feed_chunks(chunks: list[bytes], **limits: int) -> tuple[list[tuple], NatsParser]:
    p = NatsParser(**limits)
    ops: list[tuple] = []
    for c in chunks:
        ops.extend(p.feed(c))
    return ops, p


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# ------------------------------------------------------------------------- valid command strategies

SUBJECTS = ["a", "a.b", "foo.bar", "x.y.z"]
FILTERS = SUBJECTS + ["a.*", "a.>", ">", "*", "foo.*", "*.y.>"]
REPLIES = ["r", "_INBOX.1", "_INBOX.x.y"]
PAYLOADS = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"", b"\r\n", b"PING\r\n", b"PUB a 1\r\nx\r\n", b"\n\n", b"MSG", b"\r", b"\xff\x00"]),
)
HEADERS = st.sampled_from([
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\nA: b\r\n\r\n",
    b"NATS/1.0\r\nA: b\r\nC: d e\r\nA: z\r\n\r\n",
])
CANON = ("upper", b" ", b"", b"\r\n")  # what every real client sends; the only form the PUB fast path takes


@st.composite
def style(draw, canon_weight: int = 3) -> tuple[str, bytes, bytes, bytes]:
    """(case of the operation name, separator, trailing blanks, line end) nats-server accepts."""
    if draw(st.integers(0, canon_weight)) > 0:
        return CANON
    return (draw(st.sampled_from(["upper", "lower", "mixed"])),
            draw(st.sampled_from([b" ", b"\t", b"  ", b" \t ", b"\t\t"])),
            draw(st.sampled_from([b"", b" ", b"\t", b" \t"])),
            draw(st.sampled_from([b"\r\n", b"\n"])))


def opname(name: str, case: str) -> bytes:
    if case == "lower":
        return name.lower().encode()
    if case == "mixed":
        return "".join(c.lower() if i % 2 else c for i, c in enumerate(name)).encode()
    return name.encode()


def line(name: str, sty: tuple, *args: bytes) -> bytes:
    case, sep, trail, eol = sty
    return opname(name, case) + sep + sep.join(args) + trail + eol


def pub(subject: str, reply: str | None, payload: bytes, sty: tuple) -> tuple[bytes, list[tuple]]:
    args = [subject.encode()] + ([reply.encode()] if reply else []) + [b"%d" % len(payload)]
    return line("PUB", sty, *args) + payload + b"\r\n", [(OP_PUB, subject, reply, payload, None)]


def hpub(subject: str, reply: str | None, hdr: bytes, payload: bytes, sty: tuple) -> tuple[bytes, list[tuple]]:
    args = [subject.encode()] + ([reply.encode()] if reply else []) + \
        [b"%d" % len(hdr), b"%d" % (len(hdr) + len(payload))]
    return line("HPUB", sty, *args) + hdr + payload + b"\r\n", [(OP_PUB, subject, reply, payload, hdr)]


def sub(subject: str, queue: str | None, sid: str, sty: tuple) -> tuple[bytes, list[tuple]]:
    args = [subject.encode()] + ([queue.encode()] if queue else []) + [sid.encode()]
    return line("SUB", sty, *args), [(OP_SUB, subject, queue, sid)]


def unsub(sid: str, mx: int | None, sty: tuple) -> tuple[bytes, list[tuple]]:
    args = [sid.encode()] + ([b"%d" % mx] if mx is not None else [])
    return line("UNSUB", sty, *args), [(OP_UNSUB, sid, mx)]


def control(name: str, sty: tuple) -> tuple[bytes, list[tuple]]:
    case, _sep, _trail, eol = sty
    return opname(name, case) + eol, [(OP_PING,) if name == "PING" else (OP_PONG,)]


def connect(opts: dict, sty: tuple) -> tuple[bytes, list[tuple]]:
    raw = json.dumps(opts, separators=(",", ":")).encode()
    case, sep, _trail, eol = sty
    return opname("CONNECT", case) + sep + raw + eol, [(OP_CONNECT, raw)]


SIDS = st.integers(1, 40).map(str)
CONNECT_OPTS = st.fixed_dictionaries({"verbose": st.booleans(), "pedantic": st.booleans(),
                                      "headers": st.just(True), "name": st.sampled_from(["", "fz"])})


@st.composite
def command(draw) -> tuple[bytes, list[tuple]]:
    sty = draw(style())
    kind = draw(st.sampled_from(["pub", "pub", "pubr", "hpub", "sub", "subq", "unsub", "unsubmax",
                                 "ping", "pong", "connect"]))
    subject = draw(st.sampled_from(SUBJECTS))
    if kind in ("pub", "pubr"):
        reply = draw(st.sampled_from(REPLIES)) if kind == "pubr" else None
        return pub(subject, reply, draw(PAYLOADS), sty)
    if kind == "hpub":
        reply = draw(st.none() | st.sampled_from(REPLIES))
        return hpub(subject, reply, draw(HEADERS), draw(PAYLOADS), sty)
    if kind in ("sub", "subq"):
        queue = draw(st.sampled_from(["q", "workers"])) if kind == "subq" else None
        return sub(draw(st.sampled_from(FILTERS)), queue, draw(SIDS), sty)
    if kind in ("unsub", "unsubmax"):
        return unsub(draw(SIDS), draw(st.integers(0, 999_999_999)) if kind == "unsubmax" else None, sty)
    if kind in ("ping", "pong"):
        return control(kind.upper(), sty)
    return connect(draw(CONNECT_OPTS), sty)


@st.composite
def sandwich(draw) -> list[tuple[bytes, list[tuple]]]:
    """Two PUBs to one subject (both with or both without reply) around a non-PUB operation: the
    shape that once crashed the OP_PUBS/OP_PUBR batching. Mostly in the canonical spelling, so the
    fast path (the one that batches) parses them."""
    subject = draw(st.sampled_from(SUBJECTS))
    with_reply = draw(st.booleans())
    sty = draw(style(canon_weight=6))
    mid = draw(st.sampled_from(["PING", "PONG", "UNSUB", "UNSUBMAX", "SUB", "HPUB", "CONNECT"]))
    if mid in ("PING", "PONG"):
        middle = control(mid, draw(style()))
    elif mid.startswith("UNSUB"):
        middle = unsub(draw(SIDS), draw(st.integers(0, 99)) if mid == "UNSUBMAX" else None, draw(style()))
    elif mid == "SUB":
        middle = sub(subject, None, draw(SIDS), draw(style()))
    elif mid == "HPUB":
        middle = hpub(subject, None, draw(HEADERS), b"h", draw(style()))
    else:
        middle = connect({"verbose": False}, draw(style()))
    pubs = [pub(subject, draw(st.sampled_from(REPLIES)) if with_reply else None, draw(PAYLOADS), sty)
            for _ in range(draw(st.integers(1, 3)))]
    after = [pub(subject, draw(st.sampled_from(REPLIES)) if with_reply else None, draw(PAYLOADS), sty)
             for _ in range(draw(st.integers(1, 3)))]
    return [*pubs, middle, *after]


@st.composite
def stream(draw, max_items: int = 14) -> tuple[bytes, list[tuple]]:
    items = draw(st.lists(st.one_of(command().map(lambda c: [c]), sandwich()), min_size=1, max_size=max_items))
    cmds = [c for group in items for c in group]
    return b"".join(c[0] for c in cmds), [op for c in cmds for op in c[1]]


# ------------------------------------------------------------------------------ 1. valid streams

@fuzz_settings(400)
@given(st_=stream(), data=st.data())
def test_valid_stream_parses_to_expected_ops_in_any_split(st_: tuple[bytes, list[tuple]], data) -> None:
    CASES["codec_valid"] += 1
    raw, expected = st_
    whole, p = feed_chunks([raw])
    check_batches(whole)
    assert normalise(whole) == expected
    assert p.idle and not p.dead

    one, p = feed_chunks([raw[i:i + 1] for i in range(len(raw))])
    assert normalise(one) == expected
    assert p.idle and not p.dead

    cuts = data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=10), label="cuts")
    ops, p = feed_chunks(split_at(raw, cuts))
    check_batches(ops)
    assert normalise(ops) == expected
    assert p.idle and not p.dead


@fuzz_settings(250)
@given(groups=st.lists(sandwich(), min_size=1, max_size=6))
def test_control_op_between_same_subject_pubs_batches_correctly(groups) -> None:
    """Back-to-back sandwiches (mostly in the canonical spelling): a batch only ever holds PUBs to its
    subject that were adjacent on the wire, never across the operation in between."""
    CASES["codec_sandwich"] += 1
    cmds = [c for g in groups for c in g]
    raw = b"".join(c[0] for c in cmds)
    expected = [op for c in cmds for op in c[1]]
    ops, p = feed_chunks([raw])
    check_batches(ops)
    assert normalise(ops) == expected
    assert p.idle and not p.dead
    # a batch only ever holds PUBs that were adjacent on the wire
    flat = 0
    for op in ops:
        if op[0] in (OP_PUBS, OP_PUBR):
            members = expected[flat:flat + len(op[3])]
            assert all(m[0] == OP_PUB and m[1] == op[1] and m[4] is None for m in members)
            flat += len(op[3])
            FIGURES["batched"] += len(op[3]) if len(op[3]) > 1 else 0
        else:
            flat += 1
    assert flat == len(expected)


# -------------------------------------------------------------------------- 2. garbage, mutations

TOKENS = [b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG", b"CONNECT", b"INFO", b"+OK", b"-ERR", b"MSG",
          b"HMSG", b"pub", b"ping", b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"a.b", b"_INBOX.1", b"q", b"0",
          b"1", b"5", b"12", b"999999999", b"9999999999", b"-1", b"{}", b"{", b'{"verbose":false}', b"null",
          b"NATS/1.0\r\n\r\n", b"\xff", b"\x00", b"\x0b", b"\x0c", b"*", b">", b"x" * 70]
GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
)
LIMITS = [{}, {"max_payload": 64, "max_control_line": 48}]


def check_robust(raw: bytes, cuts: list[int]) -> None:
    """Never raises; a fatal error is last and final; every split gives the same operations; the
    partial frame carried between reads stays bounded."""
    for limits in LIMITS:
        whole, p = feed_chunks([raw], **limits)
        for op in whole:
            assert isinstance(op, tuple) and op[0] in (OP_PUB, OP_PUBS, OP_PUBR, OP_SUB, OP_UNSUB,
                                                       OP_CONNECT, OP_PING, OP_PONG, OP_ERR, OP_OK)
        fatal = [i for i, op in enumerate(whole) if op[0] == OP_ERR and op[2]]
        if fatal:
            assert fatal == [len(whole) - 1], whole
            assert whole[-1][1] in (None, errors.UNKNOWN_OP, errors.MAX_PAYLOAD, errors.MAX_CONTROL_LINE)
            assert p.dead
            assert p.feed(b"PING\r\nPUB a 1\r\nx\r\n") == []
        else:
            assert not p.dead
        for op in whole:
            if op[0] == OP_ERR and not op[2]:
                assert op[1] in (errors.INVALID_PUB_SUBJECT, errors.INVALID_SUBJECT)
        ref = normalise(whole)
        for chunks in (split_at(raw, cuts), [raw[i:i + 1] for i in range(len(raw))]):
            q = NatsParser(**limits)
            got: list[tuple] = []
            bound = max(q.max_control_line + 16, q.max_payload + 2)
            for c in chunks:
                got.extend(q.feed(c))
                assert len(q._buf) <= bound  # the carried partial frame (a private field, on purpose)
            assert normalise(got) == ref
            assert q.dead == p.dead


@fuzz_settings(400)
@given(raw=GARBAGE, data=st.data())
def test_garbage_never_raises_and_is_split_invariant(raw: bytes, data) -> None:
    CASES["codec_garbage"] += 1
    cuts = data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=8), label="cuts")
    check_robust(raw, cuts)


@st.composite
def mutated(draw) -> bytes:
    raw = bytearray(draw(stream(max_items=8))[0])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "size", "dup"]))
        i = draw(st.integers(0, len(raw)))
        if kind == "truncate":
            del raw[i:]
        elif kind == "flip" and raw:
            raw[min(i, len(raw) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            raw[i:i] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b"PING\r\n"]))
        elif kind == "delete":
            del raw[i:i + draw(st.integers(1, 8))]
        elif kind == "size":
            sizes = [m.span() for m in re.finditer(rb"\d+", bytes(raw))]
            if sizes:
                a, b = draw(st.sampled_from(sizes))
                raw[a:b] = draw(st.sampled_from([b"%d" % 10 ** k for k in range(1, 40)] +
                                                [b"-1", b"0", b"1048576", b"1048577", b"0000000001"]))
        elif kind == "dup":
            raw[i:i] = raw[max(0, i - draw(st.integers(1, 30))):i]
    return bytes(raw)


@fuzz_settings(400)
@given(raw=mutated(), data=st.data())
def test_mutated_streams_never_raise_and_are_split_invariant(raw: bytes, data) -> None:
    CASES["codec_mutation"] += 1
    cuts = data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=8), label="cuts")
    check_robust(raw, cuts)


# ---------------------------------------------------------------------------- 3. against servers

@pytest.fixture(scope="module")
def servers():
    ref = NatsServer().start()
    ours = RobustMQ().start()
    yield ref, ours
    ours.cleanup()
    ref.stop()


def read_frames(buf: bytes) -> tuple[list[tuple], bytes]:
    """Server -> client frames: ("MSG", subject, sid, reply, payload), ("HMSG", ..., hdr, payload),
    ("PONG",), ("PING",), ("+OK",), ("-ERR", text), ("INFO",); returns the unparsed rest."""
    frames: list[tuple] = []
    pos = 0
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            break
        head = buf[pos:nl]
        if head.startswith((b"MSG ", b"HMSG ")):
            a = head.split()
            hmsg = a[0] == b"HMSG"
            total = int(a[-1])
            end = nl + 2 + total
            if end + 2 > len(buf):
                break
            body = buf[nl + 2:end]
            assert buf[end:end + 2] == b"\r\n"
            reply = a[3].decode() if len(a) == (6 if hmsg else 5) else None
            if hmsg:
                hl = int(a[-2])
                frames.append(("HMSG", a[1].decode(), a[2].decode(), reply, body[:hl], body[hl:]))
            else:
                frames.append(("MSG", a[1].decode(), a[2].decode(), reply, body))
            pos = end + 2
            continue
        if head.startswith(b"-ERR"):
            frames.append(("-ERR", head[5:].decode(errors="replace")))
        elif head.startswith(b"INFO"):
            frames.append(("INFO",))
        else:
            frames.append((head.decode(errors="replace"),))
        pos = nl + 2
    return frames, buf[pos:]


def converse(port: int, chunks: list[bytes], pongs: int, timeout: float = 5.0) -> tuple[list[tuple], bool]:
    """Send the chunks (a little apart, so reads split them), read until `pongs` PONGs have come (or
    the server closes), then drain briefly for stragglers."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frames: list[tuple] = []
    rest = b""
    closed = False
    try:
        s.settimeout(timeout)
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        for i, c in enumerate(chunks):
            if i:
                time.sleep(0.002)
            s.sendall(c)
        deadline = time.monotonic() + timeout
        draining = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                d = f.read1(65536)
            except TimeoutError:
                break
            if not d:
                closed = True
                break
            new, rest = read_frames(rest + d)
            frames.extend(new)
            if not draining and sum(1 for fr in frames if fr == ("PONG",)) >= pongs:
                draining = True
                deadline = time.monotonic() + 0.03
    except ConnectionResetError:
        closed = True
    finally:
        s.close()
    return frames, closed


def by_subscription(frames: list[tuple], queue_of: dict[str, str]) -> dict[str, list[tuple]]:
    """Messages per subscription, in arrival order; a queue member's sid is folded into its group
    (which member gets a message is random on both servers)."""
    out: dict[str, list[tuple]] = {}
    for fr in frames:
        if fr[0] in ("MSG", "HMSG"):
            key = queue_of.get(fr[2], "sid:" + fr[2])
            out.setdefault(key, []).append((fr[0], fr[1], fr[3], *fr[4:]))
    return out


def counts(frames: list[tuple]) -> dict[str, int]:
    c = Counter(fr[0] for fr in frames if fr[0] not in ("MSG", "HMSG"))
    return {k: c[k] for k in ("PONG", "+OK", "-ERR", "PING")}


@st.composite
def session_script(draw) -> tuple[bytes, int, dict[str, str]]:
    """A valid client session: CONNECT, then SUB (fresh sids; a queue group always shares one
    subject, so which member receives cannot change what the group receives), UNSUB with and without
    max, PUB/HPUB with and without reply, PING and PONG; a final PING. Returns (bytes, PINGs sent,
    sid -> queue group)."""
    opts = {"verbose": draw(st.booleans()), "pedantic": draw(st.booleans()), "headers": True,
            "no_responders": draw(st.booleans()), "echo": True}
    parts = [connect(opts, CANON)[0]]
    pings = 1
    sids: list[str] = []
    queue_of: dict[str, str] = {}
    first = ["sub"] * draw(st.integers(1, 3)) + ["subq"] * draw(st.integers(0, 2))  # something to deliver to
    for i in range(len(first) + draw(st.integers(1, 20))):
        sty = draw(style(canon_weight=4))
        kind = first[i] if i < len(first) else draw(st.sampled_from(
            ["sub", "subq", "unsub", "pub", "pub", "pub", "pubr", "hpub", "ping", "pong", "sandwich"]))
        subject = draw(st.sampled_from(SUBJECTS))
        if kind in ("sub", "subq"):
            sid = str(len(sids) + 1)
            sids.append(sid)
            if kind == "subq":
                filt = draw(st.sampled_from(FILTERS))
                queue_of[sid] = "queue:" + filt
                parts.append(sub(filt, "g" + str(FILTERS.index(filt)), sid, sty)[0])
            else:
                parts.append(sub(draw(st.sampled_from(FILTERS)), None, sid, sty)[0])
        elif kind == "unsub":
            sid = draw(st.sampled_from(sids)) if sids and draw(st.integers(0, 4)) else "99"
            # no max for a queue member: how many it has had so far is random, and with a max that
            # would decide whether it leaves now or later
            mx = None if sid in queue_of else draw(st.none() | st.integers(0, 3))
            parts.append(unsub(sid, mx, sty)[0])
        elif kind in ("pub", "pubr"):
            reply = draw(st.sampled_from(REPLIES)) if kind == "pubr" else None
            parts.append(pub(subject, reply, draw(PAYLOADS), sty)[0])
        elif kind == "hpub":
            parts.append(hpub(subject, draw(st.none() | st.sampled_from(REPLIES)), draw(HEADERS),
                              draw(PAYLOADS), sty)[0])
        elif kind in ("ping", "pong"):
            parts.append(control(kind.upper(), sty)[0])
            pings += kind == "ping"
        else:
            for raw, ops in draw(sandwich()):
                if ops[0][0] == OP_CONNECT:
                    continue  # the session's own CONNECT options stay in force
                if ops[0][0] == OP_UNSUB and ops[0][1] in queue_of:
                    continue  # see below
                parts.append(raw)
                pings += ops[0][0] == OP_PING
    parts.append(b"PING\r\n")
    return b"".join(parts), pings, queue_of


@fuzz_settings(50)
@given(script=session_script(), data=st.data())
def test_same_deliveries_as_nats_server(servers, script, data) -> None:
    CASES["server_differential"] += 1
    ref, ours = servers
    raw, pings, queue_of = script
    if data.draw(st.booleans(), label="split"):
        chunks = split_at(raw, data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=4)))
    else:
        chunks = [raw]
    ref_frames, ref_closed = converse(ref.port, chunks, pings)
    our_frames, our_closed = converse(ours.nats_port, chunks, pings)
    assert counts(ref_frames)["PONG"] == pings, ref_frames  # the script itself is valid
    assert not ref_closed
    assert our_closed == ref_closed
    assert counts(our_frames) == counts(ref_frames)
    assert by_subscription(our_frames, queue_of) == by_subscription(ref_frames, queue_of)
    FIGURES["msgs"] += sum(1 for fr in ref_frames if fr[0] in ("MSG", "HMSG"))
    FIGURES["pongs"] += counts(ref_frames)["PONG"]
    FIGURES["oks"] += counts(ref_frames)["+OK"]
    assert "Traceback" not in ours.log_text()


# the codec's line rules, each checked byte for byte against the real nats-server (robustmq/frontends/
# nats/codec.py says where they come from). The cases run at once, so only one case publishes, to a
# subject no other case subscribes to; no case has a PUB before an error, since robustmq's PONG waits
# for the commit and would then be cut off by the close
RULES = {
    "ping_pong_ok_ignore_the_rest": b"PINGX\r\nPONG junk\r\n+OKX\r\nPING\r\n",
    "ping_with_long_junk": b"PING" + b"x" * 5000 + b"\r\nPING\r\n",
    "leading_blank": b" PING\r\n",
    "name_needs_a_blank": b"SUB\r\n",
    "form_feed_is_not_a_blank": b"SUB\x0ba 1\r\n",
    "connect_without_blank": b"CONNECT{}\r\nPING\r\n",
    "connect_after_many_blanks": b"CONNECT " + b" " * 5000 + b"{}\r\nPING\r\n",
    "client_err_closes_silently": b"-ERR 'x'\r\nPING\r\n",
    "client_err_needs_a_blank": b"-ERR\r\nPING\r\n",
    "client_info_is_ignored": b"INFO {}\r\nINFO null\r\nPING\r\n",
    "client_info_not_an_object": b"INFO []\r\nPING\r\n",
    "size_of_10_digits": b"PUB a 0000000001\r\nx\r\nPING\r\n",
    "size_huge": b"PUB a 99999999999999999999\r\nx\r\n",
    "hpub_size_huge": b'CONNECT {"headers":true}\r\nHPUB a 1 99999999999\r\nx\r\n',
    "unsub_max_of_10_digits": b"SUB rules.u 1\r\nUNSUB 1 0000000005\r\nPUB rules.u 1\r\nx\r\nPING\r\n",
    "limit_counts_arguments_only": b"SUB " + b" " * 5000 + b"rules.l 1\r\nPING\r\n",
    "limit_exactly_reached": b"SUB " + b"a" * 4094 + b" 1\r\nPING\r\n",
    "limit_passed": b"SUB " + b"a" * 4095 + b" 1\r\nPING\r\n",
    "unknown_before_newline": b"FOO",
    "msg_from_a_client_before_newline": b"M",
    "hmsg_from_a_client": b"HMSG a 1 1 1\r\nx\r\nPING\r\n",
    "ping_before_newline": b"PING",
}


def exchange_all(port: int, cases: dict[str, bytes], window: float = 0.3) -> dict[str, bytes]:
    """Each case on its own connection, all at once; what came back within the window (and
    <CLOSED> if the server closed)."""
    socks = {}
    for name, data in cases.items():
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        info = b""
        while not info.endswith(b"\r\n"):
            info += s.recv(4096)
        assert info.startswith(b"INFO ")
        s.sendall(data)
        socks[name] = s
    time.sleep(window)
    out = {}
    for name, s in socks.items():
        got = b""
        s.settimeout(0.02)
        try:
            while d := s.recv(65536):
                got += d
            got += b"<CLOSED>"
        except TimeoutError:
            pass
        except ConnectionResetError:
            got += b"<CLOSED>"
        finally:
            s.close()
        out[name] = got
    return out


def test_parser_rules_match_nats_server(servers) -> None:
    ref, ours = servers
    want = exchange_all(ref.port, RULES)
    got = exchange_all(ours.nats_port, RULES)
    CASES["server_rules"] += len(RULES)
    assert {k: v for k, v in got.items() if v != want[k]} == {}, {k: want[k] for k in got if got[k] != want[k]}


def ping_pong(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        return f.readline()


@fuzz_settings(30)
@given(raw=st.one_of(GARBAGE, mutated()))
def test_garbage_harms_only_its_own_connection(servers, raw: bytes) -> None:
    CASES["server_garbage"] += 1
    _ref, ours = servers
    s = socket.create_connection(("127.0.0.1", ours.nats_port))
    try:
        s.settimeout(5)
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        s.sendall(raw)
        s.settimeout(0.05)
        got = b""
        try:
            while d := f.read1(65536):
                got += d
        except (TimeoutError, ConnectionResetError):
            pass
        frames, _rest = read_frames(got)
        for fr in frames:  # only protocol frames ever come back, never a traceback or junk
            assert fr[0] in ("MSG", "HMSG", "PONG", "PING", "+OK", "-ERR"), fr
    finally:
        s.close()
    assert ping_pong(ours.nats_port) == b"PONG\r\n"
    assert ours.proc is not None and ours.proc.poll() is None
    assert "Traceback" not in ours.log_text()
