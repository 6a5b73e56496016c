"""The response cache (``LLMConfig(cache=...)``): a repeated deterministic call sends nothing,
identical calls at the same time send one request, only whole answers are kept, any change
to what shapes the answer misses, and streams, the tool loop, parse() and batch jobs go
through it.

Every test talks to llmtap's test server on loopback and counts the requests it received.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

import llmtap
from llmtap import (
    LLMClient,
    LLMConfig,
    LLMStreamInterrupted,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from llmtap._store.cache import cache_info, cache_key, clear_cache, deterministic
from llmtap.testing import Reply, TestServer, echo_reply, no_retry_waits
from tests.test_store_log import files_holding

QUESTION = [Message.user("What is up?")]
SECRET = "sk-cache-secret-77e1"


def _client(server: TestServer, path: Path, **overrides: Any) -> LLMClient:
    settings: dict[str, Any] = {"endpoint": server.url, "model": "m", "cache": path}
    settings.update(overrides)
    return LLMClient(LLMConfig(**settings))


@pytest.fixture
async def server() -> Any:
    async with TestServer(dialect="openai") as running:
        running.fallback = echo_reply
        yield running


@pytest.mark.parametrize("params", [{"temperature": 0}, {"seed": 7}])
async def test_a_repeated_deterministic_call_sends_nothing(
    server: TestServer, tmp_path: Path, params: dict[str, Any]
) -> None:
    """The second identical call (temperature 0, or a seed) is answered from the cache:
    the same answer, ``cached=True``, no request; streaming or not share the entry."""
    async with _client(server, tmp_path / "c.db", api_key=SECRET) as client:
        first = await client.chat(QUESTION, **params)
        again = await client.chat(QUESTION, **params)
        whole = await client.chat(QUESTION, stream=False, **params)
    assert len(server.chat_requests) == 1
    assert (first.cached, again.cached, whole.cached) == (False, True, True)
    assert again.model_copy(update={"cached": False}) == first
    assert whole.text == first.text


async def test_a_new_client_finds_the_answer_in_the_file(
    server: TestServer, tmp_path: Path
) -> None:
    """The cache outlives the client: another client on the same file gets the answer
    without a request."""
    async with _client(server, tmp_path / "c.db") as client:
        first = await client.chat(QUESTION, temperature=0)
    async with _client(server, tmp_path / "c.db") as client:
        again = await client.chat(QUESTION, temperature=0)
    assert len(server.chat_requests) == 1
    assert (again.text, again.cached) == (first.text, True)


async def test_nondeterministic_calls_are_cached_only_when_asked(
    server: TestServer, tmp_path: Path
) -> None:
    """Without temperature 0 or a seed nothing is kept, unless cache_nondeterministic."""
    async with _client(server, tmp_path / "c.db") as client:
        await client.chat(QUESTION)
        await client.chat(QUESTION, temperature=0.7)
        await client.chat(QUESTION, temperature=0.7)
    assert len(server.chat_requests) == 3
    async with _client(server, tmp_path / "d.db", cache_nondeterministic=True) as client:
        await client.chat(QUESTION, temperature=0.7)
        assert (await client.chat(QUESTION, temperature=0.7)).cached
    assert len(server.chat_requests) == 4


async def test_a_hundred_identical_calls_at_once_send_one_request(
    server: TestServer, tmp_path: Path
) -> None:
    """100 concurrent identical calls (chat and stream mixed) send one request and all get
    its answer; 99 of them say cached."""
    server.fallback = lambda request: Reply(text="shared answer", delay_between=0.01)

    async def streamed(client: LLMClient) -> llmtap.ChatResult:
        async with client.stream(QUESTION, seed=1) as stream:
            async for _event in stream:
                pass
            return await stream.result()

    async with _client(server, tmp_path / "c.db") as client:
        calls = [client.chat(QUESTION, seed=1) if n % 2 else streamed(client) for n in range(100)]
        results = await asyncio.gather(*calls)
    assert len(server.chat_requests) == 1
    assert {result.text for result in results} == {"shared answer"}
    assert sorted(result.cached for result in results) == [False] + [True] * 99


async def test_when_the_call_under_way_fails_the_others_send_their_own(
    server: TestServer, tmp_path: Path
) -> None:
    """The leading call fails (503, no retries): the ones waiting on it do not fail with it;
    one of them sends the request again and the rest share that answer."""
    server.script(Reply(status=503, delay_before_headers=0.05))
    async with _client(server, tmp_path / "c.db", max_retries=0) as client:
        outcomes = await asyncio.gather(
            *(client.chat(QUESTION, seed=1) for _ in range(10)), return_exceptions=True
        )
    failures = [o for o in outcomes if isinstance(o, Exception)]
    answers = [o for o in outcomes if isinstance(o, llmtap.ChatResult)]
    assert (len(failures), len(answers)) == (1, 9)
    assert len(server.chat_requests) == 2


async def test_an_interrupted_stream_is_never_cached(server: TestServer, tmp_path: Path) -> None:
    """A stream cut after output raises, and the next identical call goes to the server; so
    does one after a stream the caller closed early."""
    server.script(Reply(text="one two three four", reset_after=2))
    async with _client(server, tmp_path / "c.db", max_retries=0) as client:
        with no_retry_waits(), pytest.raises(LLMStreamInterrupted):
            async with client.stream(QUESTION, seed=1) as stream:
                async for _event in stream:
                    pass
        server.script(Reply(text="one two three four", delay_between=0.01))
        async with client.stream(QUESTION, seed=1) as stream:
            async for _event in stream:
                break
        result = await client.chat(QUESTION, seed=1)
        assert not result.cached
        assert (await client.chat(QUESTION, seed=1)).cached
    assert len(server.chat_requests) == 3


async def test_a_failed_call_is_not_cached(server: TestServer, tmp_path: Path) -> None:
    """An error answer is not kept: the next call asks again."""
    server.script(Reply(status=400, error_message="nope"))
    async with _client(server, tmp_path / "c.db", max_retries=0) as client:
        with pytest.raises(llmtap.LLMResponseError):
            await client.chat(QUESTION, seed=1)
        assert not (await client.chat(QUESTION, seed=1)).cached
    assert len(server.chat_requests) == 2


_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

#: Each changes one thing that shapes the answer, against ``{"seed": 1}`` and QUESTION.
CHANGES: dict[str, dict[str, Any]] = {
    "model": {"model": "other"},
    "seed": {"seed": 2},
    "temperature": {"temperature": 0},
    "max_tokens": {"max_tokens": 5},
    "stop": {"stop": ["x"]},
    "top_p": {"top_p": 0.5},
    "response_format": {"response_format": {"type": "json_object"}},
    "tools": {"tools": [_TOOL]},
    "tool_choice": {"tools": [_TOOL], "tool_choice": "auto"},
    "messages": {"messages": [Message.user("What is up!")]},
    "system": {"messages": [Message.system("s"), *QUESTION]},
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_in_anything_that_shapes_the_answer_misses(
    server: TestServer, tmp_path: Path, change: str
) -> None:
    """The same request with one parameter, the tools or the messages changed is sent."""
    async with _client(server, tmp_path / "c.db") as client:
        await client.chat(QUESTION, seed=1)
        params = {"seed": 1, **CHANGES[change]}
        messages = params.pop("messages", QUESTION)
        result = await client.chat(messages, **params)
        assert not result.cached
        assert (await client.chat(messages, **params)).cached
    assert len(server.chat_requests) == 2


async def test_another_endpoint_misses(server: TestServer, tmp_path: Path) -> None:
    """The endpoint is part of the key: the same request to another server is sent."""
    async with TestServer(dialect="openai") as other:
        other.fallback = echo_reply
        async with _client(server, tmp_path / "c.db") as client:
            await client.chat(QUESTION, seed=1)
        async with _client(other, tmp_path / "c.db") as client:
            assert not (await client.chat(QUESTION, seed=1)).cached
    assert (len(server.chat_requests), len(other.chat_requests)) == (1, 1)


def test_the_key_ignores_only_how_the_answer_travels() -> None:
    """stream and stream_options do not change the key; key order does not either; any
    other body key does."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1}
    base = cache_key("http://h/v1/chat/completions", body)
    travel = {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert cache_key("http://h/v1/chat/completions", travel) == base
    assert cache_key("http://h/v1/chat/completions", dict(reversed(body.items()))) == base
    assert cache_key("http://h/v1/chat/completions", {**body, "n": 1}) != base
    with_password = cache_key("http://u:p@h/v1/chat/completions", body)
    assert cache_key("http://u:other@h/v1/chat/completions", body) == with_password
    assert deterministic({"options": {"seed": 3}})
    assert deterministic({"temperature": 0.0})
    assert not deterministic({"temperature": 0.2})


async def test_a_hit_streams_the_answers_events(server: TestServer, tmp_path: Path) -> None:
    """stream() on a hit replays the kept answer: its text, its tool calls (decoded to the
    same arguments), usage and finish; ``result()`` is the kept answer."""
    call = ToolCall(id="c1", name="f", arguments={"x": [1, 2]})
    server.script(Reply(text="Calling.", tool_calls=[call], usage=(3, 4)))
    async with _client(server, tmp_path / "c.db") as client:
        first = await client.chat(QUESTION, seed=1, tools=[_TOOL])
        async with client.stream(QUESTION, seed=1, tools=[_TOOL]) as stream:
            events = [event async for event in stream]
            result = await stream.result()
    assert len(server.chat_requests) == 1
    assert events[0] == TextDelta("Calling.")
    assert events[1] == ToolCallDelta(0, "c1", "f", orjson.dumps({"x": [1, 2]}).decode())
    assert [event.type for event in events[2:]] == ["usage", "finish"]
    assert result == first.model_copy(update={"cached": True})


async def test_a_streamed_answer_is_kept_for_the_next_call(
    server: TestServer, tmp_path: Path
) -> None:
    """A stream read to its end is kept (without result() ever being asked for)."""
    async with _client(server, tmp_path / "c.db") as client:
        async with client.stream(QUESTION, seed=1) as stream:
            text = "".join([piece async for piece in stream.text()])
        again = await client.chat(QUESTION, seed=1)
    assert (again.text, again.cached) == (text, True)
    assert len(server.chat_requests) == 1


async def test_tool_loop_and_parse_go_through_the_cache(server: TestServer, tmp_path: Path) -> None:
    """run_tools() and parse() make their requests through the cache: run again, they send
    nothing and give the same outcome."""

    class City(BaseModel):
        name: str

    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    server.script(
        Reply(tool_calls=[ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})]),
        Reply(text="3"),
        Reply(text='{"name": "Paris"}'),
    )
    async with _client(server, tmp_path / "c.db") as client:
        run = await client.run_tools([Message.user("1+2?")], [add], temperature=0)
        city = await client.parse([Message.user("Capital?")], City, temperature=0)
        rerun = await client.run_tools([Message.user("1+2?")], [add], temperature=0)
        again = await client.parse([Message.user("Capital?")], City, temperature=0)
    assert len(server.chat_requests) == 3
    assert (rerun.result.text, again) == (run.result.text, city) == ("3", City(name="Paris"))


