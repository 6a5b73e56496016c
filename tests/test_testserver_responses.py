"""The loopback test server's Responses API (``POST /v1/responses``), checked over HTTP.

Each test pins down one behaviour of one server's Responses shape as `llmtap.testing` imitates
it (the facts are in ``shared/WIRE-responses.md``): the events of a stream and their fields,
the whole answer, the errors before and after the 200, and the faults. aiohttp reads the raw
bytes; openai-python, an independent parser, checks that the shapes are the ones its types
describe (llmtap's own client does not speak this API yet).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from llmtap.testing import Dialect, RecordedRequest, Reply, TestServer, ToolCallSpec, echo_reply

DIALECTS: list[Dialect] = ["openai", "ollama", "llamacpp", "vllm"]
NUMBERED: list[Dialect] = ["openai", "ollama", "vllm"]  # events carry sequence_number

CREATED = ["response.created", "response.in_progress"]
MESSAGE_OPEN = ["response.output_item.added", "response.content_part.added"]
MESSAGE_DONE = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
TWO_DELTAS = ["response.output_text.delta"] * 2
PLAIN_TEXT = [*CREATED, *MESSAGE_OPEN, *TWO_DELTAS, *MESSAGE_DONE, "response.completed"]

#: Reasoning "Think hard" then text "Hello there", event by event.
REASONING_THEN_TEXT: dict[Dialect, list[str]] = {
    "openai": [
        *CREATED,
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        *MESSAGE_OPEN,
        *TWO_DELTAS,
        *MESSAGE_DONE,
        "response.completed",
    ],
    "ollama": [
        *CREATED,
        "response.output_item.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.output_item.done",
        *MESSAGE_OPEN,
        *TWO_DELTAS,
        *MESSAGE_DONE,
        "response.completed",
    ],
    "llamacpp": [
        *CREATED,
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        *MESSAGE_OPEN,
        *TWO_DELTAS,
        "response.output_item.done",  # the reasoning item's, with the others at the end
        *MESSAGE_DONE,
        "response.completed",
    ],
    "vllm": [
        *CREATED,
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        *MESSAGE_OPEN,
        *TWO_DELTAS,
        *MESSAGE_DONE,
        "response.completed",
    ],
}

ADDED = "response.output_item.added"
ARGS_DELTA = "response.function_call_arguments.delta"
ARGS_DONE = "response.function_call_arguments.done"
ITEM_DONE = "response.output_item.done"
#: Two tool calls with no text, arguments in two fragments where the server fragments them.
COMPLETED = "response.completed"
TWO_CALLS: dict[Dialect, list[str]] = {
    "openai": [*CREATED, *[ADDED, ARGS_DELTA, ARGS_DELTA, ARGS_DONE, ITEM_DONE] * 2, COMPLETED],
    "ollama": [*CREATED, *[ADDED, ARGS_DELTA, ARGS_DONE, ITEM_DONE] * 2, COMPLETED],
    "llamacpp": [*CREATED, *[ADDED, ARGS_DELTA, ARGS_DELTA] * 2, ITEM_DONE, ITEM_DONE, COMPLETED],
    "vllm": [*CREATED, *[ADDED, ARGS_DELTA, ARGS_DELTA, ARGS_DONE, ITEM_DONE] * 2, COMPLETED],
}
CALL_ID: dict[Dialect, str] = {
    "openai": r"call_[A-Za-z0-9]{24}",
    "ollama": r"call_[a-z0-9]{8}",
    "llamacpp": r"call_[A-Za-z0-9]{32}",
    "vllm": r"chatcmpl-tool-[0-9a-f]{16}",
}
RESPONSE_ID: dict[Dialect, str] = {
    "openai": r"resp_[0-9a-f]{48}",
    "ollama": r"resp_[0-9]{1,6}",
    "llamacpp": r"resp_[A-Za-z0-9]{32}",
    "vllm": r"resp_[0-9a-f]{16}",
}
MESSAGE_ID: dict[Dialect, str] = {
    "openai": r"msg_[0-9a-f]{48}",
    "ollama": r"msg_[0-9]{1,6}",
    "llamacpp": r"msg_[A-Za-z0-9]{32}",
    "vllm": r"msg_[0-9a-f]{16}",
}
TERMINAL_WHEN_CUT: dict[Dialect, tuple[str, str]] = {
    "openai": ("response.incomplete", "incomplete"),
    "ollama": ("response.completed", "completed"),  # Ollama never says so
    "llamacpp": ("response.completed", "completed"),  # nor does llama-server
    "vllm": ("response.incomplete", "incomplete"),
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def sdk(server: TestServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def body(*, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", "stream": stream} | extra


def parse_sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """The events of an SSE body: ``(event line or None, parsed data)``; comments skipped."""
    events: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        name: str | None = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
    return events


def data_of(raw: bytes) -> list[dict[str, Any]]:
    return [data for _, data in parse_sse(raw)]


def types_of(raw: bytes) -> list[str]:
    return [data["type"] for data in data_of(raw)]


async def post(
    session: aiohttp.ClientSession, server: TestServer, payload: Any, path: str = "/v1/responses"
) -> tuple[int, str, bytes]:
    async with session.post(server.url + path, json=payload) as response:
        return response.status, response.headers["Content-Type"], await response.read()


async def read_until_error(response: aiohttp.ClientResponse) -> tuple[bytes, Exception | None]:
    """Read the body until it ends; return what arrived and the error that ended it, if any."""
    data = bytearray()
    try:
        async for piece in response.content.iter_any():
            data += piece
    except aiohttp.ClientPayloadError as exc:
        return bytes(data), exc
    return bytes(data), None


async def stream_raw(
    session: aiohttp.ClientSession, server: TestServer, payload: Any | None = None
) -> tuple[bytes, Exception | None]:
    async with session.post(server.url + "/v1/responses", json=payload or body()) as response:
        assert response.status == 200
        return await read_until_error(response)


def two_calls(**extra: Any) -> Reply:
    return Reply(
        tool_calls=[
            ToolCallSpec("get_weather", {"city": "Paris"}),
            ToolCallSpec("get_time", {"zone": "CET"}),
        ],
        tool_fragments=2,
        **extra,
    )


def completed_response(raw: bytes) -> dict[str, Any]:
    last = data_of(raw)[-1]
    assert last["type"] in ("response.completed", "response.incomplete")
    response: dict[str, Any] = last["response"]
    return response


# -- plain text ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_plain_text_is_the_nine_event_sequence(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """Text streams as created, in_progress, the message's added events, one delta per
    piece, its three done events and completed, each framed with its ``event:`` line and no
    ``[DONE]``."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there"))
        status, content_type, raw = await post(session, server, body())
    assert status == 200
    assert content_type.startswith("text/event-stream")
    assert types_of(raw) == PLAIN_TEXT
    assert all(name == data["type"] for name, data in parse_sse(raw))
    assert b"[DONE]" not in raw
    deltas = [d["delta"] for d in data_of(raw) if d["type"] == "response.output_text.delta"]
    assert deltas == ["Hello", " there"]
    done = [d for d in data_of(raw) if d["type"] == "response.output_text.done"]
    assert done[0]["text"] == "Hello there"
    assert completed_response(raw)["status"] == "completed"


