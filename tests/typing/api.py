"""The public API as a user's code uses it, type-checked by tests/test_typing.py with
``mypy --strict`` and no plugins. Never run: only checked. ``assert_type`` pins what mypy
must infer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, assert_type

from pydantic import BaseModel

from llmtap import (
    ChatResult,
    ChatStream,
    FinishEvent,
    LLMClient,
    LLMConfig,
    LLMParseError,
    LLMResponseError,
    LLMStreamInterrupted,
    LLMUsageError,
    Message,
    ReasoningDelta,
    Router,
    RouterStream,
    StreamEvent,
    SyncClient,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallFinished,
    ToolEvent,
    ToolRun,
    Usage,
    UsageEvent,
    tool,
)
from llmtap.testing import Reply, TestServer


class City(BaseModel):
    name: str
    population: int


@tool
def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


@tool(name="lookup")
async def find_user(user_id: int) -> dict[str, str]:
    """Find a user."""
    return {"name": "Ada"}


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    @tool
    def count(self, step: int) -> int:
        """Count on."""
        return self.start + step


def configs() -> None:
    config = LLMConfig(model="qwen3", max_retries=3, first_token_timeout=120)
    assert_type(config.max_retries, int)
    assert_type(config.temperature, float | None)
    LLMConfig()
    LLMConfig(endpoint="http://gpu:8000", temperature=0.7, api="ollama", total_timeout=None)
    LLMConfig.load(model="qwen3")
    stored = LLMConfig(log_db=Path("log.db"), cache=True, cache_ttl=3600.0)
    assert_type(stored.cache_path, Path | None)
    assert_type(stored.log_path, Path | None)
    LLMConfig(log_db="~/log.db", cache="~/cache.db")
    LLMConfig(cache=Path("cache.db"), cache_nondeterministic=True)


def tools() -> None:
    assert_type(get_weather("Paris"), str)
    counter = Counter(3)
    assert_type(counter.count(2), int)
    assert_type(Counter.count(counter, 2), int)
    bound: Tool[[int], int] = counter.count
    assert_type(bound.name, str)
    assert_type(find_user.to_schema(), dict[str, Any])


async def client_calls() -> None:
    async with LLMClient(LLMConfig(model="qwen3")) as client:
        messages = [Message.system("Be brief."), Message.user("Hi", images=[b"\x89PNG"])]
        result = await client.chat(messages)
        assert_type(result, ChatResult)
        assert_type(result.usage, Usage)
        assert_type(result.usage.completion_tokens, int | None)
        assert_type(result.usage.source, Literal["server", "counted"])
        assert_type(result.timings.tokens_per_second, float | None)
        assert_type(result.tool_calls, tuple[ToolCall, ...])
        assert_type(result.cached, bool)
        async with client.stream(messages) as stream:
            assert_type(stream, ChatStream)
            async for event in stream:
                assert_type(event, StreamEvent)
                if isinstance(event, TextDelta | ReasoningDelta):
                    assert_type(event.text, str)
                elif isinstance(event, ToolCallDelta):
                    assert_type(event.arguments, str)
                elif isinstance(event, UsageEvent):
                    assert_type(event.usage, Usage)
                elif isinstance(event, FinishEvent):
                    assert_type(event.finish_reason, str)
            final = await stream.result()
            assert_type(final.text, str)
        async for chunk in client.stream_chat_with_retry(messages):
            assert_type(chunk, dict[str, Any])

        def show(event: ToolEvent) -> None:
            if isinstance(event, ToolCallFinished):
                assert_type(event.output, str)

        run = await client.run_tools(messages, [get_weather, Counter(1).count], on_event=show)
        assert_type(run, ToolRun)
        city = await client.parse(messages, City)
        assert_type(city, City)
        numbers = await client.parse(messages, list[int])
        assert_type(numbers, list[int])


async def router_calls() -> None:
    async with Router(["http://gpu1:11434", "http://gpu2:11434"], model="qwen3") as router:
        async with router.stream([Message.user("Hi")]) as stream:
            assert_type(stream, RouterStream)
            async for piece in stream.text():
                assert_type(piece, str)
        assert_type(stream.endpoint, str | None)
        result = await router.chat([Message.user("Hi")])
        assert_type(result.usage.total_tokens, int | None)


def sync_calls() -> None:
    with SyncClient(model="qwen3") as client:
        assert_type(client.chat([Message.user("Hi")]).usage.source, Literal["server", "counted"])
        with client.stream([Message.user("Hi")]) as stream:
            for piece in stream.text():
                assert_type(piece, str)
        assert_type(client.parse([Message.user("A city?")], City), City)
        assert_type(client.run_tools([Message.user("Hi")], [get_weather]), ToolRun)


def errors(exc: Exception) -> None:
    if isinstance(exc, LLMStreamInterrupted):
        assert_type(exc.partial_text, str)
        assert_type(exc.chunks_received, int)
    elif isinstance(exc, LLMResponseError):
        assert_type(exc.status_code, int | None)
    elif isinstance(exc, LLMParseError):
        assert_type(exc.raw_text, str)
    elif isinstance(exc, LLMUsageError):
        assert_type(str(exc), str)


async def testing() -> None:
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="Hello", usage=(3, 1)))
        assert_type(server.url, str)


async def bulk_and_telemetry() -> None:
    import llmtap.batch
    import llmtap.otel
    import llmtap.prometheus
    from llmtap import HookRecord, RequestCancelled, RequestFinished

    def hook(record: HookRecord) -> None:
        if isinstance(record, RequestFinished):
            assert_type(record.tokens, tuple[int | None, int | None])
            assert_type(record.url, str | None)
        elif isinstance(record, RequestCancelled):
            assert_type(record.attempts, int)

    config = LLMConfig(hooks=[hook, llmtap.otel.hooks(), llmtap.prometheus.hooks()])
    async with LLMClient(config) as client:
        report = await llmtap.batch.run(client, "in.jsonl", "out.jsonl", resume=True)
        assert_type(report, llmtap.batch.BatchReport)
        assert_type(report.failed["503"], int)
        assert_type(report.requests_per_second, float)
