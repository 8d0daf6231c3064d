"""SPEC §4b, upstream mq9's agent registry over raw nats-py requests: `$mq9.AI.AGENT.REGISTER`,
`UNREGISTER`, `REPORT`, `DISCOVER` (full text, by meaning, or all; `limit` / `page`). Every reply
carries `error` (`""` on success); cards come back byte for byte as they were sent; the registry
survives a restart and a kill -9 right after an acknowledged REGISTER."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from procs import RobustMQ

from .helpers import CREATE, connect, request_json, request_raw, unique_name, up_error, up_ok

pytestmark = pytest.mark.timeout(90)

AGENT = "$mq9.AI.AGENT."
REGISTER, UNREGISTER, REPORT, DISCOVER = (AGENT + s for s in ("REGISTER", "UNREGISTER", "REPORT",
                                                                "DISCOVER"))
SEMANTIC_MISSING = "semantic search needs: pip install 'robustmq[semantic]'"
HAVE_SEMANTIC = importlib.util.find_spec("wordllama") is not None
needs_semantic = pytest.mark.skipif(
    not HAVE_SEMANTIC, reason="the semantic extra is not installed: pip install 'robustmq[semantic]'")


async def mailbox(nc: Any, prefix: str = "agent", ttl: int = 600) -> str:
    name = unique_name(prefix)
    up_ok(await request_json(nc, CREATE, {"name": name, "ttl": ttl}))
    return name


def a2a_card(name: str, box: str, description: str, skills: list[tuple[str, str, list[str]]]) -> dict:
    """An A2A AgentCard-shaped card (upstream's A2A helper sends the card with `mailbox` beside it)."""
    return {
        "name": name, "mailbox": box, "description": description, "version": "1.0.0",
        "url": f"https://agents.example/{name}", "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
        "skills": [{"id": f"{name}-{i}", "name": n, "description": d, "tags": t}
                   for i, (n, d, t) in enumerate(skills)],
    }


async def register(nc: Any, card: dict | bytes) -> None:
    body = card if isinstance(card, bytes) else json.dumps(card).encode()
    reply = await request_json(nc, REGISTER, body)
    assert reply == {"error": ""}, reply


async def discover(nc: Any, **body: Any) -> list[dict[str, Any]]:
    reply = up_ok(await request_json(nc, DISCOVER, body))
    assert isinstance(reply["agents"], list), reply
    return reply["agents"]


def boxes(agents: list[dict[str, Any]]) -> list[str]:
    return [a["mailbox"] for a in agents]


async def still_usable(nc: Any) -> None:
    up_ok(await request_json(nc, DISCOVER, {"limit": 1}))


# ------------------------------------------------------------------------------------------ basics


async def test_register_then_discover_by_text(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    tr, rv, wx = await mailbox(nc, "tr"), await mailbox(nc, "rv"), await mailbox(nc, "wx")
    tag = unique_name("zq").replace(".", "")  # a word no other test's card holds
    cards = [
        a2a_card("polyglot", tr, f"Multilingual translation agent {tag}",
                 [("translate", "Translates text between English, Chinese and Japanese", ["language"])]),
        a2a_card("linter", rv, f"Reviews pull requests {tag}",
                 [("code review", "Finds bugs in Python code", ["python", "quality"])]),
        a2a_card("skywatch", wx, f"Weather forecasts {tag}",
                 [("forecast", "Rain and temperature for a city", ["weather"])]),
    ]
    for c in cards:
        await register(nc, c)
    # the card's top-level strings, nested skill names, descriptions and tags are all searched;
    # the porter stemmer matches other forms of a word
    assert boxes(await discover(nc, text="translations")) == [tr]
    assert boxes(await discover(nc, text="python")) == [rv]
    assert boxes(await discover(nc, text="quality")) == [rv]
    assert boxes(await discover(nc, text="RAIN")) == [wx]
    assert sorted(boxes(await discover(nc, text=tag))) == sorted([tr, rv, wx])
    # any word may match; cards matching more of them rank first
    got = boxes(await discover(nc, text=f"python bugs {tag}"))
    assert got[0] == rv and sorted(got) == sorted([tr, rv, wx])
    # a card comes back exactly as it was registered
    assert (await discover(nc, text="skywatch")) == [cards[2]]
    assert await discover(nc, text="nosuchwordanywhere") == []
    await nc.close()


async def test_card_is_returned_byte_for_byte(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    word = unique_name("verbatim").replace(".", "")
    # odd spacing, key order, unicode escapes, numbers, unknown fields: all kept as sent
    raw = ('{ "zeta": 1.50, "mailbox" : "' + box + '", "name":"caf\\u00e9 ' + word + '", '
           ' "extra": {"n": [1, 2e3, null]}, "desc": "\u4f60\u597d" }').encode()
    await register(nc, raw)
    data = await request_raw(nc, DISCOVER, {"text": word})
    assert data == b'{"error":"","agents":[' + raw.strip() + b"]}"
    # words of every script in the card are searchable, accents folded
    assert box in boxes(await discover(nc, text="cafe", limit=50))
    assert box in boxes(await discover(nc, text="\u4f60\u597d", limit=50))
    await nc.close()


async def test_reregister_replaces_the_card(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    old, new = unique_name("oldword").replace(".", ""), unique_name("newword").replace(".", "")
    await register(nc, {"mailbox": box, "name": "v1", "description": old})
    await register(nc, {"mailbox": box, "name": "v2", "description": new})
    assert await discover(nc, text=old) == []
    assert await discover(nc, text=new) == [{"mailbox": box, "name": "v2", "description": new}]
    await nc.close()


async def test_unregister(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    word = unique_name("gone").replace(".", "")
    await register(nc, {"mailbox": box, "name": word})
    assert boxes(await discover(nc, text=word)) == [box]
    assert await request_json(nc, UNREGISTER, {"mailbox": box}) == {"error": ""}
    assert await discover(nc, text=word) == []
    assert box not in boxes(await discover(nc, limit=50))
    up_error(await request_json(nc, UNREGISTER, {"mailbox": box}), "not registered")
    # the mailbox itself is untouched, and the agent can register again
    await register(nc, {"mailbox": box, "name": word})
    assert boxes(await discover(nc, text=word)) == [box]
    await nc.close()


async def test_report_is_kept_beside_the_card(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    word = unique_name("reporter").replace(".", "")
    card = {"mailbox": box, "name": word, "description": "status reporting agent"}
    await register(nc, card)
    r1 = {"name": word, "mailbox": box, "report_info": "running, processed: 1"}
    assert await request_json(nc, REPORT, r1) == {"error": ""}
    r2 = {"name": word, "mailbox": box, "report_info": "running, processed: 128", "load": 0.5}
    assert await request_json(nc, REPORT, r2) == {"error": ""}
    reply = up_ok(await request_json(nc, DISCOVER, {"text": word}))
    assert reply["agents"] == [card]  # the card is unchanged
    rep = reply["reports"][box]
    assert rep["report"] == r2 and isinstance(rep["report_time"], int) and rep["report_time"] > 1e9
    # a report's words are not searched (it is status, not capability)
    assert box not in boxes(await discover(nc, text="processed", limit=50))
    # agents that never reported have no entry in `reports`
    other = await mailbox(nc)
    await register(nc, {"mailbox": other, "name": word + "x"})
    reply = up_ok(await request_json(nc, DISCOVER, {"text": word + "x"}))
    assert "reports" not in reply
    # a report for an agent that is not registered is refused
    up_error(await request_json(nc, REPORT, {"mailbox": await mailbox(nc), "report_info": "x"}),
             "not registered")
    await nc.close()


async def test_agent_goes_with_its_mailbox(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc, ttl=1)
    word = unique_name("shortlived").replace(".", "")
    await register(nc, {"mailbox": box, "name": word})
    assert boxes(await discover(nc, text=word)) == [box]
    for _ in range(40):  # bounded: the mailbox expires after 1 s, the sweep runs every 0.5 s
        await asyncio.sleep(0.1)
        if not await discover(nc, text=word):
            break
    assert await discover(nc, text=word) == []
    up_error(await request_json(nc, REPORT, {"mailbox": box}), "not registered")
    await nc.close()


# ------------------------------------------------------------------------------- listing and paging


async def test_list_all_with_limit_and_page(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    names = [await mailbox(nc, f"p{i}") for i in range(7)]
    for i, box in enumerate(names):
        await register(nc, {"mailbox": box, "name": f"agent {i}", "n": i})
    # no text, no semantic: every agent, oldest registration first
    assert boxes(await discover(nc)) == names
    assert boxes(up_ok(await request_json(nc, DISCOVER, b""))["agents"]) == names
    assert boxes(await discover(nc, limit=3)) == names[:3]
    assert boxes(await discover(nc, limit=3, page=2)) == names[3:6]
    assert boxes(await discover(nc, limit=3, page=3)) == names[6:]
    assert await discover(nc, limit=3, page=4) == []
    assert await discover(nc, limit=50, page=10_000) == []
    # the same paging applies to a text search (bm25 order: all equal here)
    got = [boxes(await discover(nc, text="agent", limit=2, page=p)) for p in (1, 2, 3, 4, 5)]
    assert sorted(b for page in got for b in page) == sorted(names) and got[4] == []
    # a re-register counts as the newest registration
    await register(nc, {"mailbox": names[0], "name": "agent 0 again"})
    assert boxes(await discover(nc)) == names[1:] + names[:1]
    # empty text / semantic are the same as none
    assert boxes(await discover(nc, text="", semantic="  ")) == names[1:] + names[:1]
    await nc.close()


# ------------------------------------------------------------------------------------------ bad input


async def test_bad_register_and_report_bodies(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    for subj, what, cap in ((REGISTER, "agent card", 16384), (REPORT, "agent report", 4096),
                            (UNREGISTER, "unregister", 16384)):
        up_error(await request_json(nc, subj, b"{not json"), "not valid JSON")
        up_error(await request_json(nc, subj, b"\xff\xfe"), "not valid JSON")
        up_error(await request_json(nc, subj, b"[1, 2]"), "JSON object", "array")
        up_error(await request_json(nc, subj, b'"text"'), "JSON object", "string")
        up_error(await request_json(nc, subj, b""), "mailbox")
        up_error(await request_json(nc, subj, {"name": "no mailbox"}), "mailbox")
        up_error(await request_json(nc, subj, {"mailbox": 42}), "mailbox", "string")
        up_error(await request_json(nc, subj, {"mailbox": ""}), "mailbox")
        up_error(await request_json(nc, subj, b"[" * 2000 + b"]" * 2000), "JSON")
        up_error(await request_json(nc, subj, {"mailbox": box, "pad": "x" * cap}), str(cap), what)
    up_error(await request_json(nc, REGISTER, {"mailbox": "no.such.mailbox.anywhere"}),
             "no.such.mailbox.anywhere", "does not exist")
    up_error(await request_json(nc, AGENT + "BOGUS", {"mailbox": box}), "unknown mq9 subject")
    # a card just under the cap with unknown fields of any shape is fine
    big = {"mailbox": box, "name": "big", "blob": "y" * 15_000, "anything": [{"x": None}, 1.5, True]}
    await register(nc, big)
    await still_usable(nc)
    await nc.close()


async def test_bad_discover_requests(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    up_error(await request_json(nc, DISCOVER, b"{oops"), "not valid JSON")
    up_error(await request_json(nc, DISCOVER, b"[]"), "invalid discover request")
    up_error(await request_json(nc, DISCOVER, {"limit": 0}), "limit", "between 1 and 50")
    up_error(await request_json(nc, DISCOVER, {"limit": 51}), "limit")
    up_error(await request_json(nc, DISCOVER, {"limit": "5"}), "limit")
    up_error(await request_json(nc, DISCOVER, {"limit": 2.5}), "limit")
    up_error(await request_json(nc, DISCOVER, {"page": 0}), "page", "between 1 and")
    up_error(await request_json(nc, DISCOVER, {"page": -3}), "page")
    up_error(await request_json(nc, DISCOVER, {"page": 10_001}), "page")
    up_error(await request_json(nc, DISCOVER, {"text": 5}), "text")
    up_error(await request_json(nc, DISCOVER, {"semantic": ["a"]}), "semantic")
    up_error(await request_json(nc, DISCOVER, {"text": "a" * 1025}), "text", "1024")
    # unknown fields are ignored; null means absent
    up_ok(await request_json(nc, DISCOVER, {"text": None, "semantic": None, "hint": {"x": 1}}))
    await still_usable(nc)
    await nc.close()


async def test_search_text_cannot_inject_fts_syntax(server: RobustMQ) -> None:
    """User text is words, never FTS5 syntax: operators, quotes, column filters, NEAR, `*`, `^` and
    unbalanced parentheses search for the words in them (or nothing), never fail."""
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    word = unique_name("inject").replace(".", "")
    await register(nc, {"mailbox": box, "name": word, "description": "quoting test"})
    for text in ['"', '""', "'", "*", "^", "(", ")", "NEAR(", "AND", "OR NOT", "name:", "body:x",
                 '" OR 1=1 --', "\\", "\x00", "-", "+", "{a b}", "::", "🙂", "   \t  "]:
        reply = await request_json(nc, DISCOVER, {"text": text})
        assert reply.get("error") == "" and isinstance(reply["agents"], list), (text, reply)
    for text in [f'"{word}', f"{word}*", f"name:{word}", f"({word}", f"NEAR({word}", f"{word} AND (",
                 f"^{word}", f"NOT {word}"]:
        assert box in boxes(await discover(nc, text=text)), text
    await still_usable(nc)
    await nc.close()


async def test_requests_without_reply_and_connection_stays_up(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    box = await mailbox(nc)
    word = unique_name("firenforget").replace(".", "")
    # a plain publish still registers (nobody to answer); DISCOVER without a reply is ignored
    await nc.publish(REGISTER, json.dumps({"mailbox": box, "name": word}).encode())
    await nc.publish(DISCOVER, b"{}")
    await nc.publish(REGISTER, b"garbage")
    await nc.flush()
    assert boxes(await discover(nc, text=word)) == [box]
    assert not nc.errors
    await nc.close()


# ------------------------------------------------------------------------------------------ semantic


@needs_semantic
async def test_semantic_search_ranks_by_meaning(server: RobustMQ) -> None:
    nc = await connect(server.nats_url)
    tag = unique_name("sem").replace(".", "")
    specs = {
        "translator": ("Multilingual translation agent. Converts documents between English, Chinese, "
                       "Japanese and Korean.", [("translate", "Translate text into another language",
                                                 ["translation", "language"])]),
        "reviewer": ("Code review assistant that reads pull requests and points out bugs.",
                     [("review", "Review a diff for defects", ["code", "github"])]),
        "forecaster": ("Weather service: predicts rain, snow, wind and temperature for any city.",
                       [("forecast", "Tomorrow's weather", ["weather", "climate"])]),
        "painter": ("Creates illustrations and pictures from a prompt.",
                    [("draw", "Generate an image", ["art", "image"])]),
    }
    names: dict[str, str] = {}
    for key, (desc, skills) in specs.items():
        box = await mailbox(nc, key)
        names[key] = box
        await register(nc, a2a_card(f"{key}-{tag}", box, desc, skills))
    queries = {
        "I need to turn this Chinese paragraph into English": "translator",
        "check my code changes for mistakes": "reviewer",
        "will it be sunny in Paris tomorrow": "forecaster",
        "make a drawing of a cat": "painter",
    }
    for q, want in queries.items():
        got = boxes(await discover(nc, semantic=q, limit=50))
        ours = [b for b in got if b in names.values()]
        assert ours[0] == names[want], (q, ours, names)
    # semantic takes priority over text when both are given
    got = boxes(await discover(nc, semantic="weather tomorrow", text="translation", limit=50))
    assert next(b for b in got if b in names.values()) == names["forecaster"]
    # limit and page apply to the ranked list
    first = boxes(await discover(nc, semantic="translate a document", limit=2))
    second = boxes(await discover(nc, semantic="translate a document", limit=2, page=2))
    assert len(first) == 2 and len(second) >= 1 and not set(first) & set(second)
    # an unregistered agent is no longer found by meaning
    await request_json(nc, UNREGISTER, {"mailbox": names["painter"]})
    got = boxes(await discover(nc, semantic="make a drawing of a cat", limit=50))
    assert names["painter"] not in got
    await nc.close()


BLOCK_WORDLLAMA = textwrap.dedent("""
    # test helper: make the semantic extra look uninstalled in this process
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "wordllama" or name.startswith("wordllama."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")


async def test_semantic_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    """Without `robustmq[semantic]` the server starts, text search works, and a semantic DISCOVER
    says how to get it (the extra is hidden from the server process here, installed or not)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_WORDLLAMA)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    s = RobustMQ(env={"PYTHONPATH": path}).start()
    try:
        nc = await connect(s.nats_url)
        box = await mailbox(nc)
        await register(nc, {"mailbox": box, "name": "plain text agent"})
        reply = await request_json(nc, DISCOVER, {"semantic": "anything at all"})
        assert reply == {"error": SEMANTIC_MISSING}
        reply = await request_json(nc, DISCOVER, {"semantic": "x", "text": "plain"})
        assert reply == {"error": SEMANTIC_MISSING}
        assert boxes(await discover(nc, text="plain")) == [box]
        await nc.close()
        assert "semantic agent search is off" in s.log_text()
    finally:
        s.cleanup()


# ------------------------------------------------------------------------------------- persistence


async def test_registry_survives_restart_and_kill9(fresh_server: RobustMQ) -> None:
    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    names = [await mailbox(nc, f"keep{i}", ttl=3600) for i in range(5)]
    cards = [a2a_card(f"keeper{i}", b, f"persistent agent number {i}",
                      [("skill", "durable storage of cards", ["restart"])]) for i, b in enumerate(names)]
    for c in cards:
        await register(nc, c)
    await request_json(nc, UNREGISTER, {"mailbox": names[1]})
    report = {"mailbox": names[2], "report_info": "healthy"}
    assert await request_json(nc, REPORT, report) == {"error": ""}
    before = await request_raw(nc, DISCOVER, {})
    await nc.close()

    fresh_server.restart()
    nc = await connect(fresh_server.nats_url)
    assert await request_raw(nc, DISCOVER, {}) == before  # same cards, same order, same report
    reply = up_ok(await request_json(nc, DISCOVER, {"text": "restart"}))
    assert sorted(boxes(reply["agents"])) == sorted(names[:1] + names[2:])
    assert reply["reports"][names[2]]["report"] == report
    if HAVE_SEMANTIC:
        got = boxes(await discover(nc, semantic="keeps cards stored durably", limit=50))
        assert sorted(got) == sorted(names[:1] + names[2:])
    # kill -9 right after the REGISTER / UNREGISTER replies: both are on disk
    last = await mailbox(nc, "last", ttl=3600)
    await register(nc, {"mailbox": last, "name": "registered just before the crash"})
    assert await request_json(nc, UNREGISTER, {"mailbox": names[0]}) == {"error": ""}
    fresh_server.kill9()
    await nc.close()

    fresh_server.start()
    nc = await connect(fresh_server.nats_url)
    assert boxes(await discover(nc)) == names[2:] + [last]
    assert boxes(await discover(nc, text="crash")) == [last]
    await nc.close()


def test_the_registry_is_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cards and reports together are capped (SPEC §8, bounded in total), whatever their count; an
    agent that unregisters gives its share back. (In-process: the cap is lowered for the test.)"""
    from robustmq.frontends.mq9 import agents
    from robustmq.frontends.mq9.mailboxes import Mq9Error

    class Boxes:
        def get(self, name: str) -> object:
            return object()

    reg = agents.AgentRegistry(None, Boxes())  # type: ignore[arg-type]
    reg.text = type("T", (), {"put": lambda *a: None, "delete": lambda *a: None})()  # type: ignore[assignment]
    reg.semantic = reg.text  # type: ignore[assignment]
    reg.log = type("L", (), {"put_meta": lambda *a: None, "delete_meta": lambda *a: None})()  # type: ignore[assignment]
    monkeypatch.setattr(agents, "MAX_REGISTRY_BYTES", 300)
    card = lambda name, pad: json.dumps({"mailbox": name, "description": "x" * pad}).encode()  # noqa: E731
    reg.register(card("a.one", 100))
    reg.register(card("a.two", 100))
    with pytest.raises(Mq9Error, match="registry is full"):
        reg.register(card("a.three", 100))
    reg.register(card("a.two", 50))  # a re-register is measured against what it replaces
    reg.unregister(json.dumps({"mailbox": "a.one"}).encode())
    reg.register(card("a.three", 100))
    assert len(reg) == 2
