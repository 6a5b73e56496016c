"""Fuzzing: mutated answer streams through decoder → JSON → accumulator (in process, and
through the real client over loopback). Whatever a server sends, only typed ``LLMError``s may
escape; an ``AttributeError`` or ``TypeError`` from a chunk of the wrong shape is a bug.

Bounded for CI by ``max_examples`` (about 10-20 s in all). Runs stay random, so each CI run
explores new inputs; a failure prints the input that reproduces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmtap import (
    Accumulator,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    Message,
)
from llmtap._wire.ndjson import NDJSONDecoder
from llmtap._wire.sse import SSEDecoder
from llmtap.testing import Reply, TestServer

# --- a corpus of real shapes (WIRE.md), one answer per server -----------------------------

_ROLE = {"role": "assistant", "content": ""}
_OPENAI: list[dict[str, Any]] = [
    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [
        {"index": 0, "delta": _ROLE, "logprobs": None, "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get", "arguments": ""}}]}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"city": '}}]}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c1", "choices": [], "usage": {
        "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
]  # fmt: skip
_LLAMACPP: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None},
                  "finish_reason": None}], "created": 1, "model": "tiny"},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
     "timings": {"predicted_n": 2, "predicted_ms": 3.5}},
]  # fmt: skip
_VLLM: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "model": "m"},
    {"choices": [{"index": 0, "delta": {"reasoning": "hmm"}}]},
    {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "length",
                  "stop_reason": None}]},
]  # fmt: skip
_SSE_CORPUS = [_OPENAI, _LLAMACPP, _VLLM]
_NATIVE: list[dict[str, Any]] = [
    {"model": "m", "created_at": "2025-01-01T00:00:00Z",
     "message": {"role": "assistant", "content": "", "thinking": "so"}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_ab12cd34", "function": {"name": "get", "arguments": {"city": "Paris"}}}]},
     "done": False},
    {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "total_duration": 10, "prompt_eval_count": 4, "eval_count": 2},
]  # fmt: skip

#: Keys the client and accumulator look at: mutations aim at them.
KEYS = [
    "choices", "delta", "message", "content", "reasoning", "reasoning_content", "thinking",
    "tool_calls", "function", "name", "arguments", "id", "index", "finish_reason", "usage",
    "prompt_tokens", "completion_tokens", "total_tokens", "done", "done_reason", "error",
    "model", "eval_count", "prompt_eval_count", "function_call",
]  # fmt: skip

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["", "stop", "{", '{"a": 1}', "[DONE]"])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated_chunks(draw: st.DrawFn, corpus: list[list[dict[str, Any]]]) -> list[Any]:
    """A real answer's chunks with a few subtrees replaced, removed or duplicated."""
    chunks: list[Any] = copy.deepcopy(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(chunks)))
        if position == len(chunks) or draw(st.booleans()):
            op = draw(st.sampled_from(["insert", "drop", "repeat"]))
            if op == "insert":
                chunks.insert(position, draw(json_value))
            elif chunks and op == "drop":
                chunks.pop(position % len(chunks))
            elif chunks:
                chunks.insert(position, copy.deepcopy(chunks[position % len(chunks)]))
            continue
        node = chunks
        key: Any = position
        while isinstance(node[key], dict | list) and node[key] and draw(st.booleans()):
            node = node[key]
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
        node[key] = draw(json_value)
    return chunks


def sse_body(chunks: list[Any], done: bool) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def ndjson_body(chunks: list[Any]) -> bytes:
    return b"".join(orjson.dumps(chunk) + b"\n" for chunk in chunks)


BYTE_NOISE = [b"\n", b"\r", b"\r\n", b":", b"data: ", b"{", b'"', b"}", b"\xff", b"[DONE]", b"\x00"]