@pytest.mark.parametrize("dialect", NUMBERED)
async def test_events_are_numbered_from_zero(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """OpenAI, Ollama and vLLM number every event with ``sequence_number`` from 0."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there"))
        _, _, raw = await post(session, server, body())
    assert [d["sequence_number"] for d in data_of(raw)] == list(range(len(PLAIN_TEXT)))


async def test_llamacpp_events_have_no_sequence_number_and_deltas_only_an_item_id(
    session: aiohttp.ClientSession,
) -> None:
    """llama-server numbers nothing, its deltas carry only ``item_id`` (no indexes), and its
    created and in_progress responses hold only id, object and status."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hello there"))
        _, _, raw = await post(session, server, body())
    events = data_of(raw)
    assert all("sequence_number" not in e for e in events)
    delta = events[4]
    assert list(delta) == ["type", "item_id", "delta"]
    assert re.fullmatch(MESSAGE_ID["llamacpp"], delta["item_id"])
    assert list(events[0]["response"]) == ["id", "object", "status"]
    assert events[0]["response"]["status"] == "in_progress"


@pytest.mark.parametrize("dialect", NUMBERED)
async def test_deltas_carry_output_and_content_index(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """Where the server numbers its events, a text delta also says where it goes."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there"))
        _, _, raw = await post(session, server, body())
    delta = data_of(raw)[4]
    assert (delta["output_index"], delta["content_index"]) == (0, 0)
    assert re.fullmatch(MESSAGE_ID[dialect], delta["item_id"])


async def test_ollama_sorts_every_key(session: aiohttp.ClientSession) -> None:
    """Ollama's events are Go maps, so their keys come out sorted at every level."""

    def sorted_everywhere(value: Any) -> bool:
        if isinstance(value, dict):
            return list(value) == sorted(value) and all(map(sorted_everywhere, value.values()))
        if isinstance(value, list):
            return all(map(sorted_everywhere, value))
        return True

    async with TestServer("ollama") as server:
        server.script(Reply(text="Hello there", reasoning="Hmm"))
        _, _, raw = await post(session, server, body(instructions="Be brief"))
    events = data_of(raw)
    assert all(sorted_everywhere(e) for e in events)
    assert events[0]["response"]["instructions"] == "Be brief"


async def test_ids_per_server(session: aiohttp.ClientSession) -> None:
    """Each server makes its response and message ids its own way."""
    for dialect in DIALECTS:
        async with TestServer(dialect) as server:
            server.script(Reply(text="Hi"))
            _, _, raw = await post(session, server, body())
        response = completed_response(raw)
        assert re.fullmatch(RESPONSE_ID[dialect], response["id"]), dialect
        assert re.fullmatch(MESSAGE_ID[dialect], response["output"][0]["id"]), dialect


# -- reasoning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_reasoning_events_per_server(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """Reasoning comes first, as a reasoning summary (OpenAI with its parts, Ollama without)
    or as reasoning text (vLLM in a content part; llama-server with no done event for the
    text and the item's done event at the end)."""
    async with TestServer(dialect) as server:
        server.script(Reply(reasoning="Think hard", text="Hello there"))
        _, _, raw = await post(session, server, body())
    assert types_of(raw) == REASONING_THEN_TEXT[dialect]
    deltas = [d["delta"] for d in data_of(raw) if "reasoning" in d["type"] and "delta" in d]
    assert deltas == ["Think", " hard"]
    reasoning = completed_response(raw)["output"][0]
    assert reasoning["type"] == "reasoning"
    if dialect in ("openai", "ollama"):
        assert reasoning["summary"] == [{"type": "summary_text", "text": "Think hard"}]
    else:
        assert reasoning["summary"] == []
        assert reasoning["content"] == [{"text": "Think hard", "type": "reasoning_text"}]
    assert completed_response(raw)["output"][1]["type"] == "message"


async def test_ollama_reasoning_is_replayable_plain_text(session: aiohttp.ClientSession) -> None:
    """Ollama's reasoning item carries the thinking as ``encrypted_content``, in plain text."""
    async with TestServer("ollama") as server:
        server.script(Reply(reasoning="Think hard", text="Hi"))
        _, _, raw = await post(session, server, body())
    assert completed_response(raw)["output"][0]["encrypted_content"] == "Think hard"


# -- tool calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_two_tool_calls_per_server(session: aiohttp.ClientSession, dialect: Dialect) -> None:
    """Each call is an item added with empty arguments, argument deltas (Ollama: the whole
    string in one), then its done events (llama-server: no arguments done event, and the
    item's done event at the end)."""
    async with TestServer(dialect) as server:
        server.script(two_calls())
        _, _, raw = await post(session, server, body())
    events = data_of(raw)
    assert [e["type"] for e in events] == TWO_CALLS[dialect]
    added = [e["item"] for e in events if e["type"] == ADDED]
    assert [(a["type"], a["name"], a["arguments"], a["status"]) for a in added] == [
        ("function_call", "get_weather", "", "in_progress"),
        ("function_call", "get_time", "", "in_progress"),
    ]
    arguments: dict[str, str] = {}
    for event in events:
        if event["type"] == ARGS_DELTA:
            arguments[event["item_id"]] = arguments.get(event["item_id"], "") + event["delta"]
    assert list(arguments.values()) == ['{"city":"Paris"}', '{"zone":"CET"}']
    assert list(arguments) == [a["id"] for a in added]
    output = completed_response(raw)["output"]
    assert [(o["name"], o["arguments"], o["status"]) for o in output] == [
        ("get_weather", '{"city":"Paris"}', "completed"),
        ("get_time", '{"zone":"CET"}', "completed"),
    ]
    assert all(re.fullmatch(CALL_ID[dialect], o["call_id"]) for o in output)


async def test_arguments_done_names_the_function_except_on_ollama(
    session: aiohttp.ClientSession,
) -> None:
    """``function_call_arguments.done`` names the function on OpenAI and vLLM, not on
    Ollama; llama-server sends none."""
    names: dict[Dialect, list[str | None]] = {}
    for dialect in DIALECTS:
        async with TestServer(dialect) as server:
            server.script(two_calls())
            _, _, raw = await post(session, server, body())
        names[dialect] = [e.get("name") for e in data_of(raw) if e["type"] == ARGS_DONE]
    assert names == {
        "openai": ["get_weather", "get_time"],
        "ollama": [None, None],
        "llamacpp": [],
        "vllm": ["get_weather", "get_time"],
    }


async def test_item_ids_of_calls_per_server(session: aiohttp.ClientSession) -> None:
    """A call's item id: llama-server ``fc_`` plus the call's own id (its call id is
    ``call_`` plus the same), Ollama ``fc_<n>_0`` in a stream and ``fc_<response id>_<i>``
    in a whole answer."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(tool_calls=[ToolCallSpec("f", {}, id="abc")]))
        _, _, raw = await post(session, server, body())
    assert completed_response(raw)["output"][0] | {"arguments": "{}"} == {
        "id": "fc_abc",
        "type": "function_call",
        "status": "completed",
        "arguments": "{}",
        "call_id": "call_abc",
        "name": "f",
    }
    async with TestServer("ollama") as server:
        server.script(two_calls(), two_calls())
        _, _, raw = await post(session, server, body())
        _, _, whole = await post(session, server, body(stream=False))
    streamed = [o["id"] for o in completed_response(raw)["output"]]
    assert all(re.fullmatch(r"fc_[0-9]{1,6}_0", item_id) for item_id in streamed)
    answer = orjson.loads(whole)
    assert [o["id"] for o in answer["output"]] == [f"fc_{answer['id']}_0", f"fc_{answer['id']}_1"]


async def test_ollama_text_then_tools_leaves_the_message_open(
    session: aiohttp.ClientSession,
) -> None:
    """On Ollama, text followed by tool calls: the message gets no done events, the first
    call takes the message's output_index, and the final output lists the message last."""
    async with TestServer("ollama") as server:
        server.script(two_calls(text="Checking now"))
        _, _, raw = await post(session, server, body())
    events = data_of(raw)
    assert [e["type"] for e in events] == [
        *CREATED,
        *MESSAGE_OPEN,
        *TWO_DELTAS,
        *[ADDED, ARGS_DELTA, ARGS_DONE, ITEM_DONE] * 2,
        "response.completed",
    ]
    indexes = [e["output_index"] for e in events if e["type"] == ADDED]
    assert indexes == [0, 0, 1]
    output = completed_response(raw)["output"]
    assert [o["type"] for o in output] == ["function_call", "function_call", "message"]
    assert output[2]["content"][0]["text"] == "Checking now"


async def test_ollama_whole_answer_drops_the_message_when_there_are_tool_calls(
    session: aiohttp.ClientSession,
) -> None:
    """Ollama's whole answer has no message item when the model called tools."""
    async with TestServer("ollama") as server:
        server.script(two_calls(text="Let me check", reasoning="Hmm"))
        _, _, raw = await post(session, server, body(stream=False))
    answer = orjson.loads(raw)
    assert [o["type"] for o in answer["output"]] == ["reasoning", "function_call", "function_call"]
    assert answer["output"][0]["id"] == f"rs_{answer['id']}"


# -- how an answer ends ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_cut_by_length(session: aiohttp.ClientSession, dialect: Dialect) -> None:
    """``finish_reason="length"``: vLLM and OpenAI end with ``response.incomplete`` (reason
    max_output_tokens) and an incomplete message; Ollama and llama-server say completed."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there", finish_reason="length"))
        _, _, raw = await post(session, server, body())
    terminal, status = TERMINAL_WHEN_CUT[dialect]
    events = data_of(raw)
    assert events[-1]["type"] == terminal
    response = events[-1]["response"]
    assert response["status"] == status
    assert response["output"][0]["status"] == status
    message_done = [e for e in events if e["type"] == ITEM_DONE][-1]["item"]
    assert message_done["status"] == status
    expected = {"reason": "max_output_tokens"} if status == "incomplete" else None
    assert response.get("incomplete_details") == expected


@pytest.mark.parametrize("dialect", ["openai", "vllm"])
async def test_cut_by_length_whole_answer(session: aiohttp.ClientSession, dialect: Dialect) -> None:
    """A whole answer cut by length is ``incomplete`` on vLLM and OpenAI."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there", finish_reason="length"))
        _, _, raw = await post(session, server, body(stream=False))
    answer = orjson.loads(raw)
    assert (answer["status"], answer["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert answer["output"][0]["status"] == "incomplete"


async def test_vllm_marks_only_the_last_item_incomplete(session: aiohttp.ClientSession) -> None:
    """vLLM gives the cut status to the item the cut stopped, the last one."""
    async with TestServer("vllm") as server:
        server.script(two_calls(text="Let me check", finish_reason="length"))
        _, _, raw = await post(session, server, body())
    output = completed_response(raw)["output"]
    assert [o["status"] for o in output] == ["completed", "completed", "incomplete"]


async def test_finish_reason_none_sends_no_terminal_event(session: aiohttp.ClientSession) -> None:
    """``finish_reason=None`` ends the stream without its terminal event."""
    async with TestServer("openai") as server:
        server.script(Reply(text="Hello there", finish_reason=None))
        _, _, raw = await post(session, server, body())
    assert types_of(raw) == PLAIN_TEXT[:-1]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_usage_per_server(session: aiohttp.ClientSession, dialect: Dialect) -> None:
    """The completed response carries the usage in the server's own detail."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there", reasoning="Hmm", usage=(7, 5)))
        _, _, raw = await post(session, server, body())
    usage = completed_response(raw)["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 5, 12)
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    reasoning_tokens = usage.get("output_tokens_details", {}).get("reasoning_tokens")
    assert reasoning_tokens == {"openai": 1, "ollama": 0, "llamacpp": None, "vllm": 1}[dialect]


async def test_llamacpp_timings_ride_on_the_completed_event(
    session: aiohttp.ClientSession,
) -> None:
    """llama-server puts its timings on the completed event, beside the response."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hello there", usage=(7, 2)))
        _, _, raw = await post(session, server, body())
    last = data_of(raw)[-1]
    assert list(last) == ["type", "response", "timings"]
    assert (last["timings"]["prompt_n"], last["timings"]["predicted_n"]) == (7, 2)
    assert "output_tokens_details" not in last["response"]["usage"]


