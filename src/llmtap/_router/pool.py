"""The router's pool of endpoints: health, listings, free slots, and the choice of one.

`Pool` owns everything that outlives a single request: the background tasks (a periodic listing
refresh, and a probe per endpoint while it cools down), the queue of requests waiting for a free
slot, and the strategies that pick an endpoint. It asks the servers only through each endpoint's
:class:`~llmtap._probe.Probe` and never retries: the attempt loop does that.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any, Literal

from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMModelError,
    LLMResponseError,
    LLMRouterBusyError,
    LLMUsageError,
)
from llmtap._log import get_logger
from llmtap._retry import counts_against, model_gone
from llmtap._router.endpoint import Endpoint, Strategy
from llmtap._wire.listings import canonical_ollama_name

__all__ = ["Pool"]

_log = get_logger()

#: The least time between two listing refreshes for requests whose model no listing names.
_ON_DEMAND_REFRESH_GAP = 1.0

#: Why no endpoint could be picked right now.
_Problem = Literal["no_model", "missing", "spent", "down", "full"]


class _Waiter:
    """A request waiting in the queue for a slot."""

    __slots__ = ("avoid", "exclude", "future", "model")

    def __init__(
        self,
        future: asyncio.Future[Endpoint],
        model: str | None,
        avoid: frozenset[int],
        exclude: frozenset[int],
    ) -> None:
        self.future = future
        self.model = model
        self.avoid = avoid
        self.exclude = exclude


class Pool:
    """The endpoints and their shared state. Every method runs on the router's event loop."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        strategy: Strategy,
        cooldown: float,
        max_cooldown: float,
        refresh_interval: float,
        queue_timeout: float | None,
        prefer_loaded: bool,
    ) -> None:
        self.endpoints = endpoints
        self.strategy = strategy
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.refresh_interval = refresh_interval
        self.queue_timeout = queue_timeout
        self.prefer_loaded = prefer_loaded
        self.closed = False
        self._random = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._listed_at: float | None = None
        self._asked_at: float | None = None  # the last refresh for a model nobody listed
        self._waiters: deque[_Waiter] = deque()

    # --- background tasks -----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("router_task_failed", error=f"{type(error).__name__}: {error}")

    @property
    def running_tasks(self) -> int:
        """Background tasks not finished yet."""
        return sum(1 for task in self._tasks if not task.done())

    def start(self) -> None:
        """Start the periodic listing refresh (once, in the running loop)."""
        if self.closed:
            raise LLMUsageError("this Router is closed; create a new one")
        if self._refresher is None:
            self._refresher = self._spawn(self._refresh_every())

    async def close(self) -> None:
        """Cancel every background task and wait for them; fail the requests still queued."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(
                    LLMUsageError("the Router was closed while this request waited for a slot")
                )
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- listings -------------------------------------------------------------------------

    async def _refresh_every(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Read the listings of the healthy endpoints now (joining a refresh in progress)."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = self._spawn(self._refresh_healthy())
        await asyncio.shield(task)

    async def ensure_listed(self) -> None:
        """Read the listings once before the first request is routed."""
        if self._listed_at is None:
            await self.refresh()

    async def _refresh_healthy(self) -> None:
        targets = [e for e in self.endpoints if e.state == "healthy"]
        outcomes = await asyncio.gather(
            *(self.read_listing(e) for e in targets), return_exceptions=True
        )
        for endpoint, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, LLMError):
                if counts_against(outcome):
                    self.take_down(endpoint, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        self._listed_at = asyncio.get_running_loop().time()

    async def read_listing(self, endpoint: Endpoint) -> None:
        """Read ``endpoint``'s models (and, on Ollama, the loaded ones), within its
        ``preflight_timeout``. A server that answers but has no listing to give is kept,
        with its listing unknown.

        Raises:
            LLMError: It could not be reached, timed out, or is failing (a 5xx status).
        """
        try:
            listing = await endpoint.upstream.probe().listing(endpoint.kind)
        except LLMResponseError as error:
            if counts_against(error):
                raise
            endpoint.set_models(None)  # reachable, but no listing to go by
            return
        endpoint.kind = listing.kind
        endpoint.set_models(listing.names, dict(listing.aliases))
        if listing.kind == "ollama":
            endpoint.loaded = listing.loaded

    def _on_demand_refresh_due(self) -> bool:
        """Whether a request for a model no listing names may re-read the listings now: at
        most once a second, so that requests for a model nobody has cannot flood the servers."""
        now = asyncio.get_running_loop().time()
        if self._asked_at is not None and now - self._asked_at < _ON_DEMAND_REFRESH_GAP:
            return False
        self._asked_at = now
        return True

    # --- health ---------------------------------------------------------------------------

    def take_down(self, endpoint: Endpoint, error: LLMError) -> None:
        """Take a healthy endpoint out for a cooldown and start probing it."""
        if endpoint.state != "healthy" or self.closed:
            return
        now = asyncio.get_running_loop().time()
        if endpoint.succeeded_since_up:
            endpoint.cooldown = self.base_cooldown
        else:  # it failed again before serving anything: it keeps failing
            endpoint.cooldown = min(endpoint.cooldown * 2, self.max_cooldown)
        endpoint.state = "cooling_down"
        endpoint.succeeded_since_up = False
        endpoint.down_since = now
        endpoint.probe_at = now + endpoint.cooldown
        endpoint.probes_failed = 0
        endpoint.last_error = f"{type(error).__name__}: {error.message}"
        _log.warning(
            "router_endpoint_down",
            endpoint=endpoint.name,
            cooldown=round(endpoint.cooldown, 3),
            error=endpoint.last_error,
        )
        self._spawn(self._probe_until_up(endpoint))

    async def _probe_until_up(self, endpoint: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, endpoint.probe_at - loop.time()))
            try:
                await self.read_listing(endpoint)
            except LLMError as error:
                endpoint.probes_failed += 1
                endpoint.cooldown = min(endpoint.cooldown * 2, self.max_cooldown)
                endpoint.probe_at = loop.time() + endpoint.cooldown
                endpoint.last_error = f"{type(error).__name__}: {error.message}"
                _log.info(
                    "router_probe_failed",
                    endpoint=endpoint.name,
                    next_probe_in=round(endpoint.cooldown, 3),
                    error=f"{type(error).__name__}: {error.message}",
                )
                continue
            endpoint.state = "healthy"
            _log.info(
                "router_endpoint_up",
                endpoint=endpoint.name,
                down_for=round(loop.time() - endpoint.down_since, 3),
                probes=endpoint.probes_failed + 1,
            )
            self._wake()
            return

    # --- slots ----------------------------------------------------------------------------

    async def acquire(
        self, model: str | None, avoid: Iterable[int], exclude: Iterable[int] = ()
    ) -> Endpoint:
        """An endpoint for ``model`` (``None``: each endpoint's own), with a slot reserved on
        it; one not in ``avoid`` when there is one, never one in ``exclude``. Waits in the
        queue while every candidate is full.

        Raises:
            LLMUsageError: No model is set anywhere.
            LLMResponseError: No endpoint serves the model (404).
            LLMConnectionError: Every endpoint that serves it is cooling down.
            LLMRouterBusyError: They stayed full for ``queue_timeout``.
        """
        self.start()
        await self.ensure_listed()
        avoid = frozenset(avoid)
        exclude = frozenset(exclude)
        choice = self._pick(model, avoid, exclude)
        if choice == "missing" and self._on_demand_refresh_due():
            await self.refresh()
            choice = self._pick(model, avoid, exclude)
        if isinstance(choice, Endpoint):
            choice.in_flight += 1
            return choice
        if choice == "full":
            return await self._wait(model, avoid, exclude)
        raise self._error(choice, model)

    def untried(self, model: str | None, tried: Iterable[int]) -> bool:
        """Whether a healthy endpoint that serves ``model`` is not among ``tried``."""
        tried = frozenset(tried)
        return any(
            endpoint.index not in tried
            and endpoint.state == "healthy"
            and (name := model or endpoint.model)
            and endpoint.serves(name) is not False
            for endpoint in self.endpoints
        )

    def begin(self, endpoint: Endpoint) -> None:
        """Count an attempt sent on a reserved slot."""
        endpoint.requests += 1

    def release(
        self,
        endpoint: Endpoint,
        *,
        model: str,
        error: LLMError | None = None,
        ok: bool = False,
        ttft: float | None = None,
    ) -> None:
        """Give a slot back, recording how the attempt ended (``ok``, an ``error``, or
        neither when the caller stopped early or nothing was sent)."""
        endpoint.in_flight -= 1
        if ok:
            endpoint.completed += 1
            endpoint.succeeded_since_up = True
            if ttft is not None:
                endpoint.ttft_total += ttft
                endpoint.ttft_count += 1
            if endpoint.kind == "ollama":  # Ollama has just loaded it, if it was not in memory
                endpoint.loaded.add(canonical_ollama_name(model))
        elif error is not None:
            endpoint.failed += 1
            if counts_against(error):
                self.take_down(endpoint, error)
            elif model_gone(error):
                endpoint.forget(model)
        self._wake()

    async def _wait(
        self, model: str | None, avoid: frozenset[int], exclude: frozenset[int]
    ) -> Endpoint:
        future: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, model, avoid, exclude)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await asyncio.wait([future])
        except TimeoutError:
            self._abandon(waiter)
            raise self._busy_error(model) from None
        except BaseException:
            self._abandon(waiter)
            raise
        return future.result()

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gave up: leave the queue, and hand back a slot given to it meanwhile."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        future = waiter.future
        if not future.done():
            future.cancel()
        elif not future.cancelled() and future.exception() is None:
            endpoint = future.result()
            endpoint.in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        """Hand free slots to the queued requests, first come first served."""
        if not self._waiters:
            return
        kept: deque[_Waiter] = deque()
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            choice = self._pick(waiter.model, waiter.avoid, waiter.exclude)
            if isinstance(choice, Endpoint):
                choice.in_flight += 1
                waiter.future.set_result(choice)
            elif choice == "full":
                kept.append(waiter)
            else:
                waiter.future.set_exception(self._error(choice, waiter.model))
        self._waiters = kept

    # --- choosing -------------------------------------------------------------------------

    def _pick(
        self, model: str | None, avoid: frozenset[int], exclude: frozenset[int] = frozenset()
    ) -> Endpoint | _Problem:
        """An endpoint for ``model`` with a free slot (one not in ``avoid`` if possible, none
        in ``exclude``), or why there is none."""
        serving: list[tuple[Endpoint, str]] = []
        named = False
        for endpoint in self.endpoints:
            name = model or endpoint.model
            if not name:
                continue
            named = True
            if endpoint.serves(name) is not False:
                serving.append((endpoint, name))
        if not named:
            return "no_model"
        if not serving:
            return "missing"
        serving = [(e, name) for e, name in serving if e.index not in exclude]
        if not serving:
            return "spent"
        healthy = [(e, name) for e, name in serving if e.state == "healthy"]
        if not healthy:
            return "down"
        free = [(e, name) for e, name in healthy if e.has_slot()]
        if not free:
            return "full"
        fresh = [(e, name) for e, name in free if e.index not in avoid] or free
        return self._choose(fresh)

    def _load(self, endpoint: Endpoint, model: str) -> tuple[float, int, int]:
        """How busy ``endpoint`` is for least_busy: requests in flight per unit of weight; on a
        tie, one with the model in memory first, and one with a listing before one without."""
        cold = self.prefer_loaded and not endpoint.is_warm(model)
        return endpoint.in_flight / endpoint.weight, int(cold), int(endpoint.models is None)

    def _choose(self, candidates: list[tuple[Endpoint, str]]) -> Endpoint:
        if self.strategy == "failover":
            return min(candidates, key=lambda pair: pair[0].index)[0]
        if self.strategy == "least_busy":
            loads = [(self._load(e, name), e) for e, name in candidates]
            lowest = min(load for load, _ in loads)
            return self._random.choice([e for load, e in loads if load == lowest])
        # smooth weighted round robin (as nginx does): even spacing, exact proportions
        group = [e for e, _ in candidates]
        total = sum(e.weight for e in group)
        for endpoint in group:
            endpoint.rr_current += endpoint.weight
        chosen = max(group, key=lambda e: e.rr_current)
        chosen.rr_current -= total
        return chosen

    # --- errors ---------------------------------------------------------------------------

    def _error(self, problem: _Problem, model: str | None) -> Exception:
        if problem == "no_model":
            return LLMUsageError(
                "no model is set: pass model= to the call or to Router(model=...), set each "
                "endpoint's model, or run preflight_check() to pick each server's only model"
            )
        what = self._describe(model)
        if problem == "missing":
            listings = "; ".join(
                f"{e.name}: {', '.join(e.models) or '(none)'}"
                if e.models is not None
                else f"{e.name}: (no listing)"
                for e in self.endpoints
            )
            return LLMModelError(
                f"No endpoint serves {what}. Listings: {listings}. Pull the model on one of "
                "them (`ollama pull <model>`) or ask for a listed one",
                404,
                model=model or "",
            )
        if problem == "spent":
            return LLMConnectionError(
                f"Every endpoint that serves {what} has been tried as often as its max_retries "
                "allows"
            )
        if problem == "down":
            now = asyncio.get_running_loop().time()
            waits = "; ".join(
                f"{e.name}: {e.last_error}, probed again in {max(0.0, e.probe_at - now):.1f} s"
                for e in self.endpoints
                if e.state == "cooling_down" and e.serves(model or e.model) is not False
            )
            return LLMConnectionError(
                f"Every endpoint that serves {what} is cooling down after failures ({waits}). "
                "Each comes back as soon as it answers a probe; check that the servers run"
            )
        return self._busy_error(model)

    def _describe(self, model: str | None) -> str:
        """The model asked for, quoted (``None``: the endpoints' own, when they agree)."""
        names = {model} if model else {e.model for e in self.endpoints} - {""}
        return repr(names.pop()) if len(names) == 1 else "the endpoints' configured models"

    def _busy_error(self, model: str | None) -> LLMRouterBusyError:
        timeout = "no limit" if self.queue_timeout is None else f"{self.queue_timeout:g} s"
        return LLMRouterBusyError(
            f"Every endpoint that serves {self._describe(model)} stayed at its max_concurrency "
            f"for the whole queue_timeout ({timeout}); raise max_concurrency or queue_timeout, "
            "or add endpoints"
        )
