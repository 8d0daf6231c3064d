"""The mailbox registry: ids, public names, TTL, persistence in the log's metadata."""

from __future__ import annotations

import heapq
import re
import secrets
import time

import msgspec

from robustmq.core_log import Record, SegmentLog

MAILBOX_NS = "mq9.mbox"
GROUP_NS = "mq9.group"
STREAM_PREFIX = "$mq9.AI.MAILBOX.MSG."

# delivery order; the index is stored with each record. `low` (after normal) serves the PyPI SDK's
# dialect (SPEC §4b), which no §4 name covers.
PRIORITIES = ("critical", "urgent", "normal", "low")
P_CRITICAL, P_URGENT, P_NORMAL, P_LOW = 0, 1, 2, 3
PRIORITY_INDEX = {name: i for i, name in enumerate(PRIORITIES)}
# The SDK's `high` is one step above normal, as §4's `urgent` is, so it is urgent; critical stays a
# level above anything the SDK can send. By index: how an SDK-dialect client is told each level.
SDK_PRIORITIES = ("high", "high", "normal", "low")
SUFFIX_INDEX = {**PRIORITY_INDEX, "high": P_URGENT}  # every priority suffix a send may carry

_NAME_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
MAX_NAME_LEN = 128
MAX_DESC_LEN = 1024  # characters; a desc is sent to every PUBLIC.LIST subscriber
_RESERVED_LAST = frozenset((*SUFFIX_INDEX, "*"))  # would read as a priority suffix
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class Mq9Error(Exception):
    """A request the client got wrong; its text is the `error` of the reply."""


class CreateRequest(msgspec.Struct, forbid_unknown_fields=False):
    ttl: int | None = None
    # UNSET (falsy) when the key is absent: a request carrying a name but no "public" key is
    # upstream's named create (SPEC §4b), which refuses an existing name
    public: bool | msgspec.UnsetType = msgspec.UNSET
    name: str | None = None
    desc: str = ""


class Mailbox(msgspec.Struct, array_like=True):
    mail_id: str
    public: bool
    desc: str
    ttl: int
    created_ms: int
    expires_ms: int  # 0 = never

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms != 0 and now_ms >= self.expires_ms

    @property
    def stream_name(self) -> str:
        return STREAM_PREFIX + self.mail_id


_create_decoder = msgspec.json.Decoder(CreateRequest)
_mbox_encoder = msgspec.msgpack.Encoder()
_mbox_decoder = msgspec.msgpack.Decoder(Mailbox)


def new_private_id() -> str:
    """`mail-<a>-<b>`: two 16-char base36 tokens from the CSPRNG, about 165 bits in all."""

    def token() -> str:
        n = secrets.randbits(83)
        out = []
        for _ in range(16):
            n, r = divmod(n, 36)
            out.append(_B36[r])
        return "".join(out)

    return f"mail-{token()}-{token()}"


