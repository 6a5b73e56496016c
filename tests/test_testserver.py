"""The loopback test server, checked from the client side with plain aiohttp requests.

Each test pins down one behaviour of `llmtap.testing.TestServer`: the wire shapes of a
dialect, a fault as a client observes it, or the server's own life cycle.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from llmtap.testing import Dialect, RecordedRequest, Reply, TestServer, ToolCallSpec

SSE_DIALECTS: list[Dialect] = ["openai", "ollama", "llamacpp", "vllm"]
REASONING_KEY: dict[Dialect, str] = {
    "ollama": "reasoning",
    "llamacpp": "reasoning_content",
    "vllm": "reasoning",
}
FIRST_DELTA: dict[Dialect, dict[str, Any]] = {
    "openai": {"role": "assistant", "content": "", "refusal": None},
    "ollama": {"role": "assistant", "content": ""},
    "llamacpp": {"role": "assistant", "content": None},
    "vllm": {"role": "assistant", "content": ""},
}
TOOL_CALL_ID: dict[Dialect, str] = {
    "openai": r"call_[A-Za-z0-9]{24}",
    "ollama": r"call_[a-z0-9]{8}",
    "llamacpp": r"[A-Za-z0-9]{32}",
    "vllm": r"chatcmpl-tool-[0-9a-f]{32}",
}
DONE = "[DONE]"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def chat_body(server: TestServer, *, stream: bool = True, usage: bool = False, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "model": server.models[0],
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body | extra


def sse_data(raw: bytes) -> list[Any]:
    """The data payloads of an SSE body: parsed JSON, or the string ``"[DONE]"``."""
    events: list[Any] = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                payload = line[len(b"data: ") :]
                events.append(DONE if payload == b"[DONE]" else orjson.loads(payload))
    return events


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]


def joined(events: list[Any], key: str) -> str:
    return "".join(d[key] for d in deltas(events) if isinstance(d.get(key), str))


def accumulate_tool_calls(events: list[Any]) -> dict[int, dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas(events):
        for fragment in delta.get("tool_calls", []):
            call = calls.setdefault(fragment["index"], {"id": None, "name": "", "arguments": ""})
            call["id"] = fragment.get("id", call["id"])
            function = fragment.get("function", {})
            call["name"] += function.get("name", "")
            call["arguments"] += function.get("arguments", "")
    return calls


async def post_raw(
    session: aiohttp.ClientSession, server: TestServer, path: str, body: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.post(server.url + path, json=body) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


async def read_until_error(response: aiohttp.ClientResponse) -> tuple[bytes, Exception | None]:
    """Read the body until it ends; return what arrived and the error that ended it, if any."""
    data = bytearray()
    try:
        async for piece in response.content.iter_any():
            data += piece
    except aiohttp.ClientPayloadError as exc:
        return bytes(data), exc
    return bytes(data), None


# -- stream shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_stream_carries_role_text_tool_calls_finish_usage_and_done(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """A full streamed reply parses into the dialect's chunk sequence, in order."""
    calls = [
        ToolCallSpec("get_weather", {"city": "Paris", "unit": "celsius"}),
        ToolCallSpec("get_time", {"zone": "Europe/Paris"}),
    ]
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there, friend", reasoning="Let me think", tool_calls=calls))
        status, headers, raw = await post_raw(
            session, server, "/v1/chat/completions", chat_body(server, usage=True)
        )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = sse_data(raw)
    assert events[-1] == DONE
    chunks = events[:-1]
    assert deltas(chunks)[0] == FIRST_DELTA[dialect]
    assert joined(chunks, "content") == "Hello there, friend"
    key = REASONING_KEY.get(dialect)
    if key is None:
        assert all(set(d) <= {"role", "content", "refusal", "tool_calls"} for d in deltas(chunks))
    else:
        assert joined(chunks, key) == "Let me think"
    accumulated = accumulate_tool_calls(chunks)
    assert sorted(accumulated) == [0, 1]
    assert accumulated[0]["name"] == "get_weather"
    assert orjson.loads(accumulated[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert accumulated[1]["name"] == "get_time"
    assert orjson.loads(accumulated[1]["arguments"]) == {"zone": "Europe/Paris"}
    assert all(re.fullmatch(TOOL_CALL_ID[dialect], c["id"]) for c in accumulated.values())
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == "tool_calls"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    text_and_reasoning = 3 + (0 if key is None else 3)
    assert usage_chunk["usage"]["prompt_tokens"] == 10
    assert usage_chunk["usage"]["completion_tokens"] == text_and_reasoning
    assert usage_chunk["usage"]["total_tokens"] == 10 + text_and_reasoning
    assert {c["model"] for c in chunks} == {server.models[0]}


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_usage_chunk_only_when_asked(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """Without stream_options.include_usage no chunk carries usage."""
    async with TestServer(dialect) as server:
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    events = sse_data(raw)
    assert events[-1] == DONE
    assert all("usage" not in e for e in events[:-1])
    assert all(e["choices"] for e in events[:-1])


@pytest.mark.parametrize("dialect", ["openai", "vllm"])
async def test_tool_call_fragments_carry_id_and_name_only_first(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """OpenAI and vLLM send index/id/type/name first (with empty arguments), then only index
    and arguments."""
    async with TestServer(dialect) as server:
        server.script(Reply(tool_calls=[ToolCallSpec("f", {"a": 1, "b": "two"}, id="my-id")]))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    fragments = [f for d in deltas(sse_data(raw)[:-1]) for f in d.get("tool_calls", [])]
    assert fragments[0] == {
        "index": 0,
        "id": "my-id",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    rest = fragments[1:]
    assert len(rest) == 3
    assert all(
        set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in rest
    )
    assert orjson.loads("".join(f["function"]["arguments"] for f in rest)) == {"a": 1, "b": "two"}


async def test_llamacpp_tool_call_starts_with_the_first_argument_piece(
    session: aiohttp.ClientSession,
) -> None:
    """llama-server sends index/id/type/name with the first piece of the arguments (never an
    empty "arguments"), then index and one piece each, as scripted in ToolCallSpec.chunks."""
    pieces = ['{"a', '":', " 1}"]
    async with TestServer("llamacpp") as server:
        server.script(Reply(tool_calls=[ToolCallSpec("f", chunks=pieces, id="my-id")]))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        server.script(Reply(tool_calls=[ToolCallSpec("f", chunks=pieces, id="my-id")]))
        body = chat_body(server, stream=False)
        _, _, whole = await post_raw(session, server, "/v1/chat/completions", body)
    fragments = [f for d in deltas(sse_data(raw)[:-1]) for f in d.get("tool_calls", [])]
    assert fragments == [
        {
            "index": 0,
            "id": "my-id",
            "type": "function",
            "function": {"name": "f", "arguments": '{"a'},
        },
        {"index": 0, "function": {"arguments": '":'}},
        {"index": 0, "function": {"arguments": " 1}"}},
    ]
    assert orjson.loads(whole)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}, "id": "my-id"}
        ],
    }


async def test_ollama_v1_sends_each_tool_call_whole(session: aiohttp.ClientSession) -> None:
    """Ollama's /v1 layer sends one complete call per chunk, arguments as a JSON string."""
    async with TestServer("ollama") as server:
        server.script(Reply(tool_calls=[ToolCallSpec("f", {"a": 1}), ToolCallSpec("g", "{}")]))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    chunks = sse_data(raw)[:-1]
    tool_deltas = [d for d in deltas(chunks) if "tool_calls" in d]
    assert len(tool_deltas) == 2
    first = tool_deltas[0]["tool_calls"][0]
    assert first["index"] == 0
    assert first["type"] == "function"
    assert first["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert tool_deltas[1]["tool_calls"][0]["index"] == 1
    assert tool_deltas[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert {c["system_fingerprint"] for c in chunks} == {"fp_ollama"}
    assert len({c["created"] for c in chunks}) == 1


async def test_invalid_argument_string_is_sent_verbatim(session: aiohttp.ClientSession) -> None:
    """A string argument reaches the client unchanged, even when it is not valid JSON."""
    async with TestServer("vllm") as server:
        server.script(Reply(tool_calls=[ToolCallSpec("f", '{"city": "Par')]))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert accumulate_tool_calls(sse_data(raw))[0]["arguments"] == '{"city": "Par'


async def test_dialect_extras_llamacpp_timings_and_vllm_stop_reason(
    session: aiohttp.ClientSession,
) -> None:
    """llama.cpp puts timings on the finish chunk; vLLM puts stop_reason on it."""
    async with TestServer("llamacpp") as server:
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    llama = sse_data(raw)[:-1]
    assert "timings" in llama[-1]
    assert all("timings" not in c for c in llama[:-1])
    assert llama[-1]["system_fingerprint"].startswith("b")
    async with TestServer("vllm") as server:
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    vllm = sse_data(raw)[:-1]
    assert vllm[-1]["choices"][0]["stop_reason"] is None
    assert vllm[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_chunks_share_id_and_created(session: aiohttp.ClientSession) -> None:
    """OpenAI chunks share one id and created value; usage is null until the usage chunk."""
    async with TestServer("openai") as server:
        _, headers, raw = await post_raw(
            session, server, "/v1/chat/completions", chat_body(server, usage=True)
        )
    chunks = sse_data(raw)[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    assert [c["usage"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]
    assert headers["x-request-id"].startswith("req_")


async def test_explicit_chunks_finish_reason_and_model(session: aiohttp.ClientSession) -> None:
    """Explicit pieces are sent one per chunk; finish_reason and model are sent as scripted."""
    async with TestServer("vllm") as server:
        server.script(Reply(chunks=["Hel", "lo", ""], finish_reason="length", model="other"))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    chunks = sse_data(raw)[:-1]
    assert [d.get("content") for d in deltas(chunks)[1:4]] == ["Hel", "lo", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert {c["model"] for c in chunks} == {"other"}


async def test_finish_reason_none_sends_no_finish_chunk(session: aiohttp.ClientSession) -> None:
    """finish_reason=None leaves out the finish chunk but still ends with [DONE]."""
    async with TestServer("openai") as server:
        server.script(Reply(text="a b", finish_reason=None))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    events = sse_data(raw)
    assert events[-1] == DONE
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, None, None]


async def test_llamacpp_reports_its_own_model(session: aiohttp.ClientSession) -> None:
    """Single-model llama-server answers any model name and reports its alias."""
    async with TestServer("llamacpp") as server:
        body = chat_body(server, stream=False, model="whatever")
        status, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
    assert status == 200
    assert orjson.loads(raw)["model"] == "tiny"


# -- Ollama native ------------------------------------------------------------------------------


async def test_ollama_native_streams_ndjson_by_default(session: aiohttp.ClientSession) -> None:
    """/api/chat streams NDJSON when stream is absent, with thinking, whole calls, metrics."""
    async with TestServer("ollama") as server:
        server.script(
            Reply(
                text="Sunny <today>",
                reasoning="Checking",
                tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"})],
            )
        )
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        status, headers, raw = await post_raw(session, server, "/api/chat", body)
    assert status == 200
    assert headers["Content-Type"] == "application/x-ndjson"
    assert b"\\u003ctoday\\u003e" in raw  # Go escapes < and >
    lines = [orjson.loads(line) for line in raw.splitlines()]
    assert all(line["model"] == "llama3.2" for line in lines)
    assert all(line["message"]["role"] == "assistant" for line in lines)
    assert "".join(line["message"].get("thinking", "") for line in lines) == "Checking"
    assert "".join(line["message"]["content"] for line in lines) == "Sunny <today>"
    calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert len(calls) == 1
    assert re.fullmatch(r"call_[a-z0-9]{8}", calls[0]["id"])
    assert calls[0]["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    final = lines[-1]
    assert final["done_reason"] == "stop"  # native Ollama says stop even after tool calls
    assert final["prompt_eval_count"] == 10
    assert final["eval_count"] == 3
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[name], int)
        assert final[name] > 0


async def test_ollama_native_stream_false_is_one_object(session: aiohttp.ClientSession) -> None:
    """/api/chat with stream false answers one JSON object with done true."""
    async with TestServer("ollama") as server:
        server.script(Reply(text="Hi there", reasoning="hm", finish_reason="length"))
        body = {"model": "llama3.2:latest", "stream": False, "messages": []}
        status, _, raw = await post_raw(session, server, "/api/chat", body)
    assert status == 200
    answer = orjson.loads(raw)
    assert answer["message"] == {"role": "assistant", "content": "Hi there", "thinking": "hm"}
    assert answer["done"] is True
    assert answer["done_reason"] == "length"


async def test_ollama_native_error_after_is_an_error_line(session: aiohttp.ClientSession) -> None:
    """A native mid-stream error is one more NDJSON line {"error": ...}, then the end."""
    async with TestServer("ollama") as server:
        server.script(Reply(text="a b c", error_after=1, stream_error_message="boom"))
        _, _, raw = await post_raw(session, server, "/api/chat", {"model": "llama3.2"})
    lines = [orjson.loads(line) for line in raw.splitlines()]
    assert len(lines) == 2
    assert lines[0]["message"]["content"] == "a"
    assert lines[1] == {"error": "boom"}


# -- whole JSON answers -------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_non_streaming_answer(session: aiohttp.ClientSession, dialect: Dialect) -> None:
    """stream false answers a chat.completion with the message, finish reason and usage."""
    async with TestServer(dialect) as server:
        server.script(
            Reply(text="Hello there", reasoning="hm", tool_calls=[ToolCallSpec("f", {"x": 1})])
        )
        body = chat_body(server, stream=False)
        status, headers, raw = await post_raw(session, server, "/v1/chat/completions", body)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    answer = orjson.loads(raw)
    assert answer["object"] == "chat.completion"
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == "Hello there"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x":1}'}
    key = REASONING_KEY.get(dialect)
    if key is not None:
        assert message[key] == "hm"
    completion = 2 if key is None else 3
    assert answer["usage"]["prompt_tokens"] == 10
    assert answer["usage"]["completion_tokens"] == completion
    assert answer["usage"]["total_tokens"] == 10 + completion


async def test_json_instead_of_stream(session: aiohttp.ClientSession) -> None:
    """json_instead_of_stream answers a stream request with a whole JSON completion."""
    async with TestServer("openai") as server:
        server.script(Reply(text="whole", json_instead_of_stream=True))
        _, headers, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert headers["Content-Type"] == "application/json"
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "whole"


async def test_raw_body_is_sent_as_is(session: aiohttp.ClientSession) -> None:
    """raw_body goes out byte for byte with the scripted status and content type."""
    html = b"<html><body>Gateway says hi</body></html>"
    async with TestServer("openai") as server:
        server.script(Reply(raw_body=html, content_type="text/html"))
        status, headers, raw = await post_raw(
            session, server, "/v1/chat/completions", chat_body(server)
        )
    assert (status, headers["Content-Type"], raw) == (200, "text/html", html)


# -- replies, echo, records ---------------------------------------------------------------------


async def test_replies_are_used_in_order_then_echo(session: aiohttp.ClientSession) -> None:
    """Scripted replies answer chat requests in order; then the server echoes the user."""
    async with TestServer("openai") as server:
        server.script(Reply(text="one"), Reply(text="two"))
        contents = []
        for text in ("a", "b", "c"):
            body = chat_body(server, stream=False)
            body["messages"] = [
                {"role": "user", "content": "older"},
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": [{"type": "text", "text": text}]},
            ]
            _, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
            contents.append(orjson.loads(raw)["choices"][0]["message"]["content"])
        assert server.pending_replies == 0
    assert contents == ["one", "two", "echo: c"]


async def test_every_request_is_recorded(session: aiohttp.ClientSession) -> None:
    """requests records every request in order; chat_requests only the chat ones."""
    async with TestServer("ollama") as server:
        async with session.get(server.url + "/api/tags?verbose=1", headers={"X-Test": "1"}) as r:
            await r.read()
        await post_raw(session, server, "/api/chat", {"model": "llama3.2", "stream": False})
        await post_raw(session, server, "/v1/chat/completions", chat_body(server, stream=False))
        async with session.get(server.url + "/nope") as r:
            await r.read()
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/api/tags"),
        ("POST", "/api/chat"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/nope"),
    ]
    first = server.requests[0]
    assert first.query == {"verbose": "1"}
    assert first.headers["x-test"] == "1"
    assert first.body == b""
    assert first.json is None
    assert [r.path for r in server.chat_requests] == ["/api/chat", "/v1/chat/completions"]
    assert server.chat_requests[0].json == {"model": "llama3.2", "stream": False}


def test_recorded_request_json_of_invalid_body_is_none() -> None:
    """RecordedRequest.json is None for a body that is not JSON."""
    record = RecordedRequest(method="POST", path="/", query={}, headers={}, body=b"{nope")
    assert record.json is None


def test_reply_rejects_nonsense() -> None:
    """Reply validates its numbers and the error style."""
    with pytest.raises(ValueError, match="tool_fragments"):
        Reply(tool_fragments=0)
    with pytest.raises(ValueError, match="split_writes"):
        Reply(split_writes=0)
    with pytest.raises(ValueError, match="stream_error_style"):
        Reply(stream_error_style="smoke")  # type: ignore[arg-type]


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_reset_after_breaks_the_body(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """reset_after delivers N chunks, then the connection drops without a chunked end."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there friend", reset_after=2))
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=chat_body(server)) as response:
            assert response.status == 200
            data, error = await read_until_error(response)
    assert isinstance(error, aiohttp.ClientPayloadError)
    events = sse_data(data)
    assert len(events) == 2
    assert joined(events, "content") == "Hello"


async def test_reset_after_on_native_ollama(session: aiohttp.ClientSession) -> None:
    """Resets work on NDJSON streams too."""
    async with TestServer("ollama") as server:
        server.script(Reply(text="a b c", reset_after=1))
        async with session.post(server.url + "/api/chat", json={"model": "llama3.2"}) as response:
            data, error = await read_until_error(response)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert [orjson.loads(line)["message"]["content"] for line in data.splitlines()] == ["a"]


async def test_reset_before_headers(session: aiohttp.ClientSession) -> None:
    """reset_before_headers closes the connection with no response at all."""
    async with TestServer("vllm") as server:
        server.script(Reply(reset_before_headers=True))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        # the next request gets the default answer on a new connection
        status, _, _ = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        assert status == 200


async def test_cut_mid_chunk(session: aiohttp.ClientSession) -> None:
    """cut_mid_chunk_after sends half an event inside an HTTP chunk, then drops."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hello there friend", cut_mid_chunk_after=2))
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=chat_body(server)) as response:
            data, error = await read_until_error(response)
    assert isinstance(error, aiohttp.ClientPayloadError)
    complete, _, partial = data.rpartition(b"\n\n")
    assert len(sse_data(complete + b"\n\n")) == 2
    assert partial.startswith(
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" the'
    )
    assert not partial.endswith(b"\n")


async def test_reset_of_a_whole_json_body(session: aiohttp.ClientSession) -> None:
    """A non-streamed body cut in half fails the read as well (Content-Length not met)."""
    async with TestServer("openai") as server:
        server.script(Reply(text="Hello there", cut_mid_chunk_after=0))
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=chat_body(server, stream=False)) as response:
            assert response.content_length is not None
            data, error = await read_until_error(response)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert 0 < len(data) < response.content_length


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_truncate_after_ends_cleanly_without_done(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """truncate_after ends the body properly, with no finish chunk and no [DONE]."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="a b c d", truncate_after=3))
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=chat_body(server)) as response:
            data, error = await read_until_error(response)
    assert error is None
    events = sse_data(data)
    assert len(events) == 3
    assert DONE not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


async def test_omit_done_keeps_the_finish_chunk(session: aiohttp.ClientSession) -> None:
    """omit_done sends everything but [DONE]."""
    async with TestServer("vllm") as server:
        server.script(Reply(text="a b", omit_done=True))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    events = sse_data(raw)
    assert DONE not in events
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_delay_before_headers(session: aiohttp.ClientSession) -> None:
    """delay_before_headers holds back the status line."""
    loop = asyncio.get_running_loop()
    async with TestServer("openai") as server:
        server.script(Reply(text="hi", delay_before_headers=0.2))
        started = loop.time()
        async with session.post(server.url + "/v1/chat/completions", json=chat_body(server)) as r:
            headers_after = loop.time() - started
            await r.read()
    assert headers_after >= 0.19


async def test_delay_between_and_stall(session: aiohttp.ClientSession) -> None:
    """delay_between paces every chunk; stall_after pauses once after N chunks."""
    loop = asyncio.get_running_loop()
    async with TestServer("vllm") as server:
        server.script(Reply(text="a b", delay_between=0.03, stall_after=(1, 0.15)))
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=chat_body(server)) as response:
            started = loop.time()
            first = await response.content.readuntil(b"\n\n")
            first_at = loop.time() - started
            rest = await response.read()
            total = loop.time() - started
    assert first_at < 0.1
    # role, a, b, finish, [DONE]: 4 gaps of 0.03 plus one stall of 0.15
    assert total >= 0.26
    assert sse_data(first + rest)[-1] == DONE


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_status_and_headers_in_the_dialect_envelope(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """A scripted error status comes with the dialect's error body and the extra headers."""
    expected = {
        "openai": {
            "error": {"message": "busy", "type": "server_error", "param": None, "code": None}
        },
        "ollama": {"error": {"message": "busy", "type": "api_error", "param": None, "code": None}},
        "llamacpp": {"error": {"code": 503, "message": "busy", "type": "unavailable_error"}},
        "vllm": {
            "error": {
                "message": "busy",
                "type": "ServiceUnavailableError",
                "param": None,
                "code": 503,
            }
        },
    }
    async with TestServer(dialect) as server:
        server.script(Reply(status=503, headers={"Retry-After": "1"}, error_message="busy"))
        status, headers, raw = await post_raw(
            session, server, "/v1/chat/completions", chat_body(server)
        )
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert orjson.loads(raw) == expected[dialect]


async def test_openai_error_code_and_ollama_native_envelope(
    session: aiohttp.ClientSession,
) -> None:
    """OpenAI carries the string error code; native Ollama's envelope is a bare string."""
    async with TestServer("openai") as server:
        server.script(Reply(status=429, error_message="quota", error_code="insufficient_quota"))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert orjson.loads(raw)["error"] == {
        "message": "quota",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    async with TestServer("ollama") as server:
        server.script(Reply(status=500, error_message="oops"))
        status, _, raw = await post_raw(session, server, "/api/chat", {"model": "llama3.2"})
    assert (status, orjson.loads(raw)) == (500, {"error": "oops"})


@pytest.mark.parametrize(
    ("dialect", "tail"),
    [
        (
            "openai",
            [{"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}],
        ),
        (
            "vllm",
            [
                {
                    "error": {
                        "message": "boom",
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                },
                DONE,
            ],
        ),
        ("llamacpp", [{"error": {"code": 500, "message": "boom", "type": "server_error"}}]),
    ],
)
async def test_error_after_in_the_dialect_style(
    session: aiohttp.ClientSession, dialect: Dialect, tail: list[Any]
) -> None:
    """error_after sends the dialect's in-stream error and ends as that server does."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="a b c", error_after=2, stream_error_message="boom"))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    events = sse_data(raw)
    assert len(events) == 2 + len(tail)
    assert events[2:] == tail


async def test_error_after_on_ollama_v1_loses_the_message(session: aiohttp.ClientSession) -> None:
    """Ollama /v1 turns a mid-stream error into an empty chunk with no model, then ends."""
    async with TestServer("ollama") as server:
        server.script(Reply(text="a b c", error_after=2, stream_error_message="boom"))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert b"boom" not in raw
    events = sse_data(raw)
    assert len(events) == 3
    last = events[-1]
    assert last["model"] == ""
    assert last["choices"][0]["delta"] == {"content": ""}
    assert last["choices"][0]["finish_reason"] is None


async def test_error_styles_legacy_line_and_event(session: aiohttp.ClientSession) -> None:
    """legacy_line writes old llama.cpp's error: line then [DONE]; event writes event: error."""
    async with TestServer("llamacpp") as server:
        server.script(
            Reply(text="a b", error_after=1, stream_error_style="legacy_line"),
            Reply(text="a b", error_after=1, stream_error_style="event", stream_error_message="x"),
        )
        _, _, legacy = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        _, _, event = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert legacy.endswith(
        b'\n\nerror: {"code":500,"message":"internal error","type":"server_error"}\n\n'
        b"data: [DONE]\n\n"
    )
    assert sse_data(legacy)[-1] == DONE
    assert event.endswith(b'\n\nevent: error\ndata: {"message":"x"}\n\n')


async def test_malformed_and_invalid_utf8(session: aiohttp.ClientSession) -> None:
    """malformed_after sends broken JSON; invalid_utf8_after sends bytes ff fe in a string."""
    async with TestServer("openai") as server:
        server.script(Reply(text="a b", malformed_after=1), Reply(text="a b", invalid_utf8_after=2))
        _, _, malformed = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        _, _, invalid = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert malformed.endswith(b'\n\ndata: {"choices": [{"delta": {"content": "oops"\n\n')
    assert malformed.count(b"data: ") == 2
    last_event = invalid.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert b'"content":"\xff\xfe"' in last_event
    assert invalid.count(b"data: ") == 3
    with pytest.raises(UnicodeDecodeError):
        last_event.decode()


async def test_oversized_line(session: aiohttp.ClientSession) -> None:
    """oversized_line sends one absurdly long data line, then ends."""
    async with TestServer("vllm") as server:
        server.script(Reply(text="hi", oversized_line=200_000))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert raw == b"data: " + b"x" * 200_000 + b"\n\n"


async def test_pings_are_comments_before_each_event(session: aiohttp.ClientSession) -> None:
    """pings writes SSE comment lines before every event, in llama.cpp's ':' form."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="a b", pings=2))
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    events = sse_data(raw)
    assert raw.startswith(b":\n\n:\n\ndata: ")
    assert raw.count(b":\n\n:\n\ndata: ") == len(events)


async def test_split_writes_delivers_the_same_bytes(session: aiohttp.ClientSession) -> None:
    """split_writes slices the body across network reads without changing a byte."""
    body = "héllo wörld – ✓ 😀\n".encode() * 3
    async with TestServer("openai") as server:
        server.script(
            Reply(raw_body=body, content_type="text/plain; charset=utf-8", split_writes=1),
            Reply(chunks=["😀", " ✓"], split_writes=3),
        )
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=chat_body(server)) as response:
            reads = [piece async for piece in response.content.iter_any()]
        _, _, stream = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
    assert b"".join(reads) == body
    assert len(reads) > 1
    assert joined(sse_data(stream), "content") == "😀 ✓"


# -- life cycle ---------------------------------------------------------------------------------


async def test_stop_then_start_on_the_same_port(session: aiohttp.ClientSession) -> None:
    """After stop() connections are refused; start() listens on the same port again."""
    server = TestServer("vllm")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    await server.start()
    try:
        port = server.port
        async with session.get(server.url + "/health") as response:
            assert response.status == 200
        await server.stop()
        with pytest.raises(aiohttp.ClientConnectorError):
            async with session.get(server.url + "/health"):
                pass
        await server.start()
        assert server.port == port
        async with session.get(server.url + "/health") as response:
            assert response.status == 200
        assert [r.path for r in server.requests] == ["/health", "/health"]
    finally:
        await server.stop()


async def _get_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send ``GET /health`` on a raw kept-alive connection; the response's status line."""
    writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    assert length is not None
    await reader.readexactly(int(length.group(1)))
    return head.split(b"\r\n", 1)[0]


async def test_keep_alive_closes_a_connection_idle_that_long_after_its_answer() -> None:
    """keep_alive=0.1: the server closes a kept-alive connection 0.1 s after its answer,
    without a ``Connection: close`` first."""
    loop = asyncio.get_running_loop()
    async with TestServer("llamacpp", keep_alive=0.1) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            assert await _get_health(reader, writer) == b"HTTP/1.1 200 OK"
            answered = loop.time()
            assert await asyncio.wait_for(reader.read(), 5.0) == b""  # the server's close
            idle = loop.time() - answered
        finally:
            writer.close()
        assert server.idle_closes == 1
    assert 0.1 <= idle < 1.0


async def test_keep_alive_answers_requests_sooner_than_that_on_the_same_connection() -> None:
    """A request that comes within keep_alive of the last answer is answered on the same
    connection, and starts the idle time over."""
    async with TestServer("llamacpp", keep_alive=0.25) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            lines = [await _get_health(reader, writer)]
            for _ in range(2):
                await asyncio.sleep(0.15)  # each gap is shorter than 0.25 s, the two longer
                lines.append(await _get_health(reader, writer))
        finally:
            writer.close()
        assert (lines, server.connections, server.idle_closes) == ([b"HTTP/1.1 200 OK"] * 3, 1, 0)


def test_keep_alive_must_not_be_negative() -> None:
    """A negative keep_alive is refused, naming the argument."""
    with pytest.raises(ValueError, match="keep_alive must be >= 0"):
        TestServer("llamacpp", keep_alive=-1.0)


async def test_keep_alive_never_closes_a_new_connection_before_its_first_request() -> None:
    """The idle time starts after an answer: a connection whose first request comes later
    than keep_alive is answered."""
    async with TestServer("llamacpp", keep_alive=0.05) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            await asyncio.sleep(0.2)
            line = await _get_health(reader, writer)
        finally:
            writer.close()
    assert line == b"HTTP/1.1 200 OK"


async def test_stop_cancels_a_stalled_answer(session: aiohttp.ClientSession) -> None:
    """stop() ends an answer that sleeps in a stall at once; the client sees a broken body."""
    loop = asyncio.get_running_loop()
    server = TestServer("openai")
    await server.start()
    server.script(Reply(text="a b c", stall_after=(2, 30.0)))
    url = server.url + "/v1/chat/completions"
    async with session.post(url, json=chat_body(server)) as response:
        first = await response.content.readuntil(b"\n\n")
        second = await response.content.readuntil(b"\n\n")
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 1.0
        rest, error = await asyncio.wait_for(read_until_error(response), 1.0)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(sse_data(first + second + rest)) == 2


# -- auth, loading, model checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        ("vllm", {"error": "Unauthorized"}),
        (
            "llamacpp",
            {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}},
        ),
        ("openai", None),
    ],
)
async def test_api_key_is_required(
    session: aiohttp.ClientSession, dialect: Dialect, body: Any
) -> None:
    """With api_key set, a request without the right Bearer token gets the dialect's 401."""
    async with TestServer(dialect, api_key="sk-secret") as server:
        status, _, raw = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        assert status == 401
        answer = orjson.loads(raw)
        if body is not None:
            assert answer == body
        else:
            assert answer["error"]["code"] == "invalid_api_key"
            assert b"sk-secret" not in raw
        url = server.url + "/v1/chat/completions"
        headers = {"Authorization": "Bearer sk-secret"}
        async with session.post(url, json=chat_body(server), headers=headers) as response:
            assert response.status == 200
            await response.read()


async def test_api_key_leaves_health_routes_open(session: aiohttp.ClientSession) -> None:
    """llama.cpp leaves /health and the model list open; vLLM everything outside /v1."""
    async with TestServer("llamacpp", api_key="k") as server:
        for path in ("/health", "/v1/models"):
            async with session.get(server.url + path) as response:
                assert response.status == 200
        async with session.get(server.url + "/props") as response:
            assert response.status == 401
    async with TestServer("vllm", api_key="k") as server:
        async with session.get(server.url + "/health") as response:
            assert response.status == 200
        async with session.get(server.url + "/v1/models") as response:
            assert response.status == 401


async def test_llamacpp_loading_answers_503_everywhere(session: aiohttp.ClientSession) -> None:
    """While loading, llama-server answers every route with 503 Loading model."""
    loading = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
    async with TestServer("llamacpp", loading=True) as server:
        server.script(Reply(text="kept"))
        for path in ("/health", "/v1/models"):
            async with session.get(server.url + path) as response:
                assert (response.status, await response.json()) == (503, loading)
        status, _, _ = await post_raw(session, server, "/v1/chat/completions", chat_body(server))
        assert status == 503
        server.loading = False
        async with session.get(server.url + "/health") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
        body = chat_body(server, stream=False)
        _, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "kept"


@pytest.mark.parametrize(
    ("dialect", "path", "expected"),
    [
        ("ollama", "/api/chat", {"error": 'model "nope" not found, try pulling it first'}),
        (
            "ollama",
            "/v1/chat/completions",
            {
                "error": {
                    "message": 'model "nope" not found, try pulling it first',
                    "type": "not_found_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            "vllm",
            "/v1/chat/completions",
            {
                "error": {
                    "message": "The model `nope` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
            },
        ),
    ],
)
async def test_unknown_model_is_404(
    session: aiohttp.ClientSession, dialect: Dialect, path: str, expected: Any
) -> None:
    """With models given, an unknown model gets the server's 404; the reply stays queued."""
    models = {"ollama": ["llama3.2:latest"], "vllm": ["facebook/opt-125m"]}[dialect]
    async with TestServer(dialect, models=models) as server:
        server.script(Reply(text="unused"))
        status, _, raw = await post_raw(session, server, path, {"model": "nope", "messages": []})
        assert server.pending_replies == 1
    assert (status, orjson.loads(raw)) == (404, expected)


async def test_openai_unknown_model_code(session: aiohttp.ClientSession) -> None:
    """OpenAI's unknown-model 404 carries code model_not_found."""
    async with TestServer("openai", models=["gpt-4o-mini"]) as server:
        body = chat_body(server, model="gpt-9")
        status, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
    assert status == 404
    assert orjson.loads(raw)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_default_models_accept_any_name(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """Without models given, any model name is answered, and reported back as asked."""
    async with TestServer(dialect) as server:
        body = chat_body(server, stream=False, model="llama3.2")
        status, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
        server.accept_any_model = False
        strict_status, _, _ = await post_raw(session, server, "/v1/chat/completions", body)
    assert status == 200
    expected_model = "tiny" if dialect == "llamacpp" else "llama3.2"
    assert orjson.loads(raw)["model"] == expected_model
    assert strict_status == (200 if dialect in ("llamacpp", "ollama") else 404)


async def test_reject_stream_options(session: aiohttp.ClientSession) -> None:
    """reject_stream_options answers 400 naming stream_options, in OpenAI's shape."""
    async with TestServer("llamacpp", reject_stream_options=True) as server:
        body = chat_body(server, usage=True)
        status, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
        plain_status, _, _ = await post_raw(
            session, server, "/v1/chat/completions", chat_body(server)
        )
    assert status == 400
    error = orjson.loads(raw)["error"]
    assert "stream_options" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert plain_status == 200


async def test_vllm_rejects_stream_options_without_stream(session: aiohttp.ClientSession) -> None:
    """vLLM answers 400 to stream_options when stream is not true."""
    async with TestServer("vllm") as server:
        body = chat_body(server, stream=False, stream_options={"include_usage": True})
        status, _, raw = await post_raw(session, server, "/v1/chat/completions", body)
    assert status == 400
    assert orjson.loads(raw)["error"]["type"] == "BadRequestError"


# -- listings and health ------------------------------------------------------------------------


async def test_ollama_listings(session: aiohttp.ClientSession) -> None:
    """Ollama's root, version, tags, ps, show and /v1/models answer in Ollama's shapes."""
    async with TestServer(
        "ollama", models=["llama3.2:latest", "qwen3:8b"], loaded_models=["qwen3:8b"]
    ) as server:
        async with session.get(server.url + "/") as response:
            assert await response.text() == "Ollama is running"
        async with session.get(server.url + "/api/version") as response:
            assert await response.json() == {"version": server.version}
        async with session.get(server.url + "/api/tags") as response:
            tags = (await response.json())["models"]
        async with session.get(server.url + "/api/ps") as response:
            ps = (await response.json())["models"]
        _, _, shown = await post_raw(session, server, "/api/show", {"model": "qwen3:8b"})
        status, _, missing = await post_raw(session, server, "/api/show", {"model": "x"})
        async with session.get(server.url + "/v1/models") as response:
            listed = await response.json(content_type=None)
        async with session.get(server.url + "/api/nope") as response:
            unknown = (response.status, await response.text())
    assert [t["name"] for t in tags] == ["llama3.2:latest", "qwen3:8b"]
    assert tags[1]["model"] == "qwen3:8b"
    assert tags[1]["details"]["format"] == "gguf"
    assert re.fullmatch(r"[0-9a-f]{64}", tags[1]["digest"])
    assert [(m["name"], m["context_length"]) for m in ps] == [("qwen3:8b", 4096)]
    assert orjson.loads(shown)["details"]["family"] == "qwen"
    assert (status, orjson.loads(missing)) == (404, {"error": "model 'x' not found"})
    assert [m["id"] for m in listed["data"]] == ["llama3.2:latest", "qwen3:8b"]
    assert listed["data"][0]["owned_by"] == "library"
    assert unknown == (404, "404 page not found")


async def test_ollama_v1_models_is_null_without_models(session: aiohttp.ClientSession) -> None:
    """Ollama's /v1/models says "data": null when no model is pulled."""
    async with (
        TestServer("ollama", models=[]) as server,
        session.get(server.url + "/v1/models") as response,
    ):
        assert await response.read() == b'{"object":"list","data":null}'


async def test_llamacpp_listings(session: aiohttp.ClientSession) -> None:
    """llama-server's combined model list, /props and its JSON 404."""
    async with TestServer("llamacpp") as server:
        for path in ("/v1/models", "/models"):
            async with session.get(server.url + path) as response:
                listing = await response.json()
            assert listing["object"] == "list"
            assert listing["models"][0]["name"] == "tiny"
            assert listing["data"][0]["id"] == "tiny"
            assert listing["data"][0]["owned_by"] == "llamacpp"
            assert listing["data"][0]["meta"]["n_ctx"] == 4096
        async with session.get(server.url + "/props") as response:
            assert (await response.json())["model_alias"] == "tiny"
        async with session.get(server.url + "/v1/health") as response:
            assert await response.json() == {"status": "ok"}
        async with session.get(server.url + "/nope") as response:
            assert response.status == 404
            assert await response.json() == {
                "error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}
            }


async def test_vllm_listings(session: aiohttp.ClientSession) -> None:
    """vLLM's empty /health, /version and /v1/models with owned_by, root, max_model_len."""
    async with TestServer("vllm", version="0.11.2") as server:
        async with session.get(server.url + "/health") as response:
            assert (response.status, await response.read()) == (200, b"")
        async with session.get(server.url + "/version") as response:
            assert await response.json() == {"version": "0.11.2"}
        async with session.get(server.url + "/v1/models") as response:
            model = (await response.json())["data"][0]
        async with session.get(server.url + "/nope") as response:
            assert (response.status, await response.json()) == (404, {"detail": "Not Found"})
    assert model["id"] == model["root"] == "facebook/opt-125m"
    assert model["owned_by"] == "vllm"
    assert model["max_model_len"] == 4096


async def test_openai_listing(session: aiohttp.ClientSession) -> None:
    """OpenAI's /v1/models and /v1/models/{id}."""
    async with TestServer("openai", models=["gpt-4o-mini", "gpt-4o"]) as server:
        async with session.get(server.url + "/v1/models") as response:
            listing = await response.json()
        async with session.get(server.url + "/v1/models/gpt-4o") as response:
            one = await response.json()
        async with session.get(server.url + "/v1/models/gpt-9") as response:
            missing = (response.status, (await response.json())["error"]["code"])
    assert listing["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in listing["data"]] == [
        ("gpt-4o-mini", "openai"),
        ("gpt-4o", "openai"),
    ]
    assert one["id"] == "gpt-4o"
    assert missing == (404, "model_not_found")


# -- embeddings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", SSE_DIALECTS)
async def test_embeddings_are_deterministic(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """/v1/embeddings gives the same unit vectors for the same input, in the list shape."""
    async with TestServer(dialect) as server:
        body = {"model": server.models[0], "input": ["hello world", "bye"]}
        _, _, first = await post_raw(session, server, "/v1/embeddings", body)
        _, _, second = await post_raw(session, server, "/v1/embeddings", body)
    a, b = orjson.loads(first), orjson.loads(second)
    assert a["object"] == "list"
    assert [d["index"] for d in a["data"]] == [0, 1]
    assert [d["embedding"] for d in a["data"]] == [d["embedding"] for d in b["data"]]
    vector = a["data"][0]["embedding"]
    assert len(vector) == 8
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-5
    assert a["data"][0]["embedding"] != a["data"][1]["embedding"]
    assert a["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_ollama_native_embed(session: aiohttp.ClientSession) -> None:
    """/api/embed answers {model, embeddings, durations, prompt_eval_count}."""
    async with TestServer("ollama") as server:
        body = {"model": "llama3.2", "input": "hello"}
        status, _, raw = await post_raw(session, server, "/api/embed", body)
    answer = orjson.loads(raw)
    assert status == 200
    assert answer["model"] == "llama3.2"
    assert len(answer["embeddings"]) == 1
    assert len(answer["embeddings"][0]) == 8
    assert answer["prompt_eval_count"] == 1
    assert isinstance(answer["total_duration"], int)
