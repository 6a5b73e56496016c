"""The accumulator: recorded chunk shapes of every server in, exact ChatResults out."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtap._errors import LLMStreamError
from llmtap._messages import Message, ToolCall
from llmtap._results import (
    ChatResult,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from llmtap._wire.accumulate import Accumulator

T = TypeVar("T")
Chunk = dict[str, Any]


def feed_all(acc: Accumulator, chunks: Iterable[Chunk]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for chunk in chunks:
        events.extend(acc.feed(chunk))
    return events


def accumulate(chunks: Iterable[Chunk], dialect: str = "openai", **result: Any) -> ChatResult:
    acc = Accumulator("ollama" if dialect == "ollama" else "openai")
    feed_all(acc, chunks)
    return acc.result(**result)


def chat_result(
    *,
    text: str = "",
    reasoning: str = "",
    calls: tuple[ToolCall, ...] = (),
    finish_reason: str | None = None,
    usage: Usage = Usage(),  # noqa: B008 -- frozen
    model: str | None = None,
    server: str | None = None,
) -> ChatResult:
    """The result the spec promises: content is None only for a tool-only answer."""
    return ChatResult(
        message=Message(
            role="assistant",
            content=None if not text and calls else text,
            tool_calls=calls or None,
        ),
        text=text,
        reasoning=reasoning,
        tool_calls=calls,
        finish_reason=finish_reason,
        usage=usage,
        timings=Timings(),
        model=model,
        server=server,
        warnings=(),
    )


def counted(tokens: int) -> Usage:
    """The usage of a stream that carried none: its output chunks counted."""
    return Usage(completion_tokens=tokens, source="counted")


def choice(delta: Any = None, finish_reason: str | None = None, index: int = 0) -> Chunk:
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]}


WEATHER = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})


# --- Ollama /v1 ---------------------------------------------------------------------------

OLLAMA_V1 = {
    "id": "chatcmpl-412",
    "object": "chat.completion.chunk",
    "created": 1736000000,
    "model": "qwen3:8b",
    "system_fingerprint": "fp_ollama",
}


def ollama_v1(delta: Any, finish_reason: str | None = None) -> Chunk:
    return {
        **OLLAMA_V1,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


OLLAMA_V1_THINKING = [
    ollama_v1({"role": "assistant", "content": ""}),
    ollama_v1({"content": "", "reasoning": "The user "}),
    ollama_v1({"content": "", "reasoning": "greets me."}),
    ollama_v1({"content": "Hello"}),
    ollama_v1({"content": " there!"}),
    ollama_v1({}, "stop"),
    {
        **OLLAMA_V1,
        "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20},
    },
]


def test_ollama_v1_thinking_stream_gives_exact_result() -> None:
    """Ollama /v1 since v0.32.6: role chunk, reasoning chunks, text, finish chunk, usage."""
    assert accumulate(OLLAMA_V1_THINKING, server="ollama") == chat_result(
        text="Hello there!",
        reasoning="The user greets me.",
        finish_reason="stop",
        usage=Usage(prompt_tokens=11, completion_tokens=9, total_tokens=20),
        model="qwen3:8b",
        server="ollama",
    )


def test_ollama_v1_thinking_stream_gives_exact_events() -> None:
    """Events come in order; empty content and the role chunk produce none."""
    assert feed_all(Accumulator(), OLLAMA_V1_THINKING) == [
        ReasoningDelta("The user "),
        ReasoningDelta("greets me."),
        TextDelta("Hello"),
        TextDelta(" there!"),
        FinishEvent("stop"),
        UsageEvent(Usage(prompt_tokens=11, completion_tokens=9, total_tokens=20)),
    ]


def test_ollama_v1_whole_tool_calls() -> None:
    """Ollama /v1 sends each tool call whole, with a string of complete JSON arguments."""
    chunks = [
        ollama_v1({"role": "assistant", "content": ""}),
        ollama_v1(
            {
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_k2l4x9ab",
                        "index": 0,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            }
        ),
        ollama_v1(
            {
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_m3n5y0cd",
                        "index": 1,
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                    }
                ],
            }
        ),
        ollama_v1({}, "tool_calls"),
    ]
    assert accumulate(chunks) == chat_result(
        calls=(
            ToolCall(id="call_k2l4x9ab", name="get_weather", arguments={"city": "Paris"}),
            ToolCall(id="call_m3n5y0cd", name="get_time", arguments={"tz": "CET"}),
        ),
        finish_reason="tool_calls",
        usage=counted(2),
        model="qwen3:8b",
    )


def test_ollama_v1_before_0_32_6_role_everywhere_and_finish_on_last_text() -> None:
    """Before v0.32.6 Ollama repeated role on every chunk and put finish_reason on the last."""
    chunks = [
        ollama_v1({"role": "assistant", "content": "Bon"}),
        ollama_v1({"role": "assistant", "content": "jour"}),
        ollama_v1({"role": "assistant", "content": "!"}, "stop"),
    ]
    assert accumulate(chunks) == chat_result(
        text="Bonjour!", finish_reason="stop", usage=counted(3), model="qwen3:8b"
    )


def test_older_ollama_v1_index_zero_for_every_call_is_split_by_id() -> None:
    """Older Ollama sent index 0 on every call; the differing ids tell the calls apart."""
    chunks = [
        ollama_v1(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_k2l4x9ab",
                        "index": 0,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            }
        ),
        ollama_v1(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_m3n5y0cd",
                        "index": 0,
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                    }
                ],
            },
            "tool_calls",
        ),
    ]
    acc = Accumulator()
    events = feed_all(acc, chunks)
    assert [(e.index, e.id) for e in events if isinstance(e, ToolCallDelta)] == [
        (0, "call_k2l4x9ab"),
        (1, "call_m3n5y0cd"),
    ]
    assert acc.result().tool_calls == (
        ToolCall(id="call_k2l4x9ab", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_m3n5y0cd", name="get_time", arguments={"tz": "CET"}),
    )


def test_ollama_v1_before_0_4_7_calls_without_index() -> None:
    """Before v0.4.7 Ollama sent no index; every call (with its own id and name) is new."""
    chunk = ollama_v1(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        "tool_calls",
    )
    assert accumulate([chunk]).tool_calls == (
        ToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_b", name="get_weather", arguments={"city": "Oslo"}),
    )


def test_ollama_v1_mid_stream_error_chunk_has_empty_model() -> None:
    """The model comes from the first chunk naming one; Ollama's lost-error chunk has model ''."""
    chunks = [
        {**ollama_v1({"role": "assistant", "content": ""}), "model": ""},
        ollama_v1({"content": "Hi"}),
        {**ollama_v1({}), "model": ""},
    ]
    acc = Accumulator()
    feed_all(acc, chunks)
    assert acc.model == "qwen3:8b"


