"""llmtap.otel: one GenAI span per call with the conventions' attributes, the GenAI client
metrics, trace context out, content only when asked for, and never a secret. Against
llmtap's test server in each dialect, with the SDK's in-memory exporter and reader."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from llmtap import LLMClient, LLMConfig, LLMConnectionError, Message, Router
from llmtap.testing import Reply, TestServer, ToolCallSpec, no_retry_waits
from tests.otel_kit import Telemetry, attributes, everything_recorded, require_otel

SECRET_KEY = "sk-test-0123456789abcdef-never-shown"
PROMPT = "What is the secret word of the day?"
ANSWER = "The word is marmalade"
HELLO = [Message.system("Be brief."), Message.user(PROMPT)]


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    require_otel()
    with no_retry_waits():
        yield


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


#: test server dialect, client api, model, the provider name the span must carry.
SHAPES = [
    pytest.param("openai", "openai", "gpt-4o-mini", "openai", id="openai"),
    pytest.param("ollama", "openai", "llama3.2:latest", "ollama", id="ollama-v1"),
    pytest.param("ollama", "ollama", "llama3.2:latest", "ollama", id="ollama-native"),
    pytest.param("llamacpp", "openai", "tiny", "llama_cpp", id="llama.cpp"),
    pytest.param("vllm", "openai", "facebook/opt-125m", "vllm", id="vllm"),
]


def _config(server: TestServer, api: str, model: str, telemetry: Telemetry, **extra: Any) -> Any:
    return LLMConfig(
        endpoint=server.url,
        model=model,
        api=api,  # type: ignore[arg-type]
        api_key=SECRET_KEY,
        hooks=[telemetry.hook],
        **extra,
    )


PARAMS = {"temperature": 0.25, "top_p": 0.5, "seed": 42, "max_tokens": 64}


@pytest.mark.parametrize(("dialect", "api", "model", "provider"), SHAPES)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_one_span_with_every_attribute(
    telemetry: Telemetry, dialect: str, api: str, model: str, provider: str, stream: bool
) -> None:
    """A chat call (after preflight) is one CLIENT span named "chat {model}" whose
    attributes hold what was asked, what answered, the usage and where the server is."""
    async with TestServer(dialect=dialect, api_key=SECRET_KEY) as server:
        server.script(Reply(text=ANSWER, usage=(11, 4), finish_reason="length"))
        async with LLMClient(_config(server, api, model, telemetry)) as client:
            await client.preflight_check()
            result = await client.chat(HELLO, stream=stream, **PARAMS)
        port = int(server.url.rsplit(":", 1)[1])
    from opentelemetry.trace import SpanKind, StatusCode

    [span] = telemetry.spans
    assert span.name == f"chat {model}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    found = attributes(span)
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.request.top_p": 0.5,
        "gen_ai.request.seed": 42,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.response.model": result.model,
        "gen_ai.response.finish_reasons": ("length",),
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 4,
        "server.address": "127.0.0.1",
        "server.port": port,
        "llmtap.endpoint": server.url,
    }
    for key, value in expected.items():
        assert found.get(key) == value, key
    if stream:
        assert found["gen_ai.request.stream"] is True
        assert 0 < found["gen_ai.response.time_to_first_chunk"] < 30
    else:
        assert "gen_ai.request.stream" not in found
        assert "gen_ai.response.time_to_first_chunk" not in found
    if api == "ollama":  # Ollama's native answer has no id
        assert "gen_ai.response.id" not in found
    else:
        assert isinstance(found["gen_ai.response.id"], str)
        assert found["gen_ai.response.id"].startswith("chatcmpl")
    assert "error.type" not in found
    assert [event.name for event in span.events] == ["llmtap.attempt"]


@pytest.mark.parametrize(("dialect", "api", "model", "provider"), SHAPES)
async def test_the_provider_is_told_by_the_answer_without_preflight(
    telemetry: Telemetry, dialect: str, api: str, model: str, provider: str
) -> None:
    """Without preflight the provider comes from the marks the answer carries (Ollama's
    fingerprint, llama.cpp's timings, vLLM's stop_reason), set when the span ends."""
    async with TestServer(dialect=dialect) as server:
        async with LLMClient(_config(server, api, model, telemetry)) as client:
            await client.chat(HELLO)
    [span] = telemetry.spans
    assert attributes(span)["gen_ai.provider.name"] == provider


async def test_metrics_have_the_conventions_names_units_and_attributes(
    telemetry: Telemetry,
) -> None:
    """Duration and token usage for every call; time to first chunk and time per output
    chunk for streamed calls only."""
    async with TestServer(dialect="vllm") as server:
        server.script(
            Reply(chunks=["a", "b", "c", "d"], usage=(9, 4)),
            Reply(text="whole", usage=(9, 1)),
        )
        async with LLMClient(_config(server, "openai", "facebook/opt-125m", telemetry)) as client:
            await client.chat(HELLO)
            await client.chat(HELLO, stream=False)
        port = int(server.url.rsplit(":", 1)[1])
    found = telemetry.metrics()
    assert telemetry.units() == {
        "gen_ai.client.operation.duration": "s",
        "gen_ai.client.token.usage": "{token}",
        "gen_ai.client.operation.time_to_first_chunk": "s",
        "gen_ai.client.operation.time_per_output_chunk": "s",
    }
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm",
        "gen_ai.system": "vllm",
        "gen_ai.request.model": "facebook/opt-125m",
        "gen_ai.response.model": "facebook/opt-125m",
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    [(attrs, duration)] = found["gen_ai.client.operation.duration"]
    assert attrs == common
    assert duration.count == 2
    tokens = {
        attrs["gen_ai.token.type"]: point for attrs, point in found["gen_ai.client.token.usage"]
    }
    assert (tokens["input"].count, tokens["input"].sum) == (2, 18)
    assert (tokens["output"].count, tokens["output"].sum) == (2, 5)
    [(attrs, first)] = found["gen_ai.client.operation.time_to_first_chunk"]
    assert attrs == common
    assert first.count == 1  # the streamed call only
    [(attrs, per_chunk)] = found["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.count == 1
    assert list(duration.explicit_bounds)[:3] == [0.01, 0.02, 0.04]


async def test_a_call_never_streamed_records_no_streaming_metric(telemetry: Telemetry) -> None:
    """stream=False: neither streaming metric exists at all."""
    async with TestServer(dialect="openai") as server:
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            await client.chat(HELLO, stream=False)
            await client.chat(HELLO, stream=False)
    found = telemetry.metrics()
    assert "gen_ai.client.operation.time_to_first_chunk" not in found
    assert "gen_ai.client.operation.time_per_output_chunk" not in found
    assert found["gen_ai.client.operation.duration"][0][1].count == 2


async def test_a_reset_before_headers_retried_twice_is_one_span_with_three_attempts(
    telemetry: Telemetry,
) -> None:
    """max_retries=2 and every attempt reset: one span, three attempt events (each with its
    error and what followed), error.type, an error status, and a failed duration."""
    from opentelemetry.trace import StatusCode

    async with TestServer(dialect="openai") as server:
        server.script(*(Reply(reset_before_headers=True) for _ in range(3)))
        config = _config(server, "openai", "gpt-4o-mini", telemetry, max_retries=2)
        async with LLMClient(config) as client:
            with pytest.raises(LLMConnectionError):
                await client.chat(HELLO)
    [span] = telemetry.spans
    assert attributes(span)["error.type"] == "LLMConnectionError"
    assert span.status.status_code is StatusCode.ERROR
    events = [dict(event.attributes or {}) for event in span.events]
    assert [event["llmtap.attempt.number"] for event in events] == [1, 2, 3]
    assert [event["llmtap.attempt.next"] for event in events] == ["retry", "retry", "raise"]
    assert all(event["error.type"] == "LLMConnectionError" for event in events)
    assert all(event["llmtap.attempt.wait"] == 0.0 for event in events)
    [(attrs, point)] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert attrs["error.type"] == "LLMConnectionError"
    assert point.count == 1


async def test_an_http_error_is_named_by_its_status(telemetry: Telemetry) -> None:
    """A server that answers 400: error.type is "400"; a 503 then a success: one span, no
    error, and two attempt events."""
    from llmtap import LLMResponseError

    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=400), Reply(status=503), Reply(text="ok"))
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            with pytest.raises(LLMResponseError):
                await client.chat(HELLO)
            await client.chat(HELLO)
    failed, retried = telemetry.spans
    assert attributes(failed)["error.type"] == "400"
    assert "error.type" not in attributes(retried)
    assert [dict(e.attributes or {}).get("error.type") for e in retried.events] == ["503", None]


async def test_a_router_span_names_the_endpoint_that_answered(telemetry: Telemetry) -> None:
    """Through a Router with a failover: one span, its server and llmtap.endpoint those of
    the endpoint that answered, the request's parameters from the request that got the
    answer, and an attempt event for each endpoint tried."""
    async with TestServer(dialect="openai") as bad, TestServer(dialect="vllm") as good:
        bad.script(Reply(status=500))
        good.script(Reply(text=ANSWER, usage=(3, 4)))
        endpoints = [
            {"endpoint": bad.url, "model": "gpt-4o-mini", "name": "bad"},
            {"endpoint": good.url, "model": "facebook/opt-125m", "name": "good"},
        ]
        async with Router(endpoints, strategy="failover", hooks=[telemetry.hook]) as router:
            await router.chat(HELLO, temperature=0.5)
        port = int(good.url.rsplit(":", 1)[1])
    [span] = telemetry.spans
    found = attributes(span)
    assert span.name == "chat"  # each endpoint's own model: none asked for
    assert found["llmtap.endpoint"] == "good"
    assert (found["server.address"], found["server.port"]) == ("127.0.0.1", port)
    assert found["gen_ai.provider.name"] == "vllm"
    assert found["gen_ai.request.temperature"] == 0.5
    assert found["gen_ai.response.model"] == "facebook/opt-125m"
    assert "error.type" not in found
    endpoints_tried = [dict(e.attributes or {})["llmtap.endpoint"] for e in span.events]
    assert endpoints_tried == ["bad", "good"]


async def test_embeddings_are_a_span_of_their_own(telemetry: Telemetry) -> None:
    """embed(): an "embeddings {model}" span, with no streaming metric."""
    async with TestServer(dialect="openai") as server:
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            await client.embed(["a", "b"], model="nomic-embed-text")
    [span] = telemetry.spans
    assert span.name == "embeddings nomic-embed-text"
    assert attributes(span)["gen_ai.operation.name"] == "embeddings"
    assert "gen_ai.client.operation.time_to_first_chunk" not in telemetry.metrics()


async def test_a_stream_closed_early_ends_its_span(telemetry: Telemetry) -> None:
    """A caller who stops reading: the span ends, marked cancelled, with no error; no
    duration is recorded for it."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="one two three four five six", delay_between=0.01))
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            async with client.stream(HELLO) as stream:
                async for _event in stream:
                    break
    [span] = telemetry.spans
    assert attributes(span)["llmtap.cancelled"] is True
    assert "error.type" not in attributes(span)
    assert telemetry.hook.calls_in_progress == 0
    assert "gen_ai.client.operation.duration" not in telemetry.metrics()


