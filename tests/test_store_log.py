"""The conversation log (``LLMConfig(log_db=...)``): one row per chat call that ends, answered
or failed, with what was asked and what came back; conversations found by their messages;
search; the file's schema and its migrations; a process killed while writing.

Every test talks to llmtap's test server on loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmtap import LLMClient, LLMConfig, LLMResponseError, Message, StoreError, ToolCall
from llmtap._store import open_log, search
from llmtap._store.db import open_database
from llmtap._store.log import LOG_MIGRATIONS, continuation, latest_conversation
from llmtap.testing import Reply, TestServer, echo_reply, no_retry_waits

SECRET = "sk-log-secret-4d1c9a"


def files_holding(folder: Path, *secrets: str) -> list[tuple[str, str]]:
    """Each (file, secret) pair where a file of ``folder`` holds one of ``secrets`` in its
    bytes."""
    return [
        (file.name, secret)
        for file in sorted(folder.iterdir())
        for secret in secrets
        if secret.encode() in file.read_bytes()
    ]


def _rows(path: Path) -> list[dict[str, Any]]:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        connection.close()


def _client(server: TestServer, path: Path, **overrides: Any) -> LLMClient:
    settings: dict[str, Any] = {"endpoint": server.url, "model": "m", "log_db": path}
    settings.update(overrides)
    return LLMClient(LLMConfig(**settings))


async def test_an_answered_call_is_one_row_with_what_was_asked_and_answered(
    tmp_path: Path,
) -> None:
    """The row holds the request body as sent, the text, reasoning, finish reason, usage,
    timings, server and model; no error."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="The answer.", reasoning="Thinking.", usage=(7, 3)))
        async with _client(server, path) as client:
            result = await client.chat([Message.system("Be brief."), Message.user("Why?")], seed=3)
        sent = server.chat_requests[0].body
    [row] = _rows(path)
    assert row["request"].encode() == sent
    assert (row["prompt"], row["text"], row["reasoning"]) == ("Why?", "The answer.", "Thinking.")
    assert (row["finish_reason"], row["model"], row["server"]) == ("stop", "m", "vllm")
    usage = (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"])
    assert usage == (7, 3, 10)
    assert orjson.loads(row["timings"]) == result.timings.model_dump(exclude_none=True)
    assert (row["error_type"], row["error"], row["cached"], row["attempts"]) == (None, None, 0, 1)
    assert Message.model_validate_json(row["answer"]) == result.message
    assert row["endpoint"] == server.url


async def test_tool_calls_are_logged_decoded(tmp_path: Path) -> None:
    """A tool call is kept with its id, name and decoded arguments."""
    path = tmp_path / "log.db"
    call = ToolCall(id="call_1", name="weather", arguments={"city": "Oslo"})
    async with TestServer(dialect="openai") as server:
        server.script(Reply(tool_calls=[call]))
        async with _client(server, path) as client:
            await client.chat([Message.user("Weather?")], tools=[_WEATHER])
    [row] = _rows(path)
    assert orjson.loads(row["tool_calls"]) == [call.model_dump(mode="json")]
    assert row["finish_reason"] == "tool_calls"


_WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_a_failed_call_is_a_row_with_its_error(tmp_path: Path) -> None:
    """A call that fails after its last attempt is a row with the error's class and message,
    and no answer."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=400, error_message="context too long"))
        async with _client(server, path, max_retries=0) as client:
            with pytest.raises(LLMResponseError):
                await client.chat([Message.user("Hi")])
    [row] = _rows(path)
    assert row["error_type"] == "LLMResponseError"
    assert "context too long" in row["error"]
    assert (row["answer"], row["text"], row["finish_reason"], row["head"]) == (None, "", None, None)


async def test_raw_streams_are_logged_and_embeddings_are_not(tmp_path: Path) -> None:
    """stream_chat() (raw chunks) is logged with its text and counts; embeddings calls are
    not chat calls and leave no row."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="raw words", usage=(4, 2)))
        async with _client(server, path) as client:
            async with client.stream_chat([Message.user("Hi")]) as chunks:
                async for _chunk in chunks:
                    pass
            await client.embed(["a", "b"])
    [row] = _rows(path)
    assert (row["text"], row["completion_tokens"], row["finish_reason"]) == ("raw words", 2, "stop")


async def test_a_stream_closed_early_leaves_no_row(tmp_path: Path) -> None:
    """Only calls that end (answered or failed) are logged: a stream the caller closes after
    its first event is not."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="one two three four", delay_between=0.01), Reply(text="ok"))
        async with _client(server, path) as client:
            async with client.stream([Message.user("Hi")]) as stream:
                async for _event in stream:
                    break
            await client.chat([Message.user("Again")])
    assert [row["prompt"] for row in _rows(path)] == ["Again"]


@pytest.mark.parametrize("api", ["openai", "ollama"])
async def test_a_conversation_continued_joins_its_first_call(tmp_path: Path, api: str) -> None:
    """A request that continues a logged answer (its messages, then the answer, then more)
    joins that answer's conversation, whichever wire form it was sent in; a fresh question
    starts another. The tool loop's rounds are one conversation."""
    path = tmp_path / "log.db"
    dialect = "ollama" if api == "ollama" else "openai"
    async with TestServer(dialect=dialect) as server:
        server.fallback = echo_reply
        async with _client(server, path, api=api) as client:
            first = [Message.user("Hello")]
            answer = await client.chat(first)
            await client.chat([*first, answer.message, Message.user("More")])
            await client.chat([Message.user("Something else")])
            server.script(
                Reply(tool_calls=[ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})]),
                Reply(text="3"),
            )

            def add(a: int, b: int) -> int:
                """Add."""
                return a + b

            await client.run_tools([Message.user("1+2?")], [add])
    rows = _rows(path)
    conversations = [row["conversation_id"] for row in rows]
    assert conversations[0] == conversations[1]
    assert len({conversations[0], conversations[2], conversations[3]}) == 3
    assert conversations[3] == conversations[4]