# --- Ollama native ------------------------------------------------------------------------


def native(
    content: str = "", *, thinking: str | None = None, tool_calls: Any = None, **top: Any
) -> Chunk:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "model": "llama3.2:latest",
        "created_at": "2025-06-01T10:00:00.123456Z",
        "message": message,
        "done": False,
        **top,
    }


NATIVE_DONE: dict[str, Any] = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 1_234_567_890,
    "load_duration": 12_345_678,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 130_000_000,
    "eval_count": 12,
    "eval_duration": 980_000_000,
}


def test_ollama_native_text_and_done_line_metrics() -> None:
    """Native /api/chat: message.content is text; the done line gives finish and usage."""
    acc = Accumulator("ollama")
    events = feed_all(acc, [native("Why"), native(" hello"), native(**NATIVE_DONE)])
    assert events == [
        TextDelta("Why"),
        TextDelta(" hello"),
        FinishEvent("stop"),
        UsageEvent(Usage(prompt_tokens=26, completion_tokens=12, total_tokens=38)),
    ]
    assert acc.result(server="ollama") == chat_result(
        text="Why hello",
        finish_reason="stop",
        usage=Usage(prompt_tokens=26, completion_tokens=12, total_tokens=38),
        model="llama3.2:latest",
        server="ollama",
    )


def test_ollama_native_metrics_are_collected() -> None:
    """server_metrics holds the integer counters and nanosecond durations of the done line."""
    acc = Accumulator("ollama")
    feed_all(acc, [native("Hi"), native(**NATIVE_DONE)])
    assert acc.server_metrics == {
        "total_duration": 1_234_567_890,
        "load_duration": 12_345_678,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 130_000_000,
        "eval_count": 12,
        "eval_duration": 980_000_000,
    }


def test_ollama_native_thinking_is_reasoning() -> None:
    """Native message.thinking becomes ReasoningDelta."""
    chunks = [
        native(thinking="Hmm, "),
        native(thinking="ok."),
        native("Yes."),
        native(**NATIVE_DONE),
    ]
    result = accumulate(chunks, "ollama")
    assert (result.reasoning, result.text) == ("Hmm, ok.", "Yes.")


def test_ollama_native_tool_calls_with_object_arguments() -> None:
    """Native tool calls arrive whole with object arguments; done_reason stop becomes tool_calls."""
    acc = Accumulator("ollama")
    events = feed_all(
        acc,
        [
            native(
                tool_calls=[
                    {
                        "id": "call_x1y2z3w4",
                        "function": {
                            "index": 0,
                            "name": "get_weather",
                            "arguments": {"city": "Paris"},
                        },
                    },
                    {
                        "id": "call_p9q8r7s6",
                        "function": {"index": 1, "name": "get_time", "arguments": {"tz": "CET"}},
                    },
                ]
            ),
            native(**NATIVE_DONE),
        ],
    )
    assert events[:3] == [
        ToolCallDelta(0, "call_x1y2z3w4", "get_weather", '{"city":"Paris"}'),
        ToolCallDelta(1, "call_p9q8r7s6", "get_time", '{"tz":"CET"}'),
        FinishEvent("tool_calls"),
    ]
    assert acc.result() == chat_result(
        calls=(
            ToolCall(id="call_x1y2z3w4", name="get_weather", arguments={"city": "Paris"}),
            ToolCall(id="call_p9q8r7s6", name="get_time", arguments={"tz": "CET"}),
        ),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=26, completion_tokens=12, total_tokens=38),
        model="llama3.2:latest",
    )


