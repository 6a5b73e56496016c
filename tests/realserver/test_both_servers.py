"""What the tier's two servers are meant to do alike, run against each: llama-cpp-python's
server and llama.cpp's own ``llama-server``, both serving the tiny model; and, pinned as such,
where they differ.

Every chat request goes through the oracle (:mod:`tests.realserver.oracle`): llmtap's
``ChatResult`` (text, finish reason, usage, tool calls) or error must equal what
openai-python makes of the same bytes, for the same request. The model is random but seeded,
and every request passes a ``seed``, so each answer is fixed.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from llmtap import (
    ChatResult,
    FinishEvent,
    LLMResponseError,
    LLMStreamError,
    Message,
    TextDelta,
    ToolCallDelta,
    UsageEvent,
)
from tests.realserver.conftest import EACH_SERVER, Served, no_eos, realserver_client, require
from tests.realserver.oracle import Oracle
from tests.realserver.serverprocess import MODEL_ALIAS, ServerProcess

if TYPE_CHECKING:  # importing it needs gguf, which the tier may lack (it then skips)
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver

QUESTION = [Message.user("Tell me about the water.")]
#: A seed whose answer to QUESTION ends by itself within LONG (finish_reason "stop").
STOP_SEED = 1
#: A max_tokens the answers to QUESTION never reach.
LONG = 200
#: A prompt longer than the servers' 512-token context.
TOO_LONG = [Message.user("water " * 600)]
BOTH = pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])


# --- meant to be the same ------------------------------------------------------------------


async def test_preflight_finds_the_one_model_tiny(served: Served) -> None:
    """Preflight finds one model, tiny (the alias each server was started with), picks it,
    and has nothing to warn about."""
    async with realserver_client(served.server) as client:
        report = await client.preflight_check()
    assert (report.models, report.model, report.warnings) == ((MODEL_ALIAS,), MODEL_ALIAS, ())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_streamed_and_whole_answers_are_identical_for_a_seed(
    oracle: Oracle, seed: int
) -> None:
    """For a fixed seed, chat(stream=True) and chat(stream=False) give the same text, finish
    reason and completion tokens (each answer as openai-python reads it too)."""
    streamed = await oracle.answer(QUESTION, stream=True, seed=seed, max_tokens=LONG)
    whole = await oracle.answer(QUESTION, stream=False, seed=seed, max_tokens=LONG)
    same = (streamed.text, streamed.finish_reason, streamed.usage.completion_tokens)
    assert same == (whole.text, whole.finish_reason, whole.usage.completion_tokens)
    assert streamed.text != ""


@BOTH
async def test_the_answer_is_whole_words_of_the_vocabulary(
    oracle: Oracle, tiny_model: TinyModel, stream: bool
) -> None:
    """The tiny model's biased output head makes answers readable: whole words of its
    vocabulary, each after one space (SentencePiece's word-start marker)."""
    result = await oracle.answer(QUESTION, stream=stream, seed=2, max_tokens=LONG)
    first, *words = result.text.split(" ")
    assert (first, set(words) <= set(tiny_model.words), words != []) == ("", True, True)


@BOTH
async def test_finish_reason_stop_when_the_model_ends_its_answer(
    oracle: Oracle, stream: bool
) -> None:
    """An answer that ends by itself (the end token, before max_tokens) finishes "stop"."""
    result = await oracle.answer(QUESTION, stream=stream, seed=STOP_SEED, max_tokens=LONG)
    tokens = result.usage.completion_tokens
    assert (result.finish_reason, tokens is not None and 0 < tokens < LONG) == ("stop", True)


@BOTH
async def test_finish_reason_length_at_max_tokens(
    oracle: Oracle, tiny_model: TinyModel, stream: bool
) -> None:
    """An answer that may not end (end token forbidden) stops at max_tokens: "length", with
    exactly max_tokens tokens."""
    result = await oracle.answer(
        QUESTION, stream=stream, seed=4, max_tokens=12, **no_eos(tiny_model)
    )
    assert (result.finish_reason, result.usage.completion_tokens) == ("length", 12)


@BOTH
async def test_a_stop_string_ends_the_answer_just_before_it(
    oracle: Oracle, tiny_model: TinyModel, stream: bool
) -> None:
    """A ``stop`` string ends the answer where it first appears, without it: the text is the
    unstopped answer's up to there, and the finish reason is "stop"."""
    params: dict[str, Any] = {"seed": 5, "max_tokens": 40, **no_eos(tiny_model)}
    full = await oracle.answer(QUESTION, stream=stream, **params)
    stop = " " + full.text.split(" ")[6]
    stopped = await oracle.answer(QUESTION, stream=stream, stop=[stop], **params)
    expected = full.text[: full.text.index(stop)]
    assert (stopped.text, stopped.finish_reason) == (expected, "stop")
    assert expected.count(" ") >= 1


async def test_stream_chat_yields_exactly_the_data_lines_the_server_sent(served: Served) -> None:
    """stream_chat's chunk dicts are the server's ``data:`` lines, parsed and nothing else:
    every field of every one, ids and timestamps included (read off the same bytes), up to
    the ``[DONE]`` that ends them."""
    async with Oracle.around(served.url) as oracle:
        chunks = [
            chunk
            async for chunk in oracle.client.stream_chat(QUESTION, seed=STOP_SEED, max_tokens=LONG)
        ]
        lines = (await oracle.last()).data_lines
    assert (chunks, lines[-1]) == (lines[:-1], "[DONE]")


@pytest.mark.parametrize("seed", [0, 1])
async def test_stream_events_are_the_text_pieces_then_the_finish(served: Served, seed: int) -> None:
    """stream() turns each text chunk into one TextDelta, in order, then gives one
    FinishEvent (and a UsageEvent where the server sends usage); the result's text is the
    pieces joined."""
    async with Oracle.around(served.url) as oracle:
        async with oracle.client.stream(QUESTION, seed=seed, max_tokens=LONG) as stream:
            events = [event async for event in stream]
            result = await stream.result()
        lines = (await oracle.last()).data_lines[:-1]
        await oracle.agree(result)
    pieces = [
        TextDelta(content)
        for line in lines
        for choice in line["choices"]
        if (content := choice["delta"].get("content"))
    ]
    tail = [FinishEvent("stop")]
    if result.usage.source == "server":
        tail.append(UsageEvent(result.usage))
    assert events == [*pieces, *tail]
    assert result.text == "".join(piece.text for piece in pieces)


# --- tool calls ----------------------------------------------------------------------------

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
WEATHER_QUESTION = [Message.user("What is the weather in the city?")]


@dataclass(frozen=True)
class Tooled:
    """A server that answers with real tool calls, and how to ask it for one.

    Attributes:
        name: Which server.
        server: The server: llama-cpp-python serving the plain model, or llama-server
            serving the tool-call model.
        tool_choice: What makes it call the tool: llama-cpp-python only calls a function
            named in ``tool_choice``; llama-server with ``"required"`` (a named function it
            treats as "auto", which the random model cannot satisfy: see
            test_llama_server.py).
        cut_at: A max_tokens that cuts the call in its arguments.
        cut_finish: The finish reason the server gives a call cut there.
    """

    name: str
    server: ServerProcess
    tool_choice: Any
    cut_at: int
    cut_finish: str

    def peer_reads(self, stream: bool) -> bool:
        """Whether openai-python is an oracle for this request: its stream accumulator
        concatenates the function name llama-cpp-python repeats on every fragment
        (``get_weatherget_weather...``; pinned in test_llamacpp.py), so not for streamed
        calls from that server."""
        return not (stream and self.name == "llama-cpp-python")


@pytest.fixture(params=EACH_SERVER)
def tooled(request: pytest.FixtureRequest) -> Tooled:
    """Each server that makes tool calls, in turn."""
    if request.param == "llama-cpp-python":
        choice = {"type": "function", "function": {"name": "get_weather"}}
        return Tooled(
            "llama-cpp-python", request.getfixturevalue("llama_server"), choice, 6, "tool_calls"
        )
    server = request.getfixturevalue("llamacpp_tool_server")
    return Tooled("llama-server", server, "required", 30, "length")


@pytest.fixture
async def tool_oracle(tooled: Tooled) -> AsyncIterator[Oracle]:
    """llmtap and openai-python side by side on a server that makes tool calls."""
    require("openai")
    async with Oracle.around(tooled.server.url) as both:
        yield both


async def ask_weather(
    oracle: Oracle, tooled: Tooled, *, stream: bool, **params: Any
) -> ChatResult | Exception:
    """Ask for the weather tool, through openai-python too where it is an oracle."""
    params = {"tool_choice": tooled.tool_choice, "max_tokens": LONG, **params}
    if tooled.peer_reads(stream):
        return await oracle.ask(WEATHER_QUESTION, stream=stream, tools=[WEATHER_TOOL], **params)
    try:
        return await oracle.client.chat(
            WEATHER_QUESTION, stream=stream, tools=[WEATHER_TOOL], **params
        )
    except Exception as exc:
        return exc


def check_weather_arguments(arguments: dict[str, Any]) -> None:
    """The arguments fit the tool's schema."""
    assert sorted(arguments) == ["city", "unit"]
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["city"], str)
    assert len(arguments["city"]) <= 24


