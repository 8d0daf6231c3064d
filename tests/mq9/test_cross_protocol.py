"""SPEC §4 "Cross-protocol": an MQTT client publishing to `$mq9/AI/MAILBOX/MSG/<mail_id>[/urgent|/critical]`
sends into the mailbox exactly as a NATS publisher would.

The MQTT side is paho-mqtt 2.x (3.1.1 and 5.0), every wait bounded."""

from __future__ import annotations

import asyncio
import queue

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from procs import RobustMQ

from .helpers import (
    collect,
    connect,
    create,
    create_public,
    list_mailbox,
    msg_id,
    msg_subject,
    priority,
    send,
    unique_name,
)

VERSIONS = [pytest.param(mqtt.MQTTv311, id="v3.1.1"), pytest.param(mqtt.MQTTv5, id="v5")]


@pytest.fixture(scope="module")
def mqtt_server():
    s = RobustMQ(mqtt=True).start()
    yield s
    s.cleanup()


class MqttClient:
    """A paho client on its network thread; connect and QoS 1 publishes wait (bounded) for their acks."""

    def __init__(self, port: int, client_id: str, version: int) -> None:
        kw = {"clean_session": True} if version == mqtt.MQTTv311 else {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kw)
        self.c.reconnect_delay_set(60, 60)
        connacks: queue.Queue[object] = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: connacks.put(rc)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        rc = connacks.get(timeout=5)
        assert not rc.is_failure, rc  # type: ignore[attr-defined]

    @classmethod
    async def connect(cls, port: int, client_id: str, version: int = mqtt.MQTTv311) -> MqttClient:
        return await asyncio.to_thread(cls, port, client_id, version)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.c.publish(topic, payload, qos)
        if qos:
            await asyncio.to_thread(info.wait_for_publish, 5)
            assert info.is_published(), f"no PUBACK for {topic}"

    async def close(self) -> None:
        self.c.disconnect()
        await asyncio.to_thread(self.c.loop_stop)


@pytest.mark.parametrize("version", VERSIONS)
async def test_mqtt_publish_lands_in_mailbox_with_priority(mqtt_server, version: int) -> None:
    nc = await connect(mqtt_server.nats_url)
    mid = await create(nc, ttl=60)
    nats_id = await send(nc, mid, b"from nats")
    mq = await MqttClient.connect(mqtt_server.mqtt_port, f"edge-device-1-{version}", version)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}", b"mqtt normal", qos=1)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/urgent", b"mqtt urgent", qos=1)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/critical", bytes(range(256)), qos=1)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/critical", b"qos0 critical", qos=0)
    await mq.close()
    # QoS 1 was acknowledged; the QoS 0 one follows on the same connection: give it a moment
    for _ in range(40):
        if len(await list_mailbox(nc, mid)) == 5:
            break
        await asyncio.sleep(0.05)
    got = await collect(nc, msg_subject(mid, "*"), n=5)
    assert [(priority(m), m.data) for m in got] == [
        ("critical", bytes(range(256))), ("critical", b"qos0 critical"), ("urgent", b"mqtt urgent"),
        ("normal", b"from nats"), ("normal", b"mqtt normal")]
    assert got[3].headers["mq9-msg-id"] == str(nats_id)
    assert len({msg_id(m) for m in got}) == 5
    assert got[4].subject == msg_subject(mid) and got[2].subject == msg_subject(mid, "urgent")
    await nc.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_mqtt_publish_reaches_live_nats_subscriber(mqtt_server, version: int) -> None:
    nc = await connect(mqtt_server.nats_url)
    mid = await create(nc, ttl=60)
    sub = await nc.subscribe(msg_subject(mid, "*"))
    mq = await MqttClient.connect(mqtt_server.mqtt_port, f"edge-device-2-{version}", version)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{mid}/urgent", b"live from mqtt", qos=1)
    m = await sub.next_msg(timeout=3)
    assert m.data == b"live from mqtt" and m.headers["mq9-priority"] == "urgent"
    await mq.close()
    await nc.close()