def test_ollama_native_calls_without_id_or_index_get_generated_ids() -> None:
    """Native calls from before v0.12.10 have no id; each named call is its own call."""
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
    ]
    result = accumulate([native(tool_calls=calls), native(done=True)], "ollama")
    assert result.tool_calls == (
        ToolCall(id="call_0", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_1", name="get_weather", arguments={"city": "Oslo"}),
    )


def test_ollama_native_done_reason_length_is_kept_after_tool_calls() -> None:
    """Only done_reason 'stop' turns into 'tool_calls'; 'length' passes through."""
    call = {"function": {"name": "f", "arguments": {}}}
    chunks = [native(tool_calls=[call]), native(done=True, done_reason="length")]
    assert accumulate(chunks, "ollama").finish_reason == "length"


def test_ollama_native_load_passes_through_without_usage() -> None:
    """A preload answer (empty messages) finishes with 'load' and reports no usage: its
    output, none, is counted."""
    load = native(done=True, done_reason="load")
    assert accumulate([load], "ollama") == chat_result(
        finish_reason="load", usage=counted(0), model="llama3.2:latest"
    )


def test_ollama_native_done_without_done_reason_is_stop() -> None:
    """Old Ollama sent done:true without done_reason; that means 'stop'."""
    assert accumulate([native("Hi"), native(done=True)], "ollama").finish_reason == "stop"


def test_ollama_native_missing_counts_are_omitempty() -> None:
    """A done line without eval_count reports prompt tokens only; total is what is known."""
    done = native(done=True, done_reason="stop", prompt_eval_count=26)
    usage = accumulate([native("Hi"), done], "ollama").usage
    assert usage == Usage(prompt_tokens=26, completion_tokens=None, total_tokens=26)


# --- llama.cpp ----------------------------------------------------------------------------

LLAMA_CPP = {
    "created": 1736000000,
    "id": "chatcmpl-Xy7QpL0aZ3",
    "model": "qwen2.5-7b-instruct-q4_k_m.gguf",
    "system_fingerprint": "b5432-abcdef12",
    "object": "chat.completion.chunk",
}
LLAMA_CPP_TIMINGS = {
    "cache_n": 0,
    "prompt_n": 12,
    "prompt_ms": 40.1,
    "prompt_per_token_ms": 3.3,
    "prompt_per_second": 299.2,
    "predicted_n": 34,
    "predicted_ms": 512.0,
    "predicted_per_token_ms": 15.1,
    "predicted_per_second": 66.4,
}
LLAMA_CPP_CALL_ID = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"


def llama_cpp(delta: Any, finish_reason: str | None = None, **top: Any) -> Chunk:
    return {
        **LLAMA_CPP,
        "choices": [{"finish_reason": finish_reason, "index": 0, "delta": delta}],
        **top,
    }


def test_llama_cpp_stream_with_reasoning_fragments_and_timings() -> None:
    """llama-server: content null first, reasoning_content, argument fragments, timings, usage."""
    chunks = [
        llama_cpp({"role": "assistant", "content": None}),
        llama_cpp({"reasoning_content": "Paris "}),
        llama_cpp({"reasoning_content": "weather."}),
        llama_cpp({"content": "Checking."}),
        llama_cpp(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": LLAMA_CPP_CALL_ID,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        llama_cpp({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Par'}}]}),
        llama_cpp({"tool_calls": [{"index": 0, "function": {"arguments": 'is"}'}}]}),
        llama_cpp({}, "tool_calls", timings=LLAMA_CPP_TIMINGS),
        {
            **LLAMA_CPP,
            "choices": [],
            "usage": {
                "completion_tokens": 34,
                "prompt_tokens": 12,
                "total_tokens": 46,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
            "timings": LLAMA_CPP_TIMINGS,
        },
    ]
    assert accumulate(chunks, server="llama.cpp") == chat_result(
        text="Checking.",
        reasoning="Paris weather.",
        calls=(ToolCall(id=LLAMA_CPP_CALL_ID, name="get_weather", arguments={"city": "Paris"}),),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=12, completion_tokens=34, total_tokens=46),
        model="qwen2.5-7b-instruct-q4_k_m.gguf",
        server="llama.cpp",
    )


def test_llama_cpp_fragment_events_carry_id_and_name_once() -> None:
    """The first fragment's event has id and name; later ones only argument text."""
    chunks = [
        llama_cpp(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": LLAMA_CPP_CALL_ID,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        llama_cpp({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": 1}'}}]}),
    ]
    assert feed_all(Accumulator(), chunks) == [
        ToolCallDelta(0, LLAMA_CPP_CALL_ID, "get_weather", '{"ci'),
        ToolCallDelta(0, None, None, 'ty": 1}'),
    ]


def test_old_llama_cpp_usage_on_finish_chunk() -> None:
    """Old (2024) llama-server put usage on the finish chunk without being asked."""
    chunks = [
        llama_cpp({"content": "Hi"}),
        llama_cpp(
            {},
            "stop",
            usage={"completion_tokens": 1, "prompt_tokens": 5, "total_tokens": 6},
        ),
    ]
    assert feed_all(Accumulator(), chunks) == [
        TextDelta("Hi"),
        FinishEvent("stop"),
        UsageEvent(Usage(prompt_tokens=5, completion_tokens=1, total_tokens=6)),
    ]


# --- llama-cpp-python ---------------------------------------------------------------------

LCP = {
    "id": "chatcmpl-4c1d2e3f",
    "object": "chat.completion.chunk",
    "created": 1736000000,
    "model": "tiny",
}
LCP_CALL_ID = "call__0_get_weather_cmpl-4c1d2e3f"


def lcp_tool(arguments: str) -> Chunk:
    """A llama-cpp-python tool delta: id, type and name repeated, plus a legacy function_call."""
    return {
        **LCP,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": None,
                    "content": None,
                    "function_call": {"name": "get_weather", "arguments": arguments},
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": LCP_CALL_ID,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": arguments},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }


LCP_START = {
    **LCP,
    "choices": [
        {"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
    ],
}
LCP_FINISH = {
    **LCP,
    "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}],
}


def test_llama_cpp_python_repeated_id_and_name_are_set_once() -> None:
    """llama-cpp-python repeats id and name on every fragment; the name is not concatenated."""
    chunks = [LCP_START, lcp_tool('{"city": '), lcp_tool('"Par'), lcp_tool('is"}'), LCP_FINISH]
    assert accumulate(chunks, server="llama.cpp") == chat_result(
        calls=(ToolCall(id=LCP_CALL_ID, name="get_weather", arguments={"city": "Paris"}),),
        finish_reason="tool_calls",
        usage=counted(3),
        model="tiny",
        server="llama.cpp",
    )


def test_llama_cpp_python_events_ignore_legacy_function_call() -> None:
    """Each fragment gives one event; the legacy function_call beside tool_calls is ignored."""
    chunks = [LCP_START, lcp_tool('{"city": '), lcp_tool('"Paris"}')]
    assert feed_all(Accumulator(), chunks) == [
        ToolCallDelta(0, LCP_CALL_ID, "get_weather", '{"city": '),
        ToolCallDelta(0, None, None, '"Paris"}'),
    ]


def test_llama_cpp_python_cut_off_arguments_raise_naming_the_tool() -> None:
    """max_tokens cut the arguments but finish_reason says tool_calls: result() raises clearly."""
    acc = Accumulator()
    feed_all(acc, [LCP_START, lcp_tool('{"city": '), lcp_tool('"Par'), LCP_FINISH])
    with pytest.raises(LLMStreamError) as info:
        acc.result()
    assert info.value.message == (
        "Tool call 'get_weather' has arguments that are not valid JSON: '{\"city\": \"Par' — "
        "the answer was probably cut off (finish_reason='tool_calls'); raise max_tokens"
    )


# --- vLLM ---------------------------------------------------------------------------------

VLLM = {
    "id": "chatcmpl-b5e1c0ffee",
    "object": "chat.completion.chunk",
    "created": 1736000000,
    "model": "Qwen/Qwen3-8B",
}


def vllm(delta: Any, finish_reason: str | None = None, **extra: Any) -> Chunk:
    return {
        **VLLM,
        "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason, **extra}
        ],
    }


def test_vllm_reasoning_and_stop_reason_on_finish_chunk() -> None:
    """vLLM: content "" first, `reasoning`, the last text rides on the finish chunk."""
    chunks = [
        vllm({"role": "assistant", "content": ""}),
        vllm({"reasoning": "Short "}),
        vllm({"reasoning": "answer."}),
        vllm({"content": "Forty"}),
        vllm({"content": "-two."}, "stop", stop_reason=None),
        {
            **VLLM,
            "choices": [],
            "usage": {"prompt_tokens": 7, "total_tokens": 10, "completion_tokens": 3},
            "system_fingerprint": "vllm-0.11",
        },
    ]
    assert accumulate(chunks, server="vllm") == chat_result(
        text="Forty-two.",
        reasoning="Short answer.",
        finish_reason="stop",
        usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10),
        model="Qwen/Qwen3-8B",
        server="vllm",
    )


