"""``run_tools``: the tool loop against the loopback test server, in every dialect."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from llmtap import LLMUsageError, Message, TextDelta, ToolCall
from llmtap._errors import LLMToolLoopError
from llmtap._toolloop import ToolCallFinished, ToolCallStarted, ToolEvent, ToolRun
from llmtap._tools import tool
from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.conftest import make_client

QUESTION = [Message.user("What is the weather in Paris?")]
PARIS = ToolCallSpec("get_weather", {"city": "Paris"}, id="call_1")
SUNNY = "Paris: sunny, 21 °C"


def get_weather(city: str) -> str:
    """Current weather in a city.

    Args:
        city: The city's name.
    """
    return f"{city}: sunny, 21 °C"


def _events_seen(events: list[ToolEvent]) -> list[tuple[str, str, str | None]]:
    """Events as (kind, call id or text, output) for exact comparison (durations vary)."""
    seen: list[tuple[str, str, str | None]] = []
    for event in events:
        if isinstance(event, ToolCallStarted):
            seen.append(("started", event.call.id, None))
        elif isinstance(event, ToolCallFinished):
            seen.append(("finished", event.call.id, event.output))
        else:
            seen.append(("text", event.text, None))
    return seen


# --- one round of calls, then the answer, in every dialect ---------------------------------


async def test_whole_calls_on_native_ollama() -> None:
    """Native Ollama (whole calls, object arguments): the second request carries the
    assistant's call and the tool's answer in Ollama's shape."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(tool_calls=[PARIS]), Reply(text="It is sunny in Paris."))
        async with make_client(server.url, api="ollama") as client:
            run = await client.run_tools(QUESTION, tools=[get_weather])
    assert run.result.text == "It is sunny in Paris."
    assert server.chat_requests[1].json["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": SUNNY, "tool_call_id": "call_1", "tool_name": "get_weather"},
    ]


@pytest.mark.parametrize("dialect", ["ollama", "vllm", "llamacpp", "openai"])
async def test_calls_on_openai_style_servers(dialect: str) -> None:
    """Whole calls (Ollama /v1) and fragmented ones (vLLM, llama.cpp, OpenAI): the second
    request carries the assistant's call and a tool message with the matching id."""
    async with TestServer(dialect=dialect) as server:  # type: ignore[arg-type]
        server.script(Reply(tool_calls=[PARIS], tool_fragments=4), Reply(text="Sunny."))
        async with make_client(server.url, api="openai") as client:
            run = await client.run_tools(QUESTION, tools=[get_weather])
    assert run.result.text == "Sunny."
    assert server.chat_requests[1].json["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": SUNNY, "tool_call_id": "call_1", "name": "get_weather"},
    ]


async def test_every_request_offers_the_tools() -> None:
    """Each round sends the tools' schemas and the caller's extra parameters."""
    weather = tool(get_weather)
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(tool_calls=[PARIS]), Reply(text="Sunny."))
        async with make_client(server.url) as client:
            await client.run_tools(QUESTION, tools=[weather], tool_choice="auto", seed=7)
    for request in server.chat_requests:
        assert request.json["tools"] == [weather.to_schema()]
        assert (request.json["tool_choice"], request.json["seed"]) == ("auto", 7)