@st.composite
def byte_mutations(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with a few bytes flipped, cut out, repeated or inserted."""
    data = bytearray(body)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip", "truncate", "repeat"]))
        if op == "insert":
            data[at:at] = draw(st.sampled_from(BYTE_NOISE) | st.binary(max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        elif op == "flip" and at < len(data):
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(min_value=1, max_value=40))]
    return bytes(data)


def split(stream: bytes, at: list[int]) -> list[bytes]:
    points = sorted({cut % (len(stream) + 1) for cut in at})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def parse(raw: bytes) -> dict[str, Any]:
    """A chunk as the transport hands it on: a JSON object that is not an error object, or
    the typed error the transport raises instead (its documented contract)."""
    try:
        chunk = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LLMStreamError("not JSON") from None
    if type(chunk) is not dict:
        raise LLMStreamError("not a JSON object")
    if chunk.get("error") is not None:
        raise LLMResponseError("error object")
    return chunk


def sse_pipeline(body: bytes, at: list[int], limit: int) -> None:
    """SSEDecoder → orjson → Accumulator → result, over ``body`` split at ``at``."""
    decoder = SSEDecoder(limit)
    accumulator = Accumulator("openai")
    for piece in [*split(body, at), b""]:
        for event in decoder.feed(piece) if piece else decoder.close():
            if event.event == "error":
                raise LLMResponseError("event: error")
            if event.data.startswith(b"[DONE]"):
                accumulator.result()
                return
            accumulator.feed(parse(event.data))
    accumulator.result()


def ndjson_pipeline(body: bytes, at: list[int], limit: int) -> None:
    """NDJSONDecoder → orjson → Accumulator("ollama") → result."""
    decoder = NDJSONDecoder(limit)
    accumulator = Accumulator("ollama")
    for piece in [*split(body, at), b""]:
        for line in decoder.feed(piece) if piece else decoder.close():
            chunk = parse(line)
            accumulator.feed(chunk)
            if chunk.get("done"):
                accumulator.result()
                return
    accumulator.result()


def only_llm_errors(run: Any, *args: Any) -> None:
    """Run the pipeline; an ``LLMError`` is a fine ending, anything else escapes."""
    with contextlib.suppress(LLMError):
        run(*args)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    chunks=mutated_chunks(_SSE_CORPUS),
    done=st.booleans(),
    noise=st.data(),
    at=st.lists(st.integers(min_value=0), max_size=6),
    limit=st.sampled_from([64, 1 << 20]),
)
@example(chunks=[{"choices": ["x"]}], done=True, noise=None, at=[], limit=1 << 20)
def test_sse_pipeline_raises_only_llm_errors(
    chunks: list[Any], done: bool, noise: Any, at: list[int], limit: int
) -> None:
    """Mutated SSE answers, split anywhere, end in a result or an LLMError, nothing else."""
    body = sse_body(chunks, done)
    if noise is not None:
        body = noise.draw(byte_mutations(body))
    only_llm_errors(sse_pipeline, body, at, limit)


@FUZZ
@given(
    chunks=mutated_chunks([_NATIVE]),
    noise=st.data(),
    at=st.lists(st.integers(min_value=0), max_size=6),
    limit=st.sampled_from([64, 1 << 20]),
)
@example(chunks=[{"message": [1]}], noise=None, at=[], limit=1 << 20)
def test_ndjson_pipeline_raises_only_llm_errors(
    chunks: list[Any], noise: Any, at: list[int], limit: int
) -> None:
    """Mutated native Ollama answers, split anywhere, end in a result or an LLMError."""
    body = ndjson_body(chunks)
    if noise is not None:
        body = noise.draw(byte_mutations(body))
    only_llm_errors(ndjson_pipeline, body, at, limit)


#: Chunks whose JSON is fine and whose shape is not, each crashing today.
WRONG_SHAPES: list[tuple[str, bytes]] = [
    ("choices_of_strings", b'{"choices": ["x"]}'),
    ("choices_a_number", b'{"choices": 5}'),
    ("choices_an_object", b'{"choices": {"index": 0}}'),
    ("delta_a_string", b'{"choices": [{"index": 0, "delta": "x"}]}'),
    ("content_a_number", b'{"choices": [{"index": 0, "delta": {"content": 5}}]}'),
    ("tool_call_a_number", b'{"choices": [{"index": 0, "delta": {"tool_calls": [1]}}]}'),
    (
        "function_a_string",
        b'{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}',
    ),
    ("usage_a_number", b'{"choices": [], "usage": 5}'),
    ("finish_reason_a_number", b'{"choices": [{"index": 0, "delta": {}, "finish_reason": 1}]}'),
]
NATIVE_WRONG_SHAPES: list[tuple[str, bytes]] = [
    ("message_a_list", b'{"message": [1], "done": false}'),
    ("tool_calls_a_number", b'{"message": {"content": "", "tool_calls": 3}, "done": false}'),
    ("content_a_number", b'{"message": {"content": 5}, "done": false}'),
    ("done_reason_a_number", b'{"message": {"content": ""}, "done": true, "done_reason": 5}'),
]


_FINISH = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'


def _cases() -> list[Any]:
    cases = []
    for path in ("stream_chat", "stream", "chat"):
        for name, chunk in WRONG_SHAPES:
            body = b"data: " + chunk + b"\n\n" + _FINISH + b"data: [DONE]\n\n"
            cases.append(pytest.param("openai", body, path, id=f"{path}-{name}"))
        for name, chunk in NATIVE_WRONG_SHAPES:
            body = chunk + b'\n{"message": {"content": ""}, "done": true}\n'
            cases.append(pytest.param("ollama", body, path, id=f"{path}-native-{name}"))
    return cases


#: Shapes that the raw-chunk path passes through untouched, as it should: it yields
#: chunks as the server sent them and only reads their text for partial_text.
_RAW_PATH_FINE = {
    ("stream_chat", "content_a_number"),
    ("stream_chat", "delta_a_string"),
    ("stream_chat", "tool_call_a_number"),
    ("stream_chat", "function_a_string"),
    ("stream_chat", "usage_a_number"),
    ("stream_chat", "finish_reason_a_number"),
    ("stream_chat", "native-message_a_list"),
    ("stream_chat", "native-content_a_number"),
    ("stream_chat", "native-tool_calls_a_number"),
    ("stream_chat", "native-done_reason_a_number"),
}


async def _consume(client: LLMClient, path: str) -> None:
    hello = [Message.user("hello")]
    if path == "stream_chat":
        async for _chunk in client.stream_chat(hello):
            pass
    elif path == "stream":
        async with client.stream(hello) as stream:
            async for _event in stream:
                pass
    else:
        await client.chat(hello)


@pytest.mark.parametrize(("api", "body", "path"), _cases())
async def test_wrong_shape_chunk_is_a_stream_error(
    api: str, body: bytes, path: str, request: pytest.FixtureRequest
) -> None:
    """A chunk of the wrong shape ends the call with LLMStreamError (or passes through the
    raw-chunk path untouched), never with AttributeError or TypeError."""
    name = request.node.callspec.id.split("-", 1)[1]
    fine_raw = (path, name) in _RAW_PATH_FINE
    content_type = "application/x-ndjson" if api == "ollama" else "text/event-stream"
    async with TestServer(dialect="ollama" if api == "ollama" else "openai") as server:
        server.script(Reply(raw_body=body, content_type=content_type))
        config = LLMConfig(endpoint=server.url, model="m", api=api, max_retries=0)
        async with LLMClient(config) as client:
            try:
                await _consume(client, path)
            except LLMStreamError:
                assert not fine_raw
            else:
                assert fine_raw
            assert client.connections_in_use == 0


async def test_raw_chunk_path_interrupted_after_a_non_text_content() -> None:
    """stream_chat() passes a chunk whose content is a number through, and a break after it
    is still LLMStreamInterrupted (building partial_text must not crash on it)."""
    body = b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n'
    async with TestServer(dialect="openai") as server:
        server.script(Reply(raw_body=body, content_type="text/event-stream"))
        async with LLMClient(LLMConfig(endpoint=server.url, model="m")) as client:
            with pytest.raises(LLMStreamInterrupted):
                await _consume(client, "stream_chat")


@st.composite
def fuzzed_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A mutated answer in SSE or native NDJSON, with byte noise."""
    if draw(st.booleans()):
        body = sse_body(draw(mutated_chunks(_SSE_CORPUS)), draw(st.booleans()))
        return "openai", draw(byte_mutations(body))
    return "ollama", draw(byte_mutations(ndjson_body(draw(mutated_chunks([_NATIVE])))))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(fuzzed_bodies(), min_size=1, max_size=12))
@example(cases=[("openai", b'data: {"choices": ["x"]}\n\ndata: [DONE]\n\n')])
def test_fuzzed_bodies_through_the_client_raise_only_llm_errors(
    cases: list[tuple[str, bytes]],
) -> None:
    """Mutated bodies served over loopback end chat() and stream() in a result or an
    LLMError, and give the connection back."""
    asyncio.run(_serve_fuzzed(cases))


async def _serve_fuzzed(cases: list[tuple[str, bytes]]) -> None:
    async with TestServer(dialect="ollama") as server:
        for api in ("openai", "ollama"):
            config = LLMConfig(
                endpoint=server.url, model="m", api=api, max_retries=0, max_line_bytes=1024
            )
            async with LLMClient(config) as client:
                for body_api, body in cases:
                    if body_api != api:
                        continue
                    for path in ("stream", "chat"):
                        content_type = (
                            "text/event-stream" if api == "openai" else "application/x-ndjson"
                        )
                        server.script(Reply(raw_body=body, content_type=content_type))
                        with contextlib.suppress(LLMError):
                            await _consume(client, path)
                        assert client.connections_in_use == 0
