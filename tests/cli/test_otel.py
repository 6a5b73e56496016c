"""``llmtap chat`` and ``llmtap bench`` export their spans over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set; without it nothing changes."""

from __future__ import annotations

from llmtap.testing import TestServer
from tests.cli.conftest import Runner
from tests.otel_kit import OTLPReceiver, span_attributes


async def test_chat_exports_its_span_when_the_endpoint_is_set(cli: Runner) -> None:
    """One chat: the receiver gets its "chat" span, from the service "llmtap"."""
    async with OTLPReceiver() as receiver, TestServer(dialect="ollama") as server:
        result = await cli(
            "chat", "--endpoint", server.url, "Hi",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
        )  # fmt: skip
    assert result.code == 0, result.err
    assert result.err == ""
    [(resource, span)] = receiver.spans()
    assert resource["service.name"] == "llmtap"
    assert span.name == "chat llama3.2:latest"
    assert span_attributes(span)["gen_ai.provider.name"] == "ollama"


async def test_bench_exports_a_span_per_request(cli: Runner) -> None:
    """bench: one span per request it made, named by the service the variable gives."""
    async with OTLPReceiver() as receiver, TestServer(dialect="openai") as server:
        result = await cli(
            "bench", "--json", "--endpoint", server.url, "-m", "gpt-4o-mini",
            "--requests", "3", "--concurrency", "1", "--max-tokens", "4", "--no-warmup",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "bench-a"},
        )  # fmt: skip
    assert result.code == 0, result.err
    spans = receiver.spans()
    assert len(spans) == 3
    assert {resource["service.name"] for resource, _span in spans} == {"bench-a"}


async def test_without_the_variable_nothing_is_exported(cli: Runner) -> None:
    async with OTLPReceiver() as receiver, TestServer(dialect="ollama") as server:
        result = await cli("chat", "--endpoint", server.url, "Hi")
    assert result.code == 0
    assert receiver.received == []