def test_vllm_two_entries_same_index_one_chunk_continue_one_call() -> None:
    """vLLM can send the first fragment and a continuation at one index in one chunk."""
    chunk = vllm(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "chatcmpl-tool-aaa",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                },
                {"index": 0, "function": {"arguments": '{"city": "Paris"}'}},
            ]
        },
        "tool_calls",
    )
    assert accumulate([chunk]).tool_calls == (
        ToolCall(id="chatcmpl-tool-aaa", name="get_weather", arguments={"city": "Paris"}),
    )


def test_vllm_two_entries_same_index_different_ids_are_two_calls() -> None:
    """Two entries at one index with different ids are two distinct calls."""
    chunk = vllm(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "chatcmpl-tool-aaa",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "index": 0,
                    "id": "chatcmpl-tool-bbb",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                },
            ]
        },
        "tool_calls",
    )
    assert accumulate([chunk]).tool_calls == (
        ToolCall(id="chatcmpl-tool-aaa", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="chatcmpl-tool-bbb", name="get_time", arguments={"tz": "CET"}),
    )


def test_vllm_continuous_usage_last_wins_with_one_event_per_change() -> None:
    """continuous_usage_stats puts usage on every chunk: an event per change, the last wins."""

    def usage(completion: int) -> dict[str, int]:
        return {"prompt_tokens": 7, "total_tokens": 7 + completion, "completion_tokens": completion}

    chunks = [
        {**vllm({"role": "assistant", "content": ""}), "usage": usage(0)},
        {**vllm({"content": "A"}), "usage": usage(1)},
        {**vllm({"content": "B"}, "stop", stop_reason=None), "usage": usage(2)},
        {**VLLM, "choices": [], "usage": usage(2)},
    ]
    acc = Accumulator()
    events = feed_all(acc, chunks)
    assert [e.usage.completion_tokens for e in events if isinstance(e, UsageEvent)] == [0, 1, 2]
    assert acc.usage == Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9)


def test_old_vllm_reasoning_content() -> None:
    """vLLM before PR #27752 (and LM Studio) name the field reasoning_content."""
    chunks = [vllm({"reasoning_content": "Hm."}), vllm({"content": "Yes"}, "stop")]
    assert accumulate(chunks).reasoning == "Hm."


def test_reasoning_and_reasoning_content_with_same_text_count_once() -> None:
    """vLLM during the rename sent both fields with the same text: it is counted once."""
    chunks = [vllm({"reasoning": "Hm.", "reasoning_content": "Hm."})]
    acc = Accumulator()
    assert feed_all(acc, chunks) == [ReasoningDelta("Hm.")]
    assert acc.result().reasoning == "Hm."


# --- OpenAI -------------------------------------------------------------------------------

OPENAI = {
    "id": "chatcmpl-AbC123xyz",
    "object": "chat.completion.chunk",
    "created": 1736000000,
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "system_fingerprint": "fp_0ba0d124f1",
    "usage": None,
}


def openai(delta: Any, finish_reason: str | None = None) -> Chunk:
    return {
        **OPENAI,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "obfuscation": "x7Gk",
    }


def openai_call_start(index: int, call_id: str, name: str) -> Chunk:
    call = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    return openai({"tool_calls": [call]})


def openai_args(index: int, arguments: str) -> Chunk:
    return openai({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})


def test_openai_parallel_fragments_and_usage_chunk() -> None:
    """OpenAI: two parallel calls in fragments, usage null on every chunk, then a usage chunk."""
    chunks = [
        openai({"role": "assistant", "content": None, "refusal": None}),
        openai_call_start(0, "call_Qh3weather", "get_weather"),
        openai_args(0, '{"ci'),
        openai_args(0, 'ty": "Paris"}'),
        openai_call_start(1, "call_Zt9time", "get_time"),
        openai_args(1, '{"tz": '),
        openai_args(1, '"CET"}'),
        openai({}, "tool_calls"),
        {
            **OPENAI,
            "choices": [],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 34,
                "total_tokens": 46,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "obfuscation": "Qp",
        },
    ]
    assert accumulate(chunks, server="openai-compatible") == chat_result(
        calls=(
            ToolCall(id="call_Qh3weather", name="get_weather", arguments={"city": "Paris"}),
            ToolCall(id="call_Zt9time", name="get_time", arguments={"tz": "CET"}),
        ),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=12, completion_tokens=34, total_tokens=46),
        model="gpt-4o-mini-2024-07-18",
        server="openai-compatible",
    )


# --- choices, deltas, empty values --------------------------------------------------------


def test_only_choice_index_zero_is_accumulated() -> None:
    """With n > 1, choices other than index 0 are ignored."""
    chunk = {
        "choices": [
            {"index": 1, "delta": {"content": "other"}, "finish_reason": "length"},
            {"index": 0, "delta": {"content": "mine"}, "finish_reason": None},
        ]
    }
    acc = Accumulator()
    assert acc.feed(chunk) == [TextDelta("mine")]
    assert acc.finish_reason is None


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": []},
        {"id": "x", "object": "chat.completion.chunk"},
        {"choices": [{"index": 0, "finish_reason": None}]},
        choice(None),
        choice({}),
        choice({"content": None}),
        choice({"content": ""}),
        choice({"role": "assistant", "content": "", "reasoning": None}),
        {"choices": None, "usage": None},
    ],
)
def test_empty_shapes_give_no_events(chunk: Chunk) -> None:
    """Empty choices, missing choices/delta, null delta and null or empty content are no-ops."""
    acc = Accumulator()
    assert acc.feed(chunk) == []
    assert acc.result() == chat_result(usage=counted(0))


