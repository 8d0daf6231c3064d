"""mq9 delivery: who gets a mailbox's messages, live and on replay.

Plain subscribers get every stored message at subscribe (critical, urgent, normal, low; FIFO within each)
and then live ones; live messages that arrive during the replay wait in a backlog, so the switch has
no gap and no duplicate. A queue group hands each message to one member and keeps its progress
(the highest offset of each priority handed out), persisted in the log's metadata.

Delayed messages (upstream's `mq9-delay`) are stored hidden and pushed when due (`delayed.py`), out
of offset order, so each target decides on its own whether it already has one:
- a plain subscription that began (`since`, ms) before the message became visible gets the push;
  one that began after it replays it instead (its replay hides exactly the ones due after `since`);
- a queue group's cursor may pass a delayed message while it is hidden (a later message of its
  priority is handed out), so the group keeps those offsets as `owed` (persisted beside its
  cursors): the message is handed to one member when it comes due, or by the group's next replay
  if it came due while no member was there. An owed offset leaves the set when it is handed out,
  deleted or expired, so the set holds at most the mailbox's pending delayed messages.

Each subscription is told messages in its dialect: §4 names on the subject, or, for the PyPI SDK
(SPEC §4b), its `high`/`normal`/`low` and a `{"msg_id", "payload": <base64>}` envelope, the only place
that SDK reads a msg_id from (it ignores headers).
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from robustmq.core_log import Record, SegmentLog, Stream
from robustmq.frontends.mq9.mailboxes import (
    GROUP_NS,
    P_NORMAL,
    PRIORITIES,
    SDK_PRIORITIES,
    Mailbox,
    MailboxRegistry,
    hidden,
    now_ms,
    priority_of,
)
from robustmq.frontends.mq9.stats import Mq9Stats
from robustmq.frontends.mq9.subjects import ALL_MASK

if TYPE_CHECKING:
    from robustmq.frontends.mq9.upstream import PriorityIndex

REPLAY_CHUNK = 512  # messages between two pauses of a replay (fewer when they are big)
REPLAY_CHUNK_BYTES = 1 << 20  # payload bytes between two pauses: big messages never pile up
REPLAY_HIGH_WATER = 8 << 20  # pause a replay while the subscriber has this much unsent

GROUP_OWED_NS = "mq9.gowed"  # per queue group: delayed offsets its cursors passed while hidden

_group_enc = msgspec.msgpack.Encoder()
_group_dec = msgspec.msgpack.Decoder(list[int])
_owed_dec = msgspec.msgpack.Decoder(dict[int, int])
_PRIO_BYTES = [p.encode() for p in PRIORITIES]
_NO_PROGRESS = [-1] * len(PRIORITIES)


class Target:
    """A delivery target on one mailbox: one plain subscription, or one queue group."""

    __slots__ = ("again", "backlog", "gone", "mail_id", "mask", "replaying", "task")

    def __init__(self, mail_id: str, mask: int) -> None:
        self.mail_id = mail_id
        self.mask = mask
        self.replaying = False
        self.gone = False  # unsubscribed (or the group's last member left): deliver nothing more
        self.again = False  # a group: a member joined during its replay, so replay once more
        self.backlog: list[tuple[Mailbox, int, Record]] = []
        self.task: asyncio.Task[None] | None = None


class SubTarget(Target):
    __slots__ = ("sdk", "since", "sub")

    def __init__(self, sub: Any, mail_id: str, mask: int, sdk: bool = False) -> None:
        super().__init__(mail_id, mask)
        self.sub = sub
        self.sdk = sdk  # told in the PyPI SDK's dialect
        # when it subscribed (ms): a delayed message due after this is pushed, not replayed
        self.since = now_ms()


class Group(Target):
    """A queue group on a mailbox. cursors[p]: the highest offset of priority p handed to a member;
    owed: offset -> priority of delayed messages not handed out yet (some below the cursors)."""

    __slots__ = ("cursors", "members", "owed", "owed_dirty", "queue")

    def __init__(self, mail_id: str, queue: str, cursors: list[int],
                 owed: dict[int, int] | None = None) -> None:
        super().__init__(mail_id, ALL_MASK)
        self.queue = queue
        self.members: list[SubTarget] = []
        self.cursors = cursors
        self.owed: dict[int, int] = owed or {}
        self.owed_dirty = False


class Delivery:
    """The delivery targets of every mailbox, and the work of feeding them."""

    def __init__(self, log: SegmentLog, registry: MailboxRegistry, stats: Mq9Stats,
                 priority_index: Callable[[Mailbox, Stream], Awaitable[PriorityIndex]]) -> None:
        self.log = log
        self.registry = registry
        self.stats = stats
        self.subs: dict[str, list[SubTarget]] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.groups_by_mail: dict[str, list[Group]] = {}
        self._dirty_groups: set[Group] = set()
        # where each priority's last message is (upstream's index, kept by the sends): a replay
        # reads each priority's range only, not the whole mailbox once per priority
        self.priority_index = priority_index

    def has_targets(self, mail_id: str) -> bool:
        return mail_id in self.subs or mail_id in self.groups_by_mail

    def add(self, sub: Any, mail_id: str, mask: int, sdk: bool = False) -> SubTarget:
        """A new subscription on a mailbox (a queue group member when `sub.queue`): replay starts."""
        t = SubTarget(sub, mail_id, mask, sdk)
        if sub.queue:
            self._join_group(t, sub.queue)
        else:
            self.subs.setdefault(mail_id, []).append(t)
            self._start_replay(t)
        return t

    def remove(self, t: SubTarget) -> None:
        sub = t.sub
        t.gone = True
        if sub.queue:
            g = self.groups.get((t.mail_id, sub.queue))
            if g is None:
                return
            try:
                g.members.remove(t)
            except ValueError:
                pass
            if not g.members:
                g.gone = True
                if g.task:
                    g.task.cancel()
                self.persist_groups()
                del self.groups[(t.mail_id, sub.queue)]
                lst = self.groups_by_mail.get(t.mail_id, [])
                if g in lst:
                    lst.remove(g)
                if not lst:
                    self.groups_by_mail.pop(t.mail_id, None)
            return
        lst2 = self.subs.get(t.mail_id)
        if lst2 and t in lst2:
            lst2.remove(t)
            if not lst2:
                del self.subs[t.mail_id]
        if t.task:
            t.task.cancel()

    def forget(self, mb: Mailbox) -> None:
        """A mailbox expired: groups stay attached (their members are still subscribed: a public
        name may be created again), with progress reset because a new stream starts at offset 0."""
        for g in self.groups_by_mail.get(mb.mail_id, []):
            if g.task:
                g.task.cancel()
            g.cursors = list(_NO_PROGRESS)
            g.owed = {}
            g.owed_dirty = False
            g.backlog = []
            self._dirty_groups.discard(g)
        self.log.delete_meta_prefix(GROUP_NS, _group_key(mb.mail_id, ""))
        self.log.delete_meta_prefix(GROUP_OWED_NS, _group_key(mb.mail_id, ""))

    def close(self) -> None:
        for t in [t for ts in self.subs.values() for t in ts] + list(self.groups.values()):
            if t.task:
                t.task.cancel()

    # ------------------------------------------------------------------ live
    def live(self, mb: Mailbox, off: int, rec: Record) -> None:
        """A message just stored, or a delayed one (`vis` in its metadata) just come due."""
        mail_id = mb.mail_id
        if mail_id not in self.subs and mail_id not in self.groups_by_mail:
            return  # nobody to tell, and no group that could owe it
        if self.registry.boxes.get(mail_id) is not mb:
            return  # expired meanwhile
        stream = self.log.get_stream(mb.stream_name)
        vis = _vis(rec)
        deleted = stream is not None and off in stream.deleted
        if deleted or (rec.meta and hidden(rec, now_ms())):
            # deleted, or upstream's mq9-delay not due (pushed when it is) or mq9-ttl past
            if vis >= 0 and (deleted or vis <= now_ms()):
                self.settle_owed(mb.mail_id, off)
            return
        bit = 1 << priority_of(rec)
        for t in self.subs.get(mb.mail_id, ()):
            # a delayed message (vis >= 0) is pushed to the subscriptions that began before it came
            # due; the others replayed it
            if t.mask & bit and (vis < 0 or t.since < vis):
                if t.replaying:
                    t.backlog.append((mb, off, rec))
                else:
                    self._to_sub(t, mb, off, rec)
        for g in self.groups_by_mail.get(mb.mail_id, ()):
            if g.replaying:
                g.backlog.append((mb, off, rec))
            else:
                self._to_group(g, mb, off, rec)

    def _to_sub(self, t: SubTarget, mb: Mailbox, off: int, rec: Record) -> None:
        p = priority_of(rec)
        payload = rec.payload
        if t.sdk:
            # the SDK reads the priority from the subject's last token only
            subject = mb.stream_name + "." + SDK_PRIORITIES[p]
            if payload:  # it treats an empty envelope payload as "no envelope": send b"" raw
                payload = _sdk_envelope(off, payload)
        elif p == P_NORMAL and not (rec.meta and rec.meta.get("n")):
            subject = mb.stream_name
        else:
            subject = mb.stream_name + "." + PRIORITIES[p]
        headers = [(b"mq9-msg-id", b"%d" % off), (b"mq9-priority", _PRIO_BYTES[p]),
                   (b"mq9-ts", b"%d" % rec.ts)]
        if rec.headers:
            headers.extend(rec.headers)
        t.sub.conn.deliver(t.sub, subject, None, headers, payload)
        self.stats.messages_delivered += 1

    def _to_group(self, g: Group, mb: Mailbox, off: int, rec: Record) -> bool:
        p = priority_of(rec)
        owed = g.owed
        if off <= g.cursors[p] and not (owed and off in owed):
            return True
        bit = 1 << p
        members = [m for m in g.members if m.mask & bit and not m.gone and not m.sub.conn.closed]
        if not members:
            return False
        m = members[random.randrange(len(members))] if len(members) > 1 else members[0]
        self._to_sub(m, mb, off, rec)
        if off > g.cursors[p]:
            g.cursors[p] = off
        if owed and owed.pop(off, None) is not None:
            g.owed_dirty = True
        self._dirty_groups.add(g)
        return True

    def delayed(self, mb: Mailbox, off: int, rec: Record) -> None:
        """A delayed message was stored (hidden): every queue group now on the mailbox owes it to a
        member, since its cursor may pass it before it comes due. (A group not loaded now has not
        passed it: its next replay starts below it.)"""
        p = priority_of(rec)
        for g in self.groups_by_mail.get(mb.mail_id, ()):
            g.owed[off] = p
            g.owed_dirty = True
            self._dirty_groups.add(g)

    def settle_owed(self, mail_id: str, off: int) -> None:
        """A delayed message was deleted or expired: no group owes it any more."""
        for g in self.groups_by_mail.get(mail_id, ()):
            if g.owed.pop(off, None) is not None:
                g.owed_dirty = True
                self._dirty_groups.add(g)

    def persist_groups(self) -> None:
        if not self._dirty_groups:
            return
        for g in self._dirty_groups:
            key = _group_key(g.mail_id, g.queue)
            self.log.put_meta(GROUP_NS, key, _group_enc.encode(g.cursors))
            if g.owed_dirty:
                g.owed_dirty = False
                if g.owed:
                    self.log.put_meta(GROUP_OWED_NS, key, _group_enc.encode(g.owed))
                else:
                    self.log.delete_meta(GROUP_OWED_NS, key)
        self._dirty_groups.clear()

    # ------------------------------------------------------------------ replay
    def _start_replay(self, t: SubTarget | Group) -> None:
        mb = self.registry.get(t.mail_id)
        if mb is None:
            return
        stream = self.log.get_stream(mb.stream_name)
        if stream is None or stream.committed == stream.first_offset:
            return
        t.replaying = True
        t.backlog = []
        self.stats.replays += 1
        t.task = asyncio.get_running_loop().create_task(self._replay(t, mb, stream, stream.committed))

    async def _replay(self, t: SubTarget | Group, mb: Mailbox, stream: Stream, end: int) -> None:
        try:
            n = 0
            nbytes = 0
            # a pass per priority, each only up to that priority's last message (none: no pass)
            last = (await self.priority_index(mb, stream)).last
            for p in range(len(PRIORITIES)):
                if not t.mask & (1 << p):
                    continue
                if isinstance(t, Group):
                    if not any(m.mask & (1 << p) for m in t.members):
                        continue  # no member takes this priority: its messages wait for one
                    # delayed messages its cursor passed while they were hidden, due since then
                    for off in sorted(o for o, q in t.owed.items() if q == p and o <= t.cursors[p]):
                        found = next(iter(self.log.read(stream, off, off + 1)), None)
                        now = now_ms()
                        if found is not None and hidden(found[1], now):
                            if _vis(found[1]) > now:
                                continue  # not due yet: pushed when it is
                            found = None  # expired
                        if found is None:
                            t.owed.pop(off, None)
                            t.owed_dirty = True
                            self._dirty_groups.add(t)
                            continue
                        if not self._to_group(t, mb, off, found[1]):
                            break  # no member left for this priority
                        n += 1
                    start = t.cursors[p] + 1
                else:
                    start = 0
                stop = min(end, last[p] + 1)
                now = now_ms()  # read again after each chunk (the loop yields only there)
                for off, rec in self.log.read(stream, start, stop):
                    if priority_of(rec) != p:
                        continue
                    if rec.meta:
                        if hidden(rec, now):
                            if isinstance(t, Group) and _vis(rec) > now and off not in t.owed:
                                t.owed[off] = p  # its cursor may pass it before it is due
                                t.owed_dirty = True
                                self._dirty_groups.add(t)
                            continue
                        if not isinstance(t, Group) and _vis(rec) > t.since:
                            continue  # came due after the subscribe: pushed, not replayed
                    if isinstance(t, Group):
                        if not self._to_group(t, mb, off, rec):
                            break  # no member left for this priority: the rest waits for one
                    else:
                        if t.gone or t.sub.conn.closed:
                            return
                        self._to_sub(t, mb, off, rec)
                    n += 1
                    nbytes += len(rec.payload)
                    if n % REPLAY_CHUNK == 0 or nbytes >= REPLAY_CHUNK_BYTES:
                        nbytes = 0
                        self.persist_groups()
                        if not await self._pace(t):
                            return
                        now = now_ms()
                        if self.registry.boxes.get(mb.mail_id) is not mb or mb.expired(now):
                            return
        finally:
            self.persist_groups()
            t.replaying = False
            t.task = None
            backlog, t.backlog = t.backlog, []
            if not t.gone:
                for bmb, off, rec in backlog:
                    if isinstance(t, Group):
                        self._to_group(t, bmb, off, rec)
                    elif not t.sub.conn.closed:
                        self._to_sub(t, bmb, off, rec)
                if t.again:
                    t.again = False
                    self._start_replay(t)

    async def _pace(self, t: SubTarget | Group) -> bool:
        """Yield to the loop; wait while the subscriber(s) have a large unsent backlog."""
        await asyncio.sleep(0)
        if t.gone:
            return False
        conns = [m.sub.conn for m in t.members] if isinstance(t, Group) else [t.sub.conn]
        for _ in range(5000):  # bounded: about 10 s
            live = [c for c in conns if not c.closed]
            if not live:
                return False
            if min(c.outbound_size() for c in live) < REPLAY_HIGH_WATER:
                return True
            await asyncio.sleep(0.002)
        return True

    def _join_group(self, t: SubTarget, queue: str) -> None:
        key = (t.mail_id, queue)
        g = self.groups.get(key)
        if g is None:
            raw = self.log.get_meta(GROUP_NS, _group_key(t.mail_id, queue))
            cursors = _group_dec.decode(raw) if raw else []
            raw_owed = self.log.get_meta(GROUP_OWED_NS, _group_key(t.mail_id, queue))
            # progress saved before the fourth level (`low`) existed has three entries
            g = Group(t.mail_id, queue, cursors + _NO_PROGRESS[len(cursors):],
                      _owed_dec.decode(raw_owed) if raw_owed else None)
            self.groups[key] = g
            self.groups_by_mail.setdefault(t.mail_id, []).append(g)
            g.members.append(t)
            self._start_replay(g)
        else:
            # a new member may take priorities no member took: what the group left undelivered is
            # its now (a replay from the group's cursors; what was handed out is not read again)
            g.members.append(t)
            if g.replaying:
                g.again = True
            else:
                self._start_replay(g)


def _group_key(mail_id: str, queue: str) -> str:
    return mail_id + "\x00" + queue


def _vis(rec: Record) -> int:
    """When a delayed message becomes visible (ms); -1 for any other."""
    m = rec.meta
    return int(m.get("vis", -1)) if m else -1


def _sdk_envelope(off: int, payload: bytes) -> bytes:
    """What the SDK unwraps: its Message.msg_id is a str, and the payload comes back byte-exact."""
    return b'{"msg_id":"%d","payload":"%s"}' % (off, base64.b64encode(payload))
