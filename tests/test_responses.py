"""The Responses API dialect end to end: the same scripted answers give equal ``ChatResult``s
over chat completions and over ``/v1/responses``, for every server shape of
``llmtap.testing``, streamed and whole, through ``chat()`` and ``stream()``; and where a server
leaves something out of its Responses answers, what llmtap makes of it is pinned.

Every test talks to llmtap's test server on loopback.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmtap import (
    ChatResult,
    LLMClient,
    LLMConfig,
    LLMResponseError,
    LLMStreamInterrupted,
    Message,
    RequestFinished,
    TextDelta,
    ToolCall,
)
from llmtap.testing import Reply, TestServer, no_retry_waits

QUESTION = [Message.system("Be brief."), Message.user("What is up?")]
DIALECTS = ["openai", "ollama", "llamacpp", "vllm"]
CALLS = [
    ToolCall(id="c1", name="weather", arguments={"city": "Oslo"}),
    ToolCall(id="c2", name="time", arguments={"zone": "CET", "hours": [1, 2]}),
]
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("weather", "time")
]

#: The scripted answers: name → (the reply, the chat parameters).
ANSWERS: dict[str, tuple[Reply, dict[str, Any]]] = {
    "plain": (Reply(text="It is all fine today.", usage=(12, 5)), {}),
    "reasoning": (
        Reply(text="Fine.", reasoning="Let me think about it.", usage=(12, 7)),
        {},
    ),
    "two tool calls": (Reply(tool_calls=list(CALLS), usage=(30, 9)), {"tools": TOOLS}),
    "cut by length": (
        Reply(text="It is all fine and", finish_reason="length", usage=(12, 4)),
        {"max_tokens": 4},
    ),
}


def _comparable(result: ChatResult) -> dict[str, Any]:
    """Everything but the timings (measured per request)."""
    return result.model_dump(exclude={"timings"})


async def _answer(
    dialect: str, api: str, reply: Reply, params: dict[str, Any], *, how: str
) -> ChatResult:
    async with TestServer(dialect=dialect) as server:  # type: ignore[arg-type]
        server.script(reply)
        config = LLMConfig(endpoint=server.url, model=server.models[0], api=api)  # type: ignore[arg-type]
        async with LLMClient(config) as client:
            await client.preflight_check()
            if how == "stream()":
                async with client.stream(QUESTION, **params) as stream:
                    pieces = [event.text async for event in stream if type(event) is TextDelta]
                    result = await stream.result()
                assert "".join(pieces) == result.text
                return result
            return await client.chat(QUESTION, stream=how == "chat()", **params)


def _differences(dialect: str, answer: str) -> set[str]:
    """Where a server's Responses answers say less than its chat completions (server facts,
    pinned by the tests below): what the comparison leaves out."""
    if answer == "reasoning" and dialect == "openai":
        return {"reasoning", "usage"}  # OpenAI's chat completions carry no reasoning
    return set()


@pytest.mark.parametrize("how", ["chat()", "chat(stream=False)", "stream()"])
@pytest.mark.parametrize("answer", list(ANSWERS))
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_same_answer_gives_an_equal_chat_result(
    dialect: str, answer: str, how: str
) -> None:
    """Text, reasoning, tool calls (ids, names, decoded arguments), finish reason, usage,
    model, server: equal over chat completions and the Responses API, but for the pinned
    differences of the server."""
    reply, params = ANSWERS[answer]
    chat = await _answer(dialect, "openai", reply, params, how=how)
    responses = await _answer(dialect, "responses", reply, params, how=how)
    left_out = _differences(dialect, answer) | {"timings", "response_id"}
    # Each API names its answers its own way; the id is the server's, whole.
    assert chat.response_id
    assert chat.response_id.startswith("chatcmpl")
    assert responses.response_id
    assert responses.response_id.startswith("resp_")
    if dialect == "llamacpp" and answer == "two tool calls":
        left_out |= {"message", "tool_calls"}  # its call ids are call_<id> (checked below)
        assert [call.id for call in responses.tool_calls] == ["call_c1", "call_c2"]
        expected = [(call.name, call.arguments) for call in chat.tool_calls]
        assert [(call.name, call.arguments) for call in responses.tool_calls] == expected
    assert responses.model_dump(exclude=left_out) == chat.model_dump(exclude=left_out)
    if answer == "two tool calls":
        assert responses.finish_reason == "tool_calls"
        assert [call.arguments for call in responses.tool_calls] == [c.arguments for c in CALLS]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("api", ["responses", "openai", "ollama"])
async def test_the_result_carries_the_answer_id_the_hooks_saw(api: str, stream: bool) -> None:
    """``ChatResult.response_id`` is the server's id for the answer, the one the
    ``RequestFinished`` record names (what ``previous_response_id`` takes over the Responses
    API); Ollama's native API gives none."""
    finished: list[Any] = []
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="Fine."))
        config = LLMConfig(
            endpoint=server.url,
            model=server.models[0],
            api=api,  # type: ignore[arg-type]
            hooks=[lambda record: finished.append(record)],
        )
        async with LLMClient(config) as client:
            result = await client.chat(QUESTION, stream=stream)
    [record] = [record for record in finished if type(record) is RequestFinished]
    assert result.response_id == record.response_id
    if api == "ollama":
        assert result.response_id is None
    else:
        prefix = "resp_" if api == "responses" else "chatcmpl-"
        assert result.response_id is not None
        assert result.response_id.startswith(prefix)


