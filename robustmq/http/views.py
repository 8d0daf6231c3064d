"""The JSON monitoring endpoints, shaped like nats-server's, free of any HTTP machinery.

Each view takes the query parameters (last value of a repeated one) and returns a JSON-ready
object or raises `HttpError`; `monitor.py` serves them. Field names follow nats-server so existing
tooling carries over; robustmq-only figures (front-ends, mailboxes, log) are extra fields. Figures
come from the front-end registry, so every protocol the broker runs is counted; the top-level
identity fields (server_id, version, port, auth) are the NATS front-end's, as nats-server's are.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

import msgspec

from robustmq import __version__
from robustmq.frontends.nats.server import PROTOCOL_VERSION
from robustmq.frontends.registry import ClosedConnection, ConnectionInfo, FrontEnd, SubscriptionInfo
from robustmq.http.redact import is_private_subject, redact_subject, redact_text
from robustmq.routing.subjects import subject_matches, valid_publish_subject

if TYPE_CHECKING:
    from robustmq.server import Broker

Query = Mapping[str, str]
Entry = tuple[FrontEnd, ConnectionInfo]

DEFAULT_LIMIT = 1024  # /connz and /subsz page size, as nats-server
# No reply grows with the number of clients or subscriptions (SPEC §8): larger `limit`s are reduced to
# MAX_LIMIT, a connection lists at most MAX_SUBS_PER_CONN subscriptions, and one reply lists at most
# MAX_SUBS_LISTED, of at most MAX_SUBS_LISTED_CHARS characters of subject, queue and sid together.
# A cut list says so (`subscriptions_list_truncated`); the true count is beside it.
MAX_LIMIT = 4096
MAX_OFFSET = 1 << 31
MAX_SUBS_PER_CONN = 1024
MAX_SUBS_LISTED = 10_000
MAX_SUBS_LISTED_CHARS = 1 << 20
ENDPOINTS = ("/healthz", "/varz", "/connz", "/subsz", "/metrics")
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("", "0", "false", "no", "off"))

# /connz?sort=: key and whether the largest comes first, as nats-server's sort options
_SORTS: dict[str, tuple[Callable[[Entry], Any], bool]] = {
    "cid": (lambda e: e[1].cid, False),
    "start": (lambda e: e[1].start_time, False),
    "uptime": (lambda e: e[1].start_time, False),  # longest-lived first
    "subs": (lambda e: len(e[1].subs), True),
    "pending": (lambda e: e[1].outbound_size(), True),
    "msgs_to": (lambda e: e[1].msgs_out, True),
    "msgs_from": (lambda e: e[1].msgs_in, True),
    "bytes_to": (lambda e: e[1].bytes_out, True),
    "bytes_from": (lambda e: e[1].bytes_in, True),
    "last": (lambda e: _last_activity(e[1]), True),  # most recently active first
    "idle": (lambda e: _last_activity(e[1]), False),  # longest idle first
    # closed connections only, as nats-server
    "stop": (lambda e: getattr(e[1], "stop_time", 0.0), True),
    "reason": (lambda e: getattr(e[1], "reason", ""), False),
}
_CLOSED_ONLY_SORTS = frozenset(("stop", "reason"))
_STATES = ("open", "closed", "any", "all")  # nats-server's ConnState names (`any` = `all`)


def _last_activity(c: Any) -> float:
    """When the client last sent something (wall clock); its start when the front-end cannot say."""
    return getattr(c, "last_activity", 0.0) or c.start_time


class HttpError(Exception):
    """A request the views refuse: the status and a message for the JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------- formatting

def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def uptime_str(seconds: float) -> str:
    """nats-server's uptime format: `45s`, `3m2s`, `1h2m3s`, `2d1h2m3s`, `1y2d1h2m3s`."""
    s = int(max(seconds, 0))
    mins, hrs, days = s // 60, s // 3600, s // 86400
    yrs = days // 365
    if yrs:
        return f"{yrs}y{days % 365}d{hrs % 24}h{mins % 60}m{s % 60}s"
    if days:
        return f"{days}d{hrs % 24}h{mins % 60}m{s % 60}s"
    if hrs:
        return f"{hrs}h{mins % 60}m{s % 60}s"
    if mins:
        return f"{mins}m{s % 60}s"
    return f"{s}s"


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:  # noqa: BLE001 - best effort on odd platforms
            return 0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# ------------------------------------------------------------------------------------ query parameters

def _int(q: Query, name: str, default: int, maximum: int | None = None) -> int:
    """A non-negative integer parameter; one above `maximum` is reduced to it."""
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw, 10)
    except ValueError:
        raise HttpError(400, f"invalid {name} {raw!r}: want a non-negative integer") from None
    if v < 0:
        raise HttpError(400, f"invalid {name} {raw!r}: want a non-negative integer")
    return v if maximum is None else min(v, maximum)