# -- whole answers --------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_whole_answer(session: aiohttp.ClientSession, dialect: Dialect) -> None:
    """Without ``stream`` the answer is one response object: reasoning, message and
    function call items (arguments as a JSON string), status and usage."""
    async with TestServer(dialect) as server:
        server.script(two_calls(text="Let me check", reasoning="Hmm", usage=(7, 5)))
        status, content_type, raw = await post(session, server, body(stream=False))
    assert status == 200
    assert content_type.startswith("application/json")
    answer = orjson.loads(raw)
    assert (answer["object"], answer["status"]) == ("response", "completed")
    kinds = [o["type"] for o in answer["output"]]
    if dialect == "ollama":
        assert kinds == ["reasoning", "function_call", "function_call"]
    else:
        assert kinds == ["reasoning", "message", "function_call", "function_call"]
        assert answer["output"][1]["content"][0] | {"annotations": []} == {
            "type": "output_text",
            "annotations": [],
            "logprobs": answer["output"][1]["content"][0]["logprobs"],
            "text": "Let me check",
        }
    calls = [o for o in answer["output"] if o["type"] == "function_call"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Paris"}, {"zone": "CET"}]
    assert answer["usage"]["total_tokens"] == 12


async def test_llamacpp_whole_answer_holds_only_its_own_fields(
    session: aiohttp.ClientSession,
) -> None:
    """llama-server echoes nothing of the request in its whole answer."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hi"))
        _, content_type, raw = await post(session, server, body(stream=False, temperature=0.5))
    assert content_type == "application/json; charset=utf-8"
    assert list(orjson.loads(raw)) == [
        "completed_at",
        "created_at",
        "id",
        "model",
        "object",
        "output",
        "status",
        "usage",
    ]


async def test_json_instead_of_stream(session: aiohttp.ClientSession) -> None:
    """``json_instead_of_stream`` answers a streaming request with the whole object."""
    async with TestServer("vllm") as server:
        server.script(Reply(text="Hi", json_instead_of_stream=True))
        _, content_type, raw = await post(session, server, body())
    assert content_type == "application/json"
    assert orjson.loads(raw)["output"][0]["content"][0]["text"] == "Hi"


# -- errors ---------------------------------------------------------------------------------


async def test_status_errors_in_each_servers_envelope(session: aiohttp.ClientSession) -> None:
    """A scripted status answers with that server's error body, before any event."""
    bodies: dict[Dialect, Any] = {}
    for dialect in DIALECTS:
        async with TestServer(dialect) as server:
            server.script(Reply(status=503, error_message="busy", headers={"Retry-After": "1"}))
            async with session.post(server.url + "/v1/responses", json=body()) as response:
                assert (response.status, response.headers["Retry-After"]) == (503, "1")
                bodies[dialect] = await response.json()
    assert bodies == {
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


async def test_openai_error_after_is_an_error_event_then_failed(
    session: aiohttp.ClientSession,
) -> None:
    """OpenAI: an ``error`` event, numbered after the last event sent, then
    ``response.failed`` whose response holds the error; then the body ends cleanly."""
    async with TestServer("openai") as server:
        server.script(Reply(text="Hello there", error_after=5, stream_error_message="boom"))
        raw, error = await stream_raw(session, server)
    assert error is None
    events = data_of(raw)
    assert [e["type"] for e in events] == [*PLAIN_TEXT[:5], "error", "response.failed"]
    assert events[5] == {
        "type": "error",
        "sequence_number": 5,
        "code": "server_error",
        "message": "boom",
        "param": None,
    }
    failed = events[6]
    assert failed["sequence_number"] == 6
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "boom"}


async def test_ollama_error_after_just_stops(session: aiohttp.ClientSession) -> None:
    """Ollama: the stream stops where the error happened, with no event and no terminal
    event, and the body ends cleanly."""
    async with TestServer("ollama") as server:
        server.script(Reply(text="Hello there", error_after=5))
        raw, error = await stream_raw(session, server)
    assert error is None
    assert types_of(raw) == PLAIN_TEXT[:5]


async def test_llamacpp_error_after_is_a_data_line_without_event(
    session: aiohttp.ClientSession,
) -> None:
    """llama-server: ``data: {"error": ...}`` with no ``event:`` line, then a clean end."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hello there", error_after=5, stream_error_message="boom"))
        raw, error = await stream_raw(session, server)
    assert error is None
    assert raw.endswith(
        b'\n\ndata: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n'
    )
    assert parse_sse(raw)[-1][0] is None
    assert types_of(raw[: raw.rindex(b"data: {")]) == PLAIN_TEXT[:5]


async def test_vllm_error_after_cuts_the_connection(session: aiohttp.ClientSession) -> None:
    """vLLM: no event at all; the connection is dropped with the body unfinished."""
    async with TestServer("vllm") as server:
        server.script(Reply(text="Hello there", error_after=5))
        raw, error = await stream_raw(session, server)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert types_of(raw) == PLAIN_TEXT[:5]


async def test_stream_error_style_overrides_the_servers_way(
    session: aiohttp.ClientSession,
) -> None:
    """``stream_error_style="data"`` on vLLM writes the data line and ends cleanly;
    ``"event"`` on llama-server writes OpenAI's error and failed events."""
    async with TestServer("vllm") as server:
        server.script(Reply(text="Hi", error_after=3, stream_error_style="data"))
        raw, error = await stream_raw(session, server)
    assert error is None
    assert data_of(raw)[-1]["error"]["type"] == "InternalServerError"
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hi", error_after=3, stream_error_style="event"))
        raw, error = await stream_raw(session, server)
    assert types_of(raw)[-2:] == ["error", "response.failed"]


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_reset_after_breaks_the_body_after_n_events(
    session: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """``reset_after=N`` counts events: N whole events arrive, then the connection drops."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there", reset_after=5))
        raw, error = await stream_raw(session, server)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert types_of(raw) == PLAIN_TEXT[:5]
    assert raw.endswith(b"\n\n")


async def test_truncate_after_ends_cleanly_without_a_terminal_event(
    session: aiohttp.ClientSession,
) -> None:
    """``truncate_after`` ends the body cleanly after N events."""
    async with TestServer("vllm") as server:
        server.script(Reply(text="Hello there", truncate_after=6))
        raw, error = await stream_raw(session, server)
    assert error is None
    assert types_of(raw) == PLAIN_TEXT[:6]


async def test_cut_mid_event(session: aiohttp.ClientSession) -> None:
    """``cut_mid_chunk_after`` sends half of the next event, then drops the connection."""
    async with TestServer("openai") as server:
        server.script(Reply(text="Hello there", cut_mid_chunk_after=4))
        raw, error = await stream_raw(session, server)
    assert isinstance(error, aiohttp.ClientPayloadError)
    whole, _, half = raw.rpartition(b"\n\n")
    assert types_of(whole + b"\n\n") == PLAIN_TEXT[:4]
    assert half.startswith(b"event: response.output_text.delta\ndata: {")


async def test_reset_before_headers(session: aiohttp.ClientSession) -> None:
    """``reset_before_headers`` closes the connection with no response at all."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hi", reset_before_headers=True))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(session, server, body())


