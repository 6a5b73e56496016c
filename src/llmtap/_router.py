"""``Router``: many LLM servers as one client, with no proxy process in between.

Each endpoint has its own :class:`LLMClient`; the router makes every attempt through one of
them and runs the retry loop itself (``_router_call``), so that a failed attempt can go to
another endpoint. The rule of the single client holds across endpoints: a request moves only
while nothing has reached the caller, and no token is ever delivered twice. Health, listings,
load and the choice of an endpoint live in ``_router_pool``; what is known of one endpoint in
``_router_endpoint``. This module is the public face: construction, configuration, the calls.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar, cast, overload

from pydantic import ValidationError

from llmtap._client import LLMClient
from llmtap._config import ConfigFileError, LLMConfig, read_config_file
from llmtap._dialects import MessageLike
from llmtap._errors import LLMError, LLMUsageError, redact_url
from llmtap._preflight import PreflightReport
from llmtap._results import ChatResult
from llmtap._router_call import (
    Call,
    RouterStream,
    routed_chunks,
    routed_completion,
    routed_embeddings,
)
from llmtap._router_endpoint import (
    STRATEGIES,
    Endpoint,
    EndpointStats,
    LLMRouterBusyError,
    RetryBudget,
    Strategy,
    counts_against,
)
from llmtap._router_pool import Pool

if TYPE_CHECKING:
    from llmtap._toolloop import ToolRun

__all__ = ["EndpointStats", "LLMRouterBusyError", "Router", "RouterStream"]


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
        max_retries: Attempts after the first, across endpoints (resumes included); by
            default the largest ``max_retries`` of the endpoints' configurations.
        retry_budget: Retries may add at most this fraction of the first attempts that
            succeeded over the last 10 s...
        retry_budget_min: ...plus this many, so that a quiet router can still retry.
        cooldown: Seconds an endpoint stays out after a failure before the first probe.
        max_cooldown: The longest wait between probes of an endpoint that keeps failing.
        refresh_interval: Seconds between two reads of every healthy endpoint's listing.
        prefer_loaded: For ``least_busy``, break ties in favour of endpoints that have the
            model in memory.

    Raises:
        ValueError: An argument is out of range (the message names it).

    Example:
        >>> async def main() -> None:
        ...     async with Router(
        ...         ["http://gpu1:11434", "http://gpu2:11434", "http://gpu3:11434"],
        ...         model="qwen3",
        ...     ) as router:
        ...         result = await router.chat([Message.user("Hi")])
        ...         print(result.text, router.stats())
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
        max_retries: int | None = None,
        retry_budget: float = 0.2,
        retry_budget_min: int = 10,
        cooldown: float = 5.0,
        max_cooldown: float = 60.0,
        refresh_interval: float = 30.0,
        prefer_loaded: bool = True,
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
        _check(max_retries is None or max_retries >= 0, "max_retries must be >= 0")
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
            members.append(
                Endpoint(
                    index,
                    LLMClient(config),
                    name=spec.name or redact_url(config.endpoint),
                    weight=weight,
                    max_concurrency=limit,
                )
            )
        self._endpoints = members
        self._model = model or None
        self._max_retries = (
            max(e.client.config.max_retries for e in members)
            if max_retries is None
            else max_retries
        )
        self._budget = RetryBudget(retry_budget, retry_budget_min)
        self._pool = Pool(
            members,
            strategy=strategy,
            cooldown=cooldown,
            max_cooldown=max_cooldown,
            refresh_interval=refresh_interval,
            queue_timeout=queue_timeout,
            prefer_loaded=prefer_loaded,
        )
        self._closed = False

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
        urls = [url.strip() for url in os.environ.get("LLMTAP_ENDPOINTS", "").split(",")]
        urls = [url for url in urls if url]
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
        return tuple(e.client.config for e in self._endpoints)

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
        await asyncio.gather(*(e.client.close() for e in self._endpoints))

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

        Raises:
            LLMUsageError: An endpoint has no model set and several to choose from.
        """
        self._pool.start()
        outcomes = await asyncio.gather(
            *(e.client.preflight_check() for e in self._endpoints), return_exceptions=True
        )
        reports: list[PreflightReport | LLMError] = []
        for endpoint, outcome in zip(self._endpoints, outcomes, strict=True):
            if isinstance(outcome, PreflightReport):
                endpoint.kind = outcome.server
            elif isinstance(outcome, LLMError):
                if counts_against(outcome):
                    self._pool.take_down(endpoint, outcome)
            else:
                raise outcome
            reports.append(outcome)
        await self._pool.refresh()
        return reports

    def stream_chat(
        self, messages: Iterable[MessageLike], tools: Sequence[Any] | None = None, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Like :meth:`LLMClient.stream_chat` on one endpoint the router picks: no retries."""
        return routed_chunks(self._call(params.get("model"), 0), list(messages), tools, params)

    def stream_chat_with_retry(
        self, messages: Iterable[MessageLike], tools: Sequence[Any] | None = None, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream chunk dicts as :meth:`LLMClient.stream_chat_with_retry` does, moving to
        another endpoint after a retryable failure before the first chunk."""
        call = self._call(params.get("model"), self._max_retries)
        return routed_chunks(call, list(messages), tools, params)

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
        return RouterStream(self._new_call(params), list(messages), tools, params, resume=resume)

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
        messages = list(messages)
        if stream:
            new_call = self._new_call(params)
            routed = RouterStream(new_call, messages, tools, params, resume=resume, exposed=False)
            return await routed.result()
        call = self._call(params.get("model"), self._max_retries)
        return await routed_completion(call, messages, tools, params)

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None, **params: Any
    ) -> list[list[float]]:
        """Embed texts, as :meth:`LLMClient.embed` does, one batch per routed request.

        Only endpoints that list the embedding model are used.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        return await routed_embeddings(lambda: self._call(model, self._max_retries), items, params)

    async def run_tools(
        self, messages: Iterable[MessageLike], tools: Sequence[Any], **options: Any
    ) -> ToolRun:
        """The tool loop of :meth:`LLMClient.run_tools`, each round routed on its own.

        A round that fails before its answer is complete moves to another endpoint; the
        tools of earlier rounds are never run again.
        """
        return await LLMClient.run_tools(cast(LLMClient, self), messages, tools, **options)

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
        return await LLMClient.parse(cast(LLMClient, self), messages, output_type, **options)

    # --- routing --------------------------------------------------------------------------

    def _call(self, model: Any, max_retries: int) -> Call:
        """A new routed request for ``model`` (the router's default if not a name)."""
        if self._closed:
            raise LLMUsageError("this Router is closed; create a new one")
        model = model if isinstance(model, str) and model else self._model
        return Call(self._pool, self._budget, model, max_retries)

    def _new_call(self, params: Mapping[str, Any]) -> Callable[[], Call]:
        """What a stream calls when it starts (a closed router raises then)."""
        return lambda: self._call(params.get("model"), self._max_retries)


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
