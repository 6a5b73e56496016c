"""llmtap's Responses API dialect (``api="responses"``) against the real ``llama-server``,
which serves ``/v1/responses``: the same seeded request over ``/v1/responses`` and over
``/v1/chat/completions`` gives the same answer, streamed or not, and openai-python's
``responses`` API reads the same answer from it.

The model is random but seeded, and every request passes a ``seed``, so each answer is fixed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llmtap import ChatResult, Message
from tests.realserver.conftest import no_eos, realserver_client, require
from tests.realserver.llamacpp_server import LlamaCppServer
from tests.realserver.serverprocess import MODEL_ALIAS
from tests.realserver.test_both_servers import LONG, QUESTION, WEATHER_QUESTION, WEATHER_TOOL

if TYPE_CHECKING:
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver


def _answer(result: ChatResult) -> dict[str, Any]:
    """What must agree between the two dialects: text, reasoning, finish, usage, the calls
    (their ids are random per request), server and model."""
    usage = result.usage
    return {
        "text": result.text,
        "reasoning": result.reasoning,
        "finish_reason": result.finish_reason,
        "usage": (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.source),
        "tool_calls": [(call.name, call.arguments) for call in result.tool_calls],
        "server": result.server,
        "model": result.model,
    }


async def _both(server: LlamaCppServer, *, stream: bool, **params: Any) -> tuple[Any, Any]:
    """The same request over chat completions and over the Responses API (both clients
    after preflight, so that both know the server)."""
    messages = params.pop("messages", QUESTION)
    answers = []
    for api in ("openai", "responses"):
        async with realserver_client(server, api=api) as client:
            await client.preflight_check()
            answers.append(await client.chat(messages, stream=stream, **params))
    return answers[0], answers[1]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_the_same_answer_over_responses_and_chat_completions(
    llamacpp_server: LlamaCppServer, seed: int, stream: bool
) -> None:
    """For a seed, /v1/responses and /v1/chat/completions give the same text, finish
    reason, usage (the server's own), server and model."""
    chat, responses = await _both(llamacpp_server, stream=stream, seed=seed, max_tokens=LONG)
    assert _answer(responses) == _answer(chat)
    assert (responses.server, responses.model, responses.finish_reason) == (
        "llama.cpp", MODEL_ALIAS, "stop",
    )  # fmt: skip


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_system_prompt_becomes_the_same_instructions(
    llamacpp_server: LlamaCppServer, stream: bool
) -> None:
    """A system message sent as ``instructions`` reaches the model as the chat completions'
    system message does: the same prompt tokens, the same answer."""
    messages = [Message.system("You answer about water."), *QUESTION]
    chat, responses = await _both(
        llamacpp_server, stream=stream, messages=messages, seed=5, max_tokens=LONG
    )
    assert _answer(responses) == _answer(chat)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_required_tool_call_over_responses_is_the_same_call(
    llamacpp_tool_server: LlamaCppServer, seed: int, stream: bool
) -> None:
    """With the tool-call model and ``tool_choice: "required"``, the call that comes over
    the Responses API (function_call items, flat tool) is the call chat completions give:
    the same name and arguments, finish ``tool_calls``."""
    chat, responses = await _both(
        llamacpp_tool_server,
        stream=stream,
        messages=WEATHER_QUESTION,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        seed=seed,
        max_tokens=LONG,
    )
    assert _answer(responses) == _answer(chat)
    assert responses.finish_reason == "tool_calls"
    assert responses.tool_calls[0].name == WEATHER_TOOL["function"]["name"]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_an_answer_cut_at_max_tokens_is_length_over_responses_too(
    llamacpp_server: LlamaCppServer, tiny_model: TinyModel, stream: bool
) -> None:
    """llama-server's Responses answer is ``completed`` even when cut at
    ``max_output_tokens`` (it never sends ``incomplete``); llmtap reads ``length`` from the
    output tokens reaching the limit, as chat completions say. The tokens are the same."""
    chat, responses = await _both(
        llamacpp_server, stream=stream, seed=4, max_tokens=12, **no_eos(tiny_model)
    )
    assert (chat.finish_reason, responses.finish_reason) == ("length", "length")
    assert responses.usage.completion_tokens == chat.usage.completion_tokens == 12
    assert responses.text == chat.text


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_openai_python_reads_the_same_answer(
    llamacpp_server: LlamaCppServer, seed: int
) -> None:
    """openai-python's ``responses.create`` (whole, and streamed: its events' deltas) reads
    the text and usage llmtap reads from the same request."""
    require("openai")
    from openai import AsyncOpenAI

    async with realserver_client(llamacpp_server, api="responses") as client:
        streamed = await client.chat(QUESTION, seed=seed, max_tokens=LONG)
        whole = await client.chat(QUESTION, seed=seed, max_tokens=LONG, stream=False)
    oracle = AsyncOpenAI(base_url=f"{llamacpp_server.url}/v1", api_key="none", max_retries=0)
    try:
        request: dict[str, Any] = {
            "model": MODEL_ALIAS,
            "input": [{"type": "message", "role": "user", "content": QUESTION[0].content}],
            "max_output_tokens": LONG,
            "extra_body": {"seed": seed},
        }
        response = await oracle.responses.create(**request)
        pieces: list[str] = []
        stream = await oracle.responses.create(stream=True, **request)
        async for event in stream:
            if event.type == "response.output_text.delta":
                pieces.append(event.delta)
    finally:
        await oracle.close()
    usage = response.usage
    assert usage is not None
    assert whole.text == streamed.text == response.output_text == "".join(pieces)
    expected = (usage.input_tokens, usage.output_tokens, usage.total_tokens)
    for result in (whole, streamed):
        found = (result.usage.prompt_tokens, result.usage.completion_tokens)
        assert (*found, result.usage.total_tokens) == expected


async def test_a_conversation_over_responses_is_logged_as_one(
    llamacpp_server: LlamaCppServer, tmp_path: Path
) -> None:
    """With the log on, calls over the Responses API are rows like any (their prompt from
    the input items, the request as sent), and a call that continues an answer (that
    answer as an assistant item, then a new question) joins its conversation."""
    log = tmp_path / "log.db"
    async with realserver_client(llamacpp_server, api="responses", log_db=log) as client:
        first = await client.chat(QUESTION, seed=1, max_tokens=LONG)
        follow = [*QUESTION, first.message, Message.user("And then?")]
        await client.chat(follow, seed=2, max_tokens=LONG)
    with sqlite3.connect(log) as connection:
        rows = connection.execute(
            "SELECT conversation_id, prompt, text, request FROM calls ORDER BY id"
        ).fetchall()
    assert [(prompt, text) for _, prompt, text, _ in rows] == [
        (QUESTION[0].content, first.text),
        ("And then?", rows[1][2]),
    ]
    assert rows[0][0] == rows[1][0]
    assert "input" in json.loads(rows[1][3])
