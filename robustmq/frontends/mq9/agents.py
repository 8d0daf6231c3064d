"""Upstream mq9's agent registry (SPEC §4b): `$mq9.AI.AGENT.REGISTER` / `UNREGISTER` / `REPORT` /
`DISCOVER`. Every reply carries `error` (`""` on success), as upstream's other commands do.

An agent is an opaque JSON card (an A2A AgentCard, or anything else) with a `mailbox` field: the
identity key, which must name a live mailbox. The card is kept byte for byte as sent and DISCOVER
hands it back that way. A REPORT (the agent's live status: `{"mailbox", ...}`) is kept beside the
card, the latest one replacing the one before; it does not change the card or what is searched.

Entries persist in the log's metadata (`mq9.agent/<mailbox>`, written in the request's batch and
answered after that batch's commit, as every mq9 write is) and go with their mailbox when it
expires. The search indexes are rebuilt from them at startup: `agents_search.py`.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import msgspec

from robustmq.core_log import SegmentLog
from robustmq.frontends.mq9.agents_search import (
    SemanticIndex,
    SemanticUnavailable,
    TextIndex,
    card_prose,
    card_text,
    fts_query,
)
from robustmq.frontends.mq9.mailboxes import MailboxRegistry, Mq9Error, now_ms
from robustmq.routing.contract import Connection

log = logging.getLogger("robustmq.mq9")

AGENT_PREFIX = "$mq9.AI.AGENT."
REGISTER = AGENT_PREFIX + "REGISTER"
UNREGISTER = AGENT_PREFIX + "UNREGISTER"
REPORT = AGENT_PREFIX + "REPORT"
DISCOVER = AGENT_PREFIX + "DISCOVER"
AGENT_NS = "mq9.agent"

# a DISCOVER page of MAX_LIMIT of the largest cards, each with the largest report, stays under the
# default max_payload (1 MiB): 50 * (16 + 4) KiB
MAX_CARD_BYTES = 16 * 1024
MAX_REPORT_BYTES = 4 * 1024
MAX_AGENTS = 100_000
# the cards and reports of all agents together: they are held in memory with both search indexes
# (about three times their size), so a registry of the largest cards stays bounded in total
# (SPEC §8): 64 MiB of cards is ~200 MB of memory, where 100,000 cards of 16 KiB would be ~5 GB
MAX_REGISTRY_BYTES = 64 << 20
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
MAX_PAGE = 10_000
MAX_QUERY_CHARS = 1024

_json = msgspec.json.Encoder()


class AgentEntry(msgspec.Struct, array_like=True):
    card: bytes  # the JSON card exactly as sent (outer whitespace stripped)
    seq: int  # registration order, kept across restarts (two registrations may share a millisecond)
    registered_ms: int
    report: bytes | None = None  # the latest REPORT, as sent
    report_ms: int = 0


class DiscoverRequest(msgspec.Struct, forbid_unknown_fields=False):
    text: str | None = None
    semantic: str | None = None
    limit: int = DEFAULT_LIMIT
    page: int = 1


_entry_enc = msgspec.msgpack.Encoder()
_entry_dec = msgspec.msgpack.Decoder(AgentEntry)
_discover_dec = msgspec.json.Decoder(DiscoverRequest)


def ok(obj: dict[str, Any] | None = None) -> bytes:
    return _json.encode({"error": "", **(obj or {})})


def parse_object(body: bytes, what: str, cap: int = MAX_CARD_BYTES) -> tuple[bytes, dict[str, Any], str]:
    """A card or report body -> (raw JSON, decoded object, its mailbox). Raises Mq9Error."""
    raw = body.strip()
    if len(raw) > cap:
        raise Mq9Error(f"{what} is {len(raw)} bytes; at most {cap} are allowed")
    if not raw:
        raise Mq9Error(f"{what} is empty: send a JSON object with a \"mailbox\" field")
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise Mq9Error(f"invalid {what}: body is not valid JSON") from None
    except RecursionError:
        raise Mq9Error(f"invalid {what}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise Mq9Error(f"invalid {what}: expected a JSON object, got {_json_type(obj)}")
    mailbox = obj.get("mailbox")
    if not isinstance(mailbox, str) or not mailbox.strip():
        raise Mq9Error(f"{what} needs a \"mailbox\" field: the mail address the agent receives on "
                       "(a non-empty string)")
    return raw, obj, mailbox


def _json_type(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(v), "null")


class AgentRegistry:
    def __init__(self, log_: SegmentLog, mailboxes: MailboxRegistry) -> None:
        self.log = log_
        self.mailboxes = mailboxes
        # mailbox -> (row, entry), oldest registration first; `row` numbers the entry in the
        # full-text index (a re-register gets a new one, so a stale search hit is recognised)
        self._entries: dict[str, tuple[int, AgentEntry]] = {}
        self._by_row: dict[int, str] = {}
        self._rows = itertools.count(1)
        self._seq = 0
        self.nbytes = 0  # cards and reports held (MAX_REGISTRY_BYTES)
        self.text: TextIndex | None = None
        self.semantic: SemanticIndex | None = None

    def start(self) -> None:
        """Load the registry from the log's metadata and build both indexes (in their threads)."""
        self.text = TextIndex()
        self.semantic = SemanticIndex()
        loaded: list[tuple[str, AgentEntry]] = []
        for key, value in self.log.scan_meta(AGENT_NS):
            mailbox = key.decode()
            if mailbox not in self.mailboxes.boxes:  # defensive: the mailbox's removal took it along
                self.log.delete_meta(AGENT_NS, mailbox)
                continue
            loaded.append((mailbox, _entry_dec.decode(value)))
        loaded.sort(key=lambda kv: kv[1].seq)
        self._seq = loaded[-1][1].seq if loaded else 0
        for mailbox, entry in loaded:  # queued here, indexed by each index's thread in one job
            row = next(self._rows)
            self._entries[mailbox] = (row, entry)
            self._by_row[row] = mailbox
            self.nbytes += _size(entry)
            card = msgspec.json.decode(entry.card)
            self.text.put(row, None, *card_text(card))
            self.semantic.put(mailbox, card_prose(card))
        if loaded:
            log.info("mq9 agent registry: %d agents loaded", len(loaded))

    def close(self) -> None:
        if self.text is not None:
            self.text.close()
        if self.semantic is not None:
            self.semantic.close()

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ writes
    def handle(self, subject: str, body: bytes) -> bytes:
        """REGISTER, UNREGISTER or REPORT: the state is changed and written to the current batch;
        the caller sends the returned reply once that batch is committed."""
        if subject == REGISTER:
            self.register(body)
        elif subject == UNREGISTER:
            self.unregister(body)
        elif subject == REPORT:
            self.report(body)
        else:
            raise Mq9Error(f"unknown mq9 subject {subject}")
        return ok()

    def register(self, body: bytes) -> None:
        raw, card, mailbox = parse_object(body, "agent card")
        if self.mailboxes.get(mailbox) is None:
            raise Mq9Error(f"mailbox {mailbox} does not exist: create it before registering the agent")
        old = self._entries.get(mailbox)
        if old is None and len(self._entries) >= MAX_AGENTS:
            raise Mq9Error(f"the agent registry is full ({MAX_AGENTS} agents)")
        freed = _size(old[1]) if old is not None else 0
        if self.nbytes - freed + len(raw) > MAX_REGISTRY_BYTES:
            raise Mq9Error(f"the agent registry is full ({self.nbytes} bytes of cards; at most "
                           f"{MAX_REGISTRY_BYTES}): unregister agents first")
        if old is not None:
            del self._entries[mailbox]
            del self._by_row[old[0]]
        self.nbytes += len(raw) - freed
        self._seq += 1
        entry = AgentEntry(raw, self._seq, now_ms())
        row = next(self._rows)
        self._entries[mailbox] = (row, entry)  # a re-register replaces the card and moves it last
        self._by_row[row] = mailbox
        self.log.put_meta(AGENT_NS, mailbox, _entry_enc.encode(entry))
        assert self.text is not None and self.semantic is not None, "start() first"
        self.text.put(row, old[0] if old is not None else None, *card_text(card))
        self.semantic.put(mailbox, card_prose(card))

    def unregister(self, body: bytes) -> None:
        _, _, mailbox = parse_object(body, "unregister request")
        if not self.forget(mailbox):
            raise Mq9Error(f"agent {mailbox} is not registered")

    def report(self, body: bytes) -> None:
        raw, _, mailbox = parse_object(body, "agent report", MAX_REPORT_BYTES)
        cur = self._entries.get(mailbox)
        if cur is None:
            raise Mq9Error(f"agent {mailbox} is not registered: REGISTER it first")
        row, entry = cur
        grow = len(raw) - len(entry.report or b"")
        if self.nbytes + grow > MAX_REGISTRY_BYTES:
            raise Mq9Error(f"the agent registry is full ({self.nbytes} bytes of cards; at most "
                           f"{MAX_REGISTRY_BYTES})")
        self.nbytes += grow
        entry = AgentEntry(entry.card, entry.seq, entry.registered_ms, raw, now_ms())
        self._entries[mailbox] = (row, entry)
        self.log.put_meta(AGENT_NS, mailbox, _entry_enc.encode(entry))

    def forget(self, mailbox: str) -> bool:
        """Remove an agent (UNREGISTER, or its mailbox expired). False when it was not registered."""
        cur = self._entries.pop(mailbox, None)
        if cur is None:
            return False
        del self._by_row[cur[0]]
        self.nbytes -= _size(cur[1])
        self.log.delete_meta(AGENT_NS, mailbox)
        if self.text is not None and self.semantic is not None:
            self.text.delete(cur[0])
            self.semantic.delete(mailbox)
        return True

    # ------------------------------------------------------------------ discover
    def parse_discover(self, body: bytes) -> DiscoverRequest:
        try:
            req = _discover_dec.decode(body if body.strip() else b"{}")
        except msgspec.ValidationError as exc:
            raise Mq9Error(f"invalid discover request: {exc}") from None
        except msgspec.DecodeError:
            raise Mq9Error("invalid discover request: body is not valid JSON") from None
        except RecursionError:  # msgspec skips an unknown field's value recursively
            raise Mq9Error("invalid discover request: JSON nested too deeply") from None
        if not 1 <= req.limit <= MAX_LIMIT:
            raise Mq9Error(f"limit must be between 1 and {MAX_LIMIT}")
        if not 1 <= req.page <= MAX_PAGE:
            raise Mq9Error(f"page must be between 1 and {MAX_PAGE}")
        for name, q in (("text", req.text), ("semantic", req.semantic)):
            if q is not None and len(q) > MAX_QUERY_CHARS:
                raise Mq9Error(f"{name} is longer than {MAX_QUERY_CHARS} characters")
        return req

    async def discover(self, req: DiscoverRequest) -> bytes:
        """`semantic` (by meaning) if given, else `text` (full text, bm25), else every agent in
        registration order; one page of `limit` cards."""
        assert self.text is not None and self.semantic is not None, "start() first"
        offset = (req.page - 1) * req.limit
        semantic = (req.semantic or "").strip()
        text = (req.text or "").strip()
        found: list[tuple[str, AgentEntry]]
        if semantic:
            try:
                keys = await self.semantic.search(semantic, req.limit, offset)
            except SemanticUnavailable as exc:
                raise Mq9Error(str(exc)) from None
            found = [(k, self._entries[k][1]) for k in keys if k in self._entries]
        elif text:
            query = fts_query(text)
            rows = await self.text.search(query, req.limit, offset) if query is not None else []
            found = [(m, self._entries[m][1]) for m in (self._by_row.get(r) for r in rows)
                     if m is not None]
        else:
            found = [(m, e) for m, (_, e) in
                     itertools.islice(self._entries.items(), offset, offset + req.limit)]
        out: dict[str, Any] = {"agents": [msgspec.Raw(e.card) for _, e in found]}
        reports = {m: {"report": msgspec.Raw(e.report), "report_time": e.report_ms // 1000}
                   for m, e in found if e.report is not None}
        if reports:
            out["reports"] = reports
        return ok(out)

    async def serve_discover(self, origin: Connection, reply: str, req: DiscoverRequest) -> None:
        """Answer one DISCOVER. What it sees is durable: the batch holding earlier writes is
        committed first (a DISCOVER right after a REGISTER's reply finds the agent)."""
        try:
            await self.log.committed()
            body = await self.discover(req)
        except Mq9Error as exc:
            body = _json.encode({"error": str(exc)})
        except Exception as exc:  # a failed index job or write: the requester is told, the layer goes on
            log.exception("mq9 DISCOVER failed")
            body = _json.encode({"error": f"discover failed: {exc}"})
        if not origin.closed:
            origin.reply(reply, body)


def _size(entry: AgentEntry) -> int:
    return len(entry.card) + len(entry.report or b"")
