"""NATS header blocks (`NATS/1.0[ status]\\r\\nName: value\\r\\n...\\r\\n`) <-> the router's ordered pairs.

The block format is NATS's alone: the router and other front-ends only ever see name/value pairs.
The status line's code and description (`NATS/1.0 503`, `NATS/1.0 408 Request Timeout`) are not a
pair: a block that has one is parsed into `StatusHeaders`, a list of pairs like any other (so the
router, the log and the other front-ends see exactly the pairs, never the status) that also carries
the status for a NATS subscriber's HMSG. The status travels with the live delivery only: a record
read back from the log has its pairs, not its status.
"""

from __future__ import annotations

from robustmq.routing.contract import Headers

HEADER_LINE = b"NATS/1.0"
EMPTY_BLOCK = b"NATS/1.0\r\n\r\n"
_HL = len(HEADER_LINE)


class StatusHeaders(list[tuple[bytes, bytes]]):
    """Header pairs plus the status of the block's first line (what follows `NATS/1.0`, as sent:
    b" 503", b" 408 Request Timeout")."""

    __slots__ = ("status",)

    def __init__(self, pairs: Headers, status: bytes) -> None:
        super().__init__(pairs)
        self.status = status


def parse_headers(block: bytes) -> Headers:
    """Name/value pairs of a header block, in order; the status line is not a pair (see
    `StatusHeaders`)."""
    pairs: Headers = []
    lines = block.split(b"\r\n")
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if sep:
            pairs.append((name.strip(), value.strip()))
    first = lines[0]
    if len(first) > _HL and first[:_HL] == HEADER_LINE and first[_HL:].strip():
        return StatusHeaders(pairs, first[_HL:])
    return pairs


def build_headers(pairs: Headers | None, status: bytes = b"") -> bytes:
    """A header block; `status` (b"503") or the status a `StatusHeaders` carries goes on its first line."""
    if pairs.__class__ is StatusHeaders:
        first = HEADER_LINE + pairs.status  # type: ignore[union-attr]
    elif status:
        first = HEADER_LINE + b" " + status
    elif not pairs:
        return EMPTY_BLOCK
    else:
        first = HEADER_LINE
    out = [first]
    for k, v in pairs or ():
        out.append(k + b": " + v)
    return b"\r\n".join(out) + b"\r\n\r\n"
