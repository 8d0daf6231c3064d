"""The MQTT front-end driven by Debian's command-line clients, mosquitto_sub and mosquitto_pub
(libmosquitto, C: a client independent of paho), with `-V mqttv311` and `-V mqttv5`.

Every test that is MQTT-only runs against robustmq and against a real mosquitto (`broker` /
`port` fixtures, conftest.py), so the expectation is the spec's and not only ours. Each
mosquitto_sub is bounded by `-W` and each read by a timeout: nothing can hang.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time

import nats
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from procs import RobustMQ

from .brokers import PASSWORD, USER, debian_binary
from .clients import V5, MosqSub, Paho, mosq_pub, uniq

VERSIONS = [pytest.param("mqttv311", id="v3.1.1"), pytest.param("mqttv5", id="v5")]



def ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    return res


# ------------------------------------------------------------------------------------ QoS
@pytest.mark.parametrize("version", VERSIONS)
def test_qos_0_1_2_flows(port: int, version: str) -> None:
    """Each QoS with its own packet flow on both sides, and delivery at min(publish, granted)."""
    topic = f"{uniq('q')}/data"
    sub = MosqSub(port, version, [topic], qos=2)
    low = MosqSub(port, version, [topic], qos=1)
    try:
        flows = {0: [], 1: ["received PUBACK"], 2: ["received PUBREC", "sending PUBREL", "received PUBCOMP"]}
        for qos, expected in flows.items():
            res = ok(mosq_pub(port, version, topic, b"m%d" % qos, qos=qos))
            seen = [step for step in ("received PUBACK", "received PUBREC", "sending PUBREL",
                                      "received PUBCOMP") if step in res.stdout]
            assert seen == expected, res.stdout
        got = sub.take(3)
        assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == \
            [(topic, b"m0", 0, False), (topic, b"m1", 1, False), (topic, b"m2", 2, False)]
        sub.wait_for("sending PUBREC")  # the QoS 2 flow towards the subscriber
        sub.wait_for("received PUBREL")
        sub.wait_for("sending PUBCOMP")
        assert [m.qos for m in low.take(3)] == [0, 1, 1]  # granted QoS 1 caps the QoS 2 message
    finally:
        sub.stop()
        low.stop()


# ------------------------------------------------------------------------------------ retained
@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_deliver_clear(port: int, version: str) -> None:
    root = uniq("ret")
    topic = f"{root}/state"
    ok(mosq_pub(port, version, topic, b"off", qos=1, retain=True))
    ok(mosq_pub(port, version, topic, b"on", qos=1, retain=True))  # replaces it
    sub = MosqSub(port, version, [f"{root}/#"], count=1)
    m = sub.next()
    assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"on", True, 1)
    assert sub.finish() == 0
    ok(mosq_pub(port, version, topic, None, qos=1, retain=True))  # -r -n: clears it
    again = MosqSub(port, version, [f"{root}/#"])
    try:
        assert again.nothing(0.5)
    finally:
        again.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_remove_retained_option_clears_what_it_receives(port: int, version: str) -> None:
    """mosquitto_sub --remove-retained answers each retained message with an empty retained publish."""
    root = uniq("rr")
    for leaf in ("a", "b"):
        ok(mosq_pub(port, version, f"{root}/{leaf}", leaf.encode(), qos=1, retain=True))
    cleaner = MosqSub(port, version, [f"{root}/#"], "--remove-retained")
    try:
        assert sorted(m.topic for m in cleaner.take(2)) == [f"{root}/a", f"{root}/b"]
        deadline = time.monotonic() + 5  # its two clearing publishes are acknowledged
        while sum("received PUBACK" in line for line in cleaner.debug) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        cleaner.stop()
    after = MosqSub(port, version, [f"{root}/#"])
    try:
        assert after.nothing(0.5)
    finally:
        after.stop()


# ------------------------------------------------------------------------------------ will
@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_kill_not_on_clean_exit(port: int, version: str) -> None:
    """The will goes out when the socket just closes, not after a normal DISCONNECT (mosquitto_sub
    -C reached); a v5 mosquitto_sub stopped by SIGTERM says DISCONNECT 0x04, which keeps the will."""
    topic = uniq("will/")
    watcher = MosqSub(port, version, [topic])
    try:
        will = ["--will-topic", topic, "--will-payload", "gone", "--will-qos", "1"]
        x = uniq("x/")
        polite = MosqSub(port, version, [x], *will, count=1)
        ok(mosq_pub(port, version, x, b"bye", qos=1))
        assert polite.finish() == 0  # -C 1 reached: DISCONNECT 0x00, the will is discarded
        assert watcher.nothing(0.4)
        if version == "mqttv5":
            sigterm = MosqSub(port, version, [x], *will)
            sigterm.stop()
            assert watcher.next().payload == b"gone"
        rude = MosqSub(port, version, [x], *will, "--will-retain")
        rude.kill()  # the socket just closes
        m = watcher.next()
        assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"gone", 1, False)
        late = MosqSub(port, version, [topic], count=1)  # --will-retain: kept as the retained message
        m = late.next()
        assert (m.payload, m.retain) == (b"gone", True)
        assert late.finish() == 0
        ok(mosq_pub(port, version, topic, None, qos=1, retain=True))
    finally:
        watcher.stop()


# ------------------------------------------------------------------------------------ persistent session
@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_gets_offline_messages(port: int, version: str) -> None:
    """-c -i id: the subscription outlives the client; QoS 1 messages sent while it is away arrive
    on reconnect, in order; QoS 0 ones are not kept (both brokers' default)."""
    cid, topic = uniq("cli"), f"{uniq('ps')}/t"
    first = MosqSub(port, version, [topic], "-c", "-i", cid, "-E", ready=False)  # -E: exit once subscribed
    assert first.finish() == 0
    try:
        for i in range(3):
            ok(mosq_pub(port, version, topic, b"off%d" % i, qos=1))
        ok(mosq_pub(port, version, topic, b"qos0", qos=0))
        # the queued messages may come before the SUBACK (and -C 3 ends it then)
        back = MosqSub(port, version, [topic], "-c", "-i", cid, count=3, ready=False)
        got = back.take(3)
        assert [(m.payload, m.qos) for m in got] == [(b"off0", 1), (b"off1", 1), (b"off2", 1)]
        assert back.finish() == 0
        assert any("received CONNACK" in line for line in back.debug)
    finally:  # a clean session for the id ends the stored one
        MosqSub(port, version, [topic], "-i", cid, "-E", ready=False).finish()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_option_drops_a_stored_subscription(port: int, version: str) -> None:
    """-c -U topic: the reconnecting client unsubscribes from its stored subscription; nothing more
    is queued for it."""
    cid, topic = uniq("cli"), f"{uniq('un')}/t"
    assert MosqSub(port, version, [topic], "-c", "-i", cid, "-E", ready=False).finish() == 0
    try:
        assert MosqSub(port, version, [f"{topic}/other"], "-c", "-i", cid, "-U", topic, "-E",
                       ready=False).finish() == 0
        ok(mosq_pub(port, version, topic, b"not for you", qos=1))
        back = MosqSub(port, version, [f"{topic}/other"], "-c", "-i", cid, ready=False)
        try:
            back.wait_for("Subscribed (mid")
            assert back.nothing(0.3)
        finally:
            back.stop()
    finally:
        MosqSub(port, version, [topic], "-i", cid, "-E", ready=False).finish()


def test_v5_disconnect_with_session_expiry_0_ends_the_session(port: int) -> None:
    """-D DISCONNECT session-expiry-interval 0: the persistent session ends with the connection."""
    cid, topic = uniq("cli"), f"{uniq('dz')}/t"
    end = ["-D", "DISCONNECT", "session-expiry-interval", "0"]
    assert MosqSub(port, "mqttv5", [topic], "-c", "-i", cid, "-x", "60", "-E", *end, ready=False).finish() == 0
    ok(mosq_pub(port, "mqttv5", topic, b"queued?", qos=1))
    back = MosqSub(port, "mqttv5", [f"{topic}/other"], "-c", "-i", cid, "-x", "60", ready=False)
    try:
        back.wait_for("Subscribed (mid")
        assert back.nothing(0.3)  # no session was left to queue it
    finally:
        back.stop()
        MosqSub(port, "mqttv5", [topic], "-i", cid, "-E", ready=False).finish()


def test_v5_disconnect_giving_expiry_to_a_session_of_expiry_0_keeps_the_will(port: int) -> None:
    """MQTT 5 3.14.2.2.2: a session that had expiry 0 cannot get one in DISCONNECT: a protocol
    error, so the close is not a normal one and the will is published (robustmq delivered nothing
    here before: found with this mosquitto_sub option)."""
    will_topic, x = uniq("will/"), uniq("x/")
    watcher = MosqSub(port, "mqttv5", [will_topic])
    try:
        c = MosqSub(port, "mqttv5", [x], "--will-topic", will_topic, "--will-payload", "gone",
                    "-D", "DISCONNECT", "session-expiry-interval", "60", count=1)
        ok(mosq_pub(port, "mqttv5", x, b"bye", qos=1))
        c.finish()
        assert watcher.next().payload == b"gone"
    finally:
        watcher.stop()


# ------------------------------------------------------------------------------------ wildcards, $-topics
@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards_and_dollar_topics(port: int, version: str) -> None:
    root, dollar = uniq("w"), uniq("$app")
    sub = MosqSub(port, version, [f"{root}/+/t", f"{root}/x/#"])
    wide = MosqSub(port, version, ["#", "+/status"], qos=0)
    exact = MosqSub(port, version, [f"{dollar}/#"])
    try:
        for t in (f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}/a/b/t", f"{root}/a", f"{root}//t"):
            ok(mosq_pub(port, version, t, t.encode(), qos=1))
        ok(mosq_pub(port, version, f"{dollar}/status", b"hidden", qos=1))
        got = sorted(m.topic for m in sub.take(4))
        assert got == sorted([f"{root}/a/t", f"{root}/x", f"{root}/x/y/z", f"{root}//t"])
        assert sub.nothing(0.2)
        assert exact.next().topic == f"{dollar}/status"
        seen = []
        while not wide.msgs.empty():
            seen.append(wide.msgs.get_nowait().topic)
        assert f"{root}/a/t" in seen  # '#' got the ordinary traffic
        assert [t for t in seen if t.startswith("$")] == []  # never a $ topic (mosquitto has $SYS too)
    finally:
        for s in (sub, wide, exact):
            s.stop()


# ------------------------------------------------------------------------------------ shared subscriptions
@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription(port: int, version: str) -> None:
    topic = f"{uniq('jobs')}/x"
    a = MosqSub(port, version, [f"$share/g/{topic}"])
    b = MosqSub(port, version, [f"$share/g/{topic}"])
    plain = MosqSub(port, version, [topic])
    try:
        n = 40
        ok(mosq_pub(port, version, topic, b"".join(b"%d\n" % i for i in range(n)), qos=1, stdin_lines=True))
        everyone = plain.take(n)
        assert sorted(int(m.payload) for m in everyone) == list(range(n))
        got: dict[str, list[int]] = {"a": [], "b": []}
        deadline = time.monotonic() + 5
        while len(got["a"]) + len(got["b"]) < n and time.monotonic() < deadline:
            for name, s in (("a", a), ("b", b)):
                while not s.msgs.empty():
                    m = s.msgs.get_nowait()
                    assert m.topic == topic  # delivered on the real topic
                    got[name].append(int(m.payload))
            time.sleep(0.02)
        assert sorted(got["a"] + got["b"]) == list(range(n))  # every message once across the group
        assert got["a"] and got["b"]  # and the group shares the work
        assert a.nothing(0.2) and b.nothing(0.01)
    finally:
        for s in (a, b, plain):
            s.stop()


# ------------------------------------------------------------------------------------ v5 properties
def test_v5_publish_properties(port: int) -> None:
    """-D PUBLISH user-property / content-type / response-topic and -D SUBSCRIBE subscription-identifier
    reach the subscriber; a 3.1.1 subscriber gets the message without them."""
    topic = f"{uniq('props')}/t"
    sub = MosqSub(port, "mqttv5", [topic], "-D", "SUBSCRIBE", "subscription-identifier", "7")
    v3 = MosqSub(port, "mqttv311", [topic])
    try:
        ok(mosq_pub(port, "mqttv5", topic, b"42", "-D", "PUBLISH", "user-property", "unit", "lux",
                    "-D", "PUBLISH", "user-property", "zone", "a", "-D", "PUBLISH", "user-property", "unit", "raw",
                    "-D", "PUBLISH", "content-type", "text/plain",
                    "-D", "PUBLISH", "response-topic", f"{topic}/reply", qos=1))
        m = sub.next()
        assert m.payload == b"42"
        assert m.user == [("unit", "lux"), ("zone", "a"), ("unit", "raw")]  # order and repeats kept
        assert (m.sub_id, m.content_type, m.response_topic) == ("7", "text/plain", f"{topic}/reply")
        m3 = v3.next()
        assert (m3.payload, m3.user, m3.sub_id) == (b"42", [], "")
    finally:
        sub.stop()
        v3.stop()


def test_v5_topic_alias_from_mosquitto_pub(port: int) -> None:
    """mosquitto_pub -l with a topic alias sends the topic once, then only the alias."""
    topic = f"{uniq('alias')}/t"
    sub = MosqSub(port, "mqttv5", [topic])
    try:
        res = ok(mosq_pub(port, "mqttv5", topic, b"a\nb\nc\n", "-D", "PUBLISH", "topic-alias", "1", qos=1,
                          stdin_lines=True))
        assert res.stdout.count("sending PUBLISH") == 3
        assert [(m.topic, m.payload) for m in sub.take(3)] == [(topic, b"a"), (topic, b"b"), (topic, b"c")]
    finally:
        sub.stop()


def test_v5_message_expiry(port: int) -> None:
    """-D PUBLISH message-expiry-interval: forwarded with the time left; an expired retained message
    or one queued for an offline session is never delivered."""
    root = uniq("exp")
    cid = uniq("cli")
    away = MosqSub(port, "mqttv5", [f"{root}/q"], "-c", "-i", cid, "-x", "60", "-E", ready=False)
    assert away.finish() == 0
    live = MosqSub(port, "mqttv5", [f"{root}/#"])
    try:
        for leaf, seconds in (("short", 1), ("long", 60)):
            ok(mosq_pub(port, "mqttv5", f"{root}/{leaf}", leaf.encode(), "-D", "PUBLISH",
                        "message-expiry-interval", str(seconds), qos=1, retain=True))
            ok(mosq_pub(port, "mqttv5", f"{root}/q", leaf.encode(), "-D", "PUBLISH",
                        "message-expiry-interval", str(seconds), qos=1))
        got = {(m.topic, m.payload): m.expiry for m in live.take(4)}
        assert got[(f"{root}/long", b"long")] in (59, 60)
        assert got[(f"{root}/short", b"short")] in (0, 1)
        time.sleep(2.1)
        late = MosqSub(port, "mqttv5", [f"{root}/+"], count=1)
        m = late.next()
        assert (m.topic, m.payload, m.retain) == (f"{root}/long", b"long", True)
        assert m.expiry is not None and 55 <= m.expiry <= 58
        late.stop()
        back = MosqSub(port, "mqttv5", [f"{root}/q"], "-c", "-i", cid, "-x", "60", ready=False)
        m = back.next()
        assert (m.payload, m.qos) == (b"long", 1)  # the short one expired in the queue
        assert back.nothing(0.3)
        back.stop()
    finally:
        live.stop()
        MosqSub(port, "mqttv5", [f"{root}/q"], "-i", cid, "-E", ready=False).finish()
        for leaf in ("short", "long"):
            mosq_pub(port, "mqttv5", f"{root}/{leaf}", None, qos=1, retain=True)


def test_v5_maximum_packet_size_of_the_client(port: int) -> None:
    """-D CONNECT maximum-packet-size: a message too large for the client is not sent to it (3.1.2.25),
    the others are."""
    topic = f"{uniq('mps')}/t"
    sub = MosqSub(port, "mqttv5", [topic], "-D", "CONNECT", "maximum-packet-size", "200")
    try:
        for payload in (b"small", b"x" * 1000, b"after"):
            ok(mosq_pub(port, "mqttv5", topic, payload, qos=1))
        assert [m.payload for m in sub.take(2)] == [b"small", b"after"]
        assert sub.nothing(0.2)
    finally:
        sub.stop()


def test_v5_receive_maximum_of_the_client(port: int) -> None:
    """-D CONNECT receive-maximum 1: one QoS 1 message in flight at a time, all delivered in order."""
    topic = f"{uniq('rm')}/t"
    sub = MosqSub(port, "mqttv5", [topic], "-D", "CONNECT", "receive-maximum", "1")
    try:
        n = 50
        ok(mosq_pub(port, "mqttv5", topic, b"".join(b"%d\n" % i for i in range(n)), qos=1, stdin_lines=True))
        assert [int(m.payload) for m in sub.take(n)] == list(range(n))
    finally:
        sub.stop()


def test_v5_request_response_with_mosquitto_rr(port: int) -> None:
    """mosquitto_rr sends a request with a Response Topic and Correlation Data and prints the answer
    a (paho) responder publishes there."""
    req = f"{uniq('svc')}/echo"
    responder = Paho(port, V5, uniq("svc"))
    try:
        responder.subscribe(req, 1)

        def serve() -> None:
            m = responder.next()
            props = PahoProperties(PacketTypes.PUBLISH)
            props.CorrelationData = m.properties.CorrelationData
            responder.c.publish(m.properties.ResponseTopic, b"re:" + m.payload, 1, properties=props)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        res = subprocess.run([debian_binary("mosquitto_rr", "mosquitto-clients"), "-h", "127.0.0.1",
                              "-p", str(port), "-V", "mqttv5", "-t", req, "-e", f"{req}/reply/{uniq()}",
                              "-m", "ping", "-D", "PUBLISH", "correlation-data", "c1", "-W", "5"],
                             capture_output=True, timeout=10)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == b"re:ping"
        t.join(5)
    finally:
        responder.close()


# ------------------------------------------------------------------------------------ auth
@pytest.mark.parametrize("version", VERSIONS)
def test_auth_user_password(auth_port: int, broker: str, version: str) -> None:
    """-u/-P right: accepted; wrong or none: refused (mosquitto_pub exits with the CONNACK code)."""
    topic = uniq("auth/")
    sub = MosqSub(auth_port, version, [topic], "-u", USER, "-P", PASSWORD)
    try:
        ok(mosq_pub(auth_port, version, topic, b"in", "-u", USER, "-P", PASSWORD, qos=1))
        assert sub.next().payload == b"in"
        wrong = mosq_pub(auth_port, version, topic, b"no", "-u", USER, "-P", "nope", qos=1)
        anon = mosq_pub(auth_port, version, topic, b"no", qos=1)
        refused = (4, 5) if version == "mqttv311" else (0x86, 0x87)  # a broker may say either
        assert wrong.returncode in refused and anon.returncode in refused, (wrong, anon)
        if broker == "robustmq":  # robustmq tells them apart
            assert (wrong.returncode, anon.returncode) == (refused[0], refused[1])
        assert sub.nothing(0.3)
    finally:
        sub.stop()


# ------------------------------------------------------------------------------------ robustmq only
@pytest.mark.parametrize("version", VERSIONS)
def test_server_maximum_packet_size(robustmq_port: int, version: str) -> None:
    """A PUBLISH past the server's maximum: v5 mosquitto_pub knows it from CONNACK and does not send
    it; a 3.1.1 one sends it and loses that connection only."""
    port = robustmq_port
    topic = f"{uniq('big')}/t"
    sub = MosqSub(port, version, [topic])
    try:
        res = mosq_pub(port, version, topic, b"x" * (1 << 20 | 0x30000), qos=1, timeout=20)
        if version == "mqttv5":
            assert "sending PUBLISH" not in res.stdout
        else:
            assert res.returncode != 0 and "connection was lost" in res.stderr.lower(), res
        ok(mosq_pub(port, version, topic, b"fine", qos=1))
        assert sub.next().payload == b"fine"
        assert sub.nothing(0.2)
    finally:
        sub.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_mosquitto_pub_to_nats(robustmq_srv: RobustMQ, version: str) -> None:
    root = uniq("sensors")
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        sub = await nc.subscribe(f"{root}.room1.temp")
        await nc.flush()
        args = ["-D", "PUBLISH", "user-property", "unit", "C"] if version == "mqttv5" else []
        ok(await asyncio.to_thread(mosq_pub, robustmq_srv.mqtt_port, version, f"{root}/room1/temp", b"21.5",
                                   *args, qos=1))
        m = await sub.next_msg(timeout=5)
        assert (m.subject, m.data) == (f"{root}.room1.temp", b"21.5")
        if version == "mqttv5":
            assert m.headers == {"unit": "C"}
    finally:
        await nc.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_nats_to_mosquitto_sub(robustmq_srv: RobustMQ, version: str) -> None:
    root = uniq("sensors")
    sub = await asyncio.to_thread(MosqSub, robustmq_srv.mqtt_port, version, [f"{root}/+/temp"], count=1)
    nc = await nats.connect(robustmq_srv.nats_url, allow_reconnect=False)
    try:
        await nc.publish(f"{root}.room2.temp", b"19", headers={"unit": "C"})
        await nc.flush()
        m = await asyncio.to_thread(sub.next)
        assert (m.topic, m.payload, m.qos) == (f"{root}/room2/temp", b"19", 1)
        assert m.user == ([("unit", "C")] if version == "mqttv5" else [])
    finally:
        await nc.close()
        await asyncio.to_thread(sub.stop)


def test_mosquitto_rr_creates_an_mq9_mailbox(robustmq_port: int) -> None:
    """A v5 request with a Response Topic is an mq9 request: the reply comes back on that topic."""
    res = subprocess.run([debian_binary("mosquitto_rr", "mosquitto-clients"), "-h", "127.0.0.1",
                          "-p", str(robustmq_port), "-V", "mqttv5", "-t", "$mq9/AI/MAILBOX/CREATE",
                          "-e", f"{uniq('replies')}/x", "-m", '{"ttl": 60}', "-W", "5"],
                         capture_output=True, timeout=10)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["mail_id"].startswith("mail-")