async def test_malformed_and_invalid_utf8(session: aiohttp.ClientSession) -> None:
    """``malformed_after`` writes an event of broken JSON; ``invalid_utf8_after`` a delta
    event, numbered in turn, whose text holds the bytes ``ff fe``."""
    async with TestServer("ollama") as server:
        server.script(
            Reply(text="Hello there", malformed_after=3),
            Reply(text="Hello there", invalid_utf8_after=5),
        )
        malformed, _ = await stream_raw(session, server)
        invalid, _ = await stream_raw(session, server)
    assert malformed.endswith(
        b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", '
        b'"delta": "oops"\n\n'
    )
    last = invalid[invalid.rindex(b"event: ") :]
    assert b"\xff\xfe" in last
    assert b'"sequence_number":5' in last


async def test_pacing_counts_events(session: aiohttp.ClientSession) -> None:
    """``delay_between`` waits before every event but the first; ``stall_after`` once."""
    loop = asyncio.get_running_loop()
    async with TestServer("vllm") as server:
        server.script(Reply(text="a b", delay_between=0.02, stall_after=(2, 0.2)))
        started = loop.time()
        raw, _ = await stream_raw(session, server)
        elapsed = loop.time() - started
    assert types_of(raw) == PLAIN_TEXT
    assert elapsed >= 0.2 + 0.02 * (len(PLAIN_TEXT) - 1)


