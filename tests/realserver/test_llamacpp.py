"""llmtap against a server nobody on this team wrote: llama-cpp-python 0.3.36 serving a tiny model.

Each server behaviour asserted here was first seen on the wire. The model is random but seeded,
and every request passes a ``seed``, so each answer is fixed.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from llmtap import (
    FinishEvent,
    LLMClient,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    Message,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from llmtap._wire.chunks import CUT_BY_NEWER_REQUEST
from tests.realserver.conftest import no_eos, realserver_client
from tests.realserver.llamaserver import MODEL_ALIAS, LlamaServer

if TYPE_CHECKING:  # importing it needs gguf, which the tier may lack (it then skips)
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver

QUESTION = [Message.user("Tell me about the water.")]
#: A seed whose answer to QUESTION ends by itself within LONG (finish_reason "stop").
STOP_SEED = 1
#: A max_tokens the answers to QUESTION never reach.
LONG = 200
TEMPERATURE = 0.7

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
#: The only tool_choice with which llama-cpp-python produces real tool calls.
WEATHER_CHOICE = {"type": "function", "function": {"name": "get_weather"}}
WEATHER_QUESTION = [Message.user("What is the weather in the city?")]
#: A prompt longer than the server's 512-token context.
TOO_LONG = [Message.user("water " * 600)]
CONTEXT_EXCEEDED = re.compile(
    r"This model's maximum context length is 512 tokens\. However, you requested (\d+) tokens"
    r" \(\1 in the messages, None in the completion\)\. Please reduce the length of the"
    r" messages or completion\."
)


def content_of(chunks: list[dict[str, Any]]) -> list[str]:
    """The text pieces of raw chunks, one per chunk that has any."""
    pieces = []
    for chunk in chunks:
        content = chunk["choices"][0]["delta"].get("content")
        if content:
            pieces.append(content)
    return pieces


async def collect_chunks(client: LLMClient, **params: Any) -> list[dict[str, Any]]:
    """The raw chunks of one streamed answer to QUESTION."""
    return [chunk async for chunk in client.stream_chat(QUESTION, **params)]


def _without_identity(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chunk without the fields that differ between two requests (id, timestamp)."""
    return {key: value for key, value in chunk.items() if key not in ("id", "created")}


# --- preflight ---------------------------------------------------------------------------


async def test_preflight_finds_an_openai_compatible_server_serving_tiny(
    client: LLMClient,
) -> None:
    """llama-cpp-python lists its model as owned by "me": an OpenAI-compatible server (it
    has neither llama.cpp's ``owned_by: "llamacpp"`` nor its ``models`` list), serving tiny."""
    report = await client.preflight_check()
    found = (report.server, report.version, report.models, report.model, report.warnings)
    assert found == ("openai-compatible", None, (MODEL_ALIAS,), MODEL_ALIAS, ())


# --- the tiny model ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
async def test_the_tiny_model_answers_in_whole_words(
    client: LLMClient, tiny_model: TinyModel, seed: int
) -> None:
    """The biased output head makes answers readable: whole words of the vocabulary, each
    after one space (SentencePiece's word-start marker)."""
    result = await client.chat(QUESTION, seed=seed, max_tokens=LONG, stream=False)
    first, *words = result.text.split(" ")
    assert first == ""
    assert set(words) <= set(tiny_model.words)
    assert words != []


# --- streaming text ----------------------------------------------------------------------


async def test_stream_chat_yields_exactly_the_chunks_the_server_sent(
    client: LLMClient, llama_server: LlamaServer
) -> None:
    """stream_chat's chunk dicts are the server's ``data:`` lines, parsed and nothing else
    (the same request sent with a plain HTTP client; ids and timestamps differ per request)."""
    params = {"seed": STOP_SEED, "max_tokens": LONG, "temperature": TEMPERATURE}
    chunks = await collect_chunks(client, **params)
    body = {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": QUESTION[0].content}],
        "stream": True,
        **params,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{llama_server.url}/v1/chat/completions", json=body) as response,
    ):
        raw = await response.read()
    lines = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    expected = [_without_identity(json.loads(line)) for line in lines[:-1]]
    assert [_without_identity(chunk) for chunk in chunks] == expected