def test_unknown_keys_are_ignored() -> None:
    """Extra keys anywhere (timings, stop_reason, obfuscation, metrics...) change nothing."""
    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {"content": "Hi", "annotations": []},
                "finish_reason": "stop",
                "stop_reason": 128001,
                "matched_stop": None,
            }
        ],
        "timings": LLAMA_CPP_TIMINGS,
        "prompt_progress": {"total": 3},
        "__verbose": {},
        "obfuscation": "abc",
        "metrics": {"queue": 0.1},
        "prompt_token_ids": [1, 2, 3],
    }
    assert accumulate([chunk]) == chat_result(text="Hi", finish_reason="stop", usage=counted(1))


def test_repeated_finish_reason_gives_one_event() -> None:
    """A finish reason repeated on a later chunk does not give a second FinishEvent."""
    events = feed_all(Accumulator(), [choice({}, "stop"), choice(None, "stop")])
    assert events == [FinishEvent("stop")]


def test_accumulator_state_properties() -> None:
    """text, tool_calls_started, finish_reason, usage, model and chunks track what was fed."""
    acc = Accumulator()
    assert (acc.text, acc.tool_calls_started, acc.finish_reason, acc.chunks) == ("", False, None, 0)
    feed_all(acc, [openai({"content": "Hi"}), openai_call_start(0, "call_1", "f")])
    assert (acc.text, acc.tool_calls_started, acc.model, acc.chunks) == (
        "Hi",
        True,
        "gpt-4o-mini-2024-07-18",
        2,
    )


def test_text_with_tool_calls_keeps_content() -> None:
    """An answer with text and tool calls keeps the text as the message content."""
    chunks = [choice({"content": "Let me look."}), openai_call_start(0, "call_1", "f")]
    message = accumulate(chunks).message
    assert (message.content, message.tool_calls) == (
        "Let me look.",
        (ToolCall(id="call_1", name="f", arguments={}),),
    )


def test_result_passes_server_timings_and_warnings() -> None:
    """result() takes server, timings and warnings from the caller as given."""
    timings = Timings(time_to_first_token=0.1, total=0.5, tokens_per_second=40.0)
    result = Accumulator().result(server="vllm", timings=timings, warnings=["slow"])
    assert (result.server, result.timings, result.warnings) == ("vllm", timings, ("slow",))


# --- tool-call arguments and identity -----------------------------------------------------


def tool_piece(**function: Any) -> Chunk:
    return choice({"tool_calls": [{"index": 0, "id": "call_1", "function": function}]})


@pytest.mark.parametrize(
    "function",
    [
        {"name": "get_weather", "arguments": ""},
        {"name": "get_weather", "arguments": None},
        {"name": "get_weather"},
        {"name": "get_weather", "arguments": "{}"},
        {"name": "get_weather", "arguments": "null"},
        {"name": "get_weather", "arguments": " \n"},
        {"name": "get_weather", "arguments": {}},
    ],
)
def test_empty_arguments_become_empty_dict(function: dict[str, Any]) -> None:
    """Empty string, null, missing, "{}" (and an empty object) all give {}."""
    result = accumulate([tool_piece(**function)])
    assert result.tool_calls == (ToolCall(id="call_1", name="get_weather", arguments={}),)


def test_object_arguments_in_openai_dialect_are_used_as_is() -> None:
    """An odd server sending an object for arguments in /v1 shape: used as is."""
    result = accumulate([tool_piece(name="get_weather", arguments={"city": "Paris"})])
    assert result.tool_calls == (WEATHER,)


def test_invalid_json_arguments_raise_with_tool_name_and_excerpt() -> None:
    """Arguments cut off by max_tokens raise LLMStreamError naming the tool and the text."""
    acc = Accumulator()
    feed_all(acc, [tool_piece(name="get_weather", arguments='{"city": "Par'), choice({}, "length")])
    with pytest.raises(LLMStreamError) as info:
        acc.result()
    assert info.value.message == (
        "Tool call 'get_weather' has arguments that are not valid JSON: '{\"city\": \"Par' — "
        "the answer was probably cut off (finish_reason='length'); raise max_tokens"
    )


def test_long_invalid_arguments_are_shown_as_an_excerpt() -> None:
    """Long argument text is shortened to its first and last 100 characters."""
    text = '{"text": "' + "a" * 150 + "b" * 150
    acc = Accumulator()
    acc.feed(tool_piece(name="write", arguments=text))
    with pytest.raises(LLMStreamError) as info:
        acc.result()
    excerpt = '{"text": "' + "a" * 90 + "…" + "b" * 100
    assert info.value.message == (
        f"Tool call 'write' has arguments that are not valid JSON: {excerpt!r} — "
        "the answer was probably cut off (finish_reason=None); raise max_tokens"
    )


def test_non_object_arguments_raise() -> None:
    """Arguments that decode to something other than an object raise LLMStreamError."""
    acc = Accumulator()
    acc.feed(tool_piece(name="get_weather", arguments="[1, 2]"))
    with pytest.raises(LLMStreamError) as info:
        acc.result()
    assert info.value.message == (
        "Tool call 'get_weather' has arguments that are not a JSON object: '[1, 2]'"
    )