async def test_pings_use_the_servers_comment(session: aiohttp.ClientSession) -> None:
    """``pings`` writes the dialect's SSE comment before each event (llama-server ``:``)."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hi", pings=1))
        raw, _ = await stream_raw(session, server)
    assert raw.startswith(b":\n\nevent: response.created\n")


# -- requests the servers refuse, and the route -------------------------------------------------


async def test_previous_response_id(session: aiohttp.ClientSession) -> None:
    """llama-server refuses ``previous_response_id`` with 400, vLLM with 404 (its store is
    off); Ollama and OpenAI answer. A refused request uses no scripted reply."""
    answers: dict[Dialect, tuple[int, Any]] = {}
    for dialect in DIALECTS:
        async with TestServer(dialect) as server:
            server.script(Reply(text="Hi"))
            status, _, raw = await post(
                session, server, body(stream=False, previous_response_id="resp_1")
            )
            answers[dialect] = (status, orjson.loads(raw).get("error"))
            if status != 200:
                assert server.pending_replies == 1
    assert answers["ollama"] == (200, None)
    assert answers["openai"] == (200, None)
    assert answers["llamacpp"] == (
        400,
        {
            "code": 400,
            "message": "llama.cpp does not support 'previous_response_id'.",
            "type": "invalid_request_error",
        },
    )
    assert answers["vllm"] == (
        404,
        {
            "message": "Response with id 'resp_1' not found.",
            "type": "invalid_request_error",
            "param": "response_id",
            "code": 404,
        },
    )


async def test_llamacpp_refuses_an_assistant_item_without_type(
    session: aiohttp.ClientSession,
) -> None:
    """llama-server cannot tell what an assistant item without ``"type": "message"`` is."""
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    async with TestServer("llamacpp") as server:
        status, _, raw = await post(session, server, body(input=history))
        history[1]["type"] = "message"
        accepted, _, _ = await post(session, server, body(input=history, stream=False))
    assert (status, orjson.loads(raw)["error"]["message"]) == (
        400,
        "Cannot determine type of 'item'",
    )
    assert accepted == 200


async def test_llamacpp_answers_on_the_responses_alias(session: aiohttp.ClientSession) -> None:
    """llama-server also serves the Responses API on ``/responses``."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hi"))
        status, _, raw = await post(session, server, body(stream=False), path="/responses")
    assert status == 200
    assert orjson.loads(raw)["output"][0]["content"][0]["text"] == "Hi"


