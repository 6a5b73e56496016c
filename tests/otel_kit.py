"""OpenTelemetry's SDK set up for a test: an in-memory span exporter and metric reader, and
llmtap's hook writing to them. Outside CI a missing SDK skips the test that needs it (saying
so); in CI, where the ``dev`` extra installs it, it fails it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from llmtap.otel import OTelHook


def otel_installed() -> bool:
    """Whether the SDK is there (outside CI a test may then leave its telemetry checks
    out; in CI, where the ``dev`` extra installs it, a missing SDK fails the test)."""
    if importlib.util.find_spec("opentelemetry") and importlib.util.find_spec("opentelemetry.sdk"):
        return True
    require_otel()
    return False


def check_one_span(telemetry: Telemetry, records: list[Any], error: BaseException | None) -> None:
    """The call's telemetry as the records say it went: exactly one span, an attempt event
    for each failed attempt and for the one that answered, ``error.type`` and an error
    status exactly when the call failed."""
    from opentelemetry.trace import StatusCode

    from llmtap import AttemptFailed, RequestFinished

    [span] = telemetry.spans
    failed = sum(isinstance(record, AttemptFailed) for record in records)
    answered = any(isinstance(record, RequestFinished) for record in records)
    assert len(span.events) == failed + answered
    found = attributes(span)
    if error is None:
        assert "error.type" not in found
        assert span.status.status_code is StatusCode.UNSET
    else:
        assert found["error.type"] == _error_type(error)
        assert span.status.status_code is StatusCode.ERROR
    assert telemetry.hook.calls_in_progress == 0


def _error_type(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return str(status) if status else type(error).__name__


def require_otel() -> None:
    """Skip (outside CI) or fail (in CI) when the OpenTelemetry SDK is not installed."""
    missing = [
        name
        for name in ("opentelemetry", "opentelemetry.sdk")
        if importlib.util.find_spec(name) is None
    ]
    if not missing:
        return
    reason = "the OpenTelemetry tests need opentelemetry-sdk: pip install -e '.[dev]'"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}. CI runs them; they must not be skipped", pytrace=False)
    pytest.skip(reason)


class Telemetry:
    """An SDK tracer provider and meter provider kept in memory, and the llmtap hook that
    writes to them."""

    def __init__(self, capture_content: bool = False) -> None:
        require_otel()
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        import llmtap.otel

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.hook: OTelHook = llmtap.otel.hooks(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            capture_content=capture_content,
        )

    @property
    def spans(self) -> list[ReadableSpan]:
        """The spans ended so far."""
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        self.exporter.clear()

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Every metric read now: name to ``(attributes, point)`` pairs."""
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), point)
                        )
        return found

    def units(self) -> dict[str, str]:
        """Each metric's unit."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: metric.unit or ""
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


class OTLPReceiver:
    """A loopback OTLP/HTTP receiver (``POST /v1/traces``) that decodes each
    ``ExportTraceServiceRequest`` as a collector would, in the test's event loop."""

    def __init__(self) -> None:
        require_otel()
        self.received: list[Any] = []
        self.content_types: list[str] = []
        self.url = ""

    async def __aenter__(self) -> OTLPReceiver:
        from aiohttp import web

        async def traces(request: web.Request) -> web.Response:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
            )

            self.content_types.append(request.headers.get("Content-Type", ""))
            message = ExportTraceServiceRequest()
            message.ParseFromString(await request.read())
            self.received.append(message)
            return web.Response(status=200, content_type="application/x-protobuf", body=b"")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    def spans(self, scope: str = "llmtap") -> list[tuple[dict[str, Any], Any]]:
        """Every span received from the instrumentation ``scope``, with its resource's
        attributes."""
        return [
            (_values(resource.resource.attributes), span)
            for message in self.received
            for resource in message.resource_spans
            for scoped in resource.scope_spans
            for span in scoped.spans
            if scoped.scope.name == scope
        ]


def _values(attributes: Any) -> dict[str, Any]:
    """Protobuf ``KeyValue`` attributes as a dict of plain values."""
    found = {}
    for attribute in attributes:
        kind = attribute.value.WhichOneof("value")
        found[attribute.key] = getattr(attribute.value, kind) if kind else None
    return found


def span_attributes(span: Any) -> dict[str, Any]:
    """A protobuf span's attributes as a dict of plain values."""
    return _values(span.attributes)


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    return dict(span.attributes or {})


def everything_recorded(telemetry: Telemetry) -> str:
    """Every span (name, attributes, events, status) and every metric point, as text: what
    a backend would receive, to search for what must never be there."""
    parts: list[str] = []
    for span in telemetry.spans:
        parts.append(span.to_json())
    for name, points in telemetry.metrics().items():
        for attrs, point in points:
            parts.append(f"{name} {attrs} {point}")
    return "\n".join(parts)
