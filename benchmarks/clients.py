"""The clients measured side by side, each behind the same three calls: open, run, close.

Every ``run`` sends one streaming chat request and does the same small work per chunk: find
the content delta, count it and add up its length. The harness checks both numbers against
what the server sent, so a client that drops or repeats a chunk fails the run instead of
looking fast. Libraries are imported in ``open``, so that a process measuring one client
(the RSS scenario) loads only that client's library.

Pool limits: every client may open 1,000 connections at once (llmtap's and openai-python's
default; the httpx default of 100 is raised for ollama-python and the httpx loop), so that no
client queues a scenario's streams. How many connections stay idle in the pool is left at each
library's default (httpx keeps 20, openai-python 100, aiohttp all) except where a scenario
needs a full pool (``keep_idle=True``: every client keeps up to 1,000 idle connections).

The OpenTelemetry clients (``+otel``, ``+otel-sdk``) exist for one comparison each, against
plain ``stream_chat``: they run only in the scenarios it is made in (``Adapter.scenarios``), and
are left out, with a message, where OpenTelemetry is not installed (``Adapter.unavailable``).
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from benchmarks._wire import MESSAGES, MODEL, Spec

__all__ = ["CLIENTS", "Adapter", "Outcome", "make_adapter", "runs_in"]

_POOL = 1000
_HTTPX_DEFAULT_IDLE = 20  # httpx.AsyncClient's default max_keepalive_connections
#: The scenarios a hook's cost is measured in (``report.py`` compares them with stream_chat's).
_OVERHEAD_SCENARIOS = frozenset(
    {"one_stream", "streams_200", "streams_1000", "paced_200", "idle_pool"}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request delivered.

    Attributes:
        chunks: Content chunks seen (``-1`` where the client shows only the whole answer).
        chars: Characters of text received.
        first_at: ``time.perf_counter()`` when the first content chunk arrived (``0.0`` where
            the client does not show chunks).
    """

    chunks: int
    chars: int
    first_at: float


