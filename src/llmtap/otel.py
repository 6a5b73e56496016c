"""OpenTelemetry for llmtap: a GenAI span and the GenAI client metrics for every call.

Install the extra (``pip install 'llmtap[otel]'``: the OpenTelemetry API only; your
application configures the SDK and its exporters as it does for everything else) and turn it
on in one line, for every client and router in the process::

    import llmtap.otel

    llmtap.otel.instrument()  # the global tracer and meter providers

or for one client: ``LLMConfig(hooks=[llmtap.otel.hooks()])``. ``import llmtap`` alone never
imports OpenTelemetry.

What is recorded follows the OpenTelemetry semantic conventions for generative AI, version
:data:`SEMCONV_VERSION` (the inference span and the client metrics):

* One ``CLIENT`` span per call, named ``"{operation} {model}"`` (``chat qwen3``,
  ``embeddings nomic-embed-text``), over all its retries and failovers; each attempt is an
  event on it (``llmtap.attempt``: its number, endpoint, error and the wait before the next).
  Attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name`` (``ollama``, ``vllm``,
  ``llama_cpp``, else ``openai``), ``gen_ai.request.model`` / ``.max_tokens`` /
  ``.temperature`` / ``.top_p`` / ``.top_k`` / ``.seed`` / ``.stop_sequences`` /
  ``.stream``, ``gen_ai.response.id`` / ``.model`` / ``.finish_reasons`` /
  ``.time_to_first_chunk``, ``gen_ai.usage.input_tokens`` / ``.output_tokens``,
  ``server.address``, ``server.port``, ``llmtap.endpoint`` (the endpoint that answered, by
  its router name), and ``error.type`` on failure (the HTTP status, else the llmtap error
  class).
* Outgoing requests carry the W3C ``traceparent`` of the span (through the globally
  configured propagator), so a server that traces (vLLM with ``--otlp-traces-endpoint``)
  continues the caller's trace.
* Metrics: ``gen_ai.client.operation.duration`` (s), ``gen_ai.client.token.usage``
  ({token}, by ``gen_ai.token.type``), and for streamed answers only
  ``gen_ai.client.operation.time_to_first_chunk`` and
  ``gen_ai.client.operation.time_per_output_chunk`` (s; one observation per call: the mean
  time between its chunks after the first).
* Message contents only when asked for: ``capture_content=True``, or the environment
  variable ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` set to ``true``,
  ``span_only`` or ``span_and_event``. They go on the span as ``gen_ai.input.messages`` and
  ``gen_ai.output.messages`` (JSON, in the conventions' schema). An API key never appears
  anywhere: llmtap sends it in a header it never records.

``OTEL_SEMCONV_STABILITY_OPT_IN``: llmtap's GenAI telemetry is new, so it emits the
conventions of :data:`SEMCONV_VERSION` whatever the variable says; without
``gen_ai_latest_experimental`` in it, spans also carry the name the conventions used up to
v1.36.0 for the provider (``gen_ai.system``), for backends that still read that one; with it,
only the current names.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from llmtap import _telemetry
from llmtap._hooks import (
    AttemptFailed,
    FirstChunk,
    HookRecord,
    RequestCancelled,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    install,
    uninstall,
)
from llmtap._version import __version__

__all__ = ["SEMCONV_VERSION", "OTelHook", "hooks", "instrument", "uninstrument"]

#: The version of the OpenTelemetry semantic conventions (GenAI) implemented.
SEMCONV_VERSION = "1.41.0"
_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

#: The conventions' bucket boundaries for durations (s) and token counts.
_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKENS = tuple(float(4**n) for n in range(14))  # 1, 4, 16, ... 67108864

_CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_VALUES = frozenset({"true", "1", "yes", "span_only", "span_and_event"})


def _capture_from_environment() -> bool:
    return os.environ.get(_CAPTURE_VARIABLE, "").strip().lower() in _CAPTURE_VALUES


def _latest_only() -> bool:
    opted = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "gen_ai_latest_experimental" in {value.strip() for value in opted.split(",")}


class _Call:
    """What the hook keeps about one call until its last record."""

    __slots__ = (
        "began",
        "first_chunk",
        "metric_attributes",
        "request_set",
        "span",
        "stream",
        "url",
    )

    def __init__(
        self, span: Span, stream: bool, attributes: dict[str, Any], url: str | None
    ) -> None:
        self.span = span
        self.stream = stream
        #: The URL whose address the attributes hold.
        self.url = url
        self.began = time.perf_counter()
        self.first_chunk: float | None = None
        self.metric_attributes = attributes
        #: Whether the request's parameters are on the span (a client's, at the start).
        self.request_set = False


class OTelHook:
    """The hook that records llmtap's calls as OpenTelemetry spans and metrics (made by
    :func:`hooks`; see the module's docstring for what it records).

    Args:
        tracer_provider: Where spans go (default: the global one, as configured when a span
            is started).
        meter_provider: Where metrics go (default: the global one).
        capture_content: Record message contents on the spans (also turned on by
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(
            "llmtap", __version__, tracer_provider, schema_url=_SCHEMA_URL
        )
        meter = metrics.get_meter("llmtap", __version__, meter_provider, schema_url=_SCHEMA_URL)
        self._duration = _histogram(
            meter, "gen_ai.client.operation.duration", "s", "GenAI operation duration.", _SECONDS
        )
        self._tokens = _histogram(
            meter,
            "gen_ai.client.token.usage",
            "{token}",
            "Number of input and output tokens used.",
            _TOKENS,
        )
        self._to_first_chunk = _histogram(
            meter,
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
            "Time to receive the first chunk of a streamed answer, from the request.",
            _SECONDS,
        )
        self._per_chunk = _histogram(
            meter,
            "gen_ai.client.operation.time_per_output_chunk",
            "s",
            "Time per output chunk after the first, of a streamed answer.",
            _SECONDS,
        )
        #: Spans and metrics go to providers given here (else to the global ones, which may
        #: be the API's proxies with nothing behind them: then calls are not followed).
        self._given = tracer_provider is not None or meter_provider is not None
        #: When to look again whether a global provider has been set (while none is).
        self._look_again_at = 0.0
        self.capture_content = capture_content or _capture_from_environment()
        self._old_names = not _latest_only()
        self._calls: dict[int, _Call] = {}

    def _configured(self) -> bool:
        """Whether a global provider has been set (an SDK configured): looked up at most
        once a second while none is, then taken as set for good (providers are set once)."""
        now = time.monotonic()
        if now < self._look_again_at:
            return False
        if _sdk_configured():
            self._given = True
            return True
        self._look_again_at = now + 1.0
        return False

    @property
    def calls_in_progress(self) -> int:
        """Calls started and not ended (their spans still open)."""
        return len(self._calls)

    def __call__(self, record: HookRecord) -> None:
        if type(record) is RequestStarted:
            if self._given or self._configured():
                self._started(record)
            return
        call = self._calls.get(record.call_id)
        if call is None:  # a call that started before this hook was installed
            return
        if type(record) is FirstChunk:
            call.first_chunk = record.time_to_first_chunk
        elif type(record) is AttemptFailed:
            self._attempt_failed(call, record)
        elif type(record) is RequestFinished:
            del self._calls[record.call_id]
            self._finished(call, record)
        elif type(record) is RequestFailed:
            del self._calls[record.call_id]
            self._failed(call, record)
        elif type(record) is RequestCancelled:
            del self._calls[record.call_id]
            self._cancelled(call, record)

    # --- the records ---------------------------------------------------------------------

    def _started(self, record: RequestStarted) -> None:
        operation = record.operation
        model = record.model
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation}
        if record.server is not None:
            self._provider(attributes, _telemetry.provider_name(record.server))
        if model:
            attributes["gen_ai.request.model"] = model
        where = _telemetry.address(record.endpoint)
        if where is not None:
            attributes["server.address"], attributes["server.port"] = where
        span = self._tracer.start_span(
            f"{operation} {model}" if model else operation,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        call = _Call(span, record.stream, dict(attributes), record.endpoint)
        self._calls[record.call_id] = call
        if not span.is_recording():
            return
        propagate.inject(record.headers, context=trace.set_span_in_context(span))
        if record.stream:
            span.set_attribute("gen_ai.request.stream", True)
        if record.body is not None:
            self._request(call, record.body)

    def _request(self, call: _Call, body: bytes) -> None:
        """The request's parameters (and, when captured, its messages) on the span."""
        call.request_set = True
        payload = _telemetry.decode(body)
        if payload is None:
            return
        span = call.span
        span.set_attributes(_telemetry.request_parameters(payload))
        if self.capture_content and "messages" in payload:
            messages = _telemetry.input_messages(payload)
            span.set_attribute("gen_ai.input.messages", _json(messages))

    def _attempt_failed(self, call: _Call, record: AttemptFailed) -> None:
        span = call.span
        if not span.is_recording():
            return
        error = record.error
        span.add_event(
            "llmtap.attempt",
            {
                "llmtap.attempt.number": record.attempt,
                "llmtap.endpoint": record.endpoint,
                "error.type": _telemetry.error_type(error),
                "llmtap.attempt.error": f"{type(error).__name__}: {error.message}",
                "llmtap.attempt.next": record.action,
                "llmtap.attempt.wait": record.wait,
                **({"llmtap.attempt.reason": record.reason} if record.reason else {}),
            },
        )

    def _end_attributes(
        self, call: _Call, record: RequestFinished | RequestFailed | RequestCancelled
    ) -> None:
        """What the end of a call tells about where it went (a router's endpoint), and the
        request's parameters when the start did not have them (a router's)."""
        attributes = call.metric_attributes
        if record.server is not None or "gen_ai.provider.name" not in attributes:
            self._provider(attributes, _telemetry.provider_name(record.server))
        if record.url != call.url:
            where = _telemetry.address(record.url)
            if where is not None:
                attributes["server.address"], attributes["server.port"] = where
        span = call.span
        if span.is_recording():
            span.set_attributes(attributes)
            if record.endpoint is not None:
                span.set_attribute("llmtap.endpoint", record.endpoint)
            if not call.request_set and record.body is not None:
                self._request(call, record.body)

    def _finished(self, call: _Call, record: RequestFinished) -> None:
        ended = time.perf_counter()
        span = call.span
        self._end_attributes(call, record)
        attributes = call.metric_attributes
        model = record.model
        if model:
            attributes["gen_ai.response.model"] = model
        prompt, completion = record.tokens
        if prompt is None and completion is None and call.stream:
            result = record.result  # a stream with no usage: its output counted
            if result is not None:
                prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
        if span.is_recording():
            if model:
                span.set_attribute("gen_ai.response.model", model)
            if record.response_id:
                span.set_attribute("gen_ai.response.id", record.response_id)
            if record.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", (record.finish_reason,))
            if prompt is not None:
                span.set_attribute("gen_ai.usage.input_tokens", prompt)
            if completion is not None:
                span.set_attribute("gen_ai.usage.output_tokens", completion)
            if call.stream and call.first_chunk is not None:
                span.set_attribute("gen_ai.response.time_to_first_chunk", call.first_chunk)
            span.add_event(
                "llmtap.attempt",
                {"llmtap.attempt.number": record.attempts, "llmtap.endpoint": record.endpoint},
            )
            if self.capture_content:
                self._output(call, record)
        span.end()
        self._duration.record(ended - call.began, attributes)
        # Each record gets a dict of its own: an SDK may keep the one it is given (1.30 does).
        if prompt is not None:
            self._tokens.record(prompt, {**attributes, "gen_ai.token.type": "input"})
        if completion is not None:
            self._tokens.record(completion, {**attributes, "gen_ai.token.type": "output"})
        if call.stream and call.first_chunk is not None:
            self._to_first_chunk.record(call.first_chunk, attributes)
            if record.chunks > 1:
                gaps = (ended - call.began - call.first_chunk) / (record.chunks - 1)
                self._per_chunk.record(max(gaps, 0.0), attributes)

    def _output(self, call: _Call, record: RequestFinished) -> None:
        result = record.result
        if result is not None:
            calls = [(c.id, c.name, c.arguments) for c in result.tool_calls]
            messages = _telemetry.output_messages(
                result.text, result.reasoning, calls, result.finish_reason
            )
        elif record.finish_reason is not None:  # a raw chunk stream: its text
            messages = _telemetry.output_messages(record.text, None, [], record.finish_reason)
        else:  # embeddings: no message
            return
        call.span.set_attribute("gen_ai.output.messages", _json(messages))

    def _failed(self, call: _Call, record: RequestFailed) -> None:
        ended = time.perf_counter()
        span = call.span
        self._end_attributes(call, record)
        kind = _telemetry.error_type(record.error)
        attributes = {**call.metric_attributes, "error.type": kind}
        if span.is_recording():
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, f"{type(record.error).__name__}"))
        span.end()
        self._duration.record(ended - call.began, attributes)

    def _cancelled(self, call: _Call, record: RequestCancelled) -> None:
        """A call the caller stopped: its span ends (marked), no metric counts it."""
        span = call.span
        self._end_attributes(call, record)
        if span.is_recording():
            span.set_attribute("llmtap.cancelled", True)
        span.end()

    def _provider(self, attributes: dict[str, Any], name: str) -> None:
        attributes["gen_ai.provider.name"] = name
        if self._old_names:
            attributes["gen_ai.system"] = name