async def test_traceparent_reaches_the_server_with_the_span_trace_id(
    telemetry: Telemetry,
) -> None:
    """Every attempt carries the W3C traceparent of the call's span, and the span is a
    child of the caller's current span."""
    tracer = telemetry.tracer_provider.get_tracer("app")
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=503), Reply(text="ok"))
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            with tracer.start_as_current_span("handle request") as parent:
                await client.chat(HELLO)
        sent = [request.headers.get("traceparent") for request in server.requests]
    span = next(s for s in telemetry.spans if s.name.startswith("chat"))
    context = span.get_span_context()
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    flags = int(context.trace_flags)
    assert flags & 1  # sampled
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    assert sent == [expected, expected]


async def test_no_secret_and_no_message_text_without_capture(telemetry: Telemetry) -> None:
    """Spans and metrics never hold the API key, and without capture_content no message
    text (neither the prompt nor the answer), also when the call fails."""
    async with TestServer(dialect="openai", api_key=SECRET_KEY) as server:
        server.script(Reply(text=ANSWER), Reply(status=500), Reply(status=500))
        config = _config(server, "openai", "gpt-4o-mini", telemetry, max_retries=1)
        async with LLMClient(config) as client:
            await client.chat(HELLO)
            with pytest.raises(Exception, match="500"):
                await client.chat(HELLO)
    recorded = everything_recorded(telemetry)
    assert len(telemetry.spans) == 2
    for text in (SECRET_KEY, PROMPT, "Be brief", ANSWER, "marmalade"):
        assert text not in recorded