async def test_responses_route_only_where_the_server_has_it(
    session: aiohttp.ClientSession,
) -> None:
    """Only llama-server has the ``/responses`` alias."""
    async with TestServer("vllm") as server:
        status, _, _ = await post(session, server, body(), path="/responses")
    assert status == 404


async def test_unknown_model_is_refused_as_in_chat(session: aiohttp.ClientSession) -> None:
    """The model check is the chat one: vLLM says 404 for a model it does not serve."""
    async with TestServer("vllm", models=["served"]) as server:
        status, _, raw = await post(session, server, body(model="other"))
    assert (status, orjson.loads(raw)["error"]["type"]) == (404, "NotFoundError")


async def test_requests_are_recorded_as_chat_and_as_responses(
    session: aiohttp.ClientSession,
) -> None:
    """A Responses request counts among ``chat_requests`` (it takes a scripted reply) and
    is the only kind in ``responses_requests``."""
    async with TestServer("ollama") as server:
        await post(session, server, body(stream=False))
        await post(session, server, {"model": "m", "messages": []}, path="/v1/chat/completions")
        assert [r.path for r in server.chat_requests] == ["/v1/responses", "/v1/chat/completions"]
        assert [r.path for r in server.responses_requests] == ["/v1/responses"]
        assert server.responses_requests[0].json["input"] == "hi"