def validate_public_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise Mq9Error("a public mailbox needs a \"name\"")
    if len(name) > MAX_NAME_LEN:
        raise Mq9Error(f"mailbox name is longer than {MAX_NAME_LEN} characters")
    if not _NAME_RE.match(name):
        raise Mq9Error("invalid mailbox name: use lowercase letters, digits, '-' and '_' in tokens "
                       "separated by single dots")
    if name.rsplit(".", 1)[-1] in _RESERVED_LAST:
        raise Mq9Error("invalid mailbox name: the last token may not be a priority "
                       "(critical, urgent, normal, high or low)")
    if name.startswith("mail-"):
        raise Mq9Error("invalid mailbox name: the 'mail-' prefix is reserved for system ids")
    return name


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MailboxRegistry:
    """Live mailboxes by id. Expiry is checked on every access, not only by the sweep."""

    def __init__(self, log: SegmentLog, default_ttl: int, max_ttl: int) -> None:
        self.log = log
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.boxes: dict[str, Mailbox] = {}
        # (expires_ms, mail_id), earliest first: the sweep pops what is due instead of scanning
        # every mailbox; an entry whose mailbox is gone or was re-created is skipped when popped
        self._expiry: list[tuple[int, str]] = []
        for _, v in log.scan_meta(MAILBOX_NS):
            mb = _mbox_decoder.decode(v)
            self.boxes[mb.mail_id] = mb
            if mb.expires_ms:
                self._expiry.append((mb.expires_ms, mb.mail_id))
        heapq.heapify(self._expiry)

    def parse_create(self, body: bytes) -> CreateRequest:
        if not body.strip():
            return CreateRequest()
        try:
            req = _create_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise Mq9Error(f"invalid create request: {exc}") from None
        except msgspec.DecodeError:
            raise Mq9Error("invalid create request: body is not valid JSON") from None
        except RecursionError:  # msgspec skips an unknown field's value recursively
            raise Mq9Error("invalid create request: JSON nested too deeply") from None
        return req

    def resolve_ttl(self, ttl: int | None) -> int:
        if ttl is None:
            return self.default_ttl
        if ttl < 0:
            raise Mq9Error("ttl must be a non-negative integer number of seconds")
        if ttl > self.max_ttl:
            raise Mq9Error(f"ttl {ttl} is above the maximum of {self.max_ttl} seconds")
        return ttl

    def _watch(self, mb: Mailbox) -> None:
        if mb.expires_ms:
            heapq.heappush(self._expiry, (mb.expires_ms, mb.mail_id))

    def get(self, mail_id: str, now: int | None = None) -> Mailbox | None:
        mb = self.boxes.get(mail_id)
        if mb is not None and mb.expired(now if now is not None else now_ms()):
            return None
        return mb

    def create(self, req: CreateRequest) -> tuple[Mailbox, bool]:
        ttl = self.resolve_ttl(req.ttl)
        now = now_ms()
        if req.public:
            mail_id = validate_public_name(req.name)
            existing = self.get(mail_id, now)
            if existing is not None:
                if not existing.public:  # made by upstream's named create: not on PUBLIC.LIST
                    raise Mq9Error(f"mailbox {mail_id} already exists and is not public")
                return existing, False
        elif req.name is not None and req.public is msgspec.UNSET:
            # upstream's create: the name is the address, and an existing one is an error
            mail_id = validate_public_name(req.name)
            if self.get(mail_id, now) is not None:
                raise Mq9Error(f"mailbox {mail_id} already exists")
        else:
            if req.name is not None:
                raise Mq9Error("\"name\" is only for public mailboxes (set \"public\": true)")
            mail_id = new_private_id()
        if len(req.desc) > MAX_DESC_LEN:
            raise Mq9Error(f"desc is longer than {MAX_DESC_LEN} characters")
        mb = Mailbox(mail_id, bool(req.public), req.desc or "", ttl, now, now + ttl * 1000 if ttl else 0)
        self.boxes[mail_id] = mb
        self._watch(mb)
        self.log.put_meta(MAILBOX_NS, mail_id, _mbox_encoder.encode(mb))
        return mb, True

    def remove(self, mail_id: str) -> Mailbox | None:
        mb = self.boxes.pop(mail_id, None)
        if mb is not None:
            self.log.delete_meta(MAILBOX_NS, mail_id)
        return mb

    def expired_now(self, now: int) -> list[Mailbox]:
        """Mailboxes whose TTL has run out, from the expiry heap: O(due), not O(mailboxes)."""
        out: list[Mailbox] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            exp, mail_id = heapq.heappop(heap)
            mb = self.boxes.get(mail_id)
            if mb is not None and mb.expires_ms == exp:
                out.append(mb)
        return out

    def next_expiry(self) -> int | None:
        """When the earliest mailbox expires (ms), or None."""
        return self._expiry[0][0] if self._expiry else None

    def public(self, now: int) -> list[Mailbox]:
        return [mb for mb in self.boxes.values() if mb.public and not mb.expired(now)]


def hidden(rec: Record, now: int) -> bool:
    """A record sent with upstream's `mq9-delay` not yet due, or past its `mq9-ttl` (SPEC §4b)."""
    m = rec.meta
    if not m:
        return False
    vis = m.get("vis")
    if vis is not None and int(vis) > now:
        return True
    exp = m.get("exp")
    return exp is not None and int(exp) <= now


def priority_of(rec: Record) -> int:
    """The priority index a mailbox record was stored with."""
    m = rec.meta
    return int(m.get("p", P_NORMAL)) if m else P_NORMAL