def _subs_mode(q: Query) -> str:
    """'' (no list), 'list' (subjects) or 'detail'."""
    raw = q.get("subs")
    if raw is None:
        return ""
    raw = raw.lower()
    if raw == "detail":
        return "detail"
    if raw in _TRUE:
        return "list"
    if raw in _FALSE:
        return ""
    raise HttpError(400, f"invalid subs {raw!r}: want 1, 0 or detail")


def _test_matcher(test: str | None) -> Callable[[str], bool] | None:
    """For /subsz?test=: whether a subscription's filter matches the literal subject `test`; a private
    mailbox's never does, so ?test= cannot confirm that an id is live. Quick for literal filters, so
    that a scan of 100k subscriptions stays a few tens of milliseconds."""
    if test is None:
        return None

    def match(filter_: str) -> bool:
        if filter_ == test:
            hit = True
        elif "*" in filter_ or ">" in filter_:
            hit = subject_matches(filter_, test)
        else:
            hit = False  # a literal filter matches only itself
        return hit and not is_private_subject(filter_)
    return match


class _ListBudget:
    """How many more subscriptions (and characters of them) one reply may still list."""

    def __init__(self) -> None:
        self.entries = MAX_SUBS_LISTED
        self.chars = MAX_SUBS_LISTED_CHARS

    def take(self, s: SubscriptionInfo) -> bool:
        cost = len(s.subject) + len(s.queue or "") + len(s.sid)
        if self.entries <= 0 or cost > self.chars:
            self.entries = 0  # once cut, the rest of the reply lists nothing more
            return False
        self.entries -= 1
        self.chars -= cost
        return True


def _sub_detail(s: SubscriptionInfo, cid: int) -> dict[str, Any]:
    d: dict[str, Any] = {"subject": redact_subject(s.subject)}
    if s.queue:
        d["qgroup"] = redact_text(s.queue)
    d["sid"] = redact_text(s.sid)
    d["msgs"] = s.delivered
    if s.max_msgs:
        d["max"] = s.max_msgs
    d["cid"] = cid
    return d


# ---------------------------------------------------------------------------------------- the views

