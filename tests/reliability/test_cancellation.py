"""Cancellation mid-stream — ``asyncio.timeout`` around the loop, a ``TaskGroup`` whose other
task fails, ``Task.cancel()``, and SIGINT to ``llmtap chat`` — gives the connection back at
once (closed, not pooled with half an answer in it) and leaves no task behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from llmtap import LLMClient, LLMConfig, Message, Router, TextDelta
from llmtap.testing import Reply, TestServer
from tests.reliability.hostile import RawRequest, RawServer, response_head

HELLO = [Message.user("hello")]
#: An answer that takes 30 s to stream: every cancellation below lands in its middle.
SLOW = Reply(chunks=[f" w{i}" for i in range(3000)], delay_between=0.01)
PATHS = ["stream_chat", "stream_chat_with_retry", "stream", "text", "chat_stream"]


async def kept_open(server: TestServer) -> int:
    """Connections to ``server`` still open once the client has had its say (a cancelled
    stream's must be closed, not kept for reuse with half an answer in it)."""
    for _ in range(200):
        if not server.open_connections:
            break
        await asyncio.sleep(0.01)
    return server.open_connections


async def consume(client: LLMClient | Router, path: str, started: asyncio.Event) -> None:
    """Read an answer on ``path``, setting ``started`` at the first text."""
    if path in ("stream_chat", "stream_chat_with_retry"):
        method = client.stream_chat if path == "stream_chat" else client.stream_chat_with_retry
        async for chunk in method(HELLO):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                started.set()
    elif path == "stream":
        async with client.stream(HELLO) as stream:
            async for event in stream:
                if type(event) is TextDelta:
                    started.set()
    elif path == "text":
        async with client.stream(HELLO) as stream:
            async for _piece in stream.text():
                started.set()
    else:
        await client.chat(HELLO)


@pytest.fixture
async def slow_server() -> AsyncIterator[TestServer]:
    async with TestServer(dialect="openai") as server:
        server.script(SLOW)
        yield server


def _client(url: str) -> LLMClient:
    return LLMClient(LLMConfig(endpoint=url, model="m"))


@pytest.mark.parametrize("path", PATHS)
async def test_timeout_around_the_loop_gives_the_connection_back(
    path: str, slow_server: TestServer
) -> None:
    """asyncio.timeout() expiring mid-stream leaves no connection checked out or pooled."""
    tasks_before = asyncio.all_tasks()
    async with _client(slow_server.url) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await consume(client, path, asyncio.Event())
        assert (client.connections_in_use, await kept_open(slow_server)) == (0, 0)
        await slow_server.stop()  # end the server's side, so that only the client's tasks count
        assert asyncio.all_tasks() == tasks_before


@pytest.mark.parametrize("path", PATHS[:4])
async def test_task_group_cancellation_gives_the_connection_back(
    path: str, slow_server: TestServer
) -> None:
    """A TaskGroup cancelling the reader because a sibling failed leaves nothing behind."""
    tasks_before = asyncio.all_tasks()
    started = asyncio.Event()

    async def sibling() -> None:
        await started.wait()
        raise RuntimeError("sibling failed")

    async with _client(slow_server.url) as client:
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as group:
                group.create_task(consume(client, path, started))
                group.create_task(sibling())
        assert (client.connections_in_use, await kept_open(slow_server)) == (0, 0)
        await slow_server.stop()
        assert asyncio.all_tasks() == tasks_before
    assert [type(error) for error in info.value.exceptions] == [RuntimeError]


@pytest.mark.parametrize("path", PATHS[:4])
async def test_cancelled_task_gives_the_connection_back(path: str, slow_server: TestServer) -> None:
    """Task.cancel() after the first text closes the stream before the task ends."""
    tasks_before = asyncio.all_tasks()
    started = asyncio.Event()
    async with _client(slow_server.url) as client:
        task = asyncio.create_task(consume(client, path, started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (client.connections_in_use, await kept_open(slow_server)) == (0, 0)
        await slow_server.stop()
        assert asyncio.all_tasks() == tasks_before


@pytest.mark.parametrize("path", PATHS)
async def test_router_timeout_gives_every_connection_back(path: str) -> None:
    """A routed stream cut by asyncio.timeout() leaves no connection on any endpoint, and
    closing the router leaves no background task."""
    tasks_before = asyncio.all_tasks()
    async with TestServer(dialect="openai", models=["m"]) as server:
        server.script(SLOW)
        router = Router([LLMConfig(endpoint=server.url, model="m")])
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await consume(router, path, asyncio.Event())
            assert [client.connections_in_use for client in router.clients] == [0]
        finally:
            await router.close()
    assert router.background_tasks == 0
    assert asyncio.all_tasks() == tasks_before


class EndlessOllama:
    """Just enough of Ollama for ``llmtap chat``: a version, one model, and a chat answer
    (``/v1`` SSE or native NDJSON) that never ends. Records when the client's side of the
    chat connection closed."""

    def __init__(self) -> None:
        self.streaming = asyncio.Event()
        self.closed = asyncio.Event()

    async def __call__(self, request: RawRequest, writer: asyncio.StreamWriter) -> None:
        if request.path == "/api/version":
            body = b'{"version": "0.33.0"}'
        elif request.path == "/api/tags":
            body = b'{"models": [{"name": "m:latest", "model": "m:latest"}]}'
        elif request.path in ("/api/chat", "/v1/chat/completions"):
            await self._stream(writer, native=request.path == "/api/chat")
            return
        else:
            body = b'{"error": "not found"}'
        writer.write(response_head(200, "application/json", Content_Length=len(body)) + body)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, *, native: bool) -> None:
        if native:
            writer.write(response_head(200, "application/x-ndjson"))
            line = {"message": {"role": "assistant", "content": "word "}, "done": False}
            frame = orjson.dumps(line) + b"\n"
        else:
            writer.write(response_head(200, "text/event-stream"))
            chunk = {"choices": [{"index": 0, "delta": {"content": "word "}}]}
            frame = b"data: " + orjson.dumps(chunk) + b"\n\n"
        try:
            while True:
                writer.write(frame)
                await writer.drain()
                self.streaming.set()
                await asyncio.sleep(0.01)
        except ConnectionError:
            self.closed.set()


def _cli_env(home: Path) -> dict[str, str]:
    """The environment without the developer's own llmtap, Ollama and OpenAI settings."""
    own = ("LLMTAP_", "OLLAMA_", "OPENAI_", "XDG_CONFIG_HOME")
    env = {name: value for name, value in os.environ.items() if not name.startswith(own)}
    return {**env, "HOME": str(home), "PYTHONIOENCODING": "utf-8"}


async def test_sigint_to_llmtap_chat_closes_its_connection(tmp_path: Path) -> None:
    """SIGINT while `llmtap chat` streams an endless answer: it exits with 130 and the
    server sees the connection close (it did not wait for an end that never comes)."""
    ollama = EndlessOllama()
    async with RawServer(ollama) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmtap.cli", "chat", "--endpoint", server.url,
            "--model", "m", "--raw", "Hi",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_cli_env(tmp_path),
        )  # fmt: skip
        try:
            async with asyncio.timeout(60):  # a hang guard, not a measurement
                await ollama.streaming.wait()
                assert process.stdout is not None
                first = await process.stdout.readexactly(4)
                process.send_signal(signal.SIGINT)
                _, err = await process.communicate()
                await ollama.closed.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert first == b"word"
    assert process.returncode == 130
    assert b"Traceback" not in err