@BOTH
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_tool_call_comes_whole_with_arguments_that_fit_the_schema(
    tool_oracle: Oracle, tooled: Tooled, stream: bool, seed: int
) -> None:
    """The server's grammar holds the model to the tool's schema: one call to get_weather,
    its arguments (assembled from fragments when streaming) valid JSON that fits the
    schema, with the server's id; finish_reason "tool_calls" and no text."""
    result = await ask_weather(tool_oracle, tooled, stream=stream, seed=seed)
    assert isinstance(result, ChatResult)
    [call] = result.tool_calls
    assert (call.name, result.finish_reason, result.text) == ("get_weather", "tool_calls", "")
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,}", call.id)
    check_weather_arguments(call.arguments)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_tool_call_streamed_and_whole_is_the_same_call(
    tool_oracle: Oracle, tooled: Tooled, seed: int
) -> None:
    """For a fixed seed, the streamed and the whole tool call have the same name and
    arguments (ids differ: each answer gets its own)."""
    streamed = await ask_weather(tool_oracle, tooled, stream=True, seed=seed)
    whole = await ask_weather(tool_oracle, tooled, stream=False, seed=seed)
    assert isinstance(streamed, ChatResult)
    assert isinstance(whole, ChatResult)
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]


async def test_tool_call_events_name_the_call_once(tooled: Tooled) -> None:
    """Of the ToolCallDeltas of one streamed call, only the first carries the id and the
    name (llama-cpp-python repeats them on every fragment; llmtap does not), all have index
    0, and their argument pieces join into the result's arguments."""
    params = {"tool_choice": tooled.tool_choice, "seed": 1, "max_tokens": LONG}
    async with (
        Oracle.around(tooled.server.url) as oracle,
        oracle.client.stream(WEATHER_QUESTION, tools=[WEATHER_TOOL], **params) as stream,
    ):
        deltas = [event async for event in stream if isinstance(event, ToolCallDelta)]
        result = await stream.result()
        if tooled.peer_reads(stream=True):
            await oracle.agree(result)
    [call] = result.tool_calls
    assert [(d.index, d.id, d.name) for d in deltas if d.name or d.id] == [
        (0, call.id, "get_weather")
    ]
    assert {d.index for d in deltas} == {0}
    assert json.loads("".join(d.arguments for d in deltas)) == call.arguments


