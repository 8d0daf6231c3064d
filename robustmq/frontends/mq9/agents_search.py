"""Search indexes of the agent registry (`agents.py`): full text (SQLite FTS5) and semantic (an
embedding model from the optional `semantic` extra).

Both live off the event loop: each index is owned by one worker thread of its own, and every
operation on it (updates, batched per loop turn; queries) is a job on that thread, run in the order
submitted (a DISCOVER submitted after a REGISTER sees it), so no index needs a lock. SQLite and
numpy release the GIL while they work, so a query over 10,000 cards does not stall the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("robustmq.mq9")

T = TypeVar("T")

SEMANTIC_MISSING = "semantic search needs: pip install 'robustmq[semantic]'"
MAX_QUERY_TOKENS = 32  # words of a `text` query that are searched for; the rest are ignored
NAME_WEIGHT = 3.0  # bm25 weight of the card's `name` against every other string value
# FTS5 with the porter stemmer over unicode61: "translate", "translator", "translation" all match
_FTS_SCHEMA = ("CREATE VIRTUAL TABLE card USING fts5(name, body, "
               "tokenize = 'porter unicode61 remove_diacritics 2')")
_WORD = re.compile(r"\w+")


class SemanticUnavailable(Exception):
    """Semantic search cannot run here; the text says why (and how to fix it)."""


# ---------------------------------------------------------------------------------------- card text
def _strings(card: Any, prose: bool) -> Iterator[tuple[str, str]]:
    """(key, string value) of every string in a card, depth first, without recursion (a card may be
    nested as deep as its size allows). `prose`: leave out the mailbox and URLs (noise to a model)."""
    stack: list[tuple[str, Any]] = [("", card)]
    while stack:
        key, v = stack.pop()
        if isinstance(v, str):
            if prose and (key == "mailbox" or v.startswith(("http://", "https://"))):
                continue
            yield key, v
        elif isinstance(v, dict):
            stack.extend(reversed([(str(k), x) for k, x in v.items()]))
        elif isinstance(v, list):
            stack.extend(reversed([(key, x) for x in v]))


def card_text(card: dict[str, Any]) -> tuple[str, str]:
    """(name, body) for the full-text index: the card's top-level `name`, and every other string value
    (descriptions, skills' names, descriptions and tags, ...) flattened."""
    name = card.get("name")
    name = name if isinstance(name, str) else ""
    body = [v for k, v in _strings({k: x for k, x in card.items() if k != "name"}, prose=False)]
    return name, "\n".join(body)


def card_prose(card: dict[str, Any]) -> str:
    """What the embedding model reads: the card's string values without the mailbox and URLs."""
    return "\n".join(v for _, v in _strings(card, prose=True))


def fts_query(text: str) -> str | None:
    """User text -> a safe FTS5 query: each word a quoted string (no operator, column filter or
    syntax error can come from the user), any of them matching (OR), ranked by bm25. None when
    the text holds no word at all."""
    words = _WORD.findall(text)[:MAX_QUERY_TOKENS]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


# ---------------------------------------------------------------------------------------- worker
class _Worker:
    """One thread that owns an index. Updates are queued and handed over once per loop turn as one
    job (a burst of REGISTERs is one transaction, one embedding batch); searches are jobs of their
    own, submitted after every update queued before them, so a search sees every earlier write."""

    def __init__(self, name: str, apply: Callable[[list[tuple[Any, ...]]], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.name = name
        self._apply = apply
        self._ops: list[tuple[Any, ...]] = []
        self._scheduled = False
        self._closed = False

    def queue(self, op: tuple[Any, ...]) -> None:
        if self._closed:
            return  # shutting down: the index is not kept anyway (rebuilt from the log at startup)
        self._ops.append(op)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._ops and not self._closed:
            ops, self._ops = self._ops, []
            self._pool.submit(self._apply, ops).add_done_callback(self._log_failure)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("the server is shutting down")
        self._flush()
        return asyncio.wrap_future(self._pool.submit(fn, *args))

    @property
    def closed(self) -> bool:
        return self._closed

    def _log_failure(self, fut: Future[Any]) -> None:
        # an update nobody waits for: a failure is logged, never lost silently
        if not fut.cancelled() and fut.exception() is not None:
            log.error("mq9 agent index update on %s failed", self.name, exc_info=fut.exception())

    def close(self) -> None:
        self._closed = True
        self._ops.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------- full text
class TextIndex:
    """Cards in an in-memory SQLite FTS5 table (rowid = the entry's number), rebuilt from the log's
    metadata at startup."""

    def __init__(self) -> None:
        self._worker = _Worker("mq9-fts", self._apply)
        self._db: sqlite3.Connection | None = None

    def put(self, rowid: int, old_rowid: int | None, name: str, body: str) -> None:
        self._worker.queue(("put", rowid, old_rowid, name, body))

    def delete(self, rowid: int) -> None:
        self._worker.queue(("del", rowid))

    def search(self, query: str, limit: int, offset: int) -> asyncio.Future[list[int]]:
        return self._worker.submit(self._search, query, limit, offset)

    def close(self) -> None:
        self._worker.close()

    # -------------------------------------------------------------- worker side
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            # created, and only ever used, by the worker thread; transactions are explicit
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.execute(_FTS_SCHEMA)  # a SQLite without FTS5 fails here, at every use, loudly
            self._db = db
        return self._db

    def _apply(self, ops: list[tuple[Any, ...]]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        try:
            for op in ops:
                if op[0] == "put":
                    _, rowid, old_rowid, name, body = op
                    if old_rowid is not None:
                        db.execute("DELETE FROM card WHERE rowid = ?", (old_rowid,))
                    db.execute("INSERT INTO card(rowid, name, body) VALUES (?, ?, ?)", (rowid, name, body))
                else:
                    db.execute("DELETE FROM card WHERE rowid = ?", (op[1],))
        finally:
            db.execute("COMMIT")

    def _search(self, query: str, limit: int, offset: int) -> list[int]:
        cur = self._conn().execute(
            f"SELECT rowid FROM card WHERE card MATCH ? ORDER BY bm25(card, {NAME_WEIGHT}, 1.0) "
            "LIMIT ? OFFSET ?", (query, limit, offset))
        return [r[0] for r in cur]


# ---------------------------------------------------------------------------------------- semantic
class SemanticIndex:
    """One unit vector per card (cached: a re-register with the same text is not embedded again) in a
    matrix that grows by doubling; a query is one embedding and one matrix-vector product.

    The model is WordLlama's `l2_supercat` 256-d static token embeddings, whose weights and tokenizer
    ship inside the `wordllama` wheel (no download at run time). Without the extra, `error` says how
    to install it and every semantic query is refused with that text."""

    def __init__(self) -> None:
        self._worker = _Worker("mq9-embed", self._apply)
        self.error: str | None = None  # set once loading failed: why semantic search is unavailable
        self._model: Any = None
        self._table: Any = None
        self._tokenizer: Any = None
        self._np: Any = None
        self._mat: Any = None  # float32 (capacity, dim); rows past _n unused
        self._alive: Any = None  # bool (capacity,)
        self._n = 0
        self._row: dict[str, int] = {}  # key (mailbox) -> row
        self._owner: list[str | None] = []
        self._digest: dict[str, bytes] = {}  # key -> hash of the text its row was embedded from
        self._free: list[int] = []
        self._load: asyncio.Future[str | None] | None = None

    # -------------------------------------------------------------- loop side
    def _ensure_loading(self) -> asyncio.Future[str | None]:
        """The model is loaded (in the worker, about 0.4 s) when the registry is first used, so a
        server whose clients never touch it pays nothing."""
        if self._load is None:
            self._load = self._worker.submit(self._load_model)
            self._load.add_done_callback(self._loaded_cb)
        return self._load

    def _loaded_cb(self, fut: asyncio.Future[str | None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("semantic agent search could not load its model", exc_info=exc)
            self.error = f"semantic search is unavailable: the model failed to load ({exc})"
            return
        self.error = fut.result()
        if self.error is not None:
            log.info("semantic agent search is off (%s)", self.error)

    def put(self, key: str, text: str) -> None:
        if self.error is None and not self._worker.closed:
            self._ensure_loading()  # before the first update: the worker loads, then embeds
            self._worker.queue(("put", key, text))

    def delete(self, key: str) -> None:
        if self.error is None and self._load is not None:
            self._worker.queue(("del", key))

    async def search(self, text: str, limit: int, offset: int) -> list[str]:
        """Keys of the cards nearest in meaning to `text`, best first. Raises SemanticUnavailable
        when there is no model."""
        load = self._ensure_loading()
        if not load.done():
            await asyncio.wait([load])  # the first query waits for the model (well under 1 s)
        if self.error is not None:
            raise SemanticUnavailable(self.error)
        return await self._worker.submit(self._search, text, limit, offset)

    def close(self) -> None:
        self._worker.close()

    # -------------------------------------------------------------- worker side
    def _apply(self, ops: list[tuple[Any, ...]]) -> None:
        if self._model is None:
            return  # the model did not load: `error` says why
        puts: list[tuple[str, str]] = []  # consecutive puts are embedded together
        for op in ops:
            if op[0] == "put":
                puts.append((op[1], op[2]))
                continue
            if puts:
                self._put_chunk(puts)
                puts = []
            self._delete(op[1])
        if puts:
            self._put_chunk(puts)

    def _load_model(self) -> str | None:
        t0 = time.perf_counter()
        try:
            import numpy as np
            import wordllama
        except ModuleNotFoundError as exc:
            if exc.name in ("wordllama", "numpy"):  # the extra is not installed: say how to get it
                return SEMANTIC_MISSING
            raise  # the extra is installed but broken: loud, with its traceback
        from wordllama import WordLlama

        # the weights and tokenizer ship in the package: look there only (wordllama's own lookup
        # misses the packaged tokenizer and would try to download it)
        model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        self._np = np
        self._table = model.embedding  # float32 (vocabulary, dim): one vector per token
        self._tokenizer = model.tokenizer
        self._tokenizer.no_padding()  # texts are pooled one by one (see _embed)
        self._model = model
        dim = self._table.shape[1]
        self._mat = np.zeros((1024, dim), dtype=np.float32)
        self._alive = np.zeros(1024, dtype=bool)
        log.info("semantic agent search: WordLlama l2_supercat (%d-d) loaded in %.2f s",
                 dim, time.perf_counter() - t0)
        return None

    def _embed(self, texts: list[str]) -> Any:
        """Unit vectors: the mean of each text's token vectors, normalised (WordLlama's own pooling).
        One text at a time rather than WordLlama's padded batches: a 16 KiB card among short ones
        would pad the whole batch to its length, and one text's tokens bound the memory used."""
        np, table = self._np, self._table
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        last = table.shape[0] - 1
        for i, text in enumerate(texts):
            ids = self._tokenizer.encode(text, add_special_tokens=False).ids
            if not ids:
                continue  # nothing to read: a zero vector, similar to nothing
            v = table[np.clip(np.asarray(ids, dtype=np.int64), 0, last)].mean(axis=0)
            norm = float(np.linalg.norm(v))
            if norm > 0:
                out[i] = v / norm
        return out

    def _put_chunk(self, items: list[tuple[str, str]]) -> None:
        todo = []
        for key, text in items:
            digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if self._digest.get(key) == digest:
                continue  # same text as the vector cached for this card
            todo.append((key, text, digest))
        if not todo:
            return
        vecs = self._embed([t for _, t, _ in todo])
        for (key, _, digest), vec in zip(todo, vecs):
            row = self._row.get(key)
            if row is None:
                row = self._new_row()
                self._row[key] = row
                self._owner[row] = key
            self._mat[row] = vec
            self._alive[row] = True
            self._digest[key] = digest

    def _new_row(self) -> int:
        if self._free:
            return self._free.pop()
        if self._n == len(self._mat):
            np = self._np
            grown = np.zeros((2 * self._n, self._mat.shape[1]), dtype=np.float32)
            grown[:self._n] = self._mat
            alive = np.zeros(2 * self._n, dtype=bool)
            alive[:self._n] = self._alive
            self._mat, self._alive = grown, alive
        self._owner.append(None)
        self._n += 1
        return self._n - 1

    def _delete(self, key: str) -> None:
        row = self._row.pop(key, None)
        if row is None:
            return
        self._digest.pop(key, None)
        self._alive[row] = False
        self._owner[row] = None
        self._free.append(row)

    def _search(self, text: str, limit: int, offset: int) -> list[str]:
        np = self._np
        n = self._n
        alive = int(self._alive[:n].sum()) if n else 0
        if offset >= alive:
            return []
        q = self._embed([text])[0]
        scores = self._mat[:n] @ q
        scores[~self._alive[:n]] = -np.inf
        k = min(offset + limit, alive)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")][offset:offset + limit]
        owners = [self._owner[int(r)] for r in top]
        return [o for o in owners if o is not None]
