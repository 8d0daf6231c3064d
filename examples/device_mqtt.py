"""A simulated IoT device on MQTT (paho-mqtt, a stock client): it publishes a temperature reading to
`sensors/room1/temp` (NATS subject `sensors.room1.temp`) and raises an alert in an agent's public
mailbox by publishing to `$mq9/AI/MAILBOX/MSG/<mailbox>/critical` — the same mailbox an agent reads
over NATS. QoS 1: each publish returns once the broker has answered it, and the PUBACK's MQTT 5
reason code says whether it was stored (a missing or full mailbox refuses the alert).

    python examples/device_mqtt.py --host 127.0.0.1 --mailbox alerts.room1
"""

from __future__ import annotations

import argparse
import json
import time

import paho.mqtt.client as mqtt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--mailbox", default="alerts.room1")
    ap.add_argument("--readings", type=int, default=3)
    a = ap.parse_args()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="device-room1", protocol=mqtt.MQTTv5)
    for _ in range(30):  # the broker may still be starting (compose)
        try:
            client.connect(a.host, a.port)
            break
        except OSError:
            time.sleep(1)
    else:
        raise SystemExit(f"no MQTT broker at {a.host}:{a.port}")
    acks: dict[int, mqtt.ReasonCode] = {}
    client.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, reason)
    client.loop_start()

    def publish(topic: str, payload: bytes) -> mqtt.ReasonCode:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        return acks.pop(info.mid)

    for i in range(a.readings):
        reading = json.dumps({"room": 1, "temp": 21.5 + i}).encode()
        publish("sensors/room1/temp", reading)
        print("device: published", reading.decode(), "to sensors/room1/temp")
    alert = json.dumps({"room": 1, "alert": "temperature rising"}).encode()
    reason = publish(f"$mq9/AI/MAILBOX/MSG/{a.mailbox}/critical", alert)
    if reason.is_failure:
        print(f"device: the broker refused the alert for mailbox {a.mailbox}: {reason}")
    else:
        print(f"device: raised a critical alert in mailbox {a.mailbox}")
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
