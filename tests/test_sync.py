"""SyncClient's lifecycle (closed, never closed) and its tool loop and parse (issue 21, item 8)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from llmtap import LLMUsageError, Message, SyncClient, ToolCallFinished, ToolEvent, tool
from llmtap.testing import Reply, TestServer, ToolCallSpec

HI = [Message.user("hi")]
CLOSED = "this SyncClient is closed; create a new one"


class City(BaseModel):
    name: str
    population: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _sync_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "llmtap-sync"}


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.chat(HI),
        lambda client: client.stream(HI),
        lambda client: client.embed(["a"]),
        lambda client: client.preflight_check(),
        lambda client: client.run_tools(HI, [get_weather]),
        lambda client: client.parse(HI, City),
    ],
    ids=["chat", "stream", "embed", "preflight_check", "run_tools", "parse"],
)
def test_a_closed_sync_client_raises_usage_error(call: Callable[[SyncClient], Any]) -> None:
    """Every call on a closed SyncClient raises LLMUsageError, and no coroutine is left
    unawaited (no RuntimeWarning)."""
    client = SyncClient(endpoint="http://127.0.0.1:9", model="m")
    client.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(LLMUsageError) as info:
            call(client)
        gc.collect()
    assert (str(info.value), [str(w.message) for w in caught]) == (CLOSED, [])


def test_close_stops_the_thread_and_may_be_called_twice() -> None:
    """close() ends the loop thread; a second close() does nothing."""
    before = _sync_threads()
    client = SyncClient(endpoint="http://127.0.0.1:9", model="m")
    started = _sync_threads() - before
    client.close()
    client.close()
    assert (len(started), [thread.is_alive() for thread in started]) == (1, [False])


async def test_an_unclosed_sync_client_stops_its_thread_and_closes_its_connection() -> None:
    """A SyncClient dropped without close() stops its loop thread and closes its kept-alive
    connection (the server sees the end of it)."""
    closed = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        body = (
            b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},'
            b' "finish_reason": "stop"}]}'
        )
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        await reader.read()  # until the client closes the kept-alive connection
        closed.set()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    before = _sync_threads()

    def use_and_drop() -> tuple[str, set[threading.Thread]]:
        client = SyncClient(endpoint=url, model="m")
        text = client.chat(HI, stream=False).text
        return text, _sync_threads() - before  # client is dropped here, unclosed

    try:
        text, started = await asyncio.to_thread(use_and_drop)
        gc.collect()
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert (text, len(started), [thread.is_alive() for thread in started]) == (
        "hello",
        1,
        [False],
    )


def test_an_unclosed_sync_client_at_exit_leaves_no_unclosed_session() -> None:
    """A script that never closes its SyncClient (after a request made its session) exits
    without aiohttp's 'Unclosed client session' or 'Unclosed connector' complaints."""
    code = textwrap.dedent(
        """
        import llmtap
        client = llmtap.SyncClient(endpoint="http://127.0.0.1:9", model="m", max_retries=0)
        try:
            client.chat([llmtap.Message.user("hi")])
        except llmtap.LLMConnectionError:
            print("refused")
        """
    )
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "refused\n", "")


def _tool_loop(url: str) -> tuple[str, list[str], City]:
    events: list[str] = []

    def note(event: ToolEvent) -> None:
        if isinstance(event, ToolCallFinished):
            events.append(event.output)

    with SyncClient(endpoint=url, model="llama3.2") as client:
        run = client.run_tools([Message.user("Weather?")], [get_weather], on_event=note)
        city = client.parse([Message.user("Biggest city?")], City)
    return run.text, events, city


async def test_sync_client_runs_tools_and_parses() -> None:
    """SyncClient has run_tools and parse, with LLMClient's results."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"})]),
            Reply(text="Sunny."),
            Reply(text='{"name": "Paris", "population": 2100000}'),
        )
        text, events, city = await asyncio.to_thread(_tool_loop, server.url)
    assert (text, events, city) == (
        "Sunny.",
        ["sunny in Paris"],
        City(name="Paris", population=2100000),
    )