async def test_continuation_gives_back_the_history_byte_for_byte(tmp_path: Path) -> None:
    """What ``llmtap chat -c`` sends: the stored messages as they were sent, then the stored
    answer; sent again, the request's messages begin with exactly the bytes of the first
    request's messages and the answer (in the wire form the first request would have
    carried it)."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.fallback = echo_reply
        async with _client(server, path) as client:
            first = await client.chat([Message.system("Sys é"), Message.user("Hello ✓")])
            await client.close()  # written
            connection = open_log(path)
            conversation = latest_conversation(connection)
            assert conversation is not None
            found = continuation(connection, conversation)
            connection.close()
            assert found is not None
            history, model = found
        async with _client(server, path) as client:
            await client.chat([*history, Message.user("And then?")])
    one, two = (orjson.loads(request.body)["messages"] for request in server.chat_requests)
    expected = [*one, first.message.to_api_dict()]
    assert orjson.dumps(two[:-1]) == orjson.dumps(expected)
    assert model == "m"
    assert _rows(path)[1]["conversation_id"] == conversation


async def test_no_api_key_and_no_password_is_stored(tmp_path: Path) -> None:
    """Neither the API key nor a password in the endpoint URL reaches the file (its bytes,
    WAL included, are searched)."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.fallback = echo_reply
        async with _client(server, path, api_key=SECRET) as client:
            await client.chat([Message.user("Hi")])
        user_url = server.url.replace("http://", "http://alice:pa55word-9f3@")
        async with _client(server, path, endpoint=user_url) as client:
            await client.chat([Message.user("Hi again")])
    assert files_holding(tmp_path, SECRET, "pa55word-9f3") == []
    assert len(_rows(path)) == 2


async def test_a_thousand_concurrent_streams_make_a_thousand_rows(tmp_path: Path) -> None:
    """Every one of 1,000 concurrent streams becomes a row, each with its own answer."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.fallback = echo_reply
        async with _client(server, path, max_connections=100) as client:

            async def one(number: int) -> None:
                async with client.stream([Message.user(f"question {number}")]) as stream:
                    async for _event in stream:
                        pass

            await asyncio.gather(*(one(number) for number in range(1000)))
    rows = _rows(path)
    assert len(rows) == 1000
    assert {row["text"] for row in rows} == {f"echo: question {n}" for n in range(1000)}


async def test_search_finds_words_of_the_prompt_or_the_answer(tmp_path: Path) -> None:
    """``search`` (``llmtap logs -q``) matches rows holding every word, in the prompt or the
    answer, newest first; FTS5's own syntax in the words is taken literally; model,
    conversation and limit narrow it."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.fallback = echo_reply
        async with _client(server, path) as client:
            for prompt in ("red apples", "green apples", 'odd "quote* AND (x', "blue sky"):
                await client.chat([Message.user(prompt)])
        async with _client(server, path, model="other") as client:
            await client.chat([Message.user("apples again")])
    connection = open_log(path)
    try:
        found = [call.prompt for call in search(connection, query="apples")]
        assert found == ["apples again", "green apples", "red apples"]
        assert [call.prompt for call in search(connection, query="echo sky")] == ["blue sky"]
        odd = search(connection, query='"quote* AND (x')
        assert [call.prompt for call in odd] == ['odd "quote* AND (x']
        assert [c.prompt for c in search(connection, query="apples", model="m", limit=1)] == [
            "green apples"
        ]
        latest = search(connection, limit=1)[0]
        assert [c.prompt for c in search(connection, conversation=latest.conversation_id)] == [
            "apples again"
        ]
    finally:
        connection.close()


