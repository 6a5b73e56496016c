"""``Router``: many LLM servers as one client, with no proxy process in between.

Each endpoint is an :class:`~llmtap._upstream.Upstream`, as a client's is; every call runs the
same attempt loop as a client's (``llmtap._call``), over a route that picks an endpoint per
attempt, so that a failed attempt can go to another endpoint. The rule of the single client
holds across endpoints: a request moves only while nothing has reached the caller, and no
token is ever delivered twice. Health, listings, load and the choice of an endpoint live in
``pool``; what is known of one endpoint in ``endpoint``. This module is the public face:
construction, configuration, the calls.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar, overload

from pydantic import ValidationError

from llmtap._call import Call, Ended
from llmtap._client import LLMClient, client_for
from llmtap._config import LLMConfig, endpoints_from_env, read_config_file
from llmtap._errors import ConfigFileError, LLMError, LLMUsageError, redact_url
from llmtap._hooks import Hook, Hooks, Operation
from llmtap._messages import check_messages
from llmtap._parse import parse as _parse
from llmtap._results import ChatResult, PreflightReport
from llmtap._retry import counts_against
from llmtap._router.endpoint import STRATEGIES, Endpoint, EndpointStats, RetryBudget, Strategy
from llmtap._router.pool import Pool
from llmtap._stream import ChunkStream, RouterStream, whole_answer
from llmtap._toolloop import ToolRun, run_tools
from llmtap._upstream import Upstream
from llmtap._wire.dialects import MessageLike

__all__ = ["EndpointStats", "Router", "RouterStream"]


_T = TypeVar("_T")

#: What ``Router(endpoints=[...])`` takes for one endpoint.
EndpointLike = LLMConfig | str | Mapping[str, Any]

#: Keys an endpoint mapping may hold besides ``LLMConfig``'s fields.
_EXTRA_KEYS = ("name", "weight", "max_concurrency")


class _Spec(NamedTuple):
    config: LLMConfig
    name: str | None
    weight: float | None
    max_concurrency: int | None


class Router:
    """Several LLM servers behind the call surface of one :class:`LLMClient`.

    Requests go to the endpoints that serve the requested model (read from ``/api/tags`` or
    ``/v1/models`` before the first request, every ``refresh_interval`` seconds, and at once
    when no endpoint has a model asked for), and the ``strategy`` picks one of them.

    An endpoint that cannot be reached, breaks a connection or answers 5xx is taken out for
    ``cooldown`` seconds, then probed (a ``GET`` of its listing); each failed probe doubles the
    wait up to ``max_cooldown``, and the first that succeeds brings it back. A failed attempt
    moves to another endpoint while nothing has reached the caller, up to ``max_retries``
    times and within the retry budget; after output it raises :class:`LLMStreamInterrupted`.

    Args:
        endpoints: The servers: :class:`LLMConfig` objects, URLs, or mappings of
            ``LLMConfig`` fields plus optional ``name``, ``weight`` and ``max_concurrency``.
        strategy: ``"least_busy"`` (fewest requests in flight per unit of weight; on a tie,
            an Ollama endpoint that has the model in memory (``/api/ps``) wins over one
            that would have to load it, which can take minutes, and then chance decides),
            ``"round_robin"`` (in proportion to the weights, evenly spaced) or
            ``"failover"`` (the first endpoint in the list that can take the request).
        model: The model of every request that names none; by default each endpoint's own.
        weights: One weight per endpoint (default 1 each, or the mapping's ``weight``).
        max_concurrency: Most requests in flight per endpoint (``None``: no limit; a
            mapping's own ``max_concurrency`` wins). Requests beyond it wait in a queue.
        queue_timeout: Longest wait in that queue, in seconds (``None``: no limit); then
            :class:`LLMRouterBusyError`.
        max_retries: Attempts after the first, across endpoints (resumes included): the
            router's failover count. Each endpoint's own ``max_retries`` is how many times
            one call may go back to that same endpoint (``0``: never twice to the same
            server; the call still moves to others).
        retry_budget: Retries may add at most this fraction of the requests sent over the
            last 10 s (every first attempt counts, finished or not)...
        retry_budget_min: ...plus this many per second (100 per 10 s by default), so that a
            quiet router can still retry (Finagle's ``RetryBudget``).
        cooldown: Seconds an endpoint stays out after a failure before the first probe.
        max_cooldown: The longest wait between probes of an endpoint that keeps failing.
        refresh_interval: Seconds between two reads of every healthy endpoint's listing.
        prefer_loaded: For ``least_busy``, break ties in favour of endpoints that have the
            model in memory.
        hooks: Lifecycle hooks for every call the router makes (see ``llmtap.RequestStarted``
            and the other records); each endpoint configuration's own ``hooks`` are not used.
            A hook with a ``watch_router(router)`` method is handed the router (the
            Prometheus hook reads its endpoints' states from it).

    Raises:
        ValueError: An argument is out of range (the message names it).

    Example:
        >>> import asyncio
        >>> async def main() -> None:
        ...     async with Router(
        ...         ["http://gpu1:11434", "http://gpu2:11434", "http://gpu3:11434"],
        ...         model="qwen3",
        ...     ) as router:
        ...         result = await router.chat([Message.user("Hi")])
        ...         print(result.text, router.stats())
        >>> asyncio.run(main())
        Hello! [EndpointStats(name='http://gpu1:11434', ...), ...]
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointLike],
        *,
        strategy: Strategy = "least_busy",
        model: str | None = None,
        weights: Sequence[float] | None = None,
        max_concurrency: int | None = None,
        queue_timeout: float | None = 30.0,
        max_retries: int = 2,
        retry_budget: float = 0.2,
        retry_budget_min: float = 10.0,
        cooldown: float = 5.0,
        max_cooldown: float = 60.0,
        refresh_interval: float = 30.0,
        prefer_loaded: bool = True,
        hooks: Sequence[Hook] = (),
    ) -> None:
        if isinstance(endpoints, str | LLMConfig) or not endpoints:
            raise ValueError("endpoints must be a non-empty list of LLMConfig objects or URLs")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        specs = [_spec(item) for item in endpoints]
        if weights is not None and len(weights) != len(specs):
            raise ValueError(
                f"weights has {len(weights)} values for {len(specs)} endpoints; give one each"
            )
        _check(max_concurrency is None or max_concurrency >= 1, "max_concurrency must be >= 1")
        _check(queue_timeout is None or queue_timeout > 0, "queue_timeout must be > 0 or None")
        _check(max_retries >= 0, "max_retries must be >= 0")
        _check(retry_budget >= 0 and retry_budget_min >= 0, "the retry budget must be >= 0")
        _check(0 < cooldown <= max_cooldown, "cooldown must be > 0 and <= max_cooldown")
        _check(refresh_interval > 0, "refresh_interval must be > 0")
        members: list[Endpoint] = []
        for index, spec in enumerate(specs):
            config = spec.config
            if model:
                config = config.model_copy(update={"model": model})
            weight = weights[index] if weights is not None else spec.weight
            weight = 1.0 if weight is None else float(weight)
            _check(0 < weight < math.inf, f"the weight of endpoint {index} must be > 0")
            limit = spec.max_concurrency if spec.max_concurrency is not None else max_concurrency
            _check(limit is None or limit >= 1, f"max_concurrency of endpoint {index} must be >= 1")
            upstream = Upstream(config, name=spec.name or redact_url(config.endpoint), index=index)
            members.append(
                Endpoint(upstream, client_for(upstream), weight=weight, max_concurrency=limit)
            )
        self._endpoints = members
        self._model = model or None
        self._max_retries = max_retries
        self._budget = RetryBudget(retry_budget, retry_budget_min)
        self._hooks = Hooks(hooks) if hooks else None
        self._pool = Pool(
            members,
            strategy=strategy,
            cooldown=cooldown,
            max_cooldown=max_cooldown,
            refresh_interval=refresh_interval,
            queue_timeout=queue_timeout,
            prefer_loaded=prefer_loaded,
        )
        self._route = _Route(self._pool, self._budget)
        self._closed = False
        for hook in hooks or ():
            # A hook that reports on routers themselves (llmtap.prometheus: endpoints up,
            # in flight) is told of this one.
            watch = getattr(hook, "watch_router", None)
            if callable(watch):
                watch(self)

    # --- construction from files and the environment ----------------------------------------

    @classmethod
    def from_env(cls, **settings: Any) -> Router:
        """A router over the URLs in ``LLMTAP_ENDPOINTS`` (comma-separated).

        Args:
            **settings: ``LLMConfig`` fields shared by every endpoint (``model``,
                ``api_key``, ...; other ``LLMTAP_*`` variables fill the rest as usual) and
                ``Router`` options (``strategy``, ``max_concurrency``, ...).

        Raises:
            ValueError: ``LLMTAP_ENDPOINTS`` is unset or empty.

        Example:
            >>> # LLMTAP_ENDPOINTS=http://gpu1:11434,http://gpu2:11434
            >>> router = Router.from_env(model="qwen3", strategy="round_robin")
        """
        urls = endpoints_from_env()
        if not urls:
            raise ValueError(
                "LLMTAP_ENDPOINTS is not set: set it to the servers' URLs, comma-separated "
                "(LLMTAP_ENDPOINTS=http://gpu1:11434,http://gpu2:11434)"
            )
        fields = {k: v for k, v in settings.items() if k in LLMConfig.model_fields}
        options = {k: v for k, v in settings.items() if k not in fields}
        return cls([LLMConfig(**{**fields, "endpoint": url}) for url in urls], **options)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> Router:
        """A router over the ``[[endpoints]]`` tables of a TOML config file.

        Each table holds ``LLMConfig`` fields (``endpoint`` is required) and may add ``name``;
        the file's top-level keys are defaults for every table. Values in the file beat
        ``LLMTAP_*`` variables; fields it leaves out still come from them.

        Args:
            path: The file (the format of :meth:`LLMConfig.load`).
            **options: ``Router`` options (``strategy``, ``weights``, ...).

        Raises:
            ConfigFileError: The file is missing or not TOML, has an unknown key or a bad
                value, no ``[[endpoints]]`` table, or a table without ``endpoint``.

        Example:
            ::

                model = "qwen3"

                [[endpoints]]
                name = "gpu1"
                endpoint = "http://gpu1:11434"

                [[endpoints]]
                name = "gpu2"
                endpoint = "http://gpu2:11434"
        """
        file = Path(path).expanduser()
        data = read_config_file(file)
        tables: list[dict[str, Any]] = data.pop("endpoints")
        if not tables:
            raise ConfigFileError(
                f"The config file {file} has no [[endpoints]] tables; add one per server",
                path=file,
                key="endpoints",
            )
        endpoints: list[EndpointLike] = []
        for index, table in enumerate(tables):
            if "endpoint" not in table:
                raise ConfigFileError(
                    f"endpoints[{index}] in the config file {file} has no 'endpoint' URL",
                    path=file,
                    key=f"endpoints[{index}].endpoint",
                )
            merged = {**data, **table}
            try:
                _spec(merged)
            except ValidationError as exc:
                error = exc.errors()[0]
                key = f"endpoints[{index}].{error['loc'][0] if error['loc'] else ''}"
                raise ConfigFileError(
                    f"Bad value for {key!r} in the config file {file}: {error['msg']}",
                    path=file,
                    key=key,
                ) from None
            endpoints.append(merged)
        return cls(endpoints, **options)

    # --- state ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        names = ", ".join(e.name for e in self._endpoints)
        return f"Router(strategy={self._pool.strategy!r}, endpoints=[{names}])"

    @property
    def endpoints(self) -> tuple[LLMConfig, ...]:
        """The endpoints' configurations, in order."""
        return tuple(e.upstream.config for e in self._endpoints)

    @property
    def clients(self) -> tuple[LLMClient, ...]:
        """The client of each endpoint, in order."""
        return tuple(e.client for e in self._endpoints)

    @property
    def strategy(self) -> Strategy:
        """How requests are spread."""
        return self._pool.strategy

    @property
    def model(self) -> str | None:
        """The router's default model (``None``: each endpoint's own)."""
        return self._model

    @property
    def background_tasks(self) -> int:
        """Background tasks running now (listing refresh, probes); 0 after :meth:`close`."""
        return self._pool.running_tasks

    def stats(self) -> list[EndpointStats]:
        """What the router knows about each endpoint now, in order: state, load, figures.

        Example:
            >>> for s in router.stats():
            ...     print(s.name, s.state, s.in_flight, s.completed, s.failed)
            http://gpu1:11434 healthy 0 0 0
            http://gpu2:11434 healthy 0 0 0
        """
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # called outside the loop: the loop's clock is time.monotonic()
            now = time.monotonic()
        return [e.stats(now) for e in self._endpoints]

    # --- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the background tasks and close every endpoint's connections."""
        if self._closed:
            return
        self._closed = True
        await self._pool.close()
        await asyncio.gather(*(e.upstream.close() for e in self._endpoints))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- calls ----------------------------------------------------------------------------

    async def preflight_check(self) -> list[PreflightReport | LLMError]:
        """Check every endpoint at once (as :meth:`LLMClient.preflight_check` does one).

        Returns:
            For each endpoint, in order, its report or the error that its check raised. An
            endpoint that could not be reached or answered 5xx is taken out (and probed);
            one without the model is skipped for it.
        """
        self._pool.start()
        outcomes = await asyncio.gather(
            *(e.upstream.preflight() for e in self._endpoints), return_exceptions=True
        )
        reports: list[PreflightReport | LLMError] = []
        for endpoint, outcome in zip(self._endpoints, outcomes, strict=True):
            if isinstance(outcome, LLMError):
                if counts_against(outcome):
                    self._pool.take_down(endpoint, outcome)
            elif not isinstance(outcome, PreflightReport):
                raise outcome
            reports.append(outcome)
        await self._pool.refresh()
        return reports

    def stream_chat(
        self, messages: Iterable[MessageLike], tools: Sequence[Any] | None = None, **params: Any
    ) -> ChunkStream:
        """Like :meth:`LLMClient.stream_chat` on one endpoint the router picks: no retries."""
        call = self._call(params, max_retries=0)
        return ChunkStream(call, _chat_request(messages, tools, params, call, stream=True))

    def stream_chat_with_retry(
        self, messages: Iterable[MessageLike], tools: Sequence[Any] | None = None, **params: Any
    ) -> ChunkStream:
        """Stream chunk dicts as :meth:`LLMClient.stream_chat_with_retry` does, moving to
        another endpoint after a retryable failure before the first chunk."""
        call = self._call(params)
        return ChunkStream(call, _chat_request(messages, tools, params, call, stream=True))

    def stream(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        *,
        resume: bool = False,
        **params: Any,
    ) -> RouterStream:
        """Stream one answer as typed events, as :meth:`LLMClient.stream` does.

        A failure before the first event moves the request to another endpoint. With
        ``resume=True``, a stream that breaks after text arrived is continued (an assistant
        prefill) on an endpoint that can continue it, as the single client does.
        """
        call = self._call(params, resume=resume)
        return RouterStream(call, _chat_request(messages, tools, params, call, stream=True))

    async def chat(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        *,
        stream: bool = True,
        resume: bool = False,
        **params: Any,
    ) -> ChatResult:
        """Ask once and get the whole answer, as :meth:`LLMClient.chat` does. Nothing reaches
        the caller before the result, so a failure anywhere moves to another endpoint."""
        call = self._call(params, exposed=False, resume=resume and stream, stream=stream)
        request_for = _chat_request(messages, tools, params, call, stream=stream)
        return await whole_answer(call, request_for)

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None, **params: Any
    ) -> list[list[float]]:
        """Embed texts, as :meth:`LLMClient.embed` does, one batch per routed request (of
        the chosen endpoint's ``embed_batch_size``).

        Only endpoints that list the embedding model are used.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        vectors: list[list[float]] = []
        while len(vectors) < len(items):
            start = len(vectors)
            call = self._call({"model": model}, exposed=False, stream=False, operation="embeddings")

            def request_for(upstream: Upstream, start: int = start, call: Call = call) -> Any:
                batch = items[start : start + upstream.config.embed_batch_size]
                return upstream.embeddings_request(batch, params, model=call.model)

            reader, found = await call.open(request_for)
            await reader.aclose()
            vectors.extend(found)
        return vectors

    async def run_tools(
        self, messages: Iterable[MessageLike], tools: Sequence[Any], **options: Any
    ) -> ToolRun:
        """The tool loop of :meth:`LLMClient.run_tools`, each round routed on its own.

        A round that fails before its answer is complete moves to another endpoint; the
        tools of earlier rounds are never run again.
        """
        return await run_tools(self, messages, tools, **options)

    @overload
    async def parse(
        self, messages: Iterable[MessageLike], output_type: type[_T], **options: Any
    ) -> _T: ...

    @overload
    async def parse(
        self, messages: Iterable[MessageLike], output_type: Any, **options: Any
    ) -> Any: ...

    async def parse(self, messages: Iterable[MessageLike], output_type: Any, **options: Any) -> Any:
        """Structured output as :meth:`LLMClient.parse` gives it, each request routed."""
        return await _parse(self, messages, output_type, **options)

    # --- routing --------------------------------------------------------------------------

    def _call(
        self,
        params: Mapping[str, Any],
        *,
        max_retries: int | None = None,
        exposed: bool = True,
        resume: bool = False,
        stream: bool = True,
        operation: Operation = "chat",
    ) -> Call:
        """A new routed call, for the model ``params`` names (else the router's default)."""
        if self._closed:
            raise LLMUsageError("this Router is closed; create a new one")
        model = params.get("model")
        return Call(
            self._route,
            max_retries=self._max_retries if max_retries is None else max_retries,
            hooks=self._hooks,
            operation=operation,
            model=model if isinstance(model, str) and model else self._model,
            stream=stream,
            exposed=exposed,
            resume=resume,
        )


class _Route:
    """The router's side of the attempt loop: an endpoint per attempt from the pool, each
    given back with how the attempt went, and the retry budget."""

    __slots__ = ("_deposit", "_pool", "budget")

    log_prefix = "router"
    upstream = None  # picked per attempt

    def __init__(self, pool: Pool, budget: RetryBudget) -> None:
        self._pool = pool
        self.budget = budget.withdraw
        self._deposit = budget.deposit

    def _exhausted(self, call: Call) -> set[int]:
        """Endpoints that this call may not go back to: tried more than their own
        ``max_retries`` allows."""
        endpoints = self._pool.endpoints
        return {
            index
            for index, tries in call.tries.items()
            if tries > endpoints[index].upstream.config.max_retries
        }

    async def acquire(self, call: Call, wait: float) -> Upstream:
        if wait > 0:  # the backoff, before a slot is taken (there is no untried endpoint)
            await asyncio.sleep(wait)
        pool = self._pool
        endpoint = await pool.acquire(call.model, call.tries, self._exhausted(call))
        pool.begin(endpoint)
        return endpoint.upstream

    def release(self, call: Call, upstream: Upstream, ended: Ended) -> None:
        endpoint = self._pool.endpoints[upstream.index]
        model = call.model or endpoint.model
        self._pool.release(endpoint, model=model, error=ended.error, ok=ended.ok, ttft=ended.ttft)

    def elsewhere(self, call: Call) -> bool:
        return self._pool.untried(call.model, call.tries)

    def deposit(self) -> None:
        self._deposit()


def _chat_request(
    messages: Iterable[MessageLike],
    tools: Sequence[Any] | None,
    params: Mapping[str, Any],
    call: Call,
    *,
    stream: bool,
) -> Any:
    """The request builder of a routed chat call: each endpoint's own dialect, URL and
    model. The messages are checked now, so that bad input raises at the call."""
    checked = check_messages(messages)

    def request_for(upstream: Upstream) -> Any:
        return upstream.chat_request(checked, tools, params, stream=stream, model=call.model)

    return request_for


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _spec(item: EndpointLike) -> _Spec:
    """One endpoint argument as a configuration plus the router's own keys."""
    if isinstance(item, LLMConfig):
        return _Spec(item, None, None, None)
    if isinstance(item, str):
        return _Spec(LLMConfig(endpoint=item), None, None, None)
    if isinstance(item, Mapping):
        fields = {k: v for k, v in item.items() if k not in _EXTRA_KEYS}
        name, weight, limit = (item.get(key) for key in _EXTRA_KEYS)
        if name is not None and not isinstance(name, str):
            raise ValueError(f"an endpoint's name must be a string, not {name!r}")
        return _Spec(LLMConfig(**fields), name, weight, limit)
    raise TypeError(
        "each endpoint must be an LLMConfig, a URL, or a mapping of LLMConfig fields, "
        f"not {type(item).__name__}"
    )
