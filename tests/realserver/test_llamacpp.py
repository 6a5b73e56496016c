"""llmtap against a server nobody on this team wrote: llama-cpp-python 0.3.36 serving a tiny
model. What only this server does (its stream shape, the name it repeats in tool-call
fragments, the empty 200 after which it closes the connection, a stream cut short by a newer
request); what it shares with llama.cpp's own llama-server is in test_both_servers.py.

Each server behaviour asserted here was first seen on the wire. The model is random but seeded,
and every request passes a ``seed``, so each answer is fixed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from llmtap import (
    LLMClient,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    Message,
)
from llmtap._wire.chunks import CUT_BY_NEWER_REQUEST
from tests.realserver.conftest import no_eos, realserver_client, require
from tests.realserver.llamaserver import MODEL_ALIAS, LlamaServer
from tests.realserver.oracle import Oracle
from tests.realserver.test_both_servers import WEATHER_QUESTION, WEATHER_TOOL

if TYPE_CHECKING:  # importing it needs gguf, which the tier may lack (it then skips)
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver

QUESTION = [Message.user("Tell me about the water.")]
#: A seed whose answer to QUESTION ends by itself within LONG (finish_reason "stop").
STOP_SEED = 1
#: A max_tokens the answers to QUESTION never reach.
LONG = 200
#: The only tool_choice with which llama-cpp-python produces real tool calls.
WEATHER_CHOICE = {"type": "function", "function": {"name": "get_weather"}}
#: A prompt longer than the server's 512-token context.
TOO_LONG = [Message.user("water " * 600)]


async def collect_chunks(client: LLMClient, **params: Any) -> list[dict[str, Any]]:
    """The raw chunks of one streamed answer to QUESTION."""
    return [chunk async for chunk in client.stream_chat(QUESTION, **params)]


# --- streaming text ----------------------------------------------------------------------


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


# --- tool calls ----------------------------------------------------------------------------


async def test_every_fragment_repeats_the_name_and_openai_python_joins_the_repeats(
    llama_server: LlamaServer,
) -> None:
    """llama-cpp-python repeats the id, type and name on every fragment of a streamed tool
    call (OpenAI sends them once), with a legacy ``function_call`` beside: llmtap's call is
    named get_weather once, while openai-python's own stream accumulator concatenates the
    repeats (so it is no oracle for these streams: test_both_servers.py)."""
    require("openai")
    from openai.lib.streaming.chat import ChatCompletionStreamState

    params: dict[str, Any] = {"tool_choice": WEATHER_CHOICE, "seed": 1, "max_tokens": LONG}
    async with Oracle.around(llama_server.url) as oracle:
        result = await oracle.client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], **params)
        lines = (await oracle.last()).data_lines[:-1]
        oracle.tee.replay(await oracle.last())
        state = ChatCompletionStreamState()
        async for chunk in await oracle.peer.chat.completions.create(
            model=MODEL_ALIAS,
            messages=[m.to_api_dict() for m in WEATHER_QUESTION],
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
            **params,
        ):
            state.handle_chunk(chunk)
    fragments = [
        call for line in lines for call in line["choices"][0]["delta"].get("tool_calls") or ()
    ]
    names = {call["function"]["name"] for call in fragments}
    legacy = [line["choices"][0]["delta"].get("function_call") for line in lines[1:-1]]
    assert (len(fragments) > 3, names, None in legacy) == (True, {"get_weather"}, False)
    assert [call.name for call in result.tool_calls] == ["get_weather"]
    [peer_call] = state.current_completion_snapshot.choices[0].message.tool_calls or []
    assert peer_call.function.name == "get_weather" * len(fragments)


# --- a prompt longer than the context ------------------------------------------------------


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


async def test_the_request_after_an_empty_200_is_answered(llama_server: LlamaServer) -> None:
    """After the empty 200 of an over-long streamed prompt, the same client's next request is
    answered. (The server closes that connection right after the body's terminator; a
    client that puts it back in its pool sends the next request into a closing socket.)"""
    async with realserver_client(llama_server) as client:
        with pytest.raises(LLMStreamError):
            await client.chat(TOO_LONG)
        result = await client.chat(QUESTION, seed=STOP_SEED, max_tokens=LONG, stream=False)
    assert result.finish_reason == "stop"


async def test_the_responses_api_it_lacks_is_named_with_what_to_use(
    llama_server: LlamaServer,
) -> None:
    """llama-cpp-python has no ``/v1/responses`` (a 404 ``Not Found``): ``api="responses"``
    fails at once with an error that says so and names chat completions, ``api='openai'``."""
    async with realserver_client(llama_server, api="responses") as client:
        with pytest.raises(LLMResponseError) as caught:
            await client.chat(QUESTION, seed=STOP_SEED, max_tokens=8)
    assert caught.value.status_code == 404
    assert "has no Responses API" in str(caught.value)
    assert "api='openai'" in str(caught.value)


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