class Adapter:
    """One client under test."""

    name: ClassVar[str]
    #: What the row is, for the table.
    label: ClassVar[str]
    #: ``True`` where the client shows chunks as they arrive (time to first chunk applies).
    streams_chunks: ClassVar[bool] = True
    #: ``True`` for the other libraries (openai-python, ollama-python, httpx): they run in at
    #: most ``harness.PEER_ROUNDS`` rounds of a scenario. They cost 10 to 60 times llmtap per
    #: chunk, so a few rounds pin their figures well enough, and they take most of the run.
    peer: ClassVar[bool] = False
    #: The scenarios the client runs in (``None``: every one). A client that exists for one
    #: comparison runs only where it is made, so that it adds little to the run.
    scenarios: ClassVar[frozenset[str] | None] = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the client cannot run here (a library it needs is not installed), or ``None``."""
        return None

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        """Build the client for the server at ``url`` (``http://host:port``).

        Args:
            url: The server.
            keep_idle: Keep up to 1,000 idle connections in the pool, whatever the library's
                default.
        """
        raise NotImplementedError

    async def run(self, spec: Spec) -> Outcome:
        """Send one streaming request asking for ``spec`` and read the whole answer."""
        raise NotImplementedError

    def between_runs(self) -> None:
        """Called before each measured run (after its warm-up), outside the measured time."""

    async def close(self) -> None:
        """Close the client and its connections."""
        raise NotImplementedError


def _body(spec: Spec) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "stream": True, "bench": spec.body()}


class LLMTapStreamChat(Adapter):
    """llmtap's raw chunk dicts."""

    name = "llmtap.stream_chat"
    label = "llmtap stream_chat (raw chunk dicts)"
    api = "openai"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        from llmtap import LLMClient, LLMConfig

        self.client = LLMClient(LLMConfig(endpoint=url, model=MODEL, api=self.api))

    async def run(self, spec: Spec) -> Outcome:
        count = chars = 0
        first_at = 0.0
        async for chunk in self.client.stream_chat(MESSAGES, bench=spec.body()):
            choices = chunk["choices"]
            if choices:
                content = choices[0]["delta"].get("content")
                if content:
                    if not count:
                        first_at = time.perf_counter()
                    count += 1
                    chars += len(content)
        return Outcome(count, chars, first_at)

    async def close(self) -> None:
        await self.client.close()


def _noop(record: object) -> None:
    """A hook that does nothing: what hooks cost by themselves."""


class LLMTapHooked(LLMTapStreamChat):
    """llmtap's raw chunk dicts, with one no-op lifecycle hook."""

    name = "llmtap.stream_chat+hook"
    label = "llmtap stream_chat with one no-op hook"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        from llmtap import LLMClient, LLMConfig

        self.client = LLMClient(LLMConfig(endpoint=url, model=MODEL, hooks=[_noop]))


def _missing(modules: tuple[str, ...], install: str) -> str | None:
    """What to install when one of ``modules`` (dotted names) cannot be imported, or ``None``."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            return f"{module} is not installed ({install})"
    return None


class LLMTapOTel(LLMTapStreamChat):
    """llmtap's raw chunk dicts, with llmtap.otel's hook on the OpenTelemetry API alone.

    No SDK is configured: the hook gets the global providers, the API's no-op proxies. Nothing
    here may call ``opentelemetry.trace.set_tracer_provider`` (or the meter one), which would
    make this client measure an SDK.
    """

    name = "llmtap.stream_chat+otel"
    label = "llmtap stream_chat with llmtap.otel, API only (no SDK configured)"
    scenarios = _OVERHEAD_SCENARIOS

    @classmethod
    def unavailable(cls) -> str | None:
        return _missing(
            ("opentelemetry.trace", "opentelemetry.metrics"), "pip install -e '.[otel]'"
        )

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        import llmtap.otel
        from llmtap import LLMClient, LLMConfig

        hook = llmtap.otel.hooks()
        self.client = LLMClient(LLMConfig(endpoint=url, model=MODEL, hooks=[hook]))


class LLMTapOTelSDK(LLMTapStreamChat):
    """llmtap's raw chunk dicts, with llmtap.otel's hook on a private OpenTelemetry SDK.

    Spans go through a ``SimpleSpanProcessor`` to an in-memory exporter (emptied before every
    measured run, so that it does not grow over the scenario), metrics to an in-memory reader.
    The providers are this client's own; the global ones stay the API's no-op proxies.
    """

    name = "llmtap.stream_chat+otel-sdk"
    label = "llmtap stream_chat with llmtap.otel and the SDK (in-memory exporter)"
    scenarios = _OVERHEAD_SCENARIOS

    @classmethod
    def unavailable(cls) -> str | None:
        return _missing(
            ("opentelemetry.trace", "opentelemetry.sdk"),
            "pip install -e '.[otel]' opentelemetry-sdk",
        )

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        import llmtap.otel
        from llmtap import LLMClient, LLMConfig

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        hook = llmtap.otel.hooks(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )
        self.client = LLMClient(LLMConfig(endpoint=url, model=MODEL, hooks=[hook]))

    def between_runs(self) -> None:
        self.exporter.clear()

    async def close(self) -> None:
        try:
            await self.client.close()
        finally:
            self.exporter.clear()
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()


class LLMTapNative(LLMTapStreamChat):
    """llmtap's raw chunk dicts from Ollama's native NDJSON route."""

    name = "llmtap.stream_chat[ndjson]"
    label = "llmtap stream_chat, Ollama native NDJSON"
    api = "ollama"

    async def run(self, spec: Spec) -> Outcome:
        count = chars = 0
        first_at = 0.0
        async for chunk in self.client.stream_chat(MESSAGES, bench=spec.body()):
            content = chunk["message"]["content"]
            if content:
                if not count:
                    first_at = time.perf_counter()
                count += 1
                chars += len(content)
        return Outcome(count, chars, first_at)


class LLMTapStream(LLMTapStreamChat):
    """llmtap's typed events, accumulated into a ChatResult."""

    name = "llmtap.stream"
    label = "llmtap stream() typed events + result()"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        from llmtap import TextDelta

        self.text_delta = TextDelta
        await super().open(url, keep_idle=keep_idle)

    async def run(self, spec: Spec) -> Outcome:
        text_delta = self.text_delta
        count = chars = 0
        first_at = 0.0
        async with self.client.stream(MESSAGES, bench=spec.body()) as stream:
            async for event in stream:
                if type(event) is text_delta:
                    if not count:
                        first_at = time.perf_counter()
                    count += 1
                    chars += len(event.text)
            result = await stream.result()
        if len(result.text) != chars:
            raise AssertionError(f"result() has {len(result.text)} characters, events {chars}")
        return Outcome(count, chars, first_at)


class LLMTapResponses(LLMTapStream):
    """llmtap's typed events over OpenAI's Responses API (``api="responses"``)."""

    name = "llmtap.stream[responses]"
    label = "llmtap stream() over the Responses API"
    api = "responses"
    scenarios = _OVERHEAD_SCENARIOS


class LLMTapChat(LLMTapStreamChat):
    """llmtap's accumulated answer."""

    name = "llmtap.chat"
    label = "llmtap chat() (accumulated ChatResult)"
    streams_chunks = False

    async def run(self, spec: Spec) -> Outcome:
        result = await self.client.chat(MESSAGES, bench=spec.body())
        return Outcome(-1, len(result.text), 0.0)


class OpenAIClient(Adapter):
    """openai-python's AsyncOpenAI, streaming."""

    name = "openai"
    peer = True
    label = "openai-python AsyncOpenAI (stream=True)"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        import httpx2
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient
        from openai.types.chat import ChatCompletionMessageParam

        http_client = None
        if keep_idle:
            limits = httpx2.Limits(max_connections=_POOL, max_keepalive_connections=_POOL)
            http_client = DefaultAsyncHttpxClient(limits=limits)
        self.client = AsyncOpenAI(
            base_url=url + "/v1", api_key="bench", max_retries=0, http_client=http_client
        )
        self.messages: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": MESSAGES[0]["content"]}
        ]

    async def run(self, spec: Spec) -> Outcome:
        count = chars = 0
        first_at = 0.0
        stream = await self.client.chat.completions.create(
            model=MODEL,
            messages=self.messages,
            stream=True,
            extra_body={"bench": spec.body()},
        )
        async for chunk in stream:
            if chunk.choices:
                content = chunk.choices[0].delta.content
                if content:
                    if not count:
                        first_at = time.perf_counter()
                    count += 1
                    chars += len(content)
        return Outcome(count, chars, first_at)

    async def close(self) -> None:
        await self.client.close()


