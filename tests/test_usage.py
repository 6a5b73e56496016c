"""Usage and timings are always on a ChatResult; a stream without usage is counted (issue 21,
item 5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtap import Accumulator, ChatResult, Message, Timings, Usage
from llmtap.testing import Reply, TestServer
from tests.conftest import make_client

ASK = [Message.user("hi")]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _stream(pieces: list[str], usage: dict[str, int] | None = None) -> Accumulator:
    """An accumulator fed as llama.cpp streams: a role chunk, one chunk per token, the
    finish chunk, and a usage chunk when given."""
    acc = Accumulator()
    acc.feed(_chunk({"role": "assistant"}))
    for piece in pieces:
        acc.feed(_chunk({"content": piece}))
    acc.feed(_chunk({}, "stop"))
    if usage is not None:
        acc.feed({"choices": [], "usage": usage})
    return acc


def test_a_result_built_without_usage_or_timings_has_empty_ones() -> None:
    """usage and timings are always there; a figure nobody knows is None."""
    result = ChatResult(message=Message.assistant("hi"), text="hi")
    assert (result.usage, result.timings) == (Usage(), Timings())
    assert (result.usage.completion_tokens, result.timings.tokens_per_second) == (None, None)


def test_a_stream_without_usage_counts_its_output_chunks() -> None:
    """No usage in the stream: completion_tokens is the number of chunks that carried output
    (not the role or finish chunks), marked as counted."""
    result = _stream([" the", " quick", " fox"]).result()
    assert result.usage == Usage(completion_tokens=3, source="counted")


def test_a_stream_with_usage_keeps_the_servers_figures() -> None:
    """Usage the server sent wins over any count, marked as the server's."""
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    result = _stream([" the", " quick"], usage).result()
    assert result.usage == Usage(
        prompt_tokens=5, completion_tokens=7, total_tokens=12, source="server"
    )


def test_reasoning_and_tool_call_pieces_count_as_tokens() -> None:
    """Every output chunk counts: reasoning, text and tool-call argument pieces."""
    acc = Accumulator()
    acc.feed(_chunk({"reasoning_content": "Hmm"}))
    acc.feed(_chunk({"reasoning_content": "."}))
    acc.feed(_chunk({"content": "Sure"}))
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
    acc.feed(_chunk({"tool_calls": [call]}))
    for piece in ('{"x"', ": 1", "}"):
        acc.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    acc.feed(_chunk({}, "tool_calls"))
    assert acc.result().usage == Usage(completion_tokens=6, source="counted")


def test_a_whole_answer_without_usage_is_not_counted() -> None:
    """A non-streamed answer is one body, not one chunk per token: with no usage in it, the
    usage stays unknown."""
    acc = Accumulator()
    acc.feed_completion(
        {"choices": [{"index": 0, "message": {"content": "Hi there"}, "finish_reason": "stop"}]}
    )
    assert acc.result().usage == Usage()


def test_tokens_per_second_comes_from_the_count() -> None:
    """With counted tokens, speed is tokens over the time from the first token to the end."""
    timings = Timings(time_to_first_token=0.5, total=2.5)
    result = _stream([" a", " b", " c", " d"]).result(timings=timings)
    assert result.timings == Timings(time_to_first_token=0.5, total=2.5, tokens_per_second=2.0)


def test_a_measured_speed_is_kept() -> None:
    """A speed the caller measured (Ollama's eval figures) is not replaced."""
    timings = Timings(time_to_first_token=0.5, total=2.5, tokens_per_second=40.0)
    result = _stream([" a", " b"]).result(timings=timings)
    assert result.timings == timings


@given(st.lists(st.text(min_size=1, max_size=5), max_size=40))
def test_the_count_is_the_number_of_text_chunks(pieces: list[str]) -> None:
    """Whatever the pieces, the count is how many there were."""
    result = _stream(pieces).result()
    assert (result.usage.completion_tokens, result.text) == (len(pieces), "".join(pieces))


async def test_chat_on_llamacpp_without_stream_usage_counts_and_gives_a_speed() -> None:
    """On a llama.cpp-style stream with no usage, chat() gives the counted tokens and a
    tokens-per-second figure."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(chunks=["Cwnd", " doubles", " each", " RTT."], usage=None))
        async with make_client(server.url) as client:
            result = await client.chat(ASK)
    assert result.usage == Usage(completion_tokens=4, source="counted")
    assert result.timings.tokens_per_second is not None
    assert result.timings.tokens_per_second > 0


@pytest.mark.parametrize("stream", [True, False])
async def test_usage_the_server_reports_is_the_same_streamed_or_not(stream: bool) -> None:
    """Where the server reports usage both ways, stream=True and stream=False agree."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="Hello there", usage=(9, 2)))
        async with make_client(server.url) as client:
            result = await client.chat(ASK, stream=stream)
    assert result.usage == Usage(
        prompt_tokens=9, completion_tokens=2, total_tokens=11, source="server"
    )
