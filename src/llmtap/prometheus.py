"""Prometheus metrics for llmtap's calls, from the lifecycle hooks.

Install the extra (``pip install 'llmtap[prometheus]'``), hand the hook to a client or a
router, and serve the registry as you do for the rest of your service::

    from prometheus_client import start_http_server

    import llmtap.prometheus

    metrics = llmtap.prometheus.hooks()  # the default registry
    client = LLMClient(LLMConfig(hooks=[metrics]))
    router = Router([...], hooks=[metrics])
    start_http_server(9100)  # curl localhost:9100/metrics

Exported (``endpoint`` is the endpoint's URL without a password, or its router name;
``model`` the model asked for, else the one that answered):

* ``llmtap_requests_total{endpoint,model,outcome}``: calls ended, by ``outcome``: ``ok``,
  ``error`` or ``cancelled`` (the caller stopped reading).
* ``llmtap_request_duration_seconds{endpoint,model}``: how long calls took (ok or error).
* ``llmtap_time_to_first_token_seconds{endpoint,model}``: streamed calls, from the start of
  the call to the first output.
* ``llmtap_output_tokens_total{endpoint,model}``: tokens generated (as the server counts
  them; counted chunks where it sends no usage).
* ``llmtap_retries_total{endpoint}``: attempts that failed and were followed by another
  (a retry, a refit, a resume, or a failover to another endpoint).
* ``llmtap_in_flight{endpoint}``: calls under way now (a router's: attempts under way on
  each of its endpoints, as the router counts them).
* ``llmtap_endpoint_up{endpoint}``: for a router's endpoints, 1 while the endpoint takes
  requests, 0 while it is out after a failure.

``import llmtap`` alone never imports ``prometheus_client``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmtap._hooks import (
    AttemptFailed,
    FirstChunk,
    HookRecord,
    RequestCancelled,
    RequestFailed,
    RequestFinished,
    RequestStarted,
)

if TYPE_CHECKING:
    from llmtap._router import Router

__all__ = ["PrometheusHook", "hooks"]

#: Seconds: the OpenTelemetry GenAI conventions' boundaries for operation durations.
_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


class _Metrics:
    """The metric families of one registry (made once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "llmtap_requests",
            "LLM calls ended, by outcome (ok, error, cancelled).",
            ("endpoint", "model", "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "llmtap_request_duration_seconds",
            "Seconds an LLM call took, from its start to its answer's end or its error.",
            ("endpoint", "model"),
            buckets=_SECONDS,
            registry=registry,
        )
        self.first_token = Histogram(
            "llmtap_time_to_first_token_seconds",
            "Seconds from the start of a streamed LLM call to its first output.",
            ("endpoint", "model"),
            buckets=_SECONDS,
            registry=registry,
        )
        self.output_tokens = Counter(
            "llmtap_output_tokens",
            "Output tokens generated.",
            ("endpoint", "model"),
            registry=registry,
        )
        self.retries = Counter(
            "llmtap_retries",
            "Failed attempts followed by another (retry, refit, resume, failover).",
            ("endpoint",),
            registry=registry,
        )
        self.live = _Live()
        registry.register(self.live)


class _Live(Collector):
    """``llmtap_in_flight`` and ``llmtap_endpoint_up``, read when scraped: the clients'
    calls under way (counted from the hooks' records) and each watched router's endpoints
    (as the router knows them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.routers: weakref.WeakSet[Router] = weakref.WeakSet()

    def add(self, endpoint: str, change: int) -> None:
        with self._lock:
            count = self.calls.get(endpoint, 0) + change
            if count:
                self.calls[endpoint] = count
            else:
                self.calls.pop(endpoint, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            in_flight = dict(self.calls)
        up: dict[str, float] = {}
        for router in list(self.routers):
            for stats in router.stats():
                in_flight[stats.name] = in_flight.get(stats.name, 0) + stats.in_flight
                up[stats.name] = 1.0 if stats.state == "healthy" else 0.0
        flight = GaugeMetricFamily(
            "llmtap_in_flight", "LLM calls under way now, by endpoint.", labels=("endpoint",)
        )
        for endpoint, count in sorted(in_flight.items()):
            flight.add_metric((endpoint,), count)
        yield flight
        state = GaugeMetricFamily(
            "llmtap_endpoint_up",
            "1 while a router's endpoint takes requests, 0 while it is out after a failure.",
            labels=("endpoint",),
        )
        for endpoint, value in sorted(up.items()):
            state.add_metric((endpoint,), value)
        yield state


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_making = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _making:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = _Metrics(registry)
        return metrics


class _Call:
    __slots__ = ("began", "endpoint", "first_chunk", "model", "stream")

    def __init__(self, endpoint: str | None, model: str | None, stream: bool) -> None:
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        self.began = time.perf_counter()
        self.first_chunk: float | None = None


class PrometheusHook:
    """The hook that counts llmtap's calls in a Prometheus registry (made by :func:`hooks`;
    the module's docstring lists the metrics). Given to a ``Router``, it also reports that
    router's endpoints (in flight, up or not)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._metrics = _metrics_for(self.registry)
        self._calls: dict[int, _Call] = {}

    def watch_router(self, router: Router) -> None:
        """Report ``router``'s endpoints (called by the router this hook is given to)."""
        self._metrics.live.routers.add(router)

    def __call__(self, record: HookRecord) -> None:
        if type(record) is RequestStarted:
            call = self._calls[record.call_id] = _Call(record.endpoint, record.model, record.stream)
            if record.endpoint is not None:  # a client's; a router counts its own
                self._metrics.live.add(record.endpoint, 1)
            return
        call_or_none = self._calls.get(record.call_id)
        if call_or_none is None:
            return
        call = call_or_none
        if type(record) is FirstChunk:
            call.first_chunk = record.time_to_first_chunk
        elif type(record) is AttemptFailed:
            if record.will_retry:
                self._metrics.retries.labels(record.endpoint).inc()
        elif type(record) is RequestFinished:
            self._end(call, record.call_id, record.endpoint, record.model, "ok")
            self._finished(call, record)
        elif type(record) is RequestFailed:
            self._end(call, record.call_id, record.endpoint, None, "error")
        elif type(record) is RequestCancelled:
            self._end(call, record.call_id, record.endpoint, None, "cancelled")

    def _end(
        self,
        call: _Call,
        call_id: int,
        endpoint: str | None,
        answered_by: str | None,
        outcome: str,
    ) -> None:
        del self._calls[call_id]
        metrics = self._metrics
        if call.endpoint is not None:
            metrics.live.add(call.endpoint, -1)
        where = endpoint or call.endpoint or ""
        model = call.model or answered_by or ""
        metrics.requests.labels(where, model, outcome).inc()
        if outcome != "cancelled":
            metrics.duration.labels(where, model).observe(time.perf_counter() - call.began)

    def _finished(self, call: _Call, record: RequestFinished) -> None:
        metrics = self._metrics
        model = call.model or record.model or ""
        usage = record.usage
        if usage is None and call.stream:
            result = record.result
            usage = result.usage if result is not None else None
        if usage is not None and usage.completion_tokens:
            metrics.output_tokens.labels(record.endpoint, model).inc(usage.completion_tokens)
        if call.stream:
            first = record.timings.time_to_first_token
            if first is None:
                first = call.first_chunk
            if first is not None:
                metrics.first_token.labels(record.endpoint, model).observe(first)


def hooks(registry: CollectorRegistry | None = None) -> PrometheusHook:
    """A hook that exports llmtap's calls as Prometheus metrics into ``registry`` (default:
    prometheus_client's global registry). Hooks made for one registry share its metrics, so
    several clients (and routers) can each be given one, or share one.

    Example:
        >>> from prometheus_client import start_http_server
        >>> import llmtap.prometheus
        >>> metrics = llmtap.prometheus.hooks()
        >>> router = Router(["http://gpu1:11434", "http://gpu2:11434"], hooks=[metrics])
        >>> server, thread = start_http_server(9100)
    """
    return PrometheusHook(registry)
