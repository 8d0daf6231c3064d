"""The inbound side every front-end's session shares: one connection's reads per loop turn are
bounded, so one fast publisher cannot hold the event loop (and every other client's keepalives,
PINGs and commits) for as long as its flood lasts.

uvloop reads a socket again in the same loop turn after every read that filled its 256 kB buffer,
so a client that writes faster than the server parses would be read, parsed and appended for the
whole of its flood in one turn: other connections wait seconds for their PONG/PINGRESP, and the
turn's log batch grows with the flood. `ReadTurns.count_read` pauses reading from a connection once
it has brought `read_turn_bytes` in one turn and resumes it in the next, as nats-server's per-client
read loop yields to the others.
"""

from __future__ import annotations

import asyncio

# Bytes read from one connection in one loop turn before it waits for the next turn: at this size,
# one read (at most uvloop's 256 kB), as asyncio's own loop reads each socket once a turn. A flood of
# small MQTT publishes is then at most ~9,000 packets a turn: another client's PINGREQ waited 3.4 s
# for its PINGRESP during a 1,000,000-packet flood without this, 0.1-0.25 s with it.
READ_TURN_BYTES = 1 << 16
# A read shorter than the loop's read buffer (256 kB in uvloop, which reads a socket again in the same
# turn only after a read that filled it; asyncio's own loop reads once a turn) is a connection's last
# one in its turn: reads below this size start no count, so a request at a time costs no callback.
TURN_COUNT_MIN = 1 << 16


class ReadTurns:
    """Mixin for an asyncio.Protocol with `transport`, `closed` and `_loop`; call `_init_read_turns`
    in `__init__` and `count_read(len(data))` at the end of `data_received`."""

    transport: asyncio.Transport | None
    closed: bool
    _loop: asyncio.AbstractEventLoop
    read_turn_bytes = READ_TURN_BYTES

    def _init_read_turns(self) -> None:
        self._read_paused = False
        self._turn_read = 0  # bytes read in this loop turn (reset by a callback in the next)

    def count_read(self, n: int) -> None:
        """`n` bytes were read and handled: at read_turn_bytes this turn, the rest waits for the next."""
        if self._turn_read or n >= TURN_COUNT_MIN:
            if not self._turn_read:
                self._loop.call_soon(self._new_turn)
            self._turn_read += n
            if self._turn_read >= self.read_turn_bytes:
                self._pause_reading(None)

    def _pause_reading(self, for_s: float | None) -> None:
        """Stop reading from this connection until the next loop turn (None) or for `for_s` seconds."""
        t = self.transport
        if t is None or self.closed:
            return
        if not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        if for_s is None:
            self._loop.call_soon(self._resume_reading)
        else:
            self._loop.call_later(for_s, self._resume_reading)

    def _new_turn(self) -> None:
        self._turn_read = 0

    def _resume_reading(self) -> None:
        if self._read_paused and not self.closed and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
