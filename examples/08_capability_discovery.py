"""Scenario 8 — an agent registers its capabilities; other agents discover them.

A translation agent creates a public mailbox `cap-<run>.translate` whose desc declares the
capability; it is auto-registered on $mq9.AI.PUBLIC.LIST. A discoverer already watching PUBLIC.LIST sees
it appear in real time; one that starts later finds it in the snapshot every subscriber gets first.
The late discoverer then uses the capability: it sends a request with `reply_to` and gets the answer.
A short-lived capability (TTL 1 s) shows up and then disappears with an `expired` event.

    python examples/08_capability_discovery.py [nats://127.0.0.1:4222]   (or NATS_URL=...)
"""

import asyncio
import json
import secrets

import nats
from _mq9 import URL, mq9, wait_for


async def watch_public(nc, prefix, events):
    async def on_event(msg):
        ev = json.loads(msg.data)
        if ev["mail_id"].startswith(prefix):
            events.append(ev)

    await nc.subscribe("$mq9.AI.PUBLIC.LIST", cb=on_event)
    await nc.flush()


async def main():
    prefix = f"cap-{secrets.token_hex(3)}."
    early = await nats.connect(URL)
    early_events = []
    await watch_public(early, prefix, early_events)
    print("discoverer 1: watching $mq9.AI.PUBLIC.LIST")

    # the translation agent registers and serves its capability
    agent = await nats.connect(URL)
    cap = prefix + "translate"
    await mq9(agent, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60, "public": True, "name": cap,
                                               "desc": "translate en->fr; send {text, reply_to}"})
    await mq9(agent, "$mq9.AI.MAILBOX.CREATE", {"ttl": 1, "public": True, "name": prefix + "flash-sale",
                                               "desc": "short-lived capability"})
    dictionary = {"hello": "bonjour", "thank you": "merci"}

    async def serve(msg):
        req = json.loads(msg.data)
        ans = {"text": req["text"], "translation": dictionary.get(req["text"], "?")}
        await agent.publish(f"$mq9.AI.MAILBOX.MSG.{req['reply_to']}", json.dumps(ans).encode())

    await agent.subscribe(f"$mq9.AI.MAILBOX.MSG.{cap}.*", cb=serve)
    print(f"translator: registered {cap}")

    assert await wait_for(lambda: any(e["mail_id"] == cap for e in early_events), 2), early_events
    ev = next(e for e in early_events if e["mail_id"] == cap)
    print(f"discoverer 1: live event {ev}")
    desc = "translate en->fr; send {text, reply_to}"
    assert ev == {"event": "created", "mail_id": cap, "desc": desc, "ttl": 60}, ev

    late = await nats.connect(URL)
    late_events = []
    await watch_public(late, prefix, late_events)
    assert await wait_for(lambda: any(e["mail_id"] == cap for e in late_events), 2), late_events
    found = next(e for e in late_events if e["mail_id"] == cap)
    print(f"discoverer 2: found in snapshot: {found['mail_id']} - {found['desc']}")
    inbox = (await mq9(late, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60}))["mail_id"]
    sub = await late.subscribe(f"$mq9.AI.MAILBOX.MSG.{inbox}.*")
    await mq9(late, f"$mq9.AI.MAILBOX.MSG.{found['mail_id']}",
              json.dumps({"text": "hello", "reply_to": inbox}).encode())
    answer = json.loads((await sub.next_msg(timeout=3)).data)
    print(f"discoverer 2: translate('hello') = {answer['translation']}")
    assert answer == {"text": "hello", "translation": "bonjour"}, answer

    flash = prefix + "flash-sale"
    assert await wait_for(lambda: {"event": "expired", "mail_id": flash} in early_events, 4), early_events
    print(f"discoverer 1: {flash} expired")
    assert not any(e["event"] == "expired" and e["mail_id"] == cap for e in early_events)
    for nc in (early, late, agent):
        await nc.close()
    print("OK: capability registered, discovered live and from the snapshot, used, and expiry seen")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 20))