async def test_transcript_holds_every_message_of_the_run() -> None:
    """``.messages`` is the caller's messages, the call, the tool answer and the final
    answer, ready to continue the conversation."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(tool_calls=[PARIS]), Reply(text="Sunny."))
        async with make_client(server.url) as client:
            run = await client.run_tools(QUESTION, tools=[get_weather])
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    assert run == ToolRun(
        run.result,
        [
            *QUESTION,
            Message.assistant(None, tool_calls=[call]),
            Message.tool(SUNNY, tool_call_id="call_1", name="get_weather"),
            Message.assistant("Sunny."),
        ],
    )
    assert (run.text, len(server.chat_requests)) == ("Sunny.", 2)


async def test_an_answer_without_calls_ends_at_once() -> None:
    """A model that answers straight away costs one request and runs no tool."""
    called: list[str] = []

    def spy(city: str) -> str:
        """Never called."""
        called.append(city)
        return ""

    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="I cannot say."))
        async with make_client(server.url) as client:
            run = await client.run_tools(QUESTION, tools=[spy])
    assert (run.text, called, len(server.chat_requests)) == ("I cannot say.", [], 1)


# --- concurrency ---------------------------------------------------------------------------


async def test_parallel_async_calls_run_concurrently() -> None:
    """Two async tools that each wait for the other to have started both finish: they ran
    at the same time (one after the other, the first would wait in vain)."""
    ping_started, pong_started = asyncio.Event(), asyncio.Event()

    async def ping() -> str:
        """Ping."""
        ping_started.set()
        await asyncio.wait_for(pong_started.wait(), 10)
        return "ping done"

    async def pong() -> str:
        """Pong."""
        pong_started.set()
        await asyncio.wait_for(ping_started.wait(), 10)
        return "pong done"

    async with TestServer(dialect="vllm") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("ping", {}, id="a"), ToolCallSpec("pong", {}, id="b")]),
            Reply(text="Both done."),
        )
        async with make_client(server.url) as client:
            run = await client.run_tools(QUESTION, tools=[ping, pong])
    assert run.messages[2:4] == [
        Message.tool("ping done", tool_call_id="a", name="ping"),
        Message.tool("pong done", tool_call_id="b", name="pong"),
    ]


async def test_parallel_sync_calls_run_in_concurrent_threads() -> None:
    """Two sync tools meet at a two-party barrier, so each ran in its own worker thread
    while the other did; the event loop's thread ran neither."""
    barrier = threading.Barrier(2, timeout=10)
    threads: set[int] = set()

    def left() -> str:
        """Left."""
        threads.add(threading.get_ident())
        barrier.wait()
        return "left"

    def right() -> str:
        """Right."""
        threads.add(threading.get_ident())
        barrier.wait()
        return "right"

    async with TestServer(dialect="ollama") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("left", {}, id="l"), ToolCallSpec("right", {}, id="r")]),
            Reply(text="ok"),
        )
        async with make_client(server.url, api="ollama") as client:
            run = await client.run_tools(QUESTION, tools=[left, right])
    assert [m.content for m in run.messages[2:4]] == ["left", "right"]  # type: ignore[union-attr]
    assert len(threads) == 2
    assert threading.get_ident() not in threads


# --- calls that cannot run -----------------------------------------------------------------


async def test_unknown_tool_is_reported_to_the_model(caplog: pytest.LogCaptureFixture) -> None:
    """A call to a tool that does not exist is answered with the list of tools, logged, and
    the loop goes on."""
    caplog.set_level(logging.WARNING, logger="llmtap")
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("get_wether", {"city": "Paris"}, id="c1")]),
            Reply(text="Sorry."),
        )
        async with make_client(server.url) as client:
            run = await client.run_tools(QUESTION, tools=[get_weather])
    assert server.chat_requests[1].json["messages"][2] == {
        "role": "tool",
        "content": "Error: there is no tool named 'get_wether'. The tools are: get_weather.",
        "tool_call_id": "c1",
        "name": "get_wether",
    }
    assert run.text == "Sorry."
    [record] = [r for r in caplog.records if r.getMessage().startswith("tool_unknown")]
    assert record.llmtap == {  # type: ignore[attr-defined]
        "tool": "get_wether",
        "call_id": "c1",
        "available": ["get_weather"],
    }


