"""NATS header blocks (`NATS/1.0[ status]\\r\\nName: value\\r\\n...\\r\\n`) <-> the router's ordered pairs.

The block format is NATS's alone: the router and other front-ends only ever see name/value pairs.
"""

from __future__ import annotations

from robustmq.routing.contract import Headers

HEADER_LINE = b"NATS/1.0"
EMPTY_BLOCK = b"NATS/1.0\r\n\r\n"


def parse_headers(block: bytes) -> Headers:
    """Name/value pairs of a header block, in order; the status line is not a pair."""
    pairs: Headers = []
    lines = block.split(b"\r\n")
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if sep:
            pairs.append((name.strip(), value.strip()))
    return pairs


def build_headers(pairs: Headers | None, status: bytes = b"") -> bytes:
    if not pairs and not status:
        return EMPTY_BLOCK
    out = [HEADER_LINE + (b" " + status if status else b"")]
    for k, v in pairs or ():
        out.append(k + b": " + v)
    return b"\r\n".join(out) + b"\r\n\r\n"
