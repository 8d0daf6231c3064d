"""Secrecy of private mailbox ids in everything monitoring shows (SPEC §4, §8).

A private mailbox id (``mail-…``) is a capability, so no endpoint shows one. Subjects under
``$mq9.AI.MAILBOX.`` are cut at their ``mail-`` token (``$mq9.AI.MAILBOX.MSG.mail-…``), and anything
shaped like a private id in other client-supplied strings (connection names, subjects, queue groups,
sids) is replaced by ``mail-…``. Public mailbox names are not secret and stay visible.
"""

from __future__ import annotations

import re

MAILBOX_PREFIX = "$mq9.AI.MAILBOX."
PRIVATE_ID_PREFIX = "mail-"
REDACTED_ID = "mail-…"
# the shape of a private id (`mail-<16 base36>-<16 base36>`), loosely, wherever a client may have put one
_PRIVATE_ID_RE = re.compile(r"mail-[0-9a-z]{8,}-[0-9a-z]{8,}", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Replace anything shaped like a private mailbox id in a client-supplied string."""
    if "mail-" not in text.lower():
        return text
    return _PRIVATE_ID_RE.sub(REDACTED_ID, text)


def redact_subject(subject: str) -> str:
    """`$mq9.AI.MAILBOX.<KIND>.mail-…` for a private mailbox's subject; keeps no character of the id
    (nor what follows it). Public mailbox names and other subjects pass through `redact_text`."""
    if subject.startswith(MAILBOX_PREFIX):
        tokens = subject.split(".")
        for i in range(4, len(tokens)):  # after `$mq9`, `AI`, `MAILBOX`
            if tokens[i].lower().startswith(PRIVATE_ID_PREFIX):
                return ".".join(tokens[:i]) + "." + REDACTED_ID
    return redact_text(subject)


def is_private_subject(subject: str) -> bool:
    return redact_subject(subject) != subject