async def test_mqtt_publish_to_dotted_public_mailbox(mqtt_server) -> None:
    """A public name's dots may be written as dots or as levels: both reach `task.queue`-style names
    (under `$mq9/` a `.` is not escaped to `//` as elsewhere)."""
    nc = await connect(mqtt_server.nats_url)
    name = f"cross.q{id(nc) % 100000}"
    await create_public(nc, name, ttl=60)
    mq = await MqttClient.connect(mqtt_server.mqtt_port, "edge-device-3", mqtt.MQTTv5)
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{name}", b"dots")
    await mq.publish(f"$mq9/AI/MAILBOX/MSG/{name.replace('.', '/')}/urgent", b"levels")
    await mq.close()
    got = await collect(nc, msg_subject(name, "*"), n=2)
    assert [(priority(m), m.data) for m in got] == [("urgent", b"levels"), ("normal", b"dots")]
    await nc.close()


async def test_a_dotted_public_mailbox_is_delivered_on_the_subscriber_s_own_spelling(mqtt_server) -> None:
    """A public name holds dots; an MQTT subscriber may write it as one level (`q.jobs`) or as
    several (`q/jobs`): either way each message arrives on a topic its filter matches."""
    nc = await connect(mqtt_server.nats_url)
    name = "q" + unique_name("dots").replace("-", "").lower() + ".jobs"
    await create_public(nc, name, ttl=60)
    await send(nc, name, b"u", "urgent")
    await send(nc, name, b"n")
    for spelling in (name, name.replace(".", "/")):
        flt = f"$mq9/AI/MAILBOX/MSG/{spelling}/+"
        got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        mq = await MqttClient.connect(mqtt_server.mqtt_port, "dots-" + spelling.replace("/", "-"), mqtt.MQTTv311)
        mq.c.message_callback_add(flt, lambda c, u, m, got=got: got.put(m))
        mq.c.subscribe(flt, 1)
        msgs = [await asyncio.to_thread(got.get, True, 5) for _ in range(2)]
        assert [(m.topic, m.payload) for m in msgs] == [
            (f"$mq9/AI/MAILBOX/MSG/{spelling}/urgent", b"u"), (f"$mq9/AI/MAILBOX/MSG/{spelling}/normal", b"n")]
        assert all(mqtt.topic_matches_sub(flt, m.topic) for m in msgs)
        await mq.close()
    await nc.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_mqtt_send_to_missing_mailbox_is_acked_and_dropped(mqtt_server, version: int) -> None:
    """Like a NATS fire-and-forget send (SPEC §4): dropped and counted, the connection stays."""
    mq = await MqttClient.connect(mqtt_server.mqtt_port, f"edge-device-4-{version}", version)
    await mq.publish("$mq9/AI/MAILBOX/MSG/mail-doesnotexist0000", b"lost")
    await mq.publish("$mq9/AI/MAILBOX/MSG/mail-doesnotexist0000", b"lost again")
    await mq.close()


async def test_mqtt_v5_subscriber_gets_mailbox_replay_with_msg_ids(mqtt_server) -> None:
    """The other direction: an MQTT subscription to `$mq9/AI/MAILBOX/MSG/<id>/+` is an mq9 subscribe
    (replay in priority order, then live); v5 gets `mq9-msg-id` and `mq9-priority` as user properties."""
    nc = await connect(mqtt_server.nats_url)
    mid = await create(nc, ttl=60)
    await send(nc, mid, b"normal one")
    await send(nc, mid, b"critical one", "critical")
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    mq = await MqttClient.connect(mqtt_server.mqtt_port, "edge-device-5", mqtt.MQTTv5)
    mq.c.on_message = lambda c, u, m: got.put(m)
    mq.c.subscribe(f"$mq9/AI/MAILBOX/MSG/{mid}/+", 1)
    first = await asyncio.to_thread(got.get, True, 5)
    second = await asyncio.to_thread(got.get, True, 5)
    assert (first.topic, first.payload) == (f"$mq9/AI/MAILBOX/MSG/{mid}/critical", b"critical one")
    # every topic matches the filter it came through: `…/<id>/+` gets normal ones as `…/<id>/normal`
    # (paho's per-filter callbacks, aiomqtt's filters, would drop `…/<id>`)
    assert (second.topic, second.payload) == (f"$mq9/AI/MAILBOX/MSG/{mid}/normal", b"normal one")
    props = dict(first.properties.UserProperty)
    assert props["mq9-priority"] == "critical" and props["mq9-msg-id"].isdigit()
    await mq.close()
    await nc.close()
