"""Differential test: the same raw bytes to a real nats-server and to robustmq; replies must match.

INFO is compared only by the fields a client relies on (its identity fields differ by design). Every
other byte the server sends back within the window, and whether it closed the connection, must be
identical.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from procs import NatsServer, RobustMQ

WINDOW = 0.25


def exchange(port: int, data: bytes, chunked: bool = False) -> tuple[dict, bytes]:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(WINDOW)
    f = s.makefile("rb")
    info_line = f.readline()
    assert info_line.startswith(b"INFO ")
    info = json.loads(info_line[5:])
    out = b""
    try:
        if chunked:
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
        else:
            s.sendall(data)
        deadline = time.monotonic() + WINDOW
        while time.monotonic() < deadline:
            d = s.recv(65536)
            if not d:
                out += b"<CLOSED>"
                break
            out += d
    except TimeoutError:
        pass
    except ConnectionResetError:
        out += b"<CLOSED>"
    finally:
        s.close()
    return info, out


HDR = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
CASES = {
    "verbose_ok": b'CONNECT {"verbose":true}\r\nPUB a 1\r\nx\r\nPING\r\n',
    "defaults_before_connect": b"SUB a 1\r\nPUB a 1\r\nx\r\nPING\r\n",
    "unknown_op": b"FOO\r\n",
    "garbage": b"\x00\x01garbage\r\n",
    "payload_longer_than_declared": b"PUB foo 3\r\nabcdef\r\n",
    "bad_size": b"PUB foo x\r\nabc\r\n",
    "negative_size": b"PUB a -1\r\nPING\r\n",
    "missing_size": b"PUB foo\r\n",
    "max_payload": b"PUB foo 2000000\r\n",
    "max_control_line": b"PUB " + b"a" * 5000 + b" 1\r\nx\r\n",
    "connect_bad_json": b"CONNECT {bad json}\r\nPING\r\n",
    "pedantic_invalid_pub": b'CONNECT {"pedantic":true}\r\nPUB foo..bar 1\r\nx\r\nPING\r\n',
    "invalid_pub_default_pedantic": b"PUB foo..bar 1\r\nx\r\nPING\r\n",
    "non_pedantic_quiet": b'CONNECT {"verbose":false,"pedantic":false}\r\nPUB foo..bar 1\r\nx\r\nPING\r\n',
    "invalid_sub": b"SUB foo..bar 1\r\nPING\r\n",
    "sub_missing_sid": b"SUB foo\r\n",
    "duplicate_sid": b"SUB foo 1\r\nSUB foo 1\r\nPUB foo 1\r\nx\r\nPING\r\n",
    "unsub_unknown": b"UNSUB 99\r\nPING\r\n",
    "unsub_max": b"SUB foo.> 1\r\nUNSUB 1 2\r\nPUB foo.a 1\r\nx\r\nPUB foo.b 1\r\ny\r\nPUB foo.c 1\r\nz\r\nPING\r\n",
    "wildcards_order": b"SUB a.*.b 1\r\nSUB a.> 2\r\nPUB a.x.b 1\r\nx\r\nPING\r\n",
    "reply_subject": b'CONNECT {"verbose":false}\r\nSUB a 1\r\nPUB a r.1 2\r\nhi\r\nPING\r\n',
    "no_responders": b'CONNECT {"headers":true,"no_responders":true}\r\nSUB _INBOX.x 1\r\n'
                     b"PUB nobody _INBOX.x 1\r\nx\r\nPING\r\n",
    "hpub_hmsg": b'CONNECT {"headers":true}\r\nSUB h 1\r\nHPUB h 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n',
    "hpub_with_reply": b'CONNECT {"headers":true,"verbose":false}\r\nSUB h 1\r\n'
                       b"HPUB h r 22 24\r\nNATS/1.0\r\nA: b\r\nC: d\r\n\r\nhi\r\nPING\r\n",
    "hpub_without_headers": b'CONNECT {"headers":false}\r\nSUB h 1\r\nHPUB h 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n',
    "hpub_bad_sizes": b"HPUB a 5\r\nPING\r\n",
    "echo_false": b'CONNECT {"echo":false}\r\nSUB e 1\r\nPUB e 1\r\nx\r\nPING\r\n',
    "queue_group": b"SUB q g 1\r\nSUB q g 2\r\nPUB q 1\r\nx\r\nPING\r\n",
    "lowercase": b"sub a 1\r\npub a 1\r\nx\r\nping\r\n",
    "pong_ignored": b"PONG\r\nPING\r\n",
    "empty_line": b"PING\r\n\r\nPING\r\n",
    "extra_spaces": b"PUB a  1\r\nx\r\nPING\r\n",
    "tab_separator": b"PUB a\t1\r\nx\r\nPING\r\n",
    "binary_payload": b'CONNECT {"verbose":false}\r\nSUB b 1\r\nPUB b 6\r\n\r\n\x00\xff\r\n\r\nPING\r\n',
    "unsub_then_pub": b'CONNECT {"verbose":false}\r\nSUB a 1\r\nUNSUB 1\r\nPUB a 1\r\nx\r\nPING\r\n',
    # a PING read before fatal bad input in the same write is still answered, then -ERR and close
    "ping_then_unknown_op": b"PUB a 1\r\nx\r\nPING\r\nFOO\r\n",
    "ping_then_max_payload": b"SUB a 1\r\nPUB a 1\r\nx\r\nPING\r\nPUB a 2000000\r\n",
    "two_pings_then_garbage": b"PING\r\nPUB a 1\r\nx\r\nPING\r\n\x00\x01garbage\r\n",
    # an HPUB's status line (code and description) reaches a NATS subscriber as it was sent
    "hpub_status": HDR + b"SUB h 1\r\nHPUB h 16 18\r\nNATS/1.0 503\r\n\r\nhi\r\n"
                   b"HPUB h r 38 40\r\nNATS/1.0 408 Request Timeout\r\nX: y\r\n\r\nhi\r\nPING\r\n",
    # a subject with an empty token (non-pedantic publisher) matches no subscription, not even `>`
    "empty_tokens": b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB > 1\r\nSUB a.* 2\r\nSUB a.> 3\r\n'
                    b"SUB *.a 4\r\nSUB a.*.b 5\r\nPUB a..b 1\r\nx\r\nPUB a. 1\r\nx\r\nPUB .a 1\r\nx\r\n"
                    b"PUB . 1\r\nx\r\nPUB a.b 1\r\ny\r\nPING\r\n",
    "empty_tokens_request": HDR + b"SUB _INBOX.> 1\r\nPUB a..b _INBOX.z 1\r\nx\r\nPING\r\n",
    "no_responders_without_headers": b'CONNECT {"verbose":false,"no_responders":true}\r\nPING\r\n',
    "no_responders_headers_false": b'CONNECT {"verbose":true,"headers":false,"no_responders":true}\r\nPING\r\n',
    "reserved_reply": HDR + b"SUB a 1\r\nPUB a _R_.x 1\r\nx\r\nPUB a _GR_.x 1\r\nx\r\n"
                      b"PUB a $JS.ACK.x 1\r\nx\r\nPUB a _R_. 1\r\nx\r\nPUB a _GR_. 1\r\nx\r\n"
                      b"PUB a $JS.ACK. 1\r\nx\r\nPUB a _R_ 1\r\nx\r\nPING\r\n",
    "reserved_reply_in_a_burst": HDR + b"SUB a 1\r\nPUB a r1 1\r\nx\r\nPUB a _R_.y 1\r\nx\r\n"
                                 b"PUB a r3 1\r\nx\r\nPING\r\n",
    "reserved_reply_hpub": HDR + b"SUB a 1\r\nHPUB a _R_.y 12 13\r\nNATS/1.0\r\n\r\nx\r\nPING\r\n",
    "reserved_reply_verbose": b'CONNECT {"verbose":true}\r\nSUB a 1\r\nPUB a _R_.x 1\r\nx\r\nPING\r\n',
    "reserved_reply_pedantic": b'CONNECT {"verbose":true,"pedantic":true}\r\nPUB a..b _R_.y 1\r\nx\r\n'
                               b"PUB a..b r 1\r\nx\r\nPING\r\n",
    "no_responders_queue_reply": HDR + b"SUB _INBOX.x.* q 1\r\nPUB nobody _INBOX.x.1 1\r\na\r\nPING\r\n",
    "connect_null": b"CONNECT null\r\nPING\r\n",
    "connect_null_fields": b'CONNECT {"verbose":null}\r\nPING\r\n'
                           b'CONNECT {"verbose":false,"name":null,"headers":null,"protocol":null}\r\nPING\r\n',
}


def normalise(out: bytes, case: str) -> bytes:
    if case == "queue_group":  # which member gets it is random on both servers
        out = out.replace(b"MSG q 2 ", b"MSG q 1 ")
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_replies_as_nats_server(pair, case: str) -> None:
    ref, ours = pair
    _ref_info, ref_out = exchange(ref.port, CASES[case])
    _our_info, our_out = exchange(ours.nats_port, CASES[case])
    assert normalise(our_out, case) == normalise(ref_out, case)


@pytest.mark.parametrize("case", ["hpub_hmsg", "unsub_max", "no_responders", "binary_payload"])
def test_same_replies_when_sent_one_byte_at_a_time(pair, case: str) -> None:
    ref, ours = pair
    assert exchange(ours.nats_port, CASES[case], chunked=True)[1] == \
        exchange(ref.port, CASES[case], chunked=True)[1]


def test_info_fields_clients_rely_on(pair) -> None:
    ref, ours = pair
    ref_info, _ = exchange(ref.port, b"")
    our_info, _ = exchange(ours.nats_port, b"")
    for key in ("headers", "max_payload", "proto"):
        assert our_info[key] == ref_info[key], key
    for key in ("server_id", "version", "client_id", "host", "port"):
        assert key in our_info
    assert isinstance(our_info["client_id"], int)


@pytest.fixture(scope="module")
def auth_pair():
    ref = NatsServer(extra_args=["--user", "u", "--pass", "p"]).start()
    ours = RobustMQ(extra_args=["--user", "u", "--password", "p"]).start()
    yield ref, ours
    ours.cleanup()
    ref.stop()


@pytest.mark.parametrize("data", [
    b"PING\r\n",
    b"PUB a 1\r\nx\r\n",
    b"SUB a 1\r\n",
    b'CONNECT {"verbose":false,"user":"u","pass":"bad"}\r\nPING\r\n',
    b'CONNECT {"verbose":false,"user":"u","pass":"p"}\r\nPING\r\n',
    b'CONNECT {"verbose":false}\r\nPING\r\n',
    # before CONNECT, any operation but CONNECT is an Authorization Violation
    b"PONG\r\n",
    b"INFO {}\r\n",
    b"XYZ\r\n",
    b"\r\nPING\r\n",
    b" CONNECT {}\r\n",
    b"CXYZ\r\n",
])
def test_auth_same_as_nats_server(auth_pair, data: bytes) -> None:
    ref, ours = auth_pair
    ref_info, ref_out = exchange(ref.port, data)
    our_info, our_out = exchange(ours.nats_port, data)
    assert our_info.get("auth_required") == ref_info.get("auth_required") is True
    assert our_out == ref_out