def _sdk_configured() -> bool:
    """Whether a global tracer or meter provider has been set: with neither (the API alone,
    no SDK), spans and metrics would go nowhere, and a call costs one check."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) or (
        type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"
    )


def _histogram(
    meter: metrics.Meter, name: str, unit: str, description: str, buckets: tuple[float, ...]
) -> Histogram:
    return meter.create_histogram(
        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def hooks(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    capture_content: bool = False,
) -> OTelHook:
    """A hook that records every call it sees as a span and metrics: pass it to one
    client or router (``LLMConfig(hooks=[llmtap.otel.hooks()])``).

    Args:
        tracer_provider: Where spans go (default: the global tracer provider).
        meter_provider: Where metrics go (default: the global meter provider).
        capture_content: Put message contents on the spans (default: only when
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for it).
    """
    return OTelHook(tracer_provider, meter_provider, capture_content)


_installed: OTelHook | None = None


def instrument(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    capture_content: bool = False,
) -> OTelHook:
    """Record every call of every client and router in the process (made before or after)
    as OpenTelemetry spans and metrics. Calling it again replaces the previous setting.

    Args:
        tracer_provider: Where spans go (default: the global tracer provider).
        meter_provider: Where metrics go (default: the global meter provider).
        capture_content: Put message contents on the spans (default: only when
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for it).

    Returns:
        The hook installed.

    Example:
        >>> import llmtap.otel
        >>> llmtap.otel.instrument()
        <llmtap.otel.OTelHook object at 0x...>
    """
    global _installed
    uninstrument()
    _installed = OTelHook(tracer_provider, meter_provider, capture_content)
    install(_installed)
    return _installed


def uninstrument() -> None:
    """Stop recording the calls :func:`instrument` made visible (calls under way keep their
    spans to the end)."""
    global _installed
    if _installed is not None:
        uninstall(_installed)
        _installed = None
