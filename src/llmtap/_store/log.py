"""The conversation log: every chat call that ends, answered or failed, as one row of a SQLite
database, written by the file's background writer; and the queries ``llmtap logs`` and
``llmtap chat -c`` make of it.

A row holds the request body as sent (messages and parameters), the answer (text, reasoning,
tool calls, finish reason, usage, timings) or the error, and the conversation it belongs to.
Conversations are found, not declared: a request whose messages continue an answer already
logged (the same messages, then that answer, then more) joins that answer's conversation;
any other starts a new one. So ``run_tools`` rounds, an interactive session and ``chat -c``
each make one conversation.

Never stored: the API key (it only ever travels in a header) and a password in the endpoint
URL (the URL is kept without its user part).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from llmtap._errors import redact_url
from llmtap._hooks import HookRecord, RequestFailed, RequestFinished
from llmtap._log import get_logger
from llmtap._messages import Message
from llmtap._results import ChatResult
from llmtap._store.db import Migrations, open_database, writer_for

__all__ = [
    "LOG_MIGRATIONS",
    "LogHook",
    "LoggedCall",
    "continuation",
    "latest_conversation",
    "open_log",
    "row_of",
    "search",
]

_log = get_logger()

WHAT = "conversation log"

LOG_MIGRATIONS: Migrations = (
    (
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            time TEXT NOT NULL,
            endpoint TEXT,
            server TEXT,
            model TEXT,
            request TEXT,
            prompt TEXT NOT NULL DEFAULT '',
            answer TEXT,
            text TEXT NOT NULL DEFAULT '',
            reasoning TEXT NOT NULL DEFAULT '',
            tool_calls TEXT,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            timings TEXT,
            attempts INTEGER,
            cached INTEGER NOT NULL DEFAULT 0,
            error_type TEXT,
            error TEXT,
            head TEXT
        )""",
        "CREATE INDEX calls_conversation ON calls (conversation_id, id)",
        "CREATE INDEX calls_head ON calls (head)",
        "CREATE INDEX calls_model ON calls (model, id)",
        "CREATE VIRTUAL TABLE calls_fts USING fts5 ("
        "prompt, text, content='calls', content_rowid='id')",
        "CREATE TRIGGER calls_fts_insert AFTER INSERT ON calls BEGIN "
        "INSERT INTO calls_fts (rowid, prompt, text) VALUES (new.id, new.prompt, new.text); END",
        "CREATE TRIGGER calls_fts_delete AFTER DELETE ON calls BEGIN "
        "INSERT INTO calls_fts (calls_fts, rowid, prompt, text) "
        "VALUES ('delete', old.id, old.prompt, old.text); END",
    ),
)

