"""mq9: agent mailboxes on `$mq9.AI.*` NATS subjects, on top of the router and the log."""

from __future__ import annotations

from typing import Any

from robustmq.frontends.mq9.handlers import Mq9Layer


def attach(broker: Any) -> Mq9Layer:
    """Hook the mq9 layer into the broker's router and start its expiry timer."""
    layer = Mq9Layer(broker.cfg, broker.router, broker.log)
    broker.router.add_owner(layer)
    layer.start()
    return layer