async def test_stream_chat_chunks_are_role_then_one_per_token_then_finish(
    client: LLMClient,
) -> None:
    """llama-cpp-python's stream shape, as llmtap passes it on: a role-only chunk, one chunk
    per token, a last chunk with an empty delta and the finish_reason, and no usage chunk
    (``stream_options`` is ignored)."""
    chunks = await collect_chunks(client, seed=STOP_SEED, max_tokens=LONG)
    choices = [chunk["choices"][0] for chunk in chunks]
    shape = (
        choices[0]["delta"],
        {tuple(choice["delta"]) for choice in choices[1:-1]},
        choices[-1]["delta"],
        choices[-1]["finish_reason"],
        [chunk for chunk in chunks if "usage" in chunk],
    )
    assert shape == ({"role": "assistant"}, {("content",)}, {}, "stop", [])


async def test_stream_events_are_the_text_pieces_then_the_finish(client: LLMClient) -> None:
    """stream() turns each token chunk into one TextDelta and the last chunk into one
    FinishEvent("stop"); the result's text is the pieces joined."""
    pieces = content_of(await collect_chunks(client, seed=STOP_SEED, max_tokens=LONG))
    async with client.stream(QUESTION, seed=STOP_SEED, max_tokens=LONG) as stream:
        events = [event async for event in stream]
        result = await stream.result()
    assert events == [*(TextDelta(piece) for piece in pieces), FinishEvent("stop")]
    assert result.text == "".join(pieces)


async def test_streamed_result_counts_its_usage_and_is_from_an_openai_compatible_server(
    client: LLMClient,
) -> None:
    """Without preflight, a streamed result names the server from its chunks (no llama.cpp
    ``timings``: "openai-compatible"), and since the stream carried no usage, its token
    chunks are counted."""
    pieces = content_of(await collect_chunks(client, seed=STOP_SEED, max_tokens=LONG))
    result = await client.chat(QUESTION, seed=STOP_SEED, max_tokens=LONG)
    assert (result.server, result.usage, result.model) == (
        "openai-compatible",
        Usage(completion_tokens=len(pieces), source="counted"),
        MODEL_ALIAS,
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_chat_streaming_and_not_give_the_same_answer_for_a_seed(
    client: LLMClient, seed: int
) -> None:
    """For a fixed seed, chat(stream=True) and chat(stream=False) give the same text and the
    same finish reason."""
    streamed = await client.chat(QUESTION, seed=seed, max_tokens=LONG)
    whole = await client.chat(QUESTION, seed=seed, max_tokens=LONG, stream=False)
    assert (streamed.text, streamed.finish_reason) == (whole.text, whole.finish_reason)
    assert streamed.text != ""


async def test_non_streaming_usage_counts_the_tokens_the_stream_delivered(
    client: LLMClient,
) -> None:
    """The non-streaming answer's completion_tokens equals the number of token chunks the
    same seeded request streamed."""
    pieces = content_of(await collect_chunks(client, seed=STOP_SEED, max_tokens=LONG))
    whole = await client.chat(QUESTION, seed=STOP_SEED, max_tokens=LONG, stream=False)
    assert whole.usage is not None
    assert whole.usage.completion_tokens == len(pieces)


async def test_finish_reason_stop_when_the_model_ends_its_answer(client: LLMClient) -> None:
    """An answer that ends by itself (the end token, before max_tokens) finishes "stop"."""
    result = await client.chat(QUESTION, seed=STOP_SEED, max_tokens=LONG, stream=False)
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens is not None
    assert result.usage.completion_tokens < LONG


@pytest.mark.parametrize("stream", [True, False])
async def test_finish_reason_length_at_max_tokens(
    client: LLMClient, tiny_model: TinyModel, stream: bool
) -> None:
    """An answer that may not end (end token forbidden) stops at max_tokens: "length", with
    exactly max_tokens tokens."""
    async with client.stream(QUESTION, seed=4, max_tokens=12, **no_eos(tiny_model)) as live:
        pieces = [piece async for piece in live.text()]
    result = await client.chat(QUESTION, seed=4, max_tokens=12, stream=stream, **no_eos(tiny_model))
    assert (result.finish_reason, len(pieces), result.text) == ("length", 12, "".join(pieces))


# --- tool calls ----------------------------------------------------------------------------


def _check_weather_arguments(arguments: dict[str, Any]) -> None:
    assert sorted(arguments) == ["city", "unit"]
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["city"], str)
    assert len(arguments["city"]) <= 24