#: The columns a row is written with, in order (``id`` is the database's).
_COLUMNS = (
    "conversation_id", "time", "endpoint", "server", "model", "request", "prompt", "answer",
    "text", "reasoning", "tool_calls", "finish_reason", "prompt_tokens", "completion_tokens",
    "total_tokens", "timings", "attempts", "cached", "error_type", "error", "head",
)  # fmt: skip
#: A new row joins the conversation of the latest row whose ``head`` is its ``prefix``, or
#: starts its own (the id it brought).
_INSERT = (
    f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ("
    "coalesce((SELECT conversation_id FROM calls WHERE head = ?1 ORDER BY id DESC LIMIT 1), ?2), "
    + ", ".join(f"?{number}" for number in range(3, len(_COLUMNS) + 2))
    + ")"
)


def _log_calls(connection: sqlite3.Connection, ended: list[tuple[HookRecord, float]]) -> None:
    """The writer's job: the rows of calls that ended (records, and when), written.

    The rows are built here, in the writer's thread, not by the hook: a thousand streams
    that end together would otherwise hold the event loop for a thousand rows' work. The
    thread lets the loop in between two rows (a short sleep gives up the GIL for long enough
    that a loop waiting for it gets it), so that it never waits for more than one row."""
    rows = []
    for record, at in ended:
        rows.append(_guarded(row_of, record, at=at))
        time.sleep(_BREATHE)
    connection.executemany(_INSERT, [row for row in rows if row is not None])


def _log_hits(
    connection: sqlite3.Connection, hits: list[tuple[bytes, str, ChatResult, float]]
) -> None:
    """The writer's job for answers the cache gave (as :func:`_log_calls`)."""
    rows = []
    for body, url, result, at in hits:
        rows.append(_guarded(_hit_row, body, url, result, at=at))
        time.sleep(_BREATHE)
    connection.executemany(_INSERT, [row for row in rows if row is not None])


#: Seconds the writer's thread sleeps between two rows it builds (giving up the GIL).
_BREATHE = 0.00001


def _guarded(build: Callable[..., tuple[Any, ...] | None], *args: Any, **kwargs: Any) -> Any:
    """``build(...)``, or ``None`` (logged) when it raises: one row that cannot be built
    does not cost the others theirs."""
    try:
        return build(*args, **kwargs)
    except Exception as exc:
        _log.error("llm_log_row_failed", error=f"{type(exc).__name__}: {exc}")
        return None


def _new_id() -> str:
    """A conversation id that sorts by time: milliseconds, then 40 random bits (hex)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(5)}"


def _when(at: float) -> str:
    """``at`` (seconds since the epoch) as ISO 8601 UTC, to the millisecond."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _canonical(message: Mapping[str, Any]) -> list[Any]:
    """What a message says, the same whichever form it was sent in (OpenAI's or Ollama's
    wire form, a ``Message``): its role, its content (``None`` as ``""``), its tool calls
    (name and decoded arguments) and the call it answers."""
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {} if isinstance(call, Mapping) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            with contextlib.suppress(orjson.JSONDecodeError):
                arguments = orjson.loads(arguments)
        calls.append([function.get("name"), arguments])
    content = message.get("content") or ""
    if message.get("role") == "assistant" and isinstance(content, list):  # Responses parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return [message.get("role"), content, calls, message.get("tool_call_id")]


def _thread_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """Names a conversation as far as ``messages`` go."""
    canonical = orjson.dumps([_canonical(message) for message in messages])
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def _prefix_hash(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The hash of the conversation up to the last assistant message of a request (the
    answer it continues), or ``None`` when it has none."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], Mapping) and messages[index].get("role") == "assistant":
            return _thread_hash(messages[: index + 1])
    return None


def _prompt_of(messages: Sequence[Any]) -> str:
    """The text of a request's last user message (what ``-q`` searches, with the answer)."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    part["text"]
                    for part in content
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
            return ""
    return ""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _answered(
    prefix: str | None,
    messages: list[Any],
    request: Mapping[str, Any],
    body: bytes,
    url: str | None,
    server: str | None,
    attempts: int,
    result: ChatResult,
    *,
    cached: bool,
    at: float,
) -> tuple[Any, ...]:
    """The row of an answered call."""
    usage, timings, message = result.usage, result.timings, result.message
    calls = [call.model_dump(mode="json") for call in result.tool_calls] or None
    return (
        prefix, _new_id(), _when(at), url, server, result.model or request.get("model"),
        body.decode(), _prompt_of(messages), message.model_dump_json(exclude_none=True),
        result.text, result.reasoning, _json(calls), result.finish_reason,
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
        timings.model_dump_json(exclude_none=True), attempts, int(cached), None, None,
        _thread_hash([*messages, message.to_api_dict()]),
    )  # fmt: skip


def _request_of(body: bytes | None) -> tuple[dict[str, Any], list[Any]] | None:
    """A chat request's body decoded, and its messages (``None``: not a chat request). A
    Responses API request's messages are its instructions and input items seen as chat
    messages (:func:`_chat_view`)."""
    if body is None:
        return None
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict):
        return None
    messages = request.get("messages")
    if not isinstance(messages, list):
        messages = _chat_view(request)
        if messages is None:
            return None  # embeddings
    return request, messages


def _chat_view(request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A Responses API request (``instructions`` and ``input``) as the chat messages it
    amounts to: the instructions a system message, message items as messages, function calls
    as an assistant message's tool calls, their outputs as tool messages. ``None``: not a
    Responses request."""
    given = request.get("input")
    if isinstance(given, str) and "stream" in request:  # (an embeddings request has none)
        given = [{"type": "message", "role": "user", "content": given}]
    if not isinstance(given, list) or not all(isinstance(item, Mapping) for item in given):
        return None  # an embeddings request's input is a text or a list of texts
    messages: list[dict[str, Any]] = []
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in given:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": item.get("content")})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last.get("role") == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last.get("role") == "assistant":
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
    return messages


def row_of(record: HookRecord, *, at: float) -> tuple[Any, ...] | None:
    """The row of a call that ended at ``at`` (``None`` for other records, and for calls
    that were not chat requests: embeddings)."""
    kind = type(record)
    if kind is not RequestFinished and kind is not RequestFailed:
        return None
    assert isinstance(record, RequestFinished | RequestFailed)
    body = record.body
    decoded = _request_of(body)
    if decoded is None or body is None:
        return None
    request, messages = decoded
    prefix = _prefix_hash(messages)
    url = redact_url(record.url) if record.url else None
    if isinstance(record, RequestFailed):
        error = record.error
        return (
            prefix, _new_id(), _when(at), url, record.server, request.get("model"), body.decode(),
            _prompt_of(messages), None, "", "", None, None, None, None, None, None,
            record.attempts, 0, type(error).__name__, error.message, None,
        )  # fmt: skip
    result = record.result
    if result is not None:
        return _answered(
            prefix, messages, request, body, url, record.server, record.attempts, result,
            cached=False, at=at,
        )  # fmt: skip
    usage, timings = record.usage, record.timings  # a raw chunk stream: no typed result
    return (
        prefix, _new_id(), _when(at), url, record.server, record.model, body.decode(),
        _prompt_of(messages), None, record.text, "", None, record.finish_reason,
        usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
        usage.total_tokens if usage else None, timings.model_dump_json(exclude_none=True),
        record.attempts, 0, None, None, None,
    )  # fmt: skip


def _hit_row(body: bytes, url: str, result: ChatResult, *, at: float) -> tuple[Any, ...] | None:
    """The row of an answer the cache gave."""
    decoded = _request_of(body)
    if decoded is None:
        return None
    request, messages = decoded
    return _answered(
        _prefix_hash(messages), messages, request, body, redact_url(url), result.server, 0,
        result, cached=True, at=at,
    )  # fmt: skip


class LogHook:
    """The hook that logs a client's calls to ``path``: each call that ends becomes a row,
    queued for the file's writer (the event loop never waits on the disk).

    Args:
        path: The database file.

    Raises:
        StoreError: The file cannot be used (see :func:`open_database`).
    """

    __slots__ = ("_writer",)

    def __init__(self, path: Path) -> None:
        self._writer = writer_for(path, LOG_MIGRATIONS, what=WHAT)

    @property
    def path(self) -> Path:
        """The database file (resolved)."""
        return self._writer.path

    def __call__(self, record: HookRecord) -> None:
        kind = type(record)
        if kind is RequestFinished or kind is RequestFailed:
            self._writer.put(_log_calls, (record, time.time()))

    def log_cached(self, body: bytes, url: str, result: ChatResult) -> None:
        """Log an answer the response cache gave to the request ``body`` sent to ``url``
        (``cached`` is 1 on its row, ``attempts`` 0)."""
        self._writer.put(_log_hits, (body, url, result, time.time()))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every row queued so far is written."""
        return self._writer.flush(timeout)


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """One row of the log, as ``llmtap logs`` shows it."""

    id: int
    conversation_id: str
    time: str
    endpoint: str | None
    server: str | None
    model: str | None
    prompt: str
    text: str
    reasoning: str
    tool_calls: list[Any] | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    timings: dict[str, Any] | None
    attempts: int | None
    cached: bool
    error_type: str | None
    error: str | None
    request: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        """The row as a JSON object (``llmtap logs --json``)."""
        return {name: getattr(self, name) for name in self.__slots__}


_SELECT = (
    "SELECT calls.id, conversation_id, time, endpoint, server, model, calls.prompt, calls.text, "
    "reasoning, tool_calls, finish_reason, prompt_tokens, completion_tokens, total_tokens, "
    "timings, attempts, cached, error_type, error, request FROM calls"
)


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _logged(row: tuple[Any, ...]) -> LoggedCall:
    values = list(row)
    for index in (9, 14, 19):  # tool_calls, timings, request
        values[index] = _loads(values[index])
    values[16] = bool(values[16])
    return LoggedCall(*values)


def _fts_query(text: str) -> str:
    """``text`` as an FTS5 query matching rows that hold every word of it (each word quoted,
    so that FTS5's own syntax in it is taken literally)."""
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def open_log(path: Path) -> sqlite3.Connection:
    """A connection for reading the log at ``path``."""
    return open_database(path, LOG_MIGRATIONS, what=WHAT)


def search(
    connection: sqlite3.Connection,
    *,
    limit: int = 10,
    query: str | None = None,
    model: str | None = None,
    conversation: str | None = None,
) -> list[LoggedCall]:
    """The latest rows (newest first) that match: every word of ``query`` in the prompt or
    the answer, the ``model``, the ``conversation``."""
    sql, where, args = _SELECT, [], list[Any]()
    if query is not None and query.split():
        sql += " JOIN calls_fts ON calls_fts.rowid = calls.id"
        where.append("calls_fts MATCH ?")
        args.append(_fts_query(query))
    if model is not None:
        where.append("model = ?")
        args.append(model)
    if conversation is not None:
        where.append("conversation_id = ?")
        args.append(conversation)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY calls.id DESC LIMIT ?"
    args.append(limit)
    return [_logged(row) for row in connection.execute(sql, args)]


def latest_conversation(connection: sqlite3.Connection) -> str | None:
    """The conversation of the latest row (``None``: the log is empty)."""
    latest = "SELECT conversation_id FROM calls ORDER BY id DESC LIMIT 1"
    row = connection.execute(latest).fetchone()
    return None if row is None else str(row[0])


def continuation(
    connection: sqlite3.Connection, conversation: str
) -> tuple[list[Any], str | None] | None:
    """What continuing ``conversation`` sends before the new message: its latest answered
    request's messages, as they were sent, then that answer (a :class:`Message`, which the
    dialect in use puts in wire form as it did the first time); and that request's model.
    ``None``: the conversation has no answered call."""
    row = connection.execute(
        "SELECT request, answer, model FROM calls WHERE conversation_id = ? "
        "AND answer IS NOT NULL ORDER BY id DESC LIMIT 1",
        (conversation,),
    ).fetchone()
    if row is None:
        return None
    request, answer, model = row
    decoded = _request_of(request.encode())
    if decoded is None:
        return None
    sent, messages = decoded
    sent_model = sent.get("model")
    messages.append(Message.model_validate_json(answer))
    return messages, sent_model if isinstance(sent_model, str) else model
