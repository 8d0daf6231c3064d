"""Sans-IO NATS client-protocol parser: feed bytes, get operations. No sockets here.

Scans one buffer with `find(b"\\n")` per control line (no regexes, no line splitting of the whole
buffer); a control line or payload that straddles reads is carried over. Each operation is a typed
event (a NamedTuple whose first field is its OP_* code):

    Pub(OP_PUB, subject, reply|None, payload, hdr|None)        # HPUB, and PUB whose payload was split
    PubBatch(OP_PUBS, subject, None, [payload, ...])           # consecutive PUBs to one subject
    RequestBatch(OP_PUBR, subject, [reply, ...], [payload, ...])  # ... each with a reply subject
    Sub(OP_SUB, subject, queue|None, sid)
    Unsub(OP_UNSUB, sid, max_msgs|None)
    Connect(OP_CONNECT, raw_json_bytes)
    Ping(OP_PING) / Pong(OP_PONG)
    ProtocolError(OP_ERR, text|None, fatal)    # the peer broke the protocol (None: close without
                                               # -ERR, as nats-server does)

After a fatal error the parser stops producing operations. A subject, reply or queue that is not
valid UTF-8 is refused without closing (`-ERR 'Invalid Publish Subject'` / `'Invalid Subject'`):
subjects are text in every protocol robustmq speaks, so bytes are never replaced or passed through.

Line rules follow nats-server's byte-at-a-time parser (server/parser.go), checked against the real
binary: the operation name starts the line (case-insensitive; no leading blanks); PUB, HPUB, SUB,
UNSUB and -ERR need a space or tab after the name, CONNECT and INFO take their argument after optional
blanks, and PING, PONG and +OK ignore whatever follows them up to the newline. The control-line limit
applies to the arguments (after the name and its blanks, without the closing CR). A line that cannot
become an operation fails at once, before its newline arrives. Sizes of more than 9 digits are bad
arguments (a silent close); an UNSUB max of more than 9 digits unsubscribes at once. A client's -ERR
closes the connection silently; a client's INFO is ignored when its argument is a JSON object.
One known difference, kept for speed: arguments are split with bytes.split(), so a form feed or
vertical tab separates arguments here, where nats-server keeps it inside the subject.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from robustmq.frontends.nats import errors

OP_PUB = 1
OP_SUB = 2
OP_UNSUB = 3
OP_CONNECT = 4
OP_PING = 5
OP_PONG = 6
OP_ERR = 7
OP_OK = 8
OP_PUBS = 9
OP_PUBR = 10



# The events, typed. They are NamedTuples whose first field is the OP_* code: the session reads
# fields by name, a test can still compare an event with a plain tuple, and building one costs
# about what a tuple does (PUB runs come as one PubBatch/RequestBatch, not one event per message).
class Pub(NamedTuple):
    """A PUB whose payload arrived in pieces, or an HPUB (`hdr`: its raw NATS header block)."""

    code: int
    subject: str
    reply: str | None
    payload: bytes
    hdr: bytes | None


class PubBatch(NamedTuple):
    """Consecutive reply-less PUBs to one subject."""

    code: int
    subject: str
    reply: None
    payloads: list[bytes]


class RequestBatch(NamedTuple):
    """Consecutive PUBs to one subject, each with its reply subject."""

    code: int
    subject: str
    replies: list[str]
    payloads: list[bytes]


class Sub(NamedTuple):
    code: int
    subject: str
    queue: str | None
    sid: str


class Unsub(NamedTuple):
    code: int
    sid: str
    max_msgs: int | None


class Connect(NamedTuple):
    code: int
    raw: bytes  # the JSON, decoded by the session


class Ping(NamedTuple):
    code: int


class Pong(NamedTuple):
    code: int


class Ok(NamedTuple):
    code: int


class ProtocolError(NamedTuple):
    """The peer broke the protocol: `text` for -ERR (None: close silently); fatal closes."""

    code: int
    text: str | None
    fatal: bool


Event = Pub | PubBatch | RequestBatch | Sub | Unsub | Connect | Ping | Pong | Ok | ProtocolError

_new = tuple.__new__
_BAD_PUB_SUBJECT = ProtocolError(OP_ERR, errors.INVALID_PUB_SUBJECT, False)
_BAD_SUBJECT = ProtocolError(OP_ERR, errors.INVALID_SUBJECT, False)
_PING = Ping(OP_PING)
_PONG = Pong(OP_PONG)
_OK = Ok(OP_OK)
_BLANKS = (b" ", b"\t")
_UNKNOWN = errors.UNKNOWN_OP
_MAX_SIZE_DIGITS = 9  # nats-server's parseSize: a longer size is a bad argument, whatever its value
# operation names and what follows them: 1 a blank, then arguments; 2 arguments after optional
# blanks; 0 anything up to the newline, ignored
_OPS = ((b"PUB", 1), (b"SUB", 1), (b"PING", 0), (b"PONG", 0), (b"HPUB", 1), (b"UNSUB", 1),
        (b"CONNECT", 2), (b"INFO", 2), (b"+OK", 0), (b"-ERR", 1), (b"HMSG", 1))


class NatsParser:
    __slots__ = ("_buf", "_pending", "dead", "max_control_line", "max_payload")

    def __init__(self, max_payload: int = 1 << 20, max_control_line: int = 4096) -> None:
        self.max_payload = max_payload
        self.max_control_line = max_control_line
        self._buf = b""
        # (subject, reply, hdr_len, total_len) of a PUB/HPUB whose payload has not fully arrived
        self._pending: tuple[str, str | None, int, int] | None = None
        self.dead = False

    @property
    def idle(self) -> bool:
        """No partial frame is waiting for more bytes."""
        return self._pending is None and not self._buf

    def feed(self, data: bytes) -> list[Event]:
        if self.dead:
            return []
        if data[:4] == b"PUB " and not self._buf and self._pending is None:
            # a read holding exactly one whole PUB (a request at a time): what the loop below makes
            # of it, without its setup. Anything else, or anything to refuse, takes the loop.
            nl = data.find(b"\n")
            if 0 < nl <= self.max_control_line:  # (a longer line takes the loop, which checks the limit)
                a = data[4:nl - 1 if data[nl - 1] == 13 else nl].split()
                la = len(a)
                sz = a[-1] if la == 2 or la == 3 else b""
                if sz.isdigit() and len(sz) <= _MAX_SIZE_DIGITS:
                    end = nl + 1 + int(sz)
                    if end + 2 == len(data) and data[end:] == b"\r\n" and end - nl - 1 <= self.max_payload:
                        try:  # (tuple.__new__: a NamedTuple's own __new__ is a Python call)
                            if la == 3:
                                return [_new(RequestBatch, (OP_PUBR, a[0].decode(), [a[1].decode()],
                                                            [data[nl + 1:end]]))]
                            return [_new(PubBatch, (OP_PUBS, a[0].decode(), None, [data[nl + 1:end]]))]
                        except UnicodeDecodeError:
                            pass  # the loop says which
        buf = self._buf + data if self._buf else data
        out: list[Event] = []
        pos = 0
        n = len(buf)
        mcl = self.max_control_line
        mcl4 = mcl + 4
        # the OP_PUBS / OP_PUBR batch a following PUB to the same subject may join: only while that
        # batch is still the last operation (checked by identity, so a PING in between ends it)
        last_subj = b""
        last_op: tuple = ()
        last_list: list[bytes] = []
        last_rsubj = b""
        last_rop: tuple = ()
        last_rlist: list[bytes] = []
        last_replies: list[str] = []
        while pos < n:
            pend = self._pending
            if pend is not None:
                subject, reply, hlen, size = pend
                end = pos + size
                if end + 2 > n:
                    break
                if buf[end:end + 2] != b"\r\n":
                    return self._fatal(out, errors.UNKNOWN_OP)
                if subject is INVALID_TEXT or reply is INVALID_TEXT:
                    out.append(_BAD_PUB_SUBJECT)
                elif hlen >= 0:
                    out.append(Pub(OP_PUB, subject, reply, buf[pos + hlen:end], buf[pos:pos + hlen]))
                else:
                    out.append(Pub(OP_PUB, subject, reply, buf[pos:end], None))
                self._pending = None
                pos = end + 2
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                # a control line still arriving: fail now if it cannot become an operation (as
                # nats-server does byte by byte) or its arguments already pass the limit; otherwise
                # carry it, bounded (see _partial)
                carry = self._partial(buf[pos:])
                if isinstance(carry, tuple):
                    return self._fatal(out, carry[0])
                self._buf = carry
                return out
            le = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            line = buf[pos:le]
            pos = nl + 1
            # fast path for the hot operation: PUB with its payload already in the buffer
            if line[:4] == b"PUB ":
                if len(line) > mcl4 and len(line[4:].lstrip(b" \t")) > mcl:
                    return self._fatal(out, errors.MAX_CONTROL_LINE)
                a = line[4:].split()
                la = len(a)
                if la == 2:
                    subj, rep, sz = a[0], None, a[1]
                elif la == 3:
                    subj, rep, sz = a
                else:
                    return self._fatal(out, errors.SILENT_CLOSE)
                if not sz.isdigit() or len(sz) > _MAX_SIZE_DIGITS:
                    return self._fatal(out, errors.SILENT_CLOSE)
                size = int(sz)
                if size > self.max_payload:
                    return self._fatal(out, errors.MAX_PAYLOAD)
                end = pos + size
                if end + 2 <= n:
                    if buf[end:end + 2] != b"\r\n":
                        return self._fatal(out, errors.UNKNOWN_OP)
                    if rep is None:
                        if subj == last_subj and out and out[-1] is last_op:
                            last_list.append(buf[pos:end])
                        else:
                            try:
                                subject = subj.decode()
                            except UnicodeDecodeError:
                                out.append(_BAD_PUB_SUBJECT)
                                pos = end + 2
                                continue
                            last_subj = subj
                            last_list = [buf[pos:end]]
                            last_op = PubBatch(OP_PUBS, subject, None, last_list)
                            out.append(last_op)
                    else:
                        try:
                            rtext = rep.decode()
                        except UnicodeDecodeError:
                            out.append(_BAD_PUB_SUBJECT)
                            pos = end + 2
                            continue
                        if subj == last_rsubj and out and out[-1] is last_rop:
                            last_rlist.append(buf[pos:end])
                            last_replies.append(rtext)
                        else:
                            try:
                                subject = subj.decode()
                            except UnicodeDecodeError:
                                out.append(_BAD_PUB_SUBJECT)
                                pos = end + 2
                                continue
                            last_rsubj = subj
                            last_rlist = [buf[pos:end]]
                            last_replies = [rtext]
                            last_rop = RequestBatch(OP_PUBR, subject, last_replies, last_rlist)
                            out.append(last_rop)
                    pos = end + 2
                else:
                    self._pending = (_text(subj), _text(rep) if rep else None, -1, size)
                continue
            u = line[:4].upper()
            if u == b"PING":  # nats-server ignores the rest of a PING, PONG or +OK line
                out.append(_PING)
                continue
            if u == b"PONG":
                out.append(_PONG)
                continue
            if u[:3] == b"+OK":
                continue
            # the other operations: the name, then (a blank and) the arguments
            if u[:3] in (b"PUB", b"SUB") and line[3:4] in _BLANKS:
                op, rest = u[:3], line[4:]
            elif u in (b"HPUB", b"-ERR", b"HMSG") and line[4:5] in _BLANKS:
                op, rest = u, line[5:]
            elif u == b"UNSU" and line[4:5].upper() == b"B" and line[5:6] in _BLANKS:
                op, rest = b"UNSUB", line[6:]
            elif u == b"INFO":
                op, rest = u, line[4:]
            elif u == b"CONN" and line[4:7].upper() == b"ECT":
                op, rest = b"CONNECT", line[7:]
            else:
                return self._fatal(out, errors.UNKNOWN_OP)
            rest = rest.lstrip(b" \t")
            if len(rest) > mcl:  # CONNECT too, as nats-server
                return self._fatal(out, errors.MAX_CONTROL_LINE)
            if op == b"SUB":
                a = rest.split()
                if len(a) not in (2, 3):
                    return self._fatal(out, errors.SILENT_CLOSE)
                try:
                    sa = [x.decode() for x in a]
                except UnicodeDecodeError:
                    out.append(_BAD_SUBJECT)
                    continue
                if len(sa) == 2:
                    out.append(Sub(OP_SUB, sa[0], None, sa[1]))
                else:
                    out.append(Sub(OP_SUB, sa[0], sa[1], sa[2]))
            elif op == b"PUB" or op == b"HPUB":
                r = self._pub_args(rest.split(), op == b"HPUB")
                if not isinstance(r, tuple):
                    return self._fatal(out, r)
                self._pending = r
            elif op == b"UNSUB":
                a = rest.split()
                if len(a) not in (1, 2):
                    return self._fatal(out, errors.SILENT_CLOSE)
                # a max that is not a positive number (of at most 9 digits) unsubscribes at once, as
                # nats-server does
                mx = int(a[1]) if len(a) == 2 and a[1].isdigit() and len(a[1]) <= _MAX_SIZE_DIGITS else None
                out.append(Unsub(OP_UNSUB, _text(a[0]), mx))
            elif op == b"CONNECT":
                out.append(Connect(OP_CONNECT, rest))
            elif op == b"INFO":
                # nats-server decodes a client's INFO into its Info struct and ignores it
                try:
                    info = msgspec.json.decode(rest)
                except msgspec.DecodeError:
                    info = False
                except RecursionError:  # nested deeper than msgspec goes (Go's limit is 10000)
                    info = {} if rest[:1] == b"{" else False
                if info is not None and info.__class__ is not dict:
                    return self._fatal(out, errors.SILENT_CLOSE)
            elif op == b"-ERR":
                return self._fatal(out, errors.SILENT_CLOSE)  # nats-server closes a client that sends -ERR
            else:  # HMSG: a server-to-server operation
                return self._fatal(out, errors.UNKNOWN_OP)
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _pub_args(self, a: list[bytes], headers: bool) -> tuple[str, str | None, int, int] | str | None:
        want = 3 if headers else 2
        if len(a) == want:
            subject, reply, sizes = a[0], None, a[1:]
        elif len(a) == want + 1:
            subject, reply, sizes = a[0], a[1], a[2:]
        else:
            return errors.SILENT_CLOSE
        if not all(s.isdigit() and len(s) <= _MAX_SIZE_DIGITS for s in sizes):
            return errors.SILENT_CLOSE
        if headers:
            hlen, size = int(sizes[0]), int(sizes[1])
            if hlen > size:
                return errors.SILENT_CLOSE
        else:
            hlen, size = -1, int(sizes[0])
        if size > self.max_payload:
            return errors.MAX_PAYLOAD
        return (_text(subject), _text(reply) if reply else None, hlen, size)

    def _partial(self, p: bytes) -> bytes | tuple[str | None]:
        """What to carry of a control line whose newline has not arrived, or (error text,).

        Bounded (by the control-line limit plus a few bytes): a line that cannot become an operation
        fails at once, arguments longer than the limit fail, a run of blanks after the name is kept
        as one space, and the ignored rest of a PING, PONG or +OK line is not kept at all."""
        k = len(p)
        u = p[:7].upper()
        for name, kind in _OPS:
            ln = len(name)
            if k <= ln:
                if name[:k] == u:
                    return p  # still a prefix of this name
                continue
            if u[:ln] != name:
                continue
            if kind == 0:
                return name
            rest = p[ln:]
            if kind == 1 and rest[:1] not in _BLANKS:
                return (_UNKNOWN,)
            args = rest.lstrip(b" \t")
            if len(args) - (args[-1:] == b"\r") > self.max_control_line:
                return (errors.MAX_CONTROL_LINE,)
            return name + b" " + args if len(args) + ln + 1 < k else p
        return (_UNKNOWN,)

    def _fatal(self, out: list[Event], text: str | None) -> list[Event]:
        self.dead = True
        self._buf = b""
        out.append(ProtocolError(OP_ERR, text, True))
        return out


def _text(b: bytes) -> str:
    """Strict UTF-8; invalid bytes give the INVALID_TEXT sentinel (checked by identity)."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        return INVALID_TEXT


INVALID_TEXT = "\x00invalid-utf8"  # a sid or subject that matches nothing


def msg_frame(subject: str, sid: str, reply: str | None, payload: bytes) -> bytes:
    if reply:
        return b"MSG %s %s %s %d\r\n%s\r\n" % (subject.encode(), sid.encode(), reply.encode(),
                                               len(payload), payload)
    return b"MSG %s %s %d\r\n%s\r\n" % (subject.encode(), sid.encode(), len(payload), payload)


def hmsg_frame(subject: str, sid: str, reply: str | None, hdr: bytes, payload: bytes) -> bytes:
    hl = len(hdr)
    if reply:
        return b"HMSG %s %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), sid.encode(), reply.encode(), hl,
                                                     hl + len(payload), hdr, payload)
    return b"HMSG %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), sid.encode(), hl, hl + len(payload),
                                             hdr, payload)