async def test_tool_call_with_a_repeated_name_is_one_call_named_once(
    client: LLMClient,
) -> None:
    """llama-cpp-python repeats the id and name on every fragment of a tool call; llmtap
    gives one call named "get_weather" (not repeated) whose arguments fit the schema."""
    result = await client.chat(
        WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice=WEATHER_CHOICE, seed=1, max_tokens=LONG
    )
    assert [call.name for call in result.tool_calls] == ["get_weather"]
    assert (result.finish_reason, result.text, result.message.content) == ("tool_calls", "", None)
    _check_weather_arguments(result.tool_calls[0].arguments)


async def test_tool_call_events_name_the_call_once(client: LLMClient) -> None:
    """Of the ToolCallDeltas of one streamed call, only the first carries the id and name; the
    argument pieces join into the result's arguments."""
    async with client.stream(
        WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice=WEATHER_CHOICE, seed=1, max_tokens=LONG
    ) as stream:
        deltas = [event async for event in stream if isinstance(event, ToolCallDelta)]
        result = await stream.result()
    assert [(d.index, d.name) for d in deltas if d.name or d.id] == [(0, "get_weather")]
    assert {d.index for d in deltas} == {0}
    call = result.tool_calls[0]
    assert deltas[0].id == call.id
    assert json.loads("".join(d.arguments for d in deltas)) == call.arguments


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_tool_call_streamed_and_not_are_the_same_call(client: LLMClient, seed: int) -> None:
    """For a fixed seed, the streamed and the non-streaming tool call have the same name and
    arguments (their ids differ: llama-cpp-python derives them from the completion id)."""
    params: dict[str, Any] = {"tool_choice": WEATHER_CHOICE, "seed": seed, "max_tokens": LONG}
    streamed = await client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], **params)
    whole = await client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], stream=False, **params)
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]
    _check_weather_arguments(streamed.tool_calls[0].arguments)


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_call_cut_by_max_tokens_raises_naming_the_tool(
    client: LLMClient, stream: bool
) -> None:
    """Arguments cut by max_tokens are not valid JSON, though the server says "tool_calls":
    llmtap raises LLMStreamError naming the tool rather than return broken arguments."""
    with pytest.raises(LLMStreamError) as info:
        await client.chat(
            WEATHER_QUESTION,
            tools=[WEATHER_TOOL],
            tool_choice=WEATHER_CHOICE,
            seed=1,
            max_tokens=6,
            stream=stream,
        )
    assert type(info.value) is LLMStreamError
    assert info.value.message.startswith(
        "Tool call 'get_weather' has arguments that are not valid JSON: "
    )
    assert "finish_reason='tool_calls'" in info.value.message


# --- a prompt longer than the context ------------------------------------------------------


async def test_prompt_over_the_context_not_streaming_is_a_400_with_the_servers_message(
    client: LLMClient,
) -> None:
    """Not streaming, llama-cpp-python refuses a prompt over the context with 400
    ``context_length_exceeded``; LLMResponseError carries its message and code."""
    with pytest.raises(LLMResponseError) as info:
        await client.chat(TOO_LONG, stream=False)
    error = info.value
    assert (error.status_code, error.error_code, error.error_type) == (
        400,
        "context_length_exceeded",
        "invalid_request_error",
    )
    assert CONTEXT_EXCEEDED.fullmatch(error.server_message or "")


