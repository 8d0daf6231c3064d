"""NATS header blocks <-> the router's neutral pairs: the status line survives for NATS subscribers
and is never a pair (so other front-ends, e.g. MQTT user properties, do not show it)."""

from __future__ import annotations

import pytest

from robustmq.frontends.mqtt.mapping import headers_to_properties
from robustmq.frontends.nats.headers import StatusHeaders, build_headers, parse_headers


@pytest.mark.parametrize("block", [
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\nA: 1\r\nA: 2\r\nb: 3\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nX: y\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 7\r\nNats-Last-Stream: 9\r\n\r\n",
    b"NATS/1.0\r\nA: b:c: d\r\n\r\n",
])
def test_well_formed_blocks_round_trip_exactly(block: bytes) -> None:
    assert build_headers(parse_headers(block)) == block


def test_status_is_carried_beside_the_pairs_not_among_them() -> None:
    h = parse_headers(b"NATS/1.0 408 Request Timeout\r\nX: y\r\n\r\n")
    assert isinstance(h, StatusHeaders) and list(h) == [(b"X", b"y")]
    assert h.status == b" 408 Request Timeout"
    assert list(parse_headers(b"NATS/1.0 503\r\n\r\n")) == []
    # an MQTT v5 subscriber sees the pairs only
    assert headers_to_properties(h, 0).user == (("X", "y"),)
    assert headers_to_properties(parse_headers(b"NATS/1.0 503\r\n\r\n"), 0).user == ()


def test_broker_status_argument_still_works() -> None:
    assert build_headers([(b"Nats-Subject", b"a")], b"503") == b"NATS/1.0 503\r\nNats-Subject: a\r\n\r\n"
    assert build_headers(None) == b"NATS/1.0\r\n\r\n"
