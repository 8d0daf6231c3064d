"""Counters of the mq9 layer (read by monitoring)."""

from __future__ import annotations

import msgspec


class Mq9Stats(msgspec.Struct):
    mailboxes_created: int = 0
    mailboxes_expired: int = 0
    messages_stored: int = 0
    messages_delivered: int = 0
    dropped_no_mailbox: int = 0
    refused_full: int = 0
    replays: int = 0