async def test_prompt_over_the_context_streaming_raises_for_the_empty_200(
    llama_server: LlamaServer,
) -> None:
    """Streaming, the server answers the same prompt with an empty 200 (no events, no
    [DONE]): stream_chat raises LLMStreamError, never an empty success."""
    async with realserver_client(llama_server) as client:
        with pytest.raises(LLMStreamError) as info:
            async for _chunk in client.stream_chat(TOO_LONG):
                pass
    assert type(info.value) is LLMStreamError
    assert info.value.message.startswith("The server closed the stream without an answer")


async def test_prompt_over_the_context_chat_streaming_raises(llama_server: LlamaServer) -> None:
    """chat() (streaming by default) raises LLMStreamError for the empty 200 too."""
    async with realserver_client(llama_server) as client:
        with pytest.raises(LLMStreamError) as info:
            await client.chat(TOO_LONG)
    assert type(info.value) is LLMStreamError


async def test_the_request_after_an_empty_200_is_answered(llama_server: LlamaServer) -> None:
    """After the empty 200 of an over-long streamed prompt, the same client's next request is
    answered. (The server closes that connection right after the body's terminator; a
    client that puts it back in its pool sends the next request into a closing socket.)"""
    async with realserver_client(llama_server) as client:
        with pytest.raises(LLMStreamError):
            await client.chat(TOO_LONG)
        result = await client.chat(QUESTION, seed=STOP_SEED, max_tokens=LONG, stream=False)
    assert result.finish_reason == "stop"


# --- concurrent requests -------------------------------------------------------------------


async def _cut_by_a_second_request(
    client: LLMClient, model: TinyModel
) -> tuple[BaseException | None, list[str], str | None]:
    """Stream a long answer; once its first piece has arrived, send a second request.

    Returns what the first stream raised (if anything), the text pieces it delivered, and
    the second request's finish reason.
    """
    first_piece = asyncio.Event()
    pieces: list[str] = []

    async def long_answer() -> BaseException | None:
        try:
            async with client.stream(QUESTION, seed=5, max_tokens=450, **no_eos(model)) as stream:
                async for piece in stream.text():
                    pieces.append(piece)
                    first_piece.set()
                await stream.result()
        except LLMStreamError as exc:
            return exc
        finally:
            first_piece.set()
        return None

    async def second_request() -> str | None:
        await first_piece.wait()
        result = await client.chat(WEATHER_QUESTION, seed=6, max_tokens=5, stream=False)
        return result.finish_reason

    error, second = await asyncio.gather(long_answer(), second_request())
    return error, pieces, second


async def test_a_stream_cut_by_a_second_request_raises_interrupted(
    client: LLMClient, tiny_model: TinyModel
) -> None:
    """llama-cpp-python (interrupt_requests on, its default) ends a running stream with
    ``data: [DONE]`` and no finish_reason when a second request arrives: llmtap raises
    LLMStreamInterrupted with the text delivered, never a result that looks complete, and the
    message says why it happens and what to do."""
    error, pieces, second = await _cut_by_a_second_request(client, tiny_model)
    assert isinstance(error, LLMStreamInterrupted)
    assert (error.partial_text, error.chunks_received) == ("".join(pieces), len(pieces))
    assert 0 < len(pieces) < 450
    assert isinstance(error.__cause__, LLMStreamError)
    assert error.__cause__.message == (
        "The stream ended before the answer was complete ([DONE] came before any "
        f"finish_reason; {CUT_BY_NEWER_REQUEST})"
    )
    assert second == "length"


