"""Fixtures shared by the MQTT tests: one robustmq and one mosquitto per module, and the `broker` /
`port` pair that parametrizes a differential test over both (a test that passes only against
robustmq tests robustmq's reading of the spec, not the spec)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from procs import RobustMQ

from .brokers import PASSWORD, USER, Mosquitto


@pytest.fixture(scope="module")
def robustmq_srv() -> Iterator[RobustMQ]:
    s = RobustMQ(mqtt=True).start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def robustmq_port(robustmq_srv: RobustMQ) -> int:
    return robustmq_srv.mqtt_port


@pytest.fixture(scope="module")
def mosquitto_port() -> Iterator[int]:
    m = Mosquitto().start()
    yield m.port
    m.stop()


@pytest.fixture(params=["robustmq", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def port(broker: str, request: pytest.FixtureRequest) -> int:
    return request.getfixturevalue(f"{broker}_port")


@pytest.fixture(scope="module")
def robustmq_auth_port() -> Iterator[int]:
    s = RobustMQ(mqtt=True, extra_args=["--user", USER, "--password", PASSWORD]).start()
    yield s.mqtt_port
    s.cleanup()


@pytest.fixture(scope="module")
def mosquitto_auth_port() -> Iterator[int]:
    m = Mosquitto(auth=True).start()
    yield m.port
    m.stop()


@pytest.fixture
def auth_port(broker: str, request: pytest.FixtureRequest) -> int:
    """A broker of the `broker` kind that admits only USER / PASSWORD."""
    return request.getfixturevalue(f"{broker}_auth_port")