class OllamaClient(Adapter):
    """ollama-python's AsyncClient on Ollama's native NDJSON route."""

    name = "ollama"
    peer = True
    label = "ollama-python AsyncClient (native NDJSON)"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        import httpx
        from ollama import AsyncClient

        idle = _POOL if keep_idle else _HTTPX_DEFAULT_IDLE
        limits = httpx.Limits(max_connections=_POOL, max_keepalive_connections=idle)
        self.client = AsyncClient(host=url, limits=limits)

    async def run(self, spec: Spec) -> Outcome:
        count = chars = 0
        first_at = 0.0
        parts = await self.client.chat(
            model=MODEL, messages=MESSAGES, stream=True, options={"bench": spec.body()}
        )
        async for part in parts:
            content = part.message.content
            if content:
                if not count:
                    first_at = time.perf_counter()
                count += 1
                chars += len(content)
        return Outcome(count, chars, first_at)

    async def close(self) -> None:
        await self.client.close()  # type: ignore[no-untyped-call]


class HttpxLines(Adapter):
    """A plain httpx loop: ``aiter_lines`` and ``json.loads`` (the design sketch)."""

    name = "httpx"
    peer = True
    label = "httpx aiter_lines + json.loads loop"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        import httpx

        idle = _POOL if keep_idle else _HTTPX_DEFAULT_IDLE
        limits = httpx.Limits(max_connections=_POOL, max_keepalive_connections=idle)
        self.client = httpx.AsyncClient(limits=limits, timeout=None)
        self.url = url + "/v1/chat/completions"

    async def run(self, spec: Spec) -> Outcome:
        count = chars = 0
        first_at = 0.0
        loads = json.loads
        async with self.client.stream("POST", self.url, json=_body(spec)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
            # Read to the end (not break at [DONE]) so that the connection goes back to the pool.
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choices = loads(line[6:])["choices"]
                    if choices:
                        content = choices[0]["delta"].get("content")
                        if content:
                            if not count:
                                first_at = time.perf_counter()
                            count += 1
                            chars += len(content)
        return Outcome(count, chars, first_at)

    async def close(self) -> None:
        await self.client.aclose()


class AiohttpLines(Adapter):
    """Reference: a bare aiohttp loop, ``resp.content`` lines and ``orjson.loads``."""

    name = "aiohttp"
    label = "aiohttp line loop + orjson (reference)"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_POOL))
        self.url = url + "/v1/chat/completions"
        self.headers = {"Content-Type": "application/json"}

    async def run(self, spec: Spec) -> Outcome:
        import orjson

        count = chars = 0
        first_at = 0.0
        loads = orjson.loads
        body = orjson.dumps(_body(spec))
        async with self.session.post(self.url, data=body, headers=self.headers) as response:
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            async for line in response.content:
                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                    choices = loads(line[6:])["choices"]
                    if choices:
                        content = choices[0]["delta"].get("content")
                        if content:
                            if not count:
                                first_at = time.perf_counter()
                            count += 1
                            chars += len(content)
        return Outcome(count, chars, first_at)

    async def close(self) -> None:
        await self.session.close()


class Floor(Adapter):
    """Reference: a bare asyncio Protocol (see :mod:`benchmarks.floor`)."""

    name = "floor"
    label = "floor: asyncio Protocol + de-chunk + SSE split + orjson"

    async def open(self, url: str, *, keep_idle: bool = False) -> None:
        from benchmarks.floor import FloorClient

        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        self.client = FloorClient(parts.hostname, parts.port)

    async def run(self, spec: Spec) -> Outcome:
        count, chars, first_at = await self.client.post(_body(spec))
        return Outcome(count, chars, first_at)

    async def close(self) -> None:
        await self.client.close()


#: Every client, in table order.
CLIENTS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (
        LLMTapStreamChat,
        LLMTapStream,
        LLMTapChat,
        LLMTapNative,
        LLMTapResponses,
        LLMTapHooked,
        LLMTapOTel,
        LLMTapOTelSDK,
        OpenAIClient,
        OllamaClient,
        HttpxLines,
        AiohttpLines,
        Floor,
    )
}


def make_adapter(name: str) -> Adapter:
    """A new, unopened adapter for the client called ``name``."""
    try:
        return CLIENTS[name]()
    except KeyError:
        raise SystemExit(f"unknown client {name!r}; choose from {', '.join(CLIENTS)}") from None


def runs_in(name: str, scenario: str) -> bool:
    """Whether the client called ``name`` runs in ``scenario`` (see ``Adapter.scenarios``)."""
    scenarios = CLIENTS[name].scenarios
    return scenarios is None or scenario in scenarios
