# ruff: noqa: E501  (event tables read best one event a line)
"""The Responses API dialect's pure parts: requests built from llmtap's messages, and event
streams (split at every byte) decoded into the same chunks, failures and ends as the
servers' facts in WIRE-responses.md say.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtap import LLMStreamError, Message, ToolCall
from llmtap._wire.accumulate import Accumulator
from llmtap._wire.chunks import ResponsesChunks
from llmtap._wire.dialects import ErrorInfo
from llmtap._wire.responses import (
    ResponsesEvents,
    build_responses_payload,
    response_to_completion,
    responses_url,
)

TOOL = {
    "type": "function",
    "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}},
}


def _payload(messages: list[Any], **params: Any) -> dict[str, Any]:
    return build_responses_payload(
        model="m",
        messages=messages,
        tools=params.pop("tools", None),
        temperature=params.pop("temperature", None),
        max_tokens=params.pop("max_tokens_config", None),
        stream=True,
        params=params,
    )


def test_messages_become_instructions_and_input_items() -> None:
    """System messages first are the instructions; user, assistant (text and tool calls) and
    tool turns become message, function_call and function_call_output items; images are
    input_image parts."""
    call = ToolCall(id="call_1", name="f", arguments={"x": 1})
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 8
    payload = _payload(
        [
            Message.system("Be brief."),
            Message.user("Look", images=[png]),
            Message.assistant("Calling.", tool_calls=[call]),
            Message.tool("42", tool_call_id="call_1", name="f"),
            {"role": "user", "content": "Thanks"},
        ]
    )
    assert payload["instructions"] == "Be brief."
    image, *_ = (p for p in payload["input"][0]["content"] if p["type"] == "input_image")
    assert image["image_url"].startswith("data:image/png;base64,")
    assert payload["input"][0]["content"][0] == {"type": "input_text", "text": "Look"}
    assert payload["input"][1:] == [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"x":1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"type": "message", "role": "user", "content": "Thanks"},
    ]  # fmt: skip
    assert payload["stream"] is True
    assert "messages" not in payload


def test_chat_parameters_take_their_responses_names() -> None:
    """Tools flat, max_tokens as max_output_tokens, response_format as text.format,
    reasoning_effort as reasoning.effort, a named tool_choice flat; stream_options dropped;
    anything else passes through."""
    schema = {"name": "City", "schema": {"type": "object"}, "strict": True}
    payload = _payload(
        [Message.user("Hi")],
        tools=[TOOL],
        temperature=0,
        max_tokens=5,
        response_format={"type": "json_schema", "json_schema": schema},
        reasoning_effort="low",
        tool_choice={"type": "function", "function": {"name": "f"}},
        stream_options={"include_usage": True},
        seed=3,
        previous_response_id="resp_1",
    )
    assert payload["tools"] == [
        {"type": "function", "name": "f", "description": "F.", "parameters": {"type": "object"}}
    ]
    assert payload["max_output_tokens"] == 5
    assert payload["temperature"] == 0
    assert payload["text"] == {
        "format": {"type": "json_schema", "name": "City", "schema": {"type": "object"}, "strict": True}
    }  # fmt: skip
    assert payload["reasoning"] == {"effort": "low"}
    assert payload["tool_choice"] == {"type": "function", "name": "f"}
    assert "stream_options" not in payload
    assert (payload["seed"], payload["previous_response_id"]) == (3, "resp_1")


def test_the_url_sits_beside_chat_completions() -> None:
    """/v1/chat/completions → /v1/responses, under any prefix."""
    assert responses_url("http://h:1/v1/chat/completions") == "http://h:1/v1/responses"
    assert responses_url("http://h/openai/v1/chat/completions") == "http://h/openai/v1/responses"


# --- streams -------------------------------------------------------------------------------------


def _sse(events: list[dict[str, Any]], *, event_lines: bool = True) -> bytes:
    out = b""
    for event in events:
        head = f"event: {event['type']}\n".encode() if event_lines and "type" in event else b""
        out += head + b"data: " + orjson.dumps(event) + b"\n\n"
    return out


def _decode(body: bytes, cut_at: int | None = None) -> tuple[ResponsesChunks, Accumulator]:
    accumulator = Accumulator()

    class Sink:
        def take(self, chunk: dict[str, Any]) -> list[Any]:
            return accumulator.feed(chunk)

        def take_whole(self, body: dict[str, Any]) -> list[Any]:
            return accumulator.feed_completion(body)

    decoder = ResponsesChunks(1 << 20, "POST", "http://h/v1/responses", sink=Sink())
    pieces = [body] if cut_at is None else [body[:cut_at], body[cut_at:]]
    for piece in pieces:
        if piece:  # b"" would end the body
            decoder.feed(piece)
    decoder.feed(b"")
    return decoder, accumulator


#: A llama-server-shaped stream: no sequence_number, only item_id on deltas, no .done for
#: the reasoning text or the arguments, timings on the completed event.
LLAMA_SERVER = [
    {"type": "response.created", "response": {"id": "resp_x", "object": "response", "status": "in_progress"}},
    {"type": "response.output_item.added", "item": {"type": "reasoning", "id": "rs_1", "summary": []}},
    {"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "Think"},
    {"type": "response.output_item.added", "item": {"type": "message", "id": "msg_1", "content": []}},
    {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hi "},
    {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "there"},
    {"type": "response.output_item.added", "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": ""}},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"x":'},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "1}"},
    {"type": "response.output_item.done", "item": {"type": "reasoning", "id": "rs_1"}},
    {"type": "response.output_text.done", "item_id": "msg_1", "text": "Hi there"},
    {"type": "response.output_item.done", "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": '{"x":1}'}},
    {"type": "response.completed", "response": {"id": "resp_x", "model": "tiny", "status": "completed", "usage": {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10}}, "timings": {"predicted_per_second": 50.0, "prompt_ms": 2.0, "predicted_ms": 120.0}},
]  # fmt: skip


@given(st.integers(min_value=0, max_value=len(_sse(LLAMA_SERVER))))
def test_a_stream_split_anywhere_gives_the_same_answer(cut: int) -> None:
    """Reasoning, text and a tool call arrive once each (the .done events add nothing after
    their deltas); the end gives tool_calls, the usage and llama.cpp's timings; wherever the
    body is split."""
    decoder, accumulator = _decode(_sse(LLAMA_SERVER), cut)
    assert (decoder.done, decoder.failure, decoder.finish_reason) == (True, None, "tool_calls")
    result = accumulator.result()
    assert (result.text, result.reasoning) == ("Hi there", "Think")
    assert result.tool_calls == (ToolCall(id="call_1", name="f", arguments={"x": 1}),)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 6)
    assert accumulator.server_metrics["timings"]["predicted_per_second"] == 50.0


@pytest.mark.parametrize(("limit", "finish"), [(6, "length"), (7, "stop"), (None, "stop")])
def test_a_completed_answer_that_used_its_whole_limit_is_length(
    limit: int | None, finish: str
) -> None:
    """Ollama and llama-server say ``completed`` for an answer cut at ``max_output_tokens``:
    output tokens reaching the request's limit are ``length``, streamed or whole."""
    events = [
        {"type": "response.output_text.delta", "item_id": "m", "delta": "six tokens"},
        {"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 3, "output_tokens": 6, "total_tokens": 9}}},
    ]  # fmt: skip
    accumulator = Accumulator()
    decoder = ResponsesChunks(1 << 20, "POST", "u", output_limit=limit)
    for event in decoder.feed(_sse(events)) + decoder.feed(b""):
        chunk = ResponsesEvents(limit).take(event)
        assert chunk is None or isinstance(chunk, dict)
    assert decoder.finish_reason == finish
    whole = {
        "object": "response",
        "status": "completed",
        "output": [],
        "usage": events[1]["response"]["usage"],
    }  # type: ignore[index]
    accumulator.feed_completion(response_to_completion(whole, limit))
    assert accumulator.result().finish_reason == finish


def test_done_events_give_the_whole_text_when_no_delta_came() -> None:
    """A server that sends only .done events (or whole items) still gives the answer."""
    events = [
        {"type": "response.output_text.done", "item_id": "m", "text": "Whole"},
        {"type": "response.output_item.done", "item": {"type": "function_call", "id": "fc", "call_id": "c", "name": "g", "arguments": "{}"}},
        {"type": "response.reasoning_summary_text.done", "item_id": "r", "text": "Summary"},
        {"type": "response.completed", "response": {"status": "completed"}},
    ]  # fmt: skip
    _, accumulator = _decode(_sse(events))
    result = accumulator.result()
    assert (result.text, result.reasoning, result.finish_reason) == (
        "Whole",
        "Summary",
        "tool_calls",
    )
    assert result.tool_calls == (ToolCall(id="c", name="g", arguments={}),)


@pytest.mark.parametrize(
    "end",
    [
        {"type": "response.incomplete", "response": {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}},
        {"type": "response.completed", "response": {"status": "incomplete"}},
    ],
)  # fmt: skip
def test_an_incomplete_response_finishes_with_length(end: dict[str, Any]) -> None:
    """response.incomplete (vLLM 0.33, OpenAI), or completed with status incomplete (vLLM
    0.32), is finish_reason length."""
    events = [{"type": "response.output_text.delta", "item_id": "m", "delta": "cut"}, end]
    decoder, accumulator = _decode(_sse(events))
    assert (decoder.done, accumulator.result().finish_reason) == (True, "length")


@pytest.mark.parametrize(
    ("events", "event_lines", "message"),
    [
        ([{"type": "error", "code": "server_error", "message": "boom", "sequence_number": 3}], True, "boom"),
        ([{"type": "response.failed", "response": {"status": "failed", "error": {"code": "x", "message": "it failed"}}}], True, "it failed"),
        ([{"error": {"code": 500, "message": "llama boom", "type": "server_error"}}], False, "llama boom"),
    ],
)  # fmt: skip
def test_errors_after_the_200_are_failures(
    events: list[dict[str, Any]], event_lines: bool, message: str
) -> None:
    """An error event (OpenAI), response.failed (OpenAI), and a bare data line holding an
    error object (llama-server) each end the stream with that error, after what came
    before."""
    head = [{"type": "response.output_text.delta", "item_id": "m", "delta": "partial"}]
    decoder, accumulator = _decode(_sse(head) + _sse(events, event_lines=event_lines))
    assert isinstance(decoder.failure, ErrorInfo)
    assert decoder.failure.message == message
    assert accumulator.text == "partial"


@pytest.mark.parametrize("tail", [b"", b"data: [DONE]\n\n"], ids=["body ends", "[DONE] first"])
def test_a_stream_without_a_terminal_event_is_cut(tail: bytes) -> None:
    """Ollama and vLLM end a failed stream by stopping: no completed event is a cut, and so
    is a [DONE] before one."""
    events = [{"type": "response.output_text.delta", "item_id": "m", "delta": "par"}]
    decoder, _ = _decode(_sse(events) + tail)
    assert isinstance(decoder.failure, LLMStreamError)
    assert "before the answer was complete" in decoder.failure.message


def test_raw_events_come_as_the_server_sent_them() -> None:
    """Without a sink (stream_chat) every event is returned as sent, the text collected."""
    decoder = ResponsesChunks(1 << 20, "POST", "http://h/v1/responses", collect_text=True)
    items = decoder.feed(_sse(LLAMA_SERVER)) + decoder.feed(b"")
    assert items == LLAMA_SERVER
    assert (decoder.text, decoder.done, decoder.chunks) == ("Hi there", True, len(LLAMA_SERVER))


def test_a_whole_response_becomes_a_chat_completion() -> None:
    """Non-streaming: message text, reasoning (text, else summary), function calls, finish
    and usage, the same answer as the stream gives."""
    body = {
        "id": "resp_1", "object": "response", "model": "m", "status": "completed",
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "Hi there"}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"x":1}'},
        ],
        "usage": {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10,
                  "output_tokens_details": {"reasoning_tokens": 2}},
    }  # fmt: skip
    accumulator = Accumulator()
    accumulator.feed_completion(response_to_completion(body))
    result = accumulator.result()
    _, streamed = _decode(_sse(LLAMA_SERVER))
    whole = result.model_dump(exclude={"timings", "model"})
    assert whole == streamed.result().model_dump(exclude={"timings", "model"})
