"""NATS header blocks (`NATS/1.0[ status]\\r\\nName: value\\r\\n...\\r\\n`) <-> ordered byte pairs."""

from __future__ import annotations

HEADER_LINE = b"NATS/1.0"


def parse_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    """Name/value pairs of a header block, in order; the status line is not a pair."""
    pairs: list[tuple[bytes, bytes]] = []
    lines = block.split(b"\r\n")
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if sep:
            pairs.append((name.strip(), value.strip()))
    return pairs


def build_headers(pairs: list[tuple[bytes, bytes]] | None, status: bytes = b"") -> bytes:
    out = [HEADER_LINE + (b" " + status if status else b"")]
    for k, v in pairs or ():
        out.append(k + b": " + v)
    return b"\r\n".join(out) + b"\r\n\r\n"