@BOTH
async def test_a_tool_call_cut_by_max_tokens_raises_naming_the_tool(
    tool_oracle: Oracle, tooled: Tooled, stream: bool
) -> None:
    """Arguments cut by max_tokens are not valid JSON: llmtap raises LLMStreamError naming
    the tool and the finish reason (llama-cpp-python says "tool_calls" all the same,
    llama-server "length") rather than return broken arguments."""
    error = await ask_weather(tool_oracle, tooled, stream=stream, seed=1, max_tokens=tooled.cut_at)
    assert type(error) is LLMStreamError
    assert error.message.startswith("Tool call 'get_weather' has arguments that are not valid JSON")
    assert f"finish_reason={tooled.cut_finish!r}" in error.message


# --- where they differ ---------------------------------------------------------------------


async def test_each_server_is_named_as_llmtap_tells_it(served: Served) -> None:
    """How each reports the server: llama-server marks its listing (``owned_by:
    "llamacpp"``) and its answers (``timings``), and tells its build at ``/props``
    ("b0-unknown" built from the registry's source package): "llama.cpp"; llama-cpp-python
    looks like any OpenAI-compatible server and tells no version: "openai-compatible".
    Preflight and a result (without preflight) say so."""
    async with Oracle.around(served.url) as oracle:
        result = await oracle.answer(QUESTION, stream=True, seed=1, max_tokens=8)
    async with realserver_client(served.server) as client:
        report = await client.preflight_check()
    assert (report.server, report.version) == (served.kind, served.version)
    assert result.server == report.server == served.kind


