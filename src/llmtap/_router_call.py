"""The routing loop: one request's attempts, each on an endpoint the pool picks.

A `Call` is one request's journey: the endpoints it tried, its retries (within ``max_retries``
and the router's `RetryBudget`), its deadline; each attempt is one endpoint client's single
attempt (``_attempt`` or ``_post_json``), with no retries of its own. A failure before any
output moves the request (to an endpoint not tried yet when there is one, else after the usual
backoff); after output it raises :class:`LLMStreamInterrupted`, or with ``resume=True``
continues the partial answer, so that no token is ever delivered twice.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson

from llmtap import _retry
from llmtap._client import _read_embeddings
from llmtap._dialects import Dialect, MessageLike
from llmtap._errors import LLMError, LLMResponseError, LLMStreamInterrupted
from llmtap._log import get_logger
from llmtap._results import ChatResult, StreamEvent
from llmtap._router_endpoint import Endpoint, RetryBudget, model_gone
from llmtap._stream import RESUMABLE_SERVERS, ChatStream, Progress
from llmtap._transport import chunk_text

if TYPE_CHECKING:
    from llmtap._client import ChatRequest
    from llmtap._router_pool import Pool

__all__ = ["Call", "RouterStream", "routed_chunks", "routed_completion", "routed_embeddings"]

_log = get_logger()


class Attempt:
    """One attempt's timing, for the endpoint's time-to-first-token figure."""

    __slots__ = ("first_at", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_at: float | None = None

    def output(self, now: float) -> None:
        if self.first_at is None:
            self.first_at = now


class Call:
    """One routed request: the endpoints it tried, its retries, its deadline."""

    def __init__(
        self, pool: Pool, budget: RetryBudget, model: str | None, max_retries: int
    ) -> None:
        self._pool = pool
        self._budget = budget
        self.model = model
        self.max_retries = max_retries
        self.tried: set[int] = set()
        self.attempts = 0
        self.retries = 0
        self.deadline = math.inf
        self._deadline_set = False
        self.error: LLMError | None = None

    def model_for(self, endpoint: Endpoint) -> str:
        """The model asked of ``endpoint``: the call's or router's, else its own."""
        return self.model or endpoint.client.model

    async def acquire(self) -> Endpoint:
        """An endpoint with a slot for the next attempt, after the backoff when it is one
        already tried; after a failure, what stops a retry raises that failure."""
        try:
            endpoint = await self._pool.acquire(self.model, self.tried)
        except LLMError:
            if self.error is not None:
                raise self.error from None
            raise
        try:
            if not self._deadline_set:
                self.deadline, self._deadline_set = endpoint.client._total_deadline(), True
            if endpoint.index in self.tried and self.error is not None:
                client = endpoint.client
                wait = client._retry_delay(
                    self.error, self.retries - 1, self.retries, self.deadline
                )
                if wait is None:
                    raise self.error
                if wait > 0:
                    await asyncio.sleep(wait)
        except BaseException:
            self.unused(endpoint)
            raise
        self.tried.add(endpoint.index)
        self.attempts += 1
        self._pool.begin(endpoint)
        return endpoint

    def unused(self, endpoint: Endpoint) -> None:
        """Give back a slot that no attempt used."""
        self._pool.release(endpoint, model=self.model_for(endpoint))

    def again(self, endpoint: Endpoint) -> None:
        """Let the next attempt use ``endpoint`` again at once (the request was changed)."""
        self.tried.discard(endpoint.index)

    def request(
        self,
        endpoint: Endpoint,
        messages: list[MessageLike],
        tools: Sequence[Any] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> ChatRequest:
        """The chat request for ``endpoint`` (its dialect, URL and model name)."""
        try:
            params = {**params, "model": self.model_for(endpoint)}
            return endpoint.client._request(messages, tools, params, stream=stream)
        except BaseException:
            self.unused(endpoint)
            raise

    @contextmanager
    def attempt(self, endpoint: Endpoint) -> Iterator[Attempt]:
        """Around one attempt: free the slot afterwards and record how it ended."""
        attempt = Attempt(asyncio.get_running_loop().time())
        model = self.model_for(endpoint)
        try:
            yield attempt
        except LLMError as error:
            self._pool.release(endpoint, model=model, error=error)
            raise
        except BaseException:  # the caller stopped reading, or a bug: no verdict on it
            self._pool.release(endpoint, model=model)
            raise
        ttft = None if attempt.first_at is None else attempt.first_at - attempt.started
        self._pool.release(endpoint, model=model, ok=True, ttft=ttft)
        if self.attempts == 1:
            self._budget.deposit()

    def may_retry(self, error: LLMError, endpoint: Endpoint, *, resume: bool = False) -> bool:
        """Whether another attempt may follow ``error``: it is retryable (for a resume: not
        the server refusing), retries are left, and the budget allows one. Logs it."""
        if resume:
            allowed = not (isinstance(error, LLMResponseError) and not _retry.is_retryable(error))
        else:
            allowed = _retry.is_retryable(error) or model_gone(error)
        if not allowed or self.retries >= self.max_retries:
            return False
        if not self._budget.withdraw():
            _log.warning(
                "router_retry_budget_exhausted",
                endpoint=endpoint.name,
                error=f"{type(error).__name__}: {error.message}",
            )
            return False
        self.retries += 1
        self.error = error
        _log.warning(
            "router_resume" if resume else "router_retry",
            attempt=self.retries,
            max_retries=self.max_retries,
            endpoint=endpoint.name,
            error=f"{type(error).__name__}: {error.message}",
        )
        return True


class RouterStream(ChatStream):
    """One streaming answer from a :class:`Router`: the same events, ``text()`` and
    ``result()`` as :class:`ChatStream`, with each attempt on an endpoint the router picks.

    Use it as an async context manager, as a ``ChatStream``.
    """

    def __init__(
        self,
        new_call: Callable[[], Call],
        messages: list[MessageLike],
        tools: Sequence[Any] | None,
        params: dict[str, Any],
        *,
        resume: bool = False,
        exposed: bool = True,
    ) -> None:
        super().__init__(resume=resume, exposed=exposed)
        self._new_call = new_call
        self._messages = messages
        self._tools = tools
        self._params = params
        self._endpoint: str | None = None

    @property
    def endpoint(self) -> str | None:
        """The name of the endpoint answering (the last one tried); ``None`` before."""
        return self._endpoint

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        started = asyncio.get_running_loop().time()
        call = self._new_call()
        progress = Progress()
        dialect: Dialect = "openai"
        broken: LLMError | None = None  # set while a broken answer is being continued
        while True:
            try:
                endpoint = await call.acquire()
            except LLMError:
                if broken is None:
                    raise
                raise LLMStreamInterrupted.after(
                    broken, progress.text, progress.delivered
                ) from broken
            client = endpoint.client
            request = call.request(endpoint, self._messages, self._tools, self._params, stream=True)
            if broken is not None:
                kind = endpoint.kind or client.server
                if kind not in RESUMABLE_SERVERS or request.dialect != dialect:
                    call.unused(endpoint)
                    raise LLMStreamInterrupted.after(
                        broken, progress.text, progress.delivered
                    ) from broken
                request = request.continuation(progress.accumulator.text, kind)
            else:
                progress = Progress(request.dialect, quiet=not self._exposed)
                dialect = request.dialect
            broken = None
            self._endpoint = endpoint.name
            try:
                with call.attempt(endpoint) as attempt:
                    progress.on_output = attempt.output
                    async with client._attempt(request, call.deadline, progress) as events:
                        async for event in events:
                            yield event
                break
            except LLMError as error:
                accumulator = progress.accumulator
                if progress.delivered:
                    if (
                        self._resume
                        and accumulator.text
                        and not accumulator.tool_calls_started
                        and call.may_retry(error, endpoint, resume=True)
                    ):
                        broken = error
                        continue
                    self._after_output(error, progress)
                elif request.drop_rejected_stream_options(error):
                    client._no_stream_options.add(request.url)
                    call.again(endpoint)
                    continue
                if not call.may_retry(error, endpoint):
                    raise
        self._result = await client._finish(
            progress.accumulator, request, started, progress.first_at, progress.server
        )


async def routed_chunks(
    call: Call,
    messages: list[MessageLike],
    tools: Sequence[Any] | None,
    params: dict[str, Any],
) -> AsyncIterator[dict[str, Any]]:
    """Chunk dicts of one answer, each attempt on an endpoint ``call`` picks; moved to another
    only before the first chunk."""
    loop = asyncio.get_running_loop()
    delivered = 0
    text_parts: list[str] = []
    while True:
        endpoint = await call.acquire()
        client = endpoint.client
        request = call.request(endpoint, messages, tools, params, stream=True)
        try:
            with call.attempt(endpoint) as attempt:
                async with client._attempt(request, call.deadline) as chunks:
                    async for chunk in chunks:
                        content = chunk_text(chunk)
                        if content:
                            text_parts.append(content)
                            attempt.output(loop.time())
                        delivered += 1
                        yield chunk
            return
        except LLMError as error:
            if delivered:
                raise LLMStreamInterrupted.after(error, "".join(text_parts), delivered) from error
            if request.drop_rejected_stream_options(error):
                client._no_stream_options.add(request.url)
                call.again(endpoint)
                continue
            if not call.may_retry(error, endpoint):
                raise


async def routed_completion(
    call: Call,
    messages: list[MessageLike],
    tools: Sequence[Any] | None,
    params: dict[str, Any],
) -> ChatResult:
    """One non-streaming answer, moved to another endpoint after any retryable failure."""
    while True:
        endpoint = await call.acquire()
        request = call.request(endpoint, messages, tools, params, stream=False)
        try:
            with call.attempt(endpoint):
                return await endpoint.client._complete(request, call.deadline)
        except LLMError as error:
            if not call.may_retry(error, endpoint):
                raise


async def routed_embeddings(
    new_call: Callable[[], Call], items: list[str], params: dict[str, Any]
) -> list[list[float]]:
    """The vectors of ``items``, one routed request per batch (of the chosen endpoint's
    ``embed_batch_size``)."""
    vectors: list[list[float]] = []
    while len(vectors) < len(items):
        call = new_call()
        while True:
            endpoint = await call.acquire()
            config = endpoint.client.config
            batch = items[len(vectors) : len(vectors) + config.embed_batch_size]
            native = config.api == "ollama" or endpoint.kind == "ollama"
            url = config.url_for("/api/embed" if native else "/v1/embeddings")
            payload = {"model": call.model_for(endpoint), "input": batch, **params}
            try:
                with call.attempt(endpoint):
                    body = await endpoint.client._post_json(
                        url, orjson.dumps(payload), chat=False, total_at=call.deadline
                    )
                    found = _read_embeddings(body, len(batch), native, url)
                break
            except LLMError as error:
                if not call.may_retry(error, endpoint):
                    raise
        vectors.extend(found)
    return vectors