async def test_raw_chunks_of_a_cut_stream_end_in_an_error(
    client: LLMClient, tiny_model: TinyModel
) -> None:
    """stream_chat on a stream cut by a second request: the chunks before the cut arrive, none
    with a finish_reason, and then LLMStreamInterrupted."""
    first_chunk = asyncio.Event()
    chunks: list[dict[str, Any]] = []

    async def long_answer() -> None:
        try:
            async for chunk in client.stream_chat(
                QUESTION, seed=5, max_tokens=450, **no_eos(tiny_model)
            ):
                chunks.append(chunk)
                first_chunk.set()
        finally:
            first_chunk.set()

    async def second_request() -> None:
        await first_chunk.wait()
        await client.chat(WEATHER_QUESTION, seed=6, max_tokens=5, stream=False)

    error, _ = await asyncio.gather(long_answer(), second_request(), return_exceptions=True)
    assert isinstance(error, LLMStreamInterrupted)
    assert error.chunks_received == len(chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * len(chunks)


async def test_with_interrupt_requests_off_concurrent_streams_both_finish(
    queueing_server: LlamaServer, tiny_model: TinyModel
) -> None:
    """With ``--interrupt_requests False`` the second request waits: both answers complete,
    each the same as when asked alone."""
    params: dict[str, Any] = {"max_tokens": 60, **no_eos(tiny_model)}
    async with realserver_client(queueing_server) as client:
        alone = [(await client.chat(QUESTION, seed=seed, **params)).text for seed in (7, 8)]
        together = await asyncio.gather(
            *(client.chat(QUESTION, seed=seed, **params) for seed in (7, 8))
        )
    assert [(r.text, r.finish_reason) for r in together] == [(t, "length") for t in alone]


# --- the same requests through openai-python -----------------------------------------------


def _openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    return [message.to_api_dict() for message in messages]


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_streamed_answer_is_the_one_openai_python_streams(
    client: LLMClient, openai_client: Any, seed: int
) -> None:
    """The same seeded streaming request through openai-python's AsyncOpenAI and through
    llmtap's stream() gives the same text and finish reason."""
    params: dict[str, Any] = {"seed": seed, "max_tokens": LONG, "temperature": TEMPERATURE}
    pieces: list[str] = []
    peer_finish = None
    stream = await openai_client.chat.completions.create(
        model=MODEL_ALIAS, messages=_openai_messages(QUESTION), stream=True, **params
    )
    async for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            peer_finish = choice.finish_reason or peer_finish
    async with client.stream(QUESTION, **params) as ours:
        result = await ours.result()
    assert (result.text, result.finish_reason) == ("".join(pieces), peer_finish)


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_non_streaming_answer_is_the_one_openai_python_gets(
    client: LLMClient, openai_client: Any, seed: int
) -> None:
    """The same seeded non-streaming request through AsyncOpenAI and through llmtap's
    chat(stream=False) gives the same text, finish reason and token counts."""
    params: dict[str, Any] = {"seed": seed, "max_tokens": LONG, "temperature": TEMPERATURE}
    peer = await openai_client.chat.completions.create(
        model=MODEL_ALIAS, messages=_openai_messages(QUESTION), **params
    )
    result = await client.chat(QUESTION, stream=False, **params)
    assert result.usage is not None
    peer_choice = peer.choices[0]
    assert (result.text, result.finish_reason) == (
        peer_choice.message.content,
        peer_choice.finish_reason,
    )
    ours = (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens)
    theirs = (peer.usage.prompt_tokens, peer.usage.completion_tokens, peer.usage.total_tokens)
    assert ours == theirs


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_tool_call_is_the_one_openai_python_gets(
    client: LLMClient, openai_client: Any, seed: int
) -> None:
    """The same seeded tool-call request gives the same calls (names and arguments) through
    AsyncOpenAI (non-streaming) and through llmtap's streamed chat()."""
    params: dict[str, Any] = {
        "tool_choice": WEATHER_CHOICE,
        "seed": seed,
        "max_tokens": LONG,
        "temperature": TEMPERATURE,
    }
    peer = await openai_client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=_openai_messages(WEATHER_QUESTION),
        tools=[WEATHER_TOOL],
        **params,
    )
    result = await client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], **params)
    peer_calls = [
        (call.function.name, json.loads(call.function.arguments))
        for call in peer.choices[0].message.tool_calls
    ]
    assert [(call.name, call.arguments) for call in result.tool_calls] == peer_calls
    assert result.finish_reason == peer.choices[0].finish_reason