async def test_invalid_arguments_are_reported_and_the_tool_is_not_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Arguments that do not fit the signature never reach the function; the model is told
    which ones are wrong and why."""
    caplog.set_level(logging.WARNING, logger="llmtap")
    called: list[Any] = []

    def forecast(city: str, days: int) -> str:
        """Forecast."""
        called.append((city, days))
        return "ok"

    async with TestServer(dialect="llamacpp") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("forecast", {"days": "many"}, id="c1")]),
            Reply(text="Which city?"),
        )
        async with make_client(server.url) as client:
            await client.run_tools(QUESTION, tools=[forecast])
    assert server.chat_requests[1].json["messages"][2]["content"] == (
        "Error: the arguments for forecast are invalid:\n"
        "city: Field required\n"
        'days: Input should be a valid integer, unable to parse string as an integer (got "many")\n'
        "Call forecast again with corrected arguments."
    )
    assert called == []
    assert [r.getMessage().split()[0] for r in caplog.records] == ["tool_arguments_invalid"]


async def test_a_raising_tool_is_reported_and_the_loop_goes_on() -> None:
    """An exception inside the tool becomes the tool message; the model then answers."""

    def get_weather(city: str) -> str:
        """Fails."""
        raise LookupError(f"no station in {city}")

    async with TestServer(dialect="vllm") as server:
        server.script(Reply(tool_calls=[PARIS]), Reply(text="No data."))
        async with make_client(server.url) as client:
            run = await client.run_tools(QUESTION, tools=[get_weather])
    assert run.messages[2] == Message.tool(
        "Error: get_weather failed: LookupError: no station in Paris",
        tool_call_id="call_1",
        name="get_weather",
    )
    assert run.text == "No data."


async def test_endless_calls_raise_with_the_transcript() -> None:
    """A model that calls a tool in every reply stops the loop after max_rounds requests;
    the error carries the transcript with every call answered."""
    async with TestServer(dialect="ollama") as server:
        server.script(*[Reply(tool_calls=[PARIS]) for _ in range(4)])
        async with make_client(server.url) as client:
            with pytest.raises(LLMToolLoopError) as info:
                await client.run_tools(QUESTION, tools=[get_weather], max_rounds=3)
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    answer = Message.tool(SUNNY, tool_call_id="call_1", name="get_weather")
    assert info.value.messages == [
        *QUESTION,
        *[Message.assistant(None, tool_calls=[call]), answer] * 3,
    ]
    assert len(server.chat_requests) == 3
    assert info.value.message.startswith(
        "The model was still calling tools after max_rounds=3 rounds"
    )


# --- events --------------------------------------------------------------------------------


async def test_on_event_sees_calls_and_results_in_order() -> None:
    """Each call is announced before it runs and reported after, round by round."""
    events: list[ToolEvent] = []
    async with TestServer(dialect="llamacpp") as server:
        server.script(
            Reply(tool_calls=[PARIS]),
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Rome"}, id="call_2")]),
            Reply(text="Sunny in both."),
        )
        async with make_client(server.url) as client:
            await client.run_tools(QUESTION, tools=[get_weather], on_event=events.append)
    assert _events_seen(events) == [
        ("started", "call_1", None),
        ("finished", "call_1", SUNNY),
        ("started", "call_2", None),
        ("finished", "call_2", "Rome: sunny, 21 °C"),
    ]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [e.error for e in finished] == [None, None]
    assert all(e.seconds >= 0 for e in finished)


async def test_on_event_reports_the_error_of_a_failed_call() -> None:
    """ToolCallFinished.error states the failure; .output is what the model was told."""
    events: list[ToolEvent] = []
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(tool_calls=[ToolCallSpec("nope", {}, id="x")]), Reply(text="ok"))
        async with make_client(server.url) as client:
            await client.run_tools(QUESTION, tools=[get_weather], on_event=events.append)
    [finished] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert (finished.error, finished.output) == (
        "unknown tool 'nope'",
        "Error: there is no tool named 'nope'. The tools are: get_weather.",
    )


async def test_async_on_event_is_awaited_and_streamed_text_arrives() -> None:
    """With stream=True an async callback also gets the answer's text deltas, after the
    round's calls."""
    events: list[ToolEvent] = []

    async def record(event: ToolEvent) -> None:
        await asyncio.sleep(0)
        events.append(event)

    async with TestServer(dialect="openai") as server:
        server.script(Reply(tool_calls=[PARIS]), Reply(text="It is sunny."))
        async with make_client(server.url) as client:
            run = await client.run_tools(
                QUESTION, tools=[get_weather], on_event=record, stream=True
            )
    assert _events_seen(events) == [
        ("started", "call_1", None),
        ("finished", "call_1", SUNNY),
        ("text", "It", None),
        ("text", " is", None),
        ("text", " sunny.", None),
    ]
    assert run.text == "It is sunny."
    assert all(type(e) in (ToolCallStarted, ToolCallFinished, TextDelta) for e in events)


