"""mq9 request bodies (LIST paging) and LIST's reply, as data."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from robustmq.core_log import SegmentLog
from robustmq.frontends.mq9.mailboxes import (
    PRIORITIES,
    PRIORITY_INDEX,
    SDK_PRIORITIES,
    MailboxRegistry,
    Mq9Error,
    hidden,
    now_ms,
    priority_of,
)

LIST_DEFAULT_LIMIT = 1000  # LIST entries per reply unless the request asks for another page size
LIST_MAX_LIMIT = 10_000  # about 600 KB of JSON: a LIST reply always fits under max_payload
LIST_YIELD_EVERY = 4096  # records scanned between two yields to the event loop


class ListRequest(msgspec.Struct, forbid_unknown_fields=True):
    """LIST's optional body: a page size and where the previous page ended."""

    limit: int = LIST_DEFAULT_LIMIT
    cursor: str | None = None


_list_decoder = msgspec.json.Decoder(ListRequest)


def parse_list_request(body: bytes) -> ListRequest:
    if not body.strip():
        return ListRequest()
    try:
        req = _list_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise Mq9Error(f"invalid list request: {exc}") from None
    except msgspec.DecodeError:
        raise Mq9Error("invalid list request: body is not valid JSON") from None
    except RecursionError:
        raise Mq9Error("invalid list request: JSON nested too deeply") from None
    if not 1 <= req.limit <= LIST_MAX_LIMIT:
        raise Mq9Error(f"limit must be between 1 and {LIST_MAX_LIMIT}")
    parse_cursor(req.cursor)
    return req


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    """`"<priority>:<msg_id>"` (a LIST reply's `next`) -> the (priority index, msg_id) it stands for."""
    if cursor is None:
        return (-1, -1)
    name, sep, num = cursor.partition(":")
    if not sep or name not in PRIORITY_INDEX or not (num.isascii() and num.isdigit()):
        raise Mq9Error("invalid cursor: pass the \"next\" value of the previous LIST reply")
    return (PRIORITY_INDEX[name], int(num))


async def list_page(log: SegmentLog, registry: MailboxRegistry, mail_id: str,
                    req: ListRequest, sdk: bool = False) -> dict[str, Any]:
    """One page of LIST in delivery order, built by one pass over the stream that yields to the
    loop between chunks, so a huge mailbox never stalls other clients. `sdk`: entries in the PyPI
    SDK's dialect (it raises on a priority other than high/normal/low; its msg_id is a str)."""
    mb = registry.get(mail_id)
    if mb is None:
        raise Mq9Error(f"mailbox {mail_id} does not exist")
    after = parse_cursor(req.cursor)
    limit = req.limit
    buckets: list[list[tuple[int, int, int, int]]] = [[] for _ in PRIORITIES]
    total = 0
    stream = log.get_stream(mb.stream_name)
    now = now_ms()
    if stream is not None:
        for off, rec in log.read(stream):
            if rec.meta and hidden(rec, now):
                continue  # upstream's delayed (not yet due) or per-message-expired: as FETCH sees it
            total += 1
            if total % LIST_YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if registry.get(mail_id) is not mb:
                    raise Mq9Error(f"mailbox {mail_id} does not exist")
            p = priority_of(rec)
            if (p, off) <= after:
                continue
            b = buckets[p]
            if len(b) <= limit:  # one more than a page: tells whether a next page exists
                b.append((p, off, rec.ts, len(rec.payload)))
    page = [e for b in buckets for e in b][:limit + 1]
    names = SDK_PRIORITIES if sdk else PRIORITIES
    out: dict[str, Any] = {"mail_id": mail_id, "messages": [
        {"msg_id": str(off) if sdk else off, "priority": names[p], "ts": ts, "size": size}
        for p, off, ts, size in page[:limit]], "total": total}
    if len(page) > limit:
        p, off = page[limit - 1][0], page[limit - 1][1]
        out["next"] = f"{PRIORITIES[p]}:{off}"
    return out
