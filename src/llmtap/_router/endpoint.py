"""What the router knows about one endpoint, and its retry budget.

Plain state, no I/O: `Endpoint` (health, load, listing), `EndpointStats` (its public
snapshot), and the `RetryBudget`. Which failures count against an endpoint is retry policy
(``llmtap._retry.counts_against``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmtap._errors import redact_url
from llmtap._results import ServerKind
from llmtap._wire.listings import canonical_ollama_name, match_model

if TYPE_CHECKING:
    from llmtap._client import LLMClient
    from llmtap._upstream import Upstream

__all__ = [
    "STRATEGIES",
    "Endpoint",
    "EndpointStats",
    "RetryBudget",
    "State",
    "Strategy",
]

#: How the router spreads requests over its endpoints.
Strategy = Literal["failover", "least_busy", "round_robin"]
STRATEGIES: tuple[Strategy, ...] = ("failover", "least_busy", "round_robin")

#: An endpoint is ``healthy`` (takes requests) or ``cooling_down`` (out after a failure, probed).
State = Literal["healthy", "cooling_down"]


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """What :meth:`Router.stats` reports about one endpoint.

    Attributes:
        name: The endpoint's name (its ``name`` in the config file, else its URL).
        endpoint: Its URL (a password in it is shown as ``***``).
        state: ``"healthy"`` (takes requests) or ``"cooling_down"`` (taken out after a
            failure until a probe succeeds).
        in_flight: Requests running on it now.
        requests: Attempts sent to it.
        completed: Attempts that ended with a whole answer.
        failed: Attempts that ended with an error (a caller closing a stream early counts as
            neither).
        mean_time_to_first_token: Mean seconds from sending a streamed request to its first
            output, over its completed streams; ``None`` before the first.
        retry_in: While cooling down, seconds until the next probe; else ``None``.
        models: The models its listing names; ``None`` while the listing is unknown.
    """

    name: str
    endpoint: str
    state: State
    in_flight: int
    requests: int
    completed: int
    failed: int
    mean_time_to_first_token: float | None
    retry_in: float | None
    models: tuple[str, ...] | None


class RetryBudget:
    """Caps retries at a fraction of the requests, so that an outage does not turn every
    request into several (Finagle's ``RetryBudget``).

    Every first attempt deposits; a retry is allowed while the retries of the last
    ``window`` seconds stay within ``ratio`` times the first attempts of that window, plus
    ``minimum_per_second × window`` (so that a quiet router can still retry). Deposits are
    made when a request is sent, not when it succeeds: long streams that have not finished
    yet still count, so that a server dying under many of them does not leave the ones it
    had not started without the retries to move elsewhere.
    """

    def __init__(self, ratio: float, minimum_per_second: float, window: float = 10.0) -> None:
        self.ratio = ratio
        self.minimum = minimum_per_second * window
        self.window = window
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        for times in (self._requests, self._retries):
            while times and times[0] <= horizon:
                times.popleft()

    def deposit(self) -> None:
        """Record a first attempt."""
        now = time.monotonic()
        self._prune(now)
        self._requests.append(now)

    def withdraw(self) -> bool:
        """Take one retry from the budget; ``False`` when none is left."""
        now = time.monotonic()
        self._prune(now)
        if len(self._retries) + 1 > self.ratio * len(self._requests) + self.minimum:
            return False
        self._retries.append(now)
        return True


class Endpoint:
    """One server behind the router: its client and everything the router knows about it."""

    def __init__(
        self,
        upstream: Upstream,
        client: LLMClient,
        *,
        weight: float,
        max_concurrency: int | None,
    ) -> None:
        self.index = upstream.index
        self.upstream = upstream
        self.client = client
        self.name = upstream.name
        self.weight = weight
        self.max_concurrency = max_concurrency
        # health
        self.state: State = "healthy"
        self.cooldown = 0.0
        self.down_since = 0.0
        self.probe_at = 0.0
        self.probes_failed = 0
        self.succeeded_since_up = True
        self.last_error = ""
        # load and figures
        self.in_flight = 0
        self.requests = 0
        self.completed = 0
        self.failed = 0
        self.ttft_total = 0.0
        self.ttft_count = 0
        self.rr_current = 0.0
        # what it serves
        self.models: list[str] | None = None
        self._canonical: set[str] = set()
        self.aliases: dict[str, str] = {}
        self.loaded: set[str] = set()

    @property
    def kind(self) -> ServerKind | None:
        """The kind of server, once known."""
        return self.upstream.server

    @kind.setter
    def kind(self, kind: ServerKind | None) -> None:
        self.upstream.server = kind

    @property
    def model(self) -> str:
        """The endpoint's own model (its configuration's, or preflight's choice)."""
        return self.upstream.model

    def set_models(self, models: list[str] | None, aliases: dict[str, str] | None = None) -> None:
        """Replace the listing (``None``: unknown)."""
        self.models = models
        self.aliases = dict(aliases or {})
        self._canonical = {canonical_ollama_name(m) for m in models or ()}

    def serves(self, model: str) -> bool | None:
        """Whether the listing names ``model`` (``None`` while the listing is unknown)."""
        if self.models is None:
            return None
        if self.kind == "ollama":
            return canonical_ollama_name(model) in self._canonical
        return match_model(model, self.models, self.aliases) is not None

    def forget(self, model: str) -> None:
        """Drop ``model`` from the listing, after the server said it does not have it."""
        if self.models is None:
            return
        if self.kind == "ollama":
            wanted = canonical_ollama_name(model)
            kept = [m for m in self.models if canonical_ollama_name(m) != wanted]
        else:
            found = match_model(model, self.models, self.aliases)
            kept = [m for m in self.models if m != found]
        self.set_models(kept, {a: m for a, m in self.aliases.items() if m in kept})

    def is_warm(self, model: str) -> bool:
        """Whether ``model`` is in memory: listed by Ollama's ``/api/ps``, or served by a server
        that keeps its models loaded (llama.cpp, vLLM, ...)."""
        return self.kind != "ollama" or canonical_ollama_name(model) in self.loaded

    def has_slot(self) -> bool:
        """Whether it is below its ``max_concurrency``."""
        return self.max_concurrency is None or self.in_flight < self.max_concurrency

    def stats(self, now: float) -> EndpointStats:
        """Its figures now."""
        return EndpointStats(
            name=self.name,
            endpoint=redact_url(self.upstream.config.endpoint),
            state=self.state,
            in_flight=self.in_flight,
            requests=self.requests,
            completed=self.completed,
            failed=self.failed,
            mean_time_to_first_token=(
                self.ttft_total / self.ttft_count if self.ttft_count else None
            ),
            retry_in=max(0.0, self.probe_at - now) if self.state == "cooling_down" else None,
            models=tuple(self.models) if self.models is not None else None,
        )
