"""Fixtures shared by the NATS differential tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from procs import NatsServer, RobustMQ


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[NatsServer, RobustMQ]]:
    """A real nats-server and a robustmq, side by side, for one test module."""
    ref = NatsServer().start()
    ours = RobustMQ().start()
    yield ref, ours
    ours.cleanup()
    ref.stop()