# --- the file --------------------------------------------------------------------------------


def test_a_path_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    """A log under a file (not a folder) fails when the client is made, naming the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as caught:
        LLMClient(LLMConfig(endpoint="http://127.0.0.1:9", model="m", log_db=blocker / "log.db"))
    assert caught.value.path == blocker / "log.db"
    assert "conversation log" in str(caught.value)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file of another kind is refused with what to do, and left as it was."""
    path = tmp_path / "log.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="move the file away"):
        open_log(path)
    assert path.read_bytes() == b"not a database at all" * 100


def test_migrations_bring_an_old_file_up_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    """A file at version 1 gets only the migrations it lacks; one from a newer schema is
    refused (not changed)."""
    path = tmp_path / "x.db"
    first = (("CREATE TABLE t (a INTEGER)",),)
    second = (*first, ("ALTER TABLE t ADD COLUMN b TEXT", "INSERT INTO t VALUES (1, 'b')"))
    open_database(path, first, what="test file").close()
    connection = open_database(path, second, what="test file")
    assert connection.execute("SELECT a, b FROM t").fetchall() == [(1, "b")]
    assert connection.execute("PRAGMA user_version").fetchone() == (2,)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()
    with pytest.raises(StoreError, match="schema version 2, newer than this llmtap knows"):
        open_database(path, first, what="test file")
    reopened = open_database(path, second, what="test file")
    assert reopened.execute("SELECT count(*) FROM t").fetchone() == (1,)
    reopened.close()


def test_the_log_schema_is_at_its_latest_version(tmp_path: Path) -> None:
    """A new log file is at the last version of its migrations, with its FTS5 index."""
    connection = open_log(tmp_path / "log.db")
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (len(LOG_MIGRATIONS),)
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert {"calls", "calls_fts"} <= names
    finally:
        connection.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from llmtap import LLMClient, LLMConfig, Message

    async def main() -> None:
        config = LLMConfig(endpoint=sys.argv[1], model="m", log_db=sys.argv[2])
        async with LLMClient(config) as client:
            async def one(number: int) -> None:
                await client.chat([Message.user(f"question {number}")])
            number = 0
            while True:
                await asyncio.gather(*(one(number + k) for k in range(20)))
                number += 20

    asyncio.run(main())
    """
)


async def test_a_process_killed_while_writing_leaves_a_readable_log(tmp_path: Path) -> None:
    """SIGKILL in the middle of a run: the file opens, passes SQLite's integrity check, and
    every row in it is whole (its answer matches its question); what was there before the
    kill is still there."""
    path = tmp_path / "log.db"
    async with TestServer(dialect="openai") as server:
        server.fallback = echo_reply
        with no_retry_waits():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WRITER, server.url, str(path),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                seen = 0
                deadline = time.monotonic() + 60
                while seen < 300 and time.monotonic() < deadline and process.returncode is None:
                    await asyncio.sleep(0.05)
                    seen = _count(path)
                os.kill(process.pid, signal.SIGKILL)
            finally:
                if process.returncode is None:
                    process.kill()
                _, stderr = await process.communicate()
    assert seen >= 300, stderr.decode()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = connection.execute("SELECT prompt, text, request FROM calls").fetchall()
    finally:
        connection.close()
    assert len(rows) >= seen
    for prompt, text, request in rows:
        assert text == f"echo: {prompt}"
        assert orjson.loads(request)["messages"][-1]["content"] == prompt


def _count(path: Path) -> int:
    """Rows in the log, read by another connection (0 while it is not there yet)."""
    if not path.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(connection.execute("SELECT count(*) FROM calls").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return 0