async def test_a_failing_callback_stops_the_loop_and_cancels_running_calls() -> None:
    """An exception from on_event propagates as it is, and calls still running are
    cancelled rather than left behind."""
    release = asyncio.Event()
    cancelled: list[str] = []

    async def fast() -> str:
        """Returns at once."""
        return "fast"

    async def slow() -> str:
        """Waits until cancelled."""
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "slow"

    def explode(event: ToolEvent) -> None:
        if isinstance(event, ToolCallFinished):
            raise RuntimeError("callback broke")

    async with TestServer(dialect="vllm") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("fast", {}, id="f"), ToolCallSpec("slow", {}, id="s")])
        )
        async with make_client(server.url) as client:
            with pytest.raises(RuntimeError, match=r"^callback broke$"):
                await client.run_tools(QUESTION, tools=[fast, slow], on_event=explode)
    assert cancelled == ["slow"]


# --- misuse --------------------------------------------------------------------------------


async def test_schema_dicts_are_refused(closed_port_url: str) -> None:
    """run_tools must run the tools, so a bare schema dict is a usage error."""
    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMUsageError) as info:
            await client.run_tools(QUESTION, tools=[{"type": "function"}])
    assert str(info.value) == (
        "run_tools() runs the tools, so it needs functions or Tool objects, not dict; pass "
        "schema dicts to chat() instead"
    )


async def test_two_tools_with_one_name_are_refused(closed_port_url: str) -> None:
    """Tool names must be unique."""
    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMUsageError) as info:
            await client.run_tools(QUESTION, tools=[get_weather, tool(get_weather)])
    assert str(info.value) == (
        "two tools are named 'get_weather'; give one another name with tool(name=...)"
    )


async def test_max_rounds_below_one_is_refused(closed_port_url: str) -> None:
    """max_rounds=0 could never ask anything."""
    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMUsageError) as info:
            await client.run_tools(QUESTION, tools=[get_weather], max_rounds=0)
    assert str(info.value) == "max_rounds must be at least 1, not 0"


async def test_an_object_with_to_schema_and_call_is_a_tool() -> None:
    """An object with to_schema() and call(arguments) (sync or async) runs in the tool loop
    as it is: its schema is sent, its call gets the model's arguments, and its result goes
    back to the model (what `llmtap chat --tools` relies on for such objects)."""

    class Forecast:
        def to_schema(self) -> dict[str, object]:
            return {
                "type": "function",
                "function": {
                    "name": "forecast",
                    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
                },
            }

        async def call(self, arguments: dict[str, object]) -> dict[str, object]:
            return {"day": arguments["day"], "sky": "clear"}

    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("forecast", {"day": "monday"})]),
            Reply(text="Clear on Monday."),
        )
        async with make_client(server.url) as client:
            run = await client.run_tools([Message.user("Monday?")], [Forecast()])
        first, second = server.chat_requests
    assert run.text == "Clear on Monday."
    assert first.json["tools"] == [Forecast().to_schema()]
    tool_message = second.json["messages"][-1]
    assert (tool_message["role"], tool_message["content"]) == (
        "tool",
        '{"day":"monday","sky":"clear"}',
    )