@pytest.mark.parametrize("how", ["chat()", "chat(stream=False)"])
@pytest.mark.parametrize("dialect", ["ollama", "llamacpp"])
async def test_a_cut_the_server_calls_completed_is_length(dialect: str, how: str) -> None:
    """Ollama and llama-server answer ``completed`` for an answer cut at
    ``max_output_tokens``: llmtap reads ``length`` from the output tokens reaching the
    request's limit (as chat completions say); one token fewer is ``stop``."""
    reply, params = ANSWERS["cut by length"]
    responses = await _answer(dialect, "responses", reply, params, how=how)
    assert (responses.finish_reason, responses.usage.completion_tokens) == ("length", 4)
    roomy = await _answer(dialect, "responses", reply, {"max_tokens": 5}, how=how)
    assert roomy.finish_reason == "stop"


async def test_openai_reasoning_arrives_as_a_summary() -> None:
    """OpenAI's Responses API sends the reasoning summary (its chat completions send none):
    llmtap reads it as the result's reasoning."""
    reply, params = ANSWERS["reasoning"]
    responses = await _answer("openai", "responses", reply, params, how="stream()")
    assert (responses.reasoning, responses.text) == ("Let me think about it.", "Fine.")


@pytest.mark.parametrize(
    ("dialect", "status", "says"),
    [("llamacpp", 400, "does not support 'previous_response_id'"), ("vllm", 404, "not found")],
)
async def test_previous_response_id_where_responses_are_not_kept(
    dialect: str, status: int, says: str
) -> None:
    """llama-server refuses ``previous_response_id`` (400) and vLLM, its store off, does not
    find it (404): the error carries the status and the server's words, after one attempt."""
    async with TestServer(dialect=dialect) as server:  # type: ignore[arg-type]
        config = LLMConfig(endpoint=server.url, model=server.models[0], api="responses")
        async with LLMClient(config) as client:
            with pytest.raises(LLMResponseError) as caught:
                await client.chat(QUESTION, previous_response_id="resp_123")
    assert caught.value.status_code == status
    assert says in (caught.value.server_message or "").lower() or says in str(caught.value)
    # ... and what to do: send the conversation; vLLM keeps responses only when told to.
    assert "send the whole conversation instead of previous_response_id" in str(caught.value)
    assert "VLLM_ENABLE_RESPONSES_API_STORE=1" in str(caught.value)
    assert len(server.responses_requests) == 1


async def test_a_server_without_the_responses_api_is_named_with_what_to_use() -> None:
    """A server with no ``/v1/responses`` (llama-cpp-python, an Ollama before 0.13.3) answers
    404: the error says the endpoint has no Responses API and names ``api='openai'``; an
    unknown model's 404 on the same route says nothing of the kind."""
    async with TestServer(dialect="ollama", version="0.12.0") as server:
        config = LLMConfig(endpoint=server.url, model=server.models[0], api="responses")
        async with LLMClient(config) as client:
            with pytest.raises(LLMResponseError) as caught:
                await client.chat(QUESTION)
    async with TestServer(dialect="ollama", accept_any_model=False) as server:
        config = LLMConfig(endpoint=server.url, model="nope", api="responses")
        async with LLMClient(config) as client:
            with pytest.raises(LLMResponseError) as unknown:
                await client.chat(QUESTION)
    assert unknown.value.status_code == 404
    assert caught.value.status_code == 404
    assert "has no Responses API" in str(caught.value)
    assert "api='openai'" in str(caught.value)
    assert "has no Responses API" not in str(unknown.value)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_error_after_output_is_interrupted_and_never_retried(dialect: str) -> None:
    """Each server's error after the 200 (OpenAI's error event and response.failed,
    llama-server's bare error line, Ollama's silent stop, vLLM's cut connection), after text
    reached the caller, raises LLMStreamInterrupted with that text; one request."""
    async with TestServer(dialect=dialect) as server:  # type: ignore[arg-type]
        server.script(Reply(text="one two three four five", error_after=6))
        config = LLMConfig(endpoint=server.url, model=server.models[0], api="responses")
        async with LLMClient(config) as client:
            seen: list[str] = []
            with no_retry_waits(), pytest.raises(LLMStreamInterrupted) as caught:
                async with client.stream(QUESTION) as stream:
                    async for piece in stream.text():
                        seen.append(piece)
    assert seen
    assert caught.value.partial_text == "".join(seen)
    assert len(server.responses_requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_failure_before_output_is_retried(dialect: str) -> None:
    """A 503, then a stream cut before any text: both retried; the third answer is whole and
    nothing is delivered twice."""
    async with TestServer(dialect=dialect) as server:  # type: ignore[arg-type]
        server.script(
            Reply(status=503),
            Reply(text="never seen", reset_after=1),
            Reply(text="At last."),
        )
        config = LLMConfig(endpoint=server.url, model=server.models[0], api="responses")
        async with LLMClient(config) as client:
            with no_retry_waits():
                async with client.stream(QUESTION) as stream:
                    text = "".join([piece async for piece in stream.text()])
    assert text == "At last."
    assert len(server.responses_requests) == 3