async def test_batch_jobs_go_through_the_cache(server: TestServer, tmp_path: Path) -> None:
    """llmtap.batch.run with a caching client: the same file run again sends nothing."""
    source = tmp_path / "in.jsonl"
    lines = [
        {
            "custom_id": f"q{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": f"q {n}"}], "seed": 1},
        }
        for n in range(20)
    ]
    source.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    async with _client(server, tmp_path / "c.db") as client:
        await llmtap.batch.run(client, source, tmp_path / "one.jsonl")
        await llmtap.batch.run(client, source, tmp_path / "two.jsonl")
    assert len(server.chat_requests) == 20
    one, two = ((tmp_path / name).read_bytes().splitlines() for name in ("one.jsonl", "two.jsonl"))
    texts = [
        sorted(orjson.loads(line)["response"]["body"]["choices"][0]["message"]["content"]
               for line in out)
        for out in (one, two)
    ]  # fmt: skip
    assert texts[0] == texts[1]


async def test_an_answer_past_its_ttl_is_asked_for_again(
    server: TestServer, tmp_path: Path
) -> None:
    """With ``cache_ttl``, a kept answer older than it is not used (in memory or from the
    file)."""
    async with _client(server, tmp_path / "c.db", cache_ttl=0.2) as client:
        await client.chat(QUESTION, seed=1)
        assert (await client.chat(QUESTION, seed=1)).cached
        await asyncio.sleep(0.3)
        assert not (await client.chat(QUESTION, seed=1)).cached
    async with _client(server, tmp_path / "c.db", cache_ttl=0.2) as client:
        await asyncio.sleep(0.3)
        assert not (await client.chat(QUESTION, seed=1)).cached
    assert len(server.chat_requests) == 3


async def test_info_and_clear(server: TestServer, tmp_path: Path) -> None:
    """cache_info counts the answers kept; clear_cache deletes them (or only the old ones)."""
    path = tmp_path / "c.db"
    async with _client(server, path) as client:
        for seed in range(3):
            await client.chat(QUESTION, seed=seed)
    info = cache_info(path)
    assert (info.answers, info.bytes > 0) == (3, True)
    assert clear_cache(path, older_than=3600) == 0
    assert clear_cache(path) == 3
    assert cache_info(path).answers == 0


async def test_no_api_key_in_the_cache_file(server: TestServer, tmp_path: Path) -> None:
    """The API key is in no byte of the cache's files (WAL included)."""
    url = server.url.replace("http://", "http://bob:pw-cache-3e@")
    async with _client(server, tmp_path / "c.db", api_key=SECRET) as client:
        await client.chat(QUESTION, seed=1)
    async with _client(server, tmp_path / "c.db", endpoint=url) as client:
        await client.chat(QUESTION, seed=1)
    assert files_holding(tmp_path, SECRET, "pw-cache-3e") == []