async def test_capture_content_records_the_messages_in_the_conventions_shape() -> None:
    """capture_content=True: gen_ai.input.messages and gen_ai.output.messages (JSON) with
    roles, text parts, tool calls and the finish reason; still never the API key."""
    telemetry = Telemetry(capture_content=True)
    call = ToolCallSpec(name="get_weather", arguments={"city": "Paris"}, id="call_1")
    async with TestServer(dialect="openai", api_key=SECRET_KEY) as server:
        server.script(Reply(text="Let me look.", tool_calls=[call]))
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            await client.chat(HELLO)
    [span] = telemetry.spans
    found = attributes(span)
    assert orjson.loads(found["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]},
    ]
    assert orjson.loads(found["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Let me look."},
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
            ],
            "finish_reason": "tool_calls",
        }
    ]
    assert SECRET_KEY not in everything_recorded(telemetry)


async def test_the_environment_variable_turns_capture_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true captures as the argument
    does; the stability opt-in drops the old gen_ai.system name."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    telemetry = Telemetry()
    async with TestServer(dialect="openai") as server:
        async with LLMClient(_config(server, "openai", "gpt-4o-mini", telemetry)) as client:
            await client.chat(HELLO)
    found = attributes(telemetry.spans[0])
    assert "gen_ai.input.messages" in found
    assert found["gen_ai.provider.name"] == "openai"
    assert "gen_ai.system" not in found


async def test_instrument_covers_every_client_until_uninstrumented() -> None:
    """instrument() records the calls of clients made before and after it, with no hook in
    their config; uninstrument() stops it."""
    import llmtap.otel

    telemetry = Telemetry()
    async with TestServer(dialect="openai") as server:
        config = LLMConfig(endpoint=server.url, model="gpt-4o-mini")
        async with LLMClient(config) as before:
            llmtap.otel.instrument(
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
            )
            try:
                await before.chat(HELLO)
                async with LLMClient(config) as after:
                    await after.chat(HELLO)
            finally:
                llmtap.otel.uninstrument()
            await before.chat(HELLO)
    assert len(telemetry.spans) == 2


def test_import_llmtap_imports_no_opentelemetry() -> None:
    """import llmtap (and its test server) loads no OpenTelemetry module; llmtap.otel does."""
    code = (
        "import sys, llmtap, llmtap.testing\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'loaded'\n"
        "import llmtap.otel\n"
        "assert 'opentelemetry.trace' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