async def test_echo_reads_the_last_user_input() -> None:
    """With no scripted reply, the server echoes the last user input of a Responses
    request: a string ``input``, or the last user message item's text."""

    def echo(payload: Any) -> str:
        record = RecordedRequest("POST", "/v1/responses", {}, {}, orjson.dumps(payload))
        return echo_reply(record).text

    assert echo({"input": "hi"}) == "echo: hi"
    items = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "type": "message", "content": "answer"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "second"}, {"type": "input_image"}],
        },
        {"type": "function_call_output", "call_id": "c", "output": "42"},
    ]
    assert echo({"input": items}) == "echo: second"
    assert echo({"input": [{"role": "user", "content": "plain"}]}) == "echo: plain"


async def test_unscripted_request_is_echoed(session: aiohttp.ClientSession) -> None:
    """The echo goes out in the server's Responses shape."""
    async with TestServer("openai") as server:
        _, _, raw = await post(session, server, body(input="marco"))
    assert completed_response(raw)["output"][0]["content"][0]["text"] == "echo: marco"


# -- openai-python reads every shape ------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_openai_sdk_parses_the_whole_answer(dialect: Dialect) -> None:
    """openai-python reads each server's whole answer: text, function calls, usage."""
    async with TestServer(dialect) as server:
        server.script(two_calls(text="Let me check", reasoning="Hmm", usage=(7, 5)))
        server.script(Reply(text="Hello there", usage=(3, 2)))
        async with sdk(server) as client:
            with_calls = await client.responses.create(model="m", input="hi")
            plain = await client.responses.create(model="m", input="hi")
    calls = [o for o in with_calls.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "CET"}),
    ]
    assert with_calls.output_text == ("" if dialect == "ollama" else "Let me check")
    assert plain.output_text == "Hello there"
    assert plain.status == "completed"
    assert plain.usage is not None
    assert (plain.usage.input_tokens, plain.usage.output_tokens) == (3, 2)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_openai_sdk_types_every_streamed_event(dialect: Dialect) -> None:
    """``responses.create(stream=True)`` gives each event as the SDK class of its type
    (no event falls back to an untyped object)."""
    async with TestServer(dialect) as server:
        server.script(two_calls(text="Let me check", reasoning="Hmm"))
        async with sdk(server) as client:
            stream = await client.responses.create(model="m", input="hi", stream=True)
            events = [event async for event in stream]
    assert all(type(event).__name__.startswith("Response") for event in events)
    assert [event.type for event in events][:2] == CREATED
    assert events[-1].type == "response.completed"
    final = events[-1].response  # type: ignore[union-attr]
    assert [o.type for o in final.output][-2:] == (
        ["function_call", "message"] if dialect == "ollama" else ["function_call"] * 2
    )


