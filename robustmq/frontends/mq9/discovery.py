"""`$mq9.AI.PUBLIC.LIST`: a snapshot of the public mailboxes on subscribe, then created/expired events."""

from __future__ import annotations

from typing import Any

import msgspec

from robustmq.frontends.mq9.mailboxes import Mailbox, MailboxRegistry, now_ms
from robustmq.frontends.mq9.subjects import PUBLIC_LIST

_json = msgspec.json.Encoder()


class PublicList:
    def __init__(self, registry: MailboxRegistry) -> None:
        self.registry = registry
        self.subs: list[Any] = []

    def add(self, sub: Any) -> None:
        """A new subscriber: every current public mailbox first, oldest first."""
        self.subs.append(sub)
        for mb in sorted(self.registry.public(now_ms()), key=lambda m: m.created_ms):
            sub.conn.deliver(sub, PUBLIC_LIST, None, None, _json.encode(_created(mb)))

    def remove(self, sub: Any) -> None:
        if sub in self.subs:
            self.subs.remove(sub)

    def created(self, mb: Mailbox) -> None:
        self._event(_created(mb))

    def expired(self, mb: Mailbox) -> None:
        self._event({"event": "expired", "mail_id": mb.mail_id})

    def _event(self, event: dict[str, Any]) -> None:
        data = _json.encode(event)
        for sub in list(self.subs):
            if not sub.conn.closed:
                sub.conn.deliver(sub, PUBLIC_LIST, None, None, data)


def _created(mb: Mailbox) -> dict[str, Any]:
    return {"event": "created", "mail_id": mb.mail_id, "desc": mb.desc, "ttl": mb.ttl}