async def test_each_server_reports_the_model_its_own_way(served: Served) -> None:
    """How each reports the model when asked for one it does not list: both answer (each
    serves its one model whatever name is asked), but llama-cpp-python echoes the name
    asked, and llama-server reports its own alias."""
    async with Oracle.around(served.url, model="some-other-model") as oracle:
        result = await oracle.answer(QUESTION, stream=False, seed=1, max_tokens=8)
    reported = {"llama-cpp-python": "some-other-model", "llama-server": MODEL_ALIAS}
    assert result.model == reported[served.name]


async def test_streamed_usage_is_told_by_llama_server_and_counted_for_llama_cpp_python(
    oracle: Oracle, served: Served
) -> None:
    """Streaming, llama-server sends the usage llmtap asks for (stream_options), prompt
    tokens included; llama-cpp-python ignores the request, so llmtap counts the chunks that
    carried output (openai-python reports no usage at all)."""
    result = await oracle.answer(QUESTION, stream=True, seed=STOP_SEED, max_tokens=LONG)
    whole = await oracle.answer(QUESTION, stream=False, seed=STOP_SEED, max_tokens=LONG)
    if served.name == "llama-server":
        assert result.usage == whole.usage
        assert result.usage.source == "server"
    else:
        assert result.usage.model_dump() == {
            "prompt_tokens": None,
            "completion_tokens": whole.usage.completion_tokens,
            "total_tokens": None,
            "source": "counted",
        }


CONTEXT_EXCEEDED = {
    "llama-server": (
        "exceed_context_size_error",
        r"request \((\d+) tokens\) exceeds the available context size \(512 tokens\), try "
        r"increasing it",
    ),
    "llama-cpp-python": (
        "invalid_request_error",
        r"This model's maximum context length is 512 tokens\. However, you requested (\d+) "
        r"tokens \(\1 in the messages, None in the completion\)\. Please reduce the length of "
        r"the messages or completion\.",
    ),
}


async def test_an_over_long_prompt_is_refused_in_each_servers_words(
    oracle: Oracle, served: Served
) -> None:
    """Not streaming, each server refuses a prompt over the context with 400 in its own
    words: llama-server's ``exceed_context_size_error`` (with the prompt's token count),
    llama-cpp-python's ``context_length_exceeded``. LLMResponseError carries them."""
    error = await oracle.ask(TOO_LONG, stream=False)
    assert isinstance(error, LLMResponseError)
    kind, pattern = CONTEXT_EXCEEDED[served.name]
    assert (error.status_code, error.error_type) == (400, kind)
    assert re.fullmatch(pattern, error.server_message or "")


async def test_an_over_long_streamed_prompt_is_a_400_or_an_empty_200(
    oracle: Oracle, served: Served
) -> None:
    """Streaming, llama-server refuses the over-long prompt with the same 400 before any
    event (LLMResponseError), while llama-cpp-python answers an empty 200: no event, no
    [DONE]. llmtap raises LLMStreamError for it, never an empty success; openai-python
    reads no chunk and raises nothing."""
    error = await oracle.ask(TOO_LONG, stream=True)
    exchange = await oracle.last()
    if served.name == "llama-server":
        assert isinstance(error, LLMResponseError)
        assert (exchange.status, error.status_code, error.error_type) == (
            400,
            400,
            "exceed_context_size_error",
        )
    else:
        assert type(error) is LLMStreamError
        assert (exchange.status, exchange.body) == (200, b"")