@pytest.mark.parametrize("dialect", ["openai", "ollama", "vllm"])
async def test_openai_sdk_stream_helper_accumulates_text_and_reasoning(dialect: Dialect) -> None:
    """``responses.stream()``, which indexes items by output_index, rebuilds the answer."""
    async with TestServer(dialect) as server:
        server.script(Reply(text="Hello there", reasoning="Think hard"))
        async with sdk(server) as client, client.responses.stream(model="m", input="hi") as stream:
            final = await stream.get_final_response()
    assert final.output_text == "Hello there"
    assert [o.type for o in final.output] == ["reasoning", "message"]


async def test_openai_sdk_stream_helper_fails_on_what_the_real_servers_send() -> None:
    """The SDK's ``responses.stream()`` cannot follow llama-server's deltas (no
    output_index: TypeError) nor Ollama's text then tool calls (two items at one
    output_index): the imitation fails where the real servers do."""
    async with TestServer("llamacpp") as server:
        server.script(Reply(text="Hi"))
        with pytest.raises(TypeError):
            async with sdk(server) as client:
                async with client.responses.stream(model="m", input="hi") as stream:
                    await stream.get_final_response()
    async with TestServer("ollama") as server:
        server.script(two_calls(text="Checking now"))
        with pytest.raises(RuntimeError, match="Duplicate response output index 0"):
            async with sdk(server) as client:
                async with client.responses.stream(model="m", input="hi") as stream:
                    await stream.get_final_response()


async def test_openai_sdk_sees_each_mid_stream_error_its_own_way() -> None:
    """OpenAI's error arrives as typed error and failed events; llama-server's data line
    raises ``APIError`` with its body; vLLM's cut raises ``APIConnectionError``."""
    async with TestServer("openai") as server, sdk(server) as client:
        server.script(Reply(text="Hello there", error_after=4, stream_error_message="boom"))
        stream = await client.responses.create(model="m", input="hi", stream=True)
        kinds = [type(event).__name__ async for event in stream][-2:]
    assert kinds == ["ResponseErrorEvent", "ResponseFailedEvent"]
    async with TestServer("llamacpp") as server, sdk(server) as client:
        server.script(Reply(text="Hello there", error_after=4, stream_error_message="boom"))
        stream = await client.responses.create(model="m", input="hi", stream=True)
        with pytest.raises(openai.APIError, match="boom") as raised:
            async for _ in stream:
                pass
    assert raised.value.body == {"code": 500, "message": "boom", "type": "server_error"}
    async with TestServer("vllm") as server, sdk(server) as client:
        server.script(Reply(text="Hello there", error_after=4))
        stream = await client.responses.create(model="m", input="hi", stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for _ in stream:
                pass


async def test_openai_sdk_reads_a_cut_answer_as_incomplete() -> None:
    """The SDK types vLLM's and OpenAI's last event of a length cut as
    ``ResponseIncompleteEvent``, whose response says why. (Its ``responses.stream()`` helper
    waits for ``response.completed`` and raises instead.)"""
    for dialect in ("openai", "vllm"):
        async with TestServer(dialect) as server, sdk(server) as client:
            server.script(Reply(text="Hello there", finish_reason="length"))
            stream = await client.responses.create(model="m", input="hi", stream=True)
            events = [event async for event in stream]
        last = events[-1]
        assert isinstance(last, openai.types.responses.ResponseIncompleteEvent)
        assert last.response.status == "incomplete"
        assert last.response.incomplete_details is not None
        assert last.response.incomplete_details.reason == "max_output_tokens"
