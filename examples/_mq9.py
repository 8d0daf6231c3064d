"""The few lines every example shares: the server URL, an mq9 request, and a bounded wait."""

import asyncio
import json
import os
import sys
import time

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


async def mq9(nc, subject, body=b""):
    """An mq9 request: JSON reply; a reply with an "error" key is a failure."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    reply = json.loads((await nc.request(subject, data, timeout=3)).data)
    if "error" in reply:
        raise RuntimeError(f"{subject}: {reply['error']}")
    return reply


async def wait_for(pred, timeout):
    """Poll a condition for at most `timeout` seconds; returns its last value."""
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return pred()
