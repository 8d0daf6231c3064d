"""Small helpers shared by test modules (tests/ is on sys.path via conftest.py)."""

from __future__ import annotations

from typing import Any

from robustmq.frontends.nats.codec import OP_PUB, OP_PUBR, OP_PUBS


def normalise(ops: list[Any]) -> list[tuple]:
    """Flatten the parser's PubBatch/RequestBatch events into single PUBs, as plain tuples, so a
    split parse and a whole parse compare equal."""
    out: list[tuple] = []
    for op in ops:
        if op[0] == OP_PUBS:
            out.extend((OP_PUB, op[1], None, bytes(p), None) for p in op[3])
        elif op[0] == OP_PUBR:
            out.extend((OP_PUB, op[1], r, bytes(p), None) for r, p in zip(op[2], op[3]))
        elif op[0] == OP_PUB:
            out.append((OP_PUB, op[1], op[2], bytes(op[3]), None if op[4] is None else bytes(op[4])))
        else:
            out.append(tuple(op))
    return out


def say(request: Any, text: str) -> None:
    """Print past pytest's output capture, so a test's figures show in a normal run."""
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if capman is None:
        print(text)
        return
    with capman.global_and_fixture_disabled():
        print("\n" + text, flush=True)


def proc_status_mb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/<pid>/status in MB (VmRSS now, VmHWM the peak)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) // 1024
    return 0
