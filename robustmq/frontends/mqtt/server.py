"""The MQTT listener: accepts connections, keeps the client-id registry (takeover), runs the
keepalive and retry timer, owns the retained messages and the wills waiting for their delay.

A will waiting for its Will Delay Interval is also kept in the log's metadata (namespace `mqtt.will`,
key the client id: due time, topic, payload, QoS, retain, properties), written with the close that
starts the wait and deleted when the will goes or is cancelled, so a restart meanwhile still
publishes it when it is due (at once if it came due while the server was down)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Collection

import msgspec

from robustmq.config import Config
from robustmq.frontends.mqtt.mapping import delivery_topic
from robustmq.frontends.mqtt.packets import MQTT_5, Will
from robustmq.frontends.mqtt.persistent import SessionState, load_sessions
from robustmq.frontends.mqtt.properties import WILL, PacketError, encode_properties, read_properties
from robustmq.frontends.mqtt.retained import RetainedStore
from robustmq.frontends.mqtt.session import MqttSession
from robustmq.frontends.outbound import OutboundBudget
from robustmq.frontends.registry import ConnectionTable
from robustmq.routing.router import Router

log = logging.getLogger("robustmq.mqtt")

TICK_S = 0.25  # how often keepalive deadlines and retries are checked
WILL_NS = "mqtt.will"


class SavedWill(msgspec.Struct, array_like=True):
    due_ms: int  # wall clock
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes  # as on the wire (property length, then the properties)


_will_enc = msgspec.msgpack.Encoder()
_will_dec = msgspec.msgpack.Decoder(SavedWill)


class MqttServer:
    protocol = "mqtt"  # its name in the front-end registry (monitoring's `protocol` label)

    def __init__(self, cfg: Config, router: Router, budget: OutboundBudget | None = None) -> None:
        self.cfg = cfg
        # outbound bytes of backlogged connections, all together (shared with the other front-ends)
        self.budget: OutboundBudget = budget if budget is not None else OutboundBudget(cfg.max_pending_total)
        self.router = router
        self.table: ConnectionTable[MqttSession] = ConnectionTable()
        self.conns = self.table.conns  # open connections by id
        self.clients: dict[str, MqttSession] = {}  # client id -> its connected session
        self.retained = RetainedStore(router.log)
        for owner in router.owners:
            # no retained copy lives under an owner's topics (`$mq9/AI/…`: a mail_id must never leak
            # to a wildcard); drop any an earlier version stored, in one range delete
            self.retained.drop_prefix(delivery_topic(owner.prefix + "x")[:-1])
        # persistent sessions (clean session 0 / session expiry > 0), connected or not
        self.sessions: dict[str, SessionState] = {}
        self.queued_total = 0  # entries queued in all of them (persistent.MAX_QUEUED_TOTAL)
        self.auth_required = bool(cfg.user or cfg.token)
        self.slow_consumers = 0
        self.stale_connections = 0  # cut for outliving their keep-alive (1.5 x) in silence
        self.port = cfg.mqtt_port
        self._server: asyncio.base_events.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        # v5 wills waiting for their Will Delay Interval: client id -> (monotonic deadline, the closed
        # connection (None: closed before a restart), its will); only persistent sessions wait
        # (expiry 0 ends the session at once)
        self.wills: dict[str, tuple[float, MqttSession | None, Will]] = {}
        # the MQTT publish being routed now: deliveries it causes read its QoS and retain flag here
        # (the neutral contract carries neither), and no-local subscriptions skip its publisher
        self.publishing: MqttSession | None = None
        self.publish_qos = 0
        self.publish_retain = False

    async def start(self, host: str, port: int) -> None:
        self.sessions = load_sessions(self)
        self._load_wills()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: MqttSession(self), host, port, backlog=1024,
                                                reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_loop())

    # ------------------------------------------------------------------ registry
    def register(self, conn: MqttSession) -> int:
        return self.table.add(conn)

    @property
    def total_connections(self) -> int:
        return self.table.total_connections

    def unregister(self, conn: MqttSession) -> None:
        self.table.remove(conn)
        if conn.name and self.clients.get(conn.name) is conn:
            del self.clients[conn.name]

    def claim(self, client_id: str, conn: MqttSession) -> None:
        """`conn` is now `client_id`; a connection that had the id is closed (spec 3.1.4 takeover)."""
        old = self.clients.get(client_id)
        self.clients[client_id] = conn
        if old is not None and old is not conn:
            old.taken_over()

    # ------------------------------------------------------------------ wills
    def will_on_close(self, conn: MqttSession, will: Will, session_expiry: int) -> None:
        """`conn` closed without a normal DISCONNECT: its will goes now, or (v5 Will Delay Interval)
        when the delay passes or its session ends, whichever is first (MQTT 5 3.1.3.2.2), unless
        a new connection for the client id comes first."""
        delay = (will.properties.will_delay_interval or 0) if conn.proto == MQTT_5 else 0
        newer = self.clients.get(conn.name)
        if delay > 0 and newer is not None and newer is not conn:
            return  # taken over: the new connection came before the delay passed (3.1.3-9)
        delay = min(delay, session_expiry)  # a session of expiry 0 ends with its connection
        if delay <= 0:
            conn.publish_will(will)
            return
        self.wills[conn.name] = (time.monotonic() + delay, conn, will)
        saved = SavedWill(int(time.time() * 1000) + delay * 1000, will.topic, will.payload, will.qos,
                          will.retain, encode_properties(will.properties))
        self.router.log.put_meta(WILL_NS, conn.name, _will_enc.encode(saved))

    def cancel_will(self, client_id: str) -> None:
        if self.wills.pop(client_id, None) is not None:
            self.router.log.delete_meta(WILL_NS, client_id)

    def _due_wills(self, now: float) -> None:
        for cid, (deadline, conn, will) in list(self.wills.items()):
            if deadline <= now:
                del self.wills[cid]
                self.router.log.delete_meta(WILL_NS, cid)
                if conn is None:  # its connection closed before a restart: publish for it
                    conn = MqttSession(self)
                    conn.closed = True
                    conn.name, conn.proto = cid, MQTT_5
                conn.publish_will(will)

    def _load_wills(self) -> None:
        """The wills that were waiting when the server stopped: due at their saved time."""
        now_ms, mono = time.time() * 1000, time.monotonic()
        for key, value in self.router.log.scan_meta(WILL_NS):
            try:
                cid = key.decode()
                saved = _will_dec.decode(value)
                props, _ = read_properties(saved.properties, 0, len(saved.properties), WILL)
            except (msgspec.DecodeError, UnicodeDecodeError, PacketError):  # a damaged entry: only itself
                self.router.log.delete_meta(WILL_NS, key)
                continue
            will = Will(saved.topic, saved.payload, saved.qos, saved.retain, props)
            self.wills[cid] = (mono + max(0.0, (saved.due_ms - now_ms) / 1000), None, will)

    def check_auth(self, username: str | None, password: bytes | None) -> bool:
        cfg = self.cfg
        pw = password or b""
        if cfg.token:  # a token server takes the token as the MQTT password
            return hmac.compare_digest(pw, cfg.token.encode())
        return hmac.compare_digest((username or "").encode(), cfg.user.encode()) and hmac.compare_digest(
            pw, cfg.password.encode())

    # ------------------------------------------------------------------ monitoring
    def totals(self) -> tuple[int, int, int, int]:
        """(msgs_in, msgs_out, bytes_in, bytes_out) over every connection since start."""
        return self.table.totals()

    def connections(self) -> Collection[MqttSession]:
        return self.conns.values()

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    # ------------------------------------------------------------------ timers
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self._expire_sessions()
            if self.wills:
                self._due_wills(now)
            for conn in list(self.conns.values()):
                try:
                    conn.tick(now)
                except Exception:  # one broken connection must not stop the timer for all
                    log.exception("mqtt tick failed for cid=%d", conn.cid)

    def _expire_sessions(self) -> None:
        """Drop offline sessions whose expiry has passed (v5 Session Expiry Interval)."""
        wall = time.time()
        for cid, st in list(self.sessions.items()):
            if st.live is None and st.expires_at and st.expires_at <= wall:
                del self.sessions[cid]
                st.drop()

    async def close(self) -> None:
        self.wills.clear()  # the log closes next: wills are not published at shutdown
        if self._ticker:
            self._ticker.cancel()
        if self._server:
            self._server.close()
        for conn in list(self.conns.values()):
            conn.shutdown()
