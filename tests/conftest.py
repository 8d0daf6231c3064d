from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from procs import NatsServer, RobustMQ


@pytest.fixture(scope="module")
def server():
    """One robustmq per test module (fresh data dir)."""
    s = RobustMQ().start()
    yield s
    s.cleanup()


@pytest.fixture
def fresh_server():
    """A robustmq for a single test (restart/kill tests)."""
    s = RobustMQ()
    yield s
    s.cleanup()


@pytest.fixture(scope="session")
def nats_server():
    s = NatsServer().start()
    yield s
    s.stop()
