"""The response cache: whole answers kept in a SQLite file under a hash of everything that
shapes them, and identical calls made at the same time sharing one request.

The key is a SHA-256 of the request's URL (without a password) and its JSON body with the
keys sorted, less what only changes how the answer travels (``stream``, ``stream_options``):
the model, the messages, the tools and every parameter. Only deterministic requests are
cached unless asked otherwise (a ``temperature`` of 0, or a ``seed``). Only whole answers are
kept: a failed call, a stream the caller closed early, an answer whose tool call arguments did
not decode, or one that never said why it ended, is not.

Lookups read the file in a worker thread (the most recent answers are also held in memory);
answers are written by the file's background writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmtap._errors import redact_url
from llmtap._hooks import HookRecord, RequestCancelled, RequestFailed, RequestFinished
from llmtap._results import ChatResult
from llmtap._store.db import Migrations, open_database, writer_for

__all__ = ["CACHE_MIGRATIONS", "Cache", "CacheInfo", "Flight", "cache_info", "clear_cache"]

WHAT = "response cache"

CACHE_MIGRATIONS: Migrations = (
    (
        """CREATE TABLE answers (
            key TEXT PRIMARY KEY,
            created REAL NOT NULL,
            endpoint TEXT,
            model TEXT,
            result TEXT NOT NULL
        )""",
        "CREATE INDEX answers_created ON answers (created)",
    ),
)

#: Body keys that change how an answer travels, not what it says.
_NOT_SHAPING = frozenset({"stream", "stream_options"})
#: Answers held in memory, most recent first out last.
_MEMORY = 256


def deterministic(payload: Mapping[str, Any]) -> bool:
    """Whether a request body asks for a repeatable answer: ``temperature`` 0 or a ``seed``
    (at the top level, or in Ollama's ``options``)."""
    options = payload.get("options")
    for where in (payload, options if isinstance(options, Mapping) else None):
        if where is not None and (where.get("temperature") == 0 or where.get("seed") is not None):
            return True
    return False


def cache_key(url: str, payload: Mapping[str, Any]) -> str:
    """The key of a request: a hash of its URL and of every body key that shapes the answer."""
    shaping = {key: value for key, value in payload.items() if key not in _NOT_SHAPING}
    data = orjson.dumps([redact_url(url), shaping], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


def _store(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    connection.executemany(
        "INSERT OR REPLACE INTO answers (key, created, endpoint, model, result) "
        "VALUES (?, ?, ?, ?, ?)",
        rows,
    )


class Cache:
    """A client's response cache over the file at ``path``.

    Args:
        path: The database file (shared by every client and process that names it).
        ttl: Seconds an answer stays usable (``None``: for ever).
        nondeterministic: Cache requests that are not deterministic too.

    Raises:
        StoreError: The file cannot be used.
    """

    def __init__(self, path: Path, *, ttl: float | None, nondeterministic: bool) -> None:
        self._writer = writer_for(path, CACHE_MIGRATIONS, what=WHAT)
        self.path = self._writer.path
        self.ttl = ttl
        self.nondeterministic = nondeterministic
        #: Lookups' own connection (WAL: they never wait for the writer), opened now so that
        #: a lookup is only a query.
        self._reader: sqlite3.Connection | None = open_database(
            self.path, CACHE_MIGRATIONS, what=WHAT
        )
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, tuple[float, ChatResult]] = OrderedDict()
        self._flights: dict[str, asyncio.Future[ChatResult | None]] = {}

    def key_for(self, url: str, payload: Mapping[str, Any]) -> str | None:
        """The key of a request, or ``None`` when it is not to be cached."""
        if not self.nondeterministic and not deterministic(payload):
            return None
        return cache_key(url, payload)

    async def find(self, key: str) -> tuple[ChatResult | None, Flight | None]:
        """The answer kept under ``key`` (``cached=True``), or the answer of an identical
        call under way, once it is in; else a :class:`Flight`: the caller sends the request,
        and identical calls wait for it until it is settled."""
        while (flight := self._flights.get(key)) is not None:
            shared = await asyncio.shield(flight)
            if shared is not None:
                return shared, None
            # That call got no whole answer: look again (this call may lead now).
        future: asyncio.Future[ChatResult | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            found = self._remembered(key)
            if found is None:
                found = await asyncio.to_thread(self._read, key)
        except BaseException:
            self._settle(key, future, None)
            raise
        if found is not None:
            self._settle(key, future, found)
            return found, None
        return None, Flight(self, key, future)

    def _remembered(self, key: str) -> ChatResult | None:
        entry = self._memory.get(key)
        if entry is None:
            return None
        created, result = entry
        if self.ttl is not None and time.time() - created > self.ttl:
            del self._memory[key]
            return None
        self._memory.move_to_end(key)
        return result

    def _remember(self, key: str, created: float, result: ChatResult) -> None:
        memory = self._memory
        memory[key] = (created, result)
        memory.move_to_end(key)
        if len(memory) > _MEMORY:
            memory.popitem(last=False)

    def _read(self, key: str) -> ChatResult | None:
        """The answer under ``key`` in the file (in a worker thread)."""
        with self._lock:
            if self._reader is None:
                self._reader = open_database(self.path, CACHE_MIGRATIONS, what=WHAT)
            row = self._reader.execute(
                "SELECT created, result FROM answers WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        created, text = row
        if self.ttl is not None and time.time() - created > self.ttl:
            return None
        result = ChatResult.model_validate_json(text).model_copy(update={"cached": True})
        self._remember(key, created, result)
        return result

    def _settle(
        self, key: str, future: asyncio.Future[ChatResult | None], result: ChatResult | None
    ) -> None:
        if not future.done():
            future.set_result(result)
        if self._flights.get(key) is future:
            del self._flights[key]

    def keep(self, key: str, result: ChatResult, *, url: str) -> ChatResult:
        """Keep a whole answer under ``key`` (in memory now, in the file soon); the answer as
        later hits give it."""
        created = time.time()
        hit = result.model_copy(update={"cached": True})
        self._remember(key, created, hit)
        self._writer.put(
            _store, (key, created, redact_url(url), result.model, result.model_dump_json())
        )
        return hit

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every answer kept so far is in the file."""
        return self._writer.flush(timeout)

    def close(self) -> None:
        """Close the reading connection (answers still queued are written by the writer)."""
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


class Flight:
    """A cacheable call under way: identical calls wait until it is settled, with its whole
    answer (kept in the cache) or with nothing (they then send their own)."""

    __slots__ = ("_cache", "_future", "_key", "_url")

    def __init__(self, cache: Cache, key: str, future: asyncio.Future[ChatResult | None]) -> None:
        self._cache = cache
        self._key = key
        self._future = future
        self._url = ""

    def settle(self, result: ChatResult | None, *, url: str = "") -> None:
        """End the flight with ``result`` (kept when it is a whole answer), or ``None``.
        Settling again does nothing."""
        if self._future.done():
            return
        shared = None
        if result is not None and _whole(result):
            shared = self._cache.keep(self._key, result, url=url or self._url)
        self._cache._settle(self._key, self._future, shared)

    def hook(self, record: HookRecord) -> None:
        """The call's hook: a :class:`RequestFinished` settles the flight with its answer, a
        failure or a cancellation with nothing."""
        kind = type(record)
        if kind is RequestFinished:
            assert isinstance(record, RequestFinished)
            self.settle(record.result, url=record.url or "")
        elif kind is RequestFailed or kind is RequestCancelled:
            self.settle(None)

    def for_url(self, url: str) -> Flight:
        """Name the request's URL (kept with the answer, for ``llmtap cache info``)."""
        self._url = url
        return self


def _whole(result: ChatResult) -> bool:
    """An answer that ended saying why (not one whose end nobody reported)."""
    return result.finish_reason is not None


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """What ``llmtap cache info`` shows."""

    path: Path
    answers: int
    bytes: int
    oldest: float | None
    newest: float | None

    def as_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "path": str(self.path),
            "answers": self.answers,
            "bytes": self.bytes,
            "oldest": self.oldest,
            "newest": self.newest,
        }


def cache_info(path: Path) -> CacheInfo:
    """How many answers the cache at ``path`` holds, their size, the oldest and newest."""
    connection = open_database(path, CACHE_MIGRATIONS, what=WHAT)
    try:
        count, size, oldest, newest = connection.execute(
            "SELECT count(*), coalesce(sum(length(result)), 0), min(created), max(created) "
            "FROM answers"
        ).fetchone()
    finally:
        connection.close()
    return CacheInfo(path, count, size, oldest, newest)


def clear_cache(path: Path, *, older_than: float | None = None) -> int:
    """Delete the answers of the cache at ``path`` (only those kept more than
    ``older_than`` seconds ago, when given); how many were deleted."""
    connection = open_database(path, CACHE_MIGRATIONS, what=WHAT)
    try:
        if older_than is None:
            deleted = connection.execute("DELETE FROM answers").rowcount
        else:
            cutoff = time.time() - older_than
            deleted = connection.execute(
                "DELETE FROM answers WHERE created < ?", (cutoff,)
            ).rowcount
        connection.execute("VACUUM")
    finally:
        connection.close()
    return int(deleted)
