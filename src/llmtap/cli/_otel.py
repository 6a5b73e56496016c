"""Spans of ``llmtap chat`` and ``llmtap bench`` exported over OTLP, when the environment
asks for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
OpenTelemetry's SDK and OTLP/HTTP exporter are installed. Otherwise nothing changes."""

from __future__ import annotations

import os
from collections.abc import Callable

from rich.console import Console

__all__ = ["export_spans"]

_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_INSTALL = "pip install 'llmtap[otel]' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"


def export_spans(err: Console) -> Callable[[], None] | None:
    """Set up the export when asked for: every call's span goes to the OTLP endpoint the
    standard variables name (``OTEL_SERVICE_NAME``, default ``llmtap``; headers and
    protocol settings as the exporter reads them). Returns what flushes and stops it at the
    end of the command; ``None`` when nothing is exported."""
    if not any(os.environ.get(name) for name in _VARIABLES):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        import llmtap.otel
    except ImportError as exc:
        err.print(
            f"note: OTEL_EXPORTER_OTLP_ENDPOINT is set, but {exc.name} is not installed, so "
            f"no spans are exported; to export them: {_INSTALL}",
            style="yellow",
            markup=False,
        )
        return None
    service = os.environ.get("OTEL_SERVICE_NAME") or "llmtap"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    llmtap.otel.instrument(tracer_provider=provider)

    def stop() -> None:
        llmtap.otel.uninstrument()
        provider.shutdown()  # exports what is left

    return stop
