"""The `$mq9.AI.` subjects, how a mailbox subject splits into mail_id and priority, and which
dialect (SPEC §4 or the PyPI SDK's, §4b) a subscriber or requester speaks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from robustmq.frontends.mq9.mailboxes import (
    P_CRITICAL,
    P_LOW,
    P_NORMAL,
    P_URGENT,
    PRIORITIES,
    STREAM_PREFIX,
    SUFFIX_INDEX,
)

if TYPE_CHECKING:
    from robustmq.routing.contract import Connection

PREFIX = "$mq9.AI."
PUBLIC_LIST = "$mq9.AI.PUBLIC.LIST"
CREATE = "$mq9.AI.MAILBOX.CREATE"
LIST_PREFIX = "$mq9.AI.MAILBOX.LIST."
DELETE_PREFIX = "$mq9.AI.MAILBOX.DELETE."
ALL_MASK = (1 << len(PRIORITIES)) - 1  # one bit per priority

# Subscription filters by last token. The SDK labels critical as `high` too (its best word), so its
# `.high` filter takes both levels it would call high.
_FILTER_MASK = {
    "critical": 1 << P_CRITICAL,
    "urgent": 1 << P_URGENT,
    "normal": 1 << P_NORMAL,
    "low": 1 << P_LOW,
    "high": (1 << P_CRITICAL) | (1 << P_URGENT),
    "*": ALL_MASK,
}
SDK_SUFFIXES = frozenset(("high", "low"))  # spellings only the SDK's dialect uses
_SEND_SKIP = len(STREAM_PREFIX)

# `robustmq==1.0.0`'s Client connects with this CONNECT name unless told otherwise; its `SUB <id>.*`
# and LIST look exactly like §4's, so the name is the only thing that tells its dialect apart.
SDK_CLIENT_NAME = "robustmq-mq9-python"


# a §4 send's record metadata: its priority, and `n` when `.normal` was spelled out (delivered back
# with the suffix). One dict per spelling, shared by every record sent so: never mutated.
SEND_META: tuple[dict[str, int | str], ...] = tuple({"p": p} for p in range(len(PRIORITIES)))
SEND_META_NORMAL: dict[str, int | str] = {"p": P_NORMAL, "n": 1}
_META_NORMAL = SEND_META[P_NORMAL]  # (no suffix: the usual send)


def parse_send_subject(subject: str) -> tuple[str, str, dict[str, int | str], int]:
    """`$mq9.AI.MAILBOX.MSG.<mail_id>[.<priority>]` -> (mail_id, the mailbox's stream name, the
    record metadata: `SEND_META[priority]`, or `SEND_META_NORMAL` for an explicit `.normal`; the
    priority)."""
    rest = subject[_SEND_SKIP:]
    mail_id, dot, last = rest.rpartition(".")
    if dot:
        prio = SUFFIX_INDEX.get(last)
        if prio is not None:  # the stream is the subject without its priority suffix
            return (mail_id, subject[:len(subject) - len(last) - 1],
                    SEND_META_NORMAL if prio == P_NORMAL else SEND_META[prio], prio)
    return rest, subject, _META_NORMAL, P_NORMAL


def parse_msg_subject(rest: str) -> tuple[str, int, bool] | None:
    """`<mail_id>[.critical|.urgent|.normal|.high|.low|.*]` (a subscription) -> (mail_id, priority
    mask, whether the suffix is one of the SDK's names). None when the mail-id position holds a
    wildcard (it could reveal mailboxes)."""
    mail_id, dot, last = rest.rpartition(".")
    if dot and last in _FILTER_MASK:
        mask, sdk = _FILTER_MASK[last], last in SDK_SUFFIXES
    else:
        mail_id, mask, sdk = rest, 1 << P_NORMAL, False
    # `#` too: a literal token to NATS, but the seed shows `MSG.#` among the refused filters, and no
    # mail_id holds one (a stranger trying it learns it is refused, not that it silently matches nothing)
    if not mail_id or any(t in ("*", ">", "#") or not t for t in mail_id.split(".")):
        return None
    return mail_id, mask, sdk


def is_sdk_client(conn: Connection) -> bool:
    """Whether a connection is the PyPI SDK's: its client name (NATS CONNECT `name`) says so."""
    return conn.name.startswith(SDK_CLIENT_NAME)