def test_call_without_name_raises() -> None:
    """A tool call that never got a function name cannot be run: result() raises."""
    acc = Accumulator()
    acc.feed(choice({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    with pytest.raises(LLMStreamError) as info:
        acc.result()
    assert info.value.message == "Tool call #0 arrived without a function name (arguments: '{}')"


def test_missing_ids_are_generated_and_unique() -> None:
    """Calls without id get call_<index>, made unique against ids the server did send."""
    chunk = choice(
        {
            "tool_calls": [
                {"index": 0, "function": {"name": "a", "arguments": "{}"}},
                {"index": 1, "id": "call_0", "function": {"name": "b", "arguments": "{}"}},
            ]
        }
    )
    assert [(c.id, c.name) for c in accumulate([chunk]).tool_calls] == [
        ("call_0_1", "a"),
        ("call_0", "b"),
    ]


def test_missing_index_new_name_starts_new_call() -> None:
    """Without index and id, a piece with a name starts a call and one without continues it."""
    chunks = [
        choice({"tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city"'}}]}),
        choice({"tool_calls": [{"function": {"arguments": ': "Paris"}'}}]}),
        choice({"tool_calls": [{"function": {"name": "get_time", "arguments": "{}"}}]}),
    ]
    assert accumulate(chunks).tool_calls == (
        ToolCall(id="call_0", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_1", name="get_time", arguments={}),
    )


def test_first_name_wins_at_one_index() -> None:
    """A different name arriving later for the same call does not replace or extend it."""
    chunks = [tool_piece(name="get_weather", arguments="{}"), tool_piece(name="other")]
    assert accumulate(chunks).tool_calls[0].name == "get_weather"


def test_legacy_function_call_alone_is_one_call() -> None:
    """A legacy function_call stream (no tool_calls key) accumulates as one call."""
    chunks = [
        choice({"function_call": {"name": "get_weather", "arguments": ""}}),
        choice({"function_call": {"arguments": '{"city": "Paris"}'}}),
        choice({}, "function_call"),
    ]
    result = accumulate(chunks)
    assert (result.tool_calls, result.finish_reason) == (
        (ToolCall(id="call_0", name="get_weather", arguments={"city": "Paris"}),),
        "function_call",
    )


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunk",
    [
        {"error": {"message": "boom", "type": "server_error", "code": 500}},
        {"error": "model runner crashed"},
        {"object": "chat.completion.chunk", "choices": [], "error": {"message": "x"}},
    ],
)
def test_error_object_raises(chunk: Chunk) -> None:
    """A chunk with an error object is never accepted silently."""
    with pytest.raises(LLMStreamError, match=r"^server error object reached the accumulator: "):
        Accumulator().feed(chunk)


def test_error_object_raises_in_native_dialect() -> None:
    """Ollama's native mid-stream {"error": "..."} line raises too."""
    with pytest.raises(LLMStreamError) as info:
        Accumulator("ollama").feed({"error": "an error was encountered while running the model"})
    assert info.value.message == (
        "server error object reached the accumulator: "
        '"an error was encountered while running the model"'
    )


def test_null_error_key_is_not_an_error() -> None:
    """A chunk carrying "error": null is an ordinary chunk."""
    assert Accumulator().feed({**choice({"content": "Hi"}), "error": None}) == [TextDelta("Hi")]


def test_unknown_dialect_is_rejected() -> None:
    """A dialect name other than 'openai' or 'ollama' is a ValueError."""
    with pytest.raises(ValueError, match=r"^dialect must be 'openai' or 'ollama', not 'vllm'$"):
        Accumulator("vllm")  # type: ignore[arg-type]


# --- feed_completion ----------------------------------------------------------------------


def test_feed_completion_openai_equals_stream() -> None:
    """A non-streaming chat.completion gives the same result as the equivalent stream."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1736000000,
        "model": "Qwen/Qwen3-8B",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "reasoning_content": "Paris weather.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "total_tokens": 46, "completion_tokens": 34},
    }
    stream = [
        vllm({"role": "assistant", "content": ""}),
        vllm({"reasoning": "Paris "}),
        vllm({"reasoning": "weather."}),
        vllm({"content": "Checking."}),
        vllm(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": '},
                    }
                ]
            }
        ),
        vllm({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}, "tool_calls"),
        {**VLLM, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 34}},
    ]
    whole = Accumulator()
    events = whole.feed_completion(body)
    assert events == [
        ReasoningDelta("Paris weather."),
        TextDelta("Checking."),
        ToolCallDelta(0, "call_1", "get_weather", '{"city": "Paris"}'),
        FinishEvent("tool_calls"),
        UsageEvent(Usage(prompt_tokens=12, completion_tokens=34, total_tokens=46)),
    ]
    assert whole.result() == accumulate(stream)


def test_feed_completion_parallel_calls_without_index() -> None:
    """Non-streaming tool_calls have no index: they keep their order as calls 0, 1, ..."""
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "a", "arguments": "{}"}},
                        {"id": "c2", "function": {"name": "b", "arguments": '{"x": 1}'}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    acc = Accumulator()
    acc.feed_completion(body)
    assert acc.result().tool_calls == (
        ToolCall(id="c1", name="a", arguments={}),
        ToolCall(id="c2", name="b", arguments={"x": 1}),
    )


def test_feed_completion_ollama_native_equals_stream() -> None:
    """A non-streaming native /api/chat object gives the same result as the stream."""
    call = {
        "id": "call_1",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
    }
    body = native("Checking.", thinking="Paris weather.", tool_calls=[call], **NATIVE_DONE)
    stream = [
        native(thinking="Paris "),
        native(thinking="weather."),
        native("Checking."),
        native(tool_calls=[call]),
        native(**NATIVE_DONE),
    ]
    whole = Accumulator("ollama")
    whole.feed_completion(body)
    assert whole.result() == accumulate(stream, "ollama")
    assert whole.result().tool_calls == (WEATHER,)


# --- cost ---------------------------------------------------------------------------------


def test_many_chunks_are_kept_as_pieces_not_a_growing_string() -> None:
    """20,000 text chunks are held as 20,000 list pieces and joined once, exactly."""
    acc = Accumulator()
    chunk = {"choices": [{"index": 0, "delta": {"content": "ab"}, "finish_reason": None}]}
    for _ in range(20_000):
        acc.feed(chunk)
    assert len(acc._text) == 20_000
    assert acc.text == "ab" * 20_000
    assert acc.chunks == 20_000


# --- conformance and property: one conversation in every server's shape -------------------


@dataclass(frozen=True)
class Conversation:
    reasoning: str
    text: str
    calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int

    def expected(self) -> ChatResult:
        return chat_result(
            text=self.text,
            reasoning=self.reasoning,
            calls=self.calls,
            finish_reason="tool_calls" if self.calls else "stop",
            usage=Usage(
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                total_tokens=self.prompt_tokens + self.completion_tokens,
            ),
        )


class Cutter:
    """Splits strings into fragments and lists into groups: at random, or in fixed sizes."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng

    def pieces(self, text: str) -> list[str]:
        if not text:
            return []
        if self.rng is None:
            return [text[i : i + 4] for i in range(0, len(text), 4)]
        count = self.rng.randint(0, min(len(text) - 1, 6))
        cuts = sorted(self.rng.sample(range(1, len(text)), count))
        bounds = [0, *cuts, len(text)]
        return [text[a:b] for a, b in itertools.pairwise(bounds)]

    def groups(self, items: list[T]) -> list[list[T]]:
        grouped: list[list[T]] = []
        start = 0
        while start < len(items):
            size = 2 if self.rng is None else self.rng.randint(1, 3)
            grouped.append(items[start : start + size])
            start += size
        return grouped


def json_text(arguments: dict[str, Any]) -> str:
    return orjson.dumps(arguments).decode()


def usage_of(conv: Conversation) -> dict[str, int]:
    total = conv.prompt_tokens + conv.completion_tokens
    return {
        "prompt_tokens": conv.prompt_tokens,
        "completion_tokens": conv.completion_tokens,
        "total_tokens": total,
    }


def finish_of(conv: Conversation) -> str:
    return "tool_calls" if conv.calls else "stop"


def render_ollama_v1(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """Ollama /v1 since v0.32.6: whole calls, `reasoning`, finish chunk, usage chunk."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": "", "reasoning": piece} for piece in cut.pieces(conv.reasoning)]
    deltas += [{"content": piece} for piece in cut.pieces(conv.text)]
    deltas += [
        {
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "index": index,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json_text(call.arguments)},
                }
            ],
        }
        for index, call in enumerate(conv.calls)
    ]
    chunks = [ollama_v1(delta) for delta in deltas]
    chunks.append(ollama_v1({}, finish_of(conv)))
    chunks.append({**OLLAMA_V1, "choices": [], "usage": usage_of(conv)})
    return chunks


def render_ollama_v1_old(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """Older Ollama /v1: role on every chunk, finish on the last, every call at index 0."""
    deltas: list[dict[str, Any]] = []
    deltas += [{"reasoning": piece} for piece in cut.pieces(conv.reasoning)]
    deltas += [{"content": piece} for piece in cut.pieces(conv.text)]
    deltas += [
        {
            "tool_calls": [
                {
                    "id": call.id,
                    "index": 0,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json_text(call.arguments)},
                }
            ]
        }
        for call in conv.calls
    ]
    deltas = [{"role": "assistant", "content": "", **delta} for delta in deltas or [{}]]
    chunks = [ollama_v1(delta) for delta in deltas]
    chunks[-1] = ollama_v1(deltas[-1], finish_of(conv))
    chunks.append({**OLLAMA_V1, "choices": [], "usage": usage_of(conv)})
    return chunks


def render_ollama_native(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """Ollama /api/chat: thinking, content, whole calls with object arguments, done line."""
    chunks = [native(thinking=piece) for piece in cut.pieces(conv.reasoning)]
    chunks += [native(piece) for piece in cut.pieces(conv.text)]
    calls = [
        {"id": call.id, "function": {"index": i, "name": call.name, "arguments": call.arguments}}
        for i, call in enumerate(conv.calls)
    ]
    chunks += [native(tool_calls=group) for group in cut.groups(calls)]
    done: dict[str, Any] = {
        "done": True,
        "done_reason": "stop",
        "total_duration": 900_000_000,
        "prompt_eval_count": conv.prompt_tokens,
        "eval_count": conv.completion_tokens,
    }
    chunks.append(native(**done))
    return chunks


def fragments(conv: Conversation, cut: Cutter, *, first_empty: bool) -> list[dict[str, Any]]:
    """Streamed tool-call entries: id, type and name on the first, argument text after."""
    entries: list[dict[str, Any]] = []
    for index, call in enumerate(conv.calls):
        pieces = cut.pieces(json_text(call.arguments))
        if first_empty:
            pieces.insert(0, "")
        for n, piece in enumerate(pieces):
            entry: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
            if n == 0:
                entry.update(id=call.id, type="function")
                entry["function"]["name"] = call.name
            entries.append(entry)
    return entries


def render_llama_cpp(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """llama-server: content null first, reasoning_content, fragments, timings, usage chunk."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None}]
    deltas += [{"reasoning_content": piece} for piece in cut.pieces(conv.reasoning)]
    deltas += [{"content": piece} for piece in cut.pieces(conv.text)]
    deltas += [{"tool_calls": [entry]} for entry in fragments(conv, cut, first_empty=False)]
    chunks = [llama_cpp(delta) for delta in deltas]
    chunks.append(llama_cpp({}, finish_of(conv), timings=LLAMA_CPP_TIMINGS))
    chunks.append({**LLAMA_CPP, "choices": [], "usage": usage_of(conv)})
    return chunks


def render_llama_cpp_python(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """llama-cpp-python: id, type and name repeated on every fragment plus function_call."""
    deltas: list[dict[str, Any]] = [{"role": "assistant"}]
    deltas += [{"reasoning_content": piece} for piece in cut.pieces(conv.reasoning)]
    deltas += [{"content": piece} for piece in cut.pieces(conv.text)]
    for index, call in enumerate(conv.calls):
        for piece in cut.pieces(json_text(call.arguments)):
            function = {"name": call.name, "arguments": piece}
            entry = {"index": index, "id": call.id, "type": "function", "function": function}
            deltas.append({"role": None, "function_call": function, "tool_calls": [entry]})
    chunks: list[Chunk] = [{**LCP, "choices": [{"index": 0, "delta": d}]} for d in deltas]
    finish = {"index": 0, "delta": {}, "finish_reason": finish_of(conv)}
    chunks.append({**LCP, "choices": [finish], "usage": usage_of(conv)})
    return chunks


def render_vllm(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """vLLM: `reasoning`, grouped fragments, finish and stop_reason on the last chunk,
    continuous usage on every chunk, then the usage chunk."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"reasoning": piece} for piece in cut.pieces(conv.reasoning)]
    deltas += [{"content": piece} for piece in cut.pieces(conv.text)]
    entries = fragments(conv, cut, first_empty=False)
    deltas += [{"tool_calls": group} for group in cut.groups(entries)]
    chunks = [vllm(delta) for delta in deltas]
    chunks[-1] = vllm(deltas[-1], finish_of(conv), stop_reason=None)
    for n, chunk in enumerate(chunks):
        done = min(n, conv.completion_tokens)
        chunk["usage"] = {
            "prompt_tokens": conv.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": conv.prompt_tokens + done,
        }
    chunks.append({**VLLM, "choices": [], "usage": usage_of(conv)})
    return chunks


def render_openai(conv: Conversation, cut: Cutter) -> list[Chunk]:
    """OpenAI: fragments (first with empty arguments), grouped; usage null then a usage chunk.
    Reasoning goes in `reasoning`, as OpenAI-compatible proxies send it."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None, "refusal": None}]
    deltas += [{"reasoning": piece} for piece in cut.pieces(conv.reasoning)]
    deltas += [{"content": piece} for piece in cut.pieces(conv.text)]
    entries = fragments(conv, cut, first_empty=True)
    deltas += [{"tool_calls": group} for group in cut.groups(entries)]
    chunks = [openai(delta) for delta in deltas]
    chunks.append(openai({}, finish_of(conv)))
    chunks.append({**OPENAI, "choices": [], "usage": usage_of(conv), "obfuscation": "Qp"})
    return chunks


RENDERERS: dict[str, tuple[str, Callable[[Conversation, Cutter], list[Chunk]]]] = {
    "ollama-v1": ("openai", render_ollama_v1),
    "ollama-v1-old": ("openai", render_ollama_v1_old),
    "ollama-native": ("ollama", render_ollama_native),
    "llama.cpp": ("openai", render_llama_cpp),
    "llama-cpp-python": ("openai", render_llama_cpp_python),
    "vllm": ("openai", render_vllm),
    "openai": ("openai", render_openai),
}

WEATHER_AND_TIME = Conversation(
    reasoning="Let me think.",
    text="The weather is sunny.",
    calls=(
        ToolCall(id="call_w1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="call_t2", name="get_time", arguments={"tz": "CET"}),
    ),
    prompt_tokens=12,
    completion_tokens=34,
)


def accumulate_rendered(name: str, conv: Conversation, cut: Cutter) -> ChatResult:
    dialect, render = RENDERERS[name]
    return accumulate(render(conv, cut), dialect).model_copy(update={"model": None})


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_conformance_one_conversation_every_server_shape(name: str) -> None:
    """The same conversation in every server's chunk shape gives the same ChatResult."""
    assert accumulate_rendered(name, WEATHER_AND_TIME, Cutter()) == WEATHER_AND_TIME.expected()


def test_conformance_expected_result_is_the_conversation() -> None:
    """The conformance target itself: reasoning, text, two calls, usage 12/34."""
    assert WEATHER_AND_TIME.expected() == ChatResult(
        message=Message(
            role="assistant",
            content="The weather is sunny.",
            tool_calls=(
                ToolCall(id="call_w1", name="get_weather", arguments={"city": "Paris"}),
                ToolCall(id="call_t2", name="get_time", arguments={"tz": "CET"}),
            ),
        ),
        text="The weather is sunny.",
        reasoning="Let me think.",
        tool_calls=(
            ToolCall(id="call_w1", name="get_weather", arguments={"city": "Paris"}),
            ToolCall(id="call_t2", name="get_time", arguments={"tz": "CET"}),
        ),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=12, completion_tokens=34, total_tokens=46),
        timings=Timings(),
        model=None,
        server=None,
        warnings=(),
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
    arguments = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    calls = tuple(
        ToolCall(id=f"call_{i}_{draw(names)}", name=draw(names), arguments=draw(arguments))
        for i in range(draw(st.integers(0, 3)))
    )
    return Conversation(
        reasoning=draw(st.text(max_size=40)),
        text=draw(st.text(max_size=60)),
        calls=calls,
        prompt_tokens=draw(st.integers(0, 10_000)),
        completion_tokens=draw(st.integers(0, 10_000)),
    )


@settings(max_examples=300, deadline=None)
@given(
    conv=conversations(),
    name=st.sampled_from(sorted(RENDERERS)),
    rng=st.randoms(use_true_random=False),
)
def test_property_any_split_of_any_conversation_accumulates_exactly(
    conv: Conversation, name: str, rng: random.Random
) -> None:
    """Random text, reasoning and calls, split and grouped at random, come back exactly."""
    assert accumulate_rendered(name, conv, Cutter(rng)) == conv.expected()


_ABSENT = object()


def _text_like_chunk(
    delta: dict[str, Any], index: Any, finish: Any, usage: Any, model: Any
) -> Chunk:
    choice: dict[str, Any] = {"delta": delta}
    for key, value in (("index", index), ("finish_reason", finish)):
        if value is not _ABSENT:
            choice[key] = value
    chunk: Chunk = {"object": "chat.completion.chunk", "choices": [choice]}
    for key, value in (("usage", usage), ("model", model)):
        if value is not _ABSENT:
            chunk[key] = value
    return chunk


@settings(max_examples=400, deadline=None)
@given(
    deltas=st.lists(
        st.one_of(
            st.builds(lambda text: {"content": text}, st.text(max_size=5)),
            st.builds(lambda text: {"content": text, "role": "assistant"}, st.text(max_size=3)),
            st.sampled_from([{"content": None}, {}, {"role": "assistant"}, {"reasoning": "r"}]),
        ),
        min_size=1,
        max_size=8,
    ),
    index=st.sampled_from([_ABSENT, 0, 1, None, 0.0, False]),
    finish=st.sampled_from([_ABSENT, None, "", "stop"]),
    usage=st.sampled_from(
        [_ABSENT, None, {}, {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}]
    ),
    model=st.sampled_from([_ABSENT, None, "", "m"]),
)
def test_property_the_text_fast_path_gives_what_the_general_path_gives(
    deltas: list[dict[str, Any]], index: Any, finish: Any, usage: Any, model: Any
) -> None:
    """A chunk of one choice takes the text fast path when it can; the same chunk with a
    second choice (index 1, always ignored) cannot, and must give the same events and state."""
    fast, general = Accumulator("openai"), Accumulator("openai")
    for delta in deltas:
        chunk = _text_like_chunk(delta, index, finish, usage, model)
        events = fast.feed(chunk)
        widened = {**chunk, "choices": [*chunk["choices"], {"index": 1, "delta": {"content": "x"}}]}
        assert events == general.feed(widened)
        for event in events:
            if type(event) is TextDelta:
                assert hash(event) == hash(TextDelta(event.text))
                with pytest.raises(AttributeError):
                    event.text = "changed"  # type: ignore[misc]
    assert fast.text == general.text
    assert (fast.finish_reason, fast.usage, fast.model) == (
        general.finish_reason,
        general.usage,
        general.model,
    )
