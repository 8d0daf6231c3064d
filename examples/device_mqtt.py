"""A simulated IoT device on MQTT (paho-mqtt, a stock client): it publishes a temperature reading to
`sensors/room1/temp` (NATS subject `sensors.room1.temp`) and raises an alert in an agent's public
mailbox by publishing to `$mq9/AI/MAILBOX/MSG/<mailbox>/critical` — the same mailbox an agent reads
over NATS. QoS 1: each publish returns once the broker has stored it.

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
    client.loop_start()
    for i in range(a.readings):
        reading = json.dumps({"room": 1, "temp": 21.5 + i}).encode()
        client.publish("sensors/room1/temp", reading, qos=1).wait_for_publish(10)
        print("device: published", reading.decode(), "to sensors/room1/temp")
    alert = json.dumps({"room": 1, "alert": "temperature rising"}).encode()
    client.publish(f"$mq9/AI/MAILBOX/MSG/{a.mailbox}/critical", alert, qos=1).wait_for_publish(10)
    print(f"device: raised a critical alert in mailbox {a.mailbox}")
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
