"""The floor of two storage layouts for N publishes to N distinct subjects, in this Python.

Not the server: the least Python work each layout needs, with the real store (rocksdict) and a
minimal PUB parser, and none of routing, sockets, retention or eviction. It answers one question:
which publish rate for a million one-off subjects (`bench/many_subjects.py`) a layout can reach at
best on this machine and interpreter.

- `per-subject`: what robustmq stores today, one stream per subject. A new subject costs a lookup
  of its stream key, a stream object, and three keys (stream meta, first chunk, segment index).
- `shared`: many subjects in one physical stream, the subject inside each record, and one index
  key per record (`X<subject>\\0<offset>`); no per-subject object or lookup at publish time.

    python bench/layout_floor.py --count 300000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time

import msgspec
from rocksdict import Options, Rdict, WriteBatch

BATCH = 5000  # publishes per store write, as one loop turn's group commit
_PUB = re.compile(rb"PUB ([^ \r\n]+) (\d+)\r\n")


def parse(data: bytes) -> tuple[list[bytes], list[bytes]]:
    subjects, payloads = [], []
    pos, n, match = 0, len(data), _PUB.match
    while pos < n:
        m = match(data, pos)
        assert m is not None
        end = m.end() + int(m.group(2))
        subjects.append(m.group(1))
        payloads.append(data[m.end():end])
        pos = end + 2
    return subjects, payloads


class _Stream:
    __slots__ = ("next", "pending", "sid")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.next = 0
        self.pending: list[bytes] = []


def per_subject(db: Rdict, subjects: list[bytes], payloads: list[bytes]) -> None:
    enc = msgspec.msgpack.Encoder()
    cache: dict[bytes, _Stream] = {}
    sid = 1
    for i in range(0, len(subjects), BATCH):
        names, pays = subjects[i:i + BATCH], payloads[i:i + BATCH]
        missing = [s for s in names if s not in cache]
        b = WriteBatch(raw_mode=True)
        found_keys = db.get([b"S" + s for s in missing]) or []
        for name, found in zip(missing, found_keys):
            assert found is None
            cache[name] = st = _Stream(sid)
            sid += 1
            b.put(b"S" + name, enc.encode((st.sid, 0)))
        for name, p in zip(names, pays):
            cache[name].pending.append(p)
        for name in names:
            st = cache[name]
            sk = st.sid.to_bytes(4, "big")
            b.put(b"R" + sk + st.next.to_bytes(8, "big"), enc.encode(st.pending))
            b.put(b"G" + sk + st.next.to_bytes(8, "big"), enc.encode((st.next, st.next, 0, 0, 3)))
            st.next += len(st.pending)
            st.pending = []
        db.write(b)


def shared(db: Rdict, subjects: list[bytes], payloads: list[bytes]) -> None:
    enc = msgspec.msgpack.Encoder()
    off = 0
    for i in range(0, len(subjects), BATCH):
        names, pays = subjects[i:i + BATCH], payloads[i:i + BATCH]
        b = WriteBatch(raw_mode=True)
        b.put(b"R\x00\x00\x00\x01" + off.to_bytes(8, "big"), enc.encode(list(zip(names, pays))))
        for j, name in enumerate(names):
            b.put(b"X" + name + b"\x00" + (off + j).to_bytes(8, "big"), b"")
        off += len(names)
        db.write(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300_000)
    args = ap.parse_args()
    data = b"".join(b"PUB dev.%d.t 3\r\nabc\r\n" % i for i in range(args.count))
    out: dict[str, float] = {}
    for name, layout in (("per_subject", per_subject), ("shared", shared)):
        path = tempfile.mkdtemp(prefix="robustmq-floor-")
        db = Rdict(path, Options(raw_mode=True))
        try:
            t0 = time.perf_counter()
            subjects, payloads = parse(data)
            layout(db, subjects, payloads)
            out[f"{name}_msgs_s"] = round(args.count / (time.perf_counter() - t0))
        finally:
            db.close()
            shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
