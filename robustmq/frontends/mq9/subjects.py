"""The `$mq9.AI.` subjects and how a mailbox subject splits into mail_id and priority."""

from __future__ import annotations

from robustmq.frontends.mq9.mailboxes import P_NORMAL, PRIORITY_INDEX, STREAM_PREFIX

PREFIX = "$mq9.AI."
PUBLIC_LIST = "$mq9.AI.PUBLIC.LIST"
CREATE = "$mq9.AI.MAILBOX.CREATE"
LIST_PREFIX = "$mq9.AI.MAILBOX.LIST."
DELETE_PREFIX = "$mq9.AI.MAILBOX.DELETE."
ALL_MASK = 0b111  # one bit per priority


def parse_send_subject(subject: str) -> tuple[str, int, bool]:
    """`$mq9.AI.MAILBOX.MSG.<mail_id>[.<priority>]` -> (mail_id, priority, explicit `.normal`)."""
    rest = subject[len(STREAM_PREFIX):]
    mail_id, dot, last = rest.rpartition(".")
    if dot and last in PRIORITY_INDEX:
        prio = PRIORITY_INDEX[last]
        return mail_id, prio, prio == P_NORMAL
    return rest, P_NORMAL, False


def parse_msg_subject(rest: str) -> tuple[str, int, bool] | None:
    """`<mail_id>[.critical|.urgent|.normal|.*]` (a subscription) -> (mail_id, priority mask,
    explicit suffix). None when the mail-id position holds a wildcard (it could reveal mailboxes)."""
    mail_id, dot, last = rest.rpartition(".")
    if not dot:
        mail_id, last = rest, ""
    if last in PRIORITY_INDEX:
        mask, explicit = 1 << PRIORITY_INDEX[last], True
    elif last == "*":
        mask, explicit = ALL_MASK, True
    else:
        mail_id, mask, explicit = rest, 1 << P_NORMAL, False
    if not mail_id or any(t in ("*", ">") or not t for t in mail_id.split(".")):
        return None
    return mail_id, mask, explicit
