"""End to end: llmtap's span goes out through OpenTelemetry's real OTLP/HTTP exporter to a
loopback receiver, which decodes the protobuf payload as a collector would."""

from __future__ import annotations

import asyncio

from llmtap import LLMClient, LLMConfig, Message
from llmtap.testing import Reply, TestServer
from tests.otel_kit import OTLPReceiver, require_otel, span_attributes


async def test_the_span_reaches_an_otlp_receiver() -> None:
    """The exporter posts ExportTraceServiceRequest protobufs; the receiver decodes them and
    finds the call's span with its name, kind and GenAI attributes."""
    require_otel()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import llmtap.otel

    async with OTLPReceiver() as receiver:
        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
        try:
            async with TestServer(dialect="openai") as server:
                server.script(Reply(text="hello there", usage=(6, 2)))
                config = LLMConfig(
                    endpoint=server.url,
                    model="gpt-4o-mini",
                    hooks=[llmtap.otel.hooks(tracer_provider=provider)],
                )
                async with LLMClient(config) as client:
                    await client.chat([Message.user("hi")])
            # the exporter is synchronous: flush it off the loop that runs the receiver
            assert await asyncio.to_thread(provider.force_flush, 10_000)
        finally:
            await asyncio.to_thread(provider.shutdown)
    assert set(receiver.content_types) == {"application/x-protobuf"}
    [(_resource, span)] = receiver.spans()
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert len(span.trace_id) == 16
    values = span_attributes(span)
    assert values["gen_ai.operation.name"] == "chat"
    assert values["gen_ai.provider.name"] == "openai"
    assert values["gen_ai.request.model"] == "gpt-4o-mini"
    assert values["gen_ai.usage.input_tokens"] == 6
    assert values["gen_ai.usage.output_tokens"] == 2
