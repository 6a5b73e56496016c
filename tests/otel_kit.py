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