class MonitorViews:
    """The JSON endpoints of one Broker; `http_host`/`http_port` are set once the listener is up."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.http_host = ""
        self.http_port = 0
        self.req_stats: dict[str, int] = {}
        self._cpu_mark = (time.monotonic(), _cpu_seconds())
        self._cpu_pct = 0.0

    def _server_name(self) -> str:
        return self.broker.cfg.server_name or self.broker.nats.server_id

    def _cpu_percent(self) -> float:
        """CPU use (% of one core) since the previous sample, like nats-server's periodic sampling."""
        now, cpu = time.monotonic(), _cpu_seconds()
        t0, c0 = self._cpu_mark
        if now - t0 >= 0.5:
            self._cpu_pct = round(100.0 * (cpu - c0) / (now - t0), 1)
            self._cpu_mark = (now, cpu)
        return self._cpu_pct

    def _log_summary(self) -> dict[str, Any]:
        lg = self.broker.log
        st = lg.stats
        return {
            "appends": st.appends,
            "bytes": st.bytes_appended,
            "batches": st.batches,
            "commit_avg_us": round(st.commit_seconds_total / st.batches * 1e6, 1) if st.batches else 0.0,
            "commit_max_us": round(st.commit_seconds_max * 1e6, 1),
            "streams": len(lg.streams),
            "segments_dropped": st.segments_dropped,
            "durability": self.broker.cfg.durability,
        }

    @staticmethod
    def _frontend_summary(fe: FrontEnd) -> dict[str, Any]:
        conns = list(fe.connections())
        in_msgs, out_msgs, in_bytes, out_bytes = fe.totals()
        return {
            "protocol": fe.protocol,
            "port": fe.port,
            "connections": len(conns),
            "total_connections": fe.total_connections,
            "subscriptions": sum(len(c.subs) for c in conns),
            "in_msgs": in_msgs,
            "out_msgs": out_msgs,
            "in_bytes": in_bytes,
            "out_bytes": out_bytes,
            "slow_consumers": fe.slow_consumers,
            "stale_connections": fe.stale_connections,
        }

    def _subscription_count(self) -> int:
        return sum(len(c.subs) for _, c in self.broker.frontends.connections())

    # ------------------------------------------------------------------ endpoints
    def index(self, q: Query) -> dict[str, Any]:
        return {"server_id": self.broker.nats.server_id, "version": __version__, "endpoints": list(ENDPOINTS)}

    def healthz(self, q: Query) -> tuple[int, dict[str, Any]]:
        for fe in self.broker.frontends:
            if not fe.is_serving():
                return 503, {"status": "unavailable", "error": f"{fe.protocol} listener is down"}
        return 200, {"status": "ok"}

    def varz(self, q: Query) -> dict[str, Any]:
        b = self.broker
        cfg = b.cfg
        nats = b.frontends.get("nats")
        mqtt = b.frontends.get("mqtt")
        now = time.time()
        frontends = [self._frontend_summary(fe) for fe in b.frontends]

        def total(field: str) -> int:
            return sum(f[field] for f in frontends)

        mq9 = b.mq9
        varz: dict[str, Any] = {
            "server_id": b.nats.server_id,
            "server_name": self._server_name(),
            "version": PROTOCOL_VERSION,  # as in INFO: the NATS protocol level clients check
            "robustmq_version": __version__,
            "proto": 1,
            "go": f"robustmq {__version__} (python {platform.python_version()})",
            "host": cfg.host,
            "port": nats.port if nats is not None else 0,
            "auth_required": b.nats.auth_required,
            "tls_required": False,
            "max_connections": 0,  # not limited
            "ping_interval": int(cfg.ping_interval_s * 1e9),  # nanoseconds, as nats-server
            "ping_max": cfg.max_pings_out,
            "http_host": self.http_host,
            "http_port": self.http_port,
            "auth_timeout": cfg.auth_timeout_s,
            "max_control_line": cfg.max_control_line,
            "max_payload": cfg.max_payload,
            "max_pending": cfg.max_pending,
            "start": rfc3339(b.started),
            "now": rfc3339(now),
            "uptime": uptime_str(now - b.started),
            "mem": rss_bytes(),
            "cores": os.cpu_count() or 1,
            "cpu": self._cpu_percent(),
            # the figures of every front-end together; `frontends` has them one by one
            "connections": total("connections"),
            "total_connections": total("total_connections"),
            "routes": 0,
            "remotes": 0,
            "leafnodes": 0,
            "in_msgs": total("in_msgs"),
            "out_msgs": total("out_msgs"),
            "in_bytes": total("in_bytes"),
            "out_bytes": total("out_bytes"),
            "slow_consumers": total("slow_consumers"),
            "stale_connections": total("stale_connections"),
            # nats-server splits client traffic from route/leaf traffic; here every message is a client's
            "in_client_msgs": total("in_msgs"),
            "out_client_msgs": total("out_msgs"),
            "in_client_bytes": total("in_bytes"),
            "out_client_bytes": total("out_bytes"),
            "slow_consumer_stats": {"clients": total("slow_consumers"), "routes": 0, "gateways": 0,
                                    "leafs": 0},
            "subscriptions": total("subscriptions"),
            "config_load_time": rfc3339(b.started),
            "http_base_path": "",
            "https_port": 0,
            # nats-server's per-listener option objects: `{}` for what is not running, as it does;
            # MQTT runs here without nats-server's MQTT options, so it shows its address only
            "cluster": {},
            "gateway": {},
            "leaf": {},
            "websocket": {},
            "jetstream": {},
            "mqtt": {"host": cfg.host, "port": mqtt.port} if mqtt is not None else {},
            "http_req_stats": dict(self.req_stats),
            # robustmq extras
            "frontends": frontends,
            "mailboxes": mq9.mailbox_count() if mq9 is not None else 0,
            "mailboxes_expired": mq9.stats.mailboxes_expired if mq9 is not None else 0,
            "log": self._log_summary(),
            "router": msgspec.structs.asdict(b.router.stats),
        }
        if mq9 is not None:
            varz["mq9"] = msgspec.structs.asdict(mq9.stats)
        return varz

    def connz(self, q: Query) -> dict[str, Any]:
        offset = _int(q, "offset", 0, MAX_OFFSET)
        limit = _int(q, "limit", DEFAULT_LIMIT, MAX_LIMIT) or DEFAULT_LIMIT  # 0: the default, as nats-server
        subs = _subs_mode(q)
        sort = (q.get("sort") or "cid").lower()
        if sort not in _SORTS:
            raise HttpError(400, f"invalid sort {sort!r}: want one of {', '.join(_SORTS)}")
        state = (q.get("state") or "open").lower()
        if state not in _STATES:
            raise HttpError(400, f"invalid state {state!r}: want open, closed or all")
        if sort in _CLOSED_ONLY_SORTS and state != "closed":
            raise HttpError(400, f"sort by {sort} is only valid with state=closed")
        entries: list[Entry] = []
        if state != "closed":
            entries += self.broker.frontends.connections()
        if state != "open":
            entries += self.broker.frontends.closed_connections()
        if q.get("cid") not in (None, ""):
            cid = _int(q, "cid", 0)
            entries = [e for e in entries if e[1].cid == cid]
        key, desc = _SORTS[sort]
        entries.sort(key=key, reverse=desc)
        now = time.time()
        budget = _ListBudget()
        out = [self._conn_info(fe, c, subs, now, budget) for fe, c in entries[offset:offset + limit]]
        return {
            "server_id": self.broker.nats.server_id,
            "now": rfc3339(now),
            "num_connections": len(out),
            "total": len(entries),
            "offset": offset,
            "limit": limit,
            "connections": out,
        }

    @staticmethod
    def _conn_info(fe: FrontEnd, c: ConnectionInfo, subs: str, now: float,
                   budget: _ListBudget) -> dict[str, Any]:
        peer = c.peer if isinstance(c.peer, tuple) else ("", 0)
        info: dict[str, Any] = {
            "cid": c.cid,
            "kind": "Client",
            "type": fe.protocol,
            "ip": str(peer[0]) if peer else "",
            "port": int(peer[1]) if len(peer) > 1 else 0,
            "start": rfc3339(c.start_time),
            "uptime": uptime_str(now - c.start_time),
            "last_activity": rfc3339(_last_activity(c)),
            "idle": uptime_str(max(0.0, now - _last_activity(c))),
            "pending_bytes": c.outbound_size(),
            "in_msgs": c.msgs_in,
            "out_msgs": c.msgs_out,
            "in_bytes": c.bytes_in,
            "out_bytes": c.bytes_out,
            "subscriptions": len(c.subs),
            "name": redact_text(c.name),
            "lang": redact_text(c.lang),
            "version": redact_text(c.version),
        }
        if isinstance(c, ClosedConnection):
            info["uptime"] = uptime_str(c.stop_time - c.start_time)
            info["stop"] = rfc3339(c.stop_time)
            info["idle"] = uptime_str(max(0.0, c.stop_time - _last_activity(c)))
            if c.reason:
                info["reason"] = c.reason
        if subs:
            listed: list[SubscriptionInfo] = []
            for s in c.subs.values():
                if len(listed) >= MAX_SUBS_PER_CONN or not budget.take(s):
                    break
                listed.append(s)
            if subs == "list":
                info["subscriptions_list"] = [redact_subject(s.subject) for s in listed]
            else:
                info["subscriptions_list_detail"] = [_sub_detail(s, c.cid) for s in listed]
            if len(listed) < len(c.subs):
                info["subscriptions_list_truncated"] = True  # `subscriptions` has the true count
        return info

    def subsz(self, q: Query) -> dict[str, Any]:
        b = self.broker
        offset = _int(q, "offset", 0, MAX_OFFSET)
        limit = _int(q, "limit", DEFAULT_LIMIT, MAX_LIMIT) or DEFAULT_LIMIT  # 0: the default, as nats-server
        subs = _subs_mode(q)
        test = q.get("test")
        if test is not None and not valid_publish_subject(test):
            raise HttpError(400, f"invalid test subject {test!r}: want a literal subject")
        total = self._subscription_count()
        fanouts = b.router.cached_fanouts()
        res: dict[str, Any] = {
            "server_id": b.nats.server_id,
            "now": rfc3339(time.time()),
            "num_subscriptions": total,
            "num_cache": len(fanouts),
            "max_fanout": max(fanouts, default=0),
            "avg_fanout": round(sum(fanouts) / len(fanouts), 2) if fanouts else 0.0,
            # robustmq: plain subscriptions live in the subject trie, mailbox ones in the mq9 layer
            "num_trie": b.router.subscription_count,
            "num_mq9": max(total - b.router.subscription_count, 0),
            # as nats-server, always: the number of subscriptions a list would hold, and its window
            "total": total,
            "offset": offset,
            "limit": limit,
        }
        if subs or test is not None:
            conns = sorted((c for _, c in b.frontends.connections()), key=lambda c: c.cid)
            budget = _ListBudget()
            page: list[dict[str, Any]] = []
            matched = 0  # counted in full; only the page is built
            match = _test_matcher(test)
            for c in conns:
                if match is None:
                    lo, hi = max(offset - matched, 0), min(offset + limit - matched, len(c.subs))
                    on_page: Iterable[SubscriptionInfo] = islice(c.subs.values(), lo, hi) if lo < hi else ()
                    matched += len(c.subs)
                else:
                    on_page = []
                    for s in c.subs.values():
                        if match(s.subject):
                            if offset <= matched < offset + limit:
                                on_page.append(s)
                            matched += 1
                for s in on_page:
                    if not budget.take(s):
                        res["subscriptions_list_truncated"] = True
                        break
                    page.append(_sub_detail(s, c.cid))
            res["total"] = matched
            res["offset"] = offset
            res["limit"] = limit
            res["subscriptions_list"] = page
        return res
