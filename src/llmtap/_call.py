"""The attempt loop: one logical call's attempts, on a client's server or over a router's.

Every call path goes through :meth:`Call.items`: raw chunk streams, typed streams, ``chat()``
streaming or not, embeddings, on one :class:`LLMClient` or a ``Router``. For each attempt it
takes a server from the call's :class:`Route`, sends the request, and hands on what the answer
reader yields. When an attempt fails it asks :func:`llmtap._retry.decide` what happens next
(retry, a refit of the request, a resume of the answer, a restart, another server, or the
error), waits as decided, and emits the lifecycle hooks. What "after output" means is decided
here too, once: the reader reports a failure and how many items it had delivered, and this
module turns it into :class:`LLMStreamInterrupted` or a resume.

The body reader is also handed to the stream objects above, which take items straight from
it once the first is out (every generator layer an ``async for`` passes through costs CPU per
token); the loop learns how that reader ends through its callbacks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from llmtap import _retry
from llmtap._errors import LLMError, LLMStreamInterrupted
from llmtap._hooks import (
    AttemptFailed,
    FirstChunk,
    Hook,
    Hooks,
    Operation,
    RequestCancelled,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    installed,
    log_debug,
)
from llmtap._log import get_logger
from llmtap._results import (
    FinishEvent,
    ServerKind,
    StreamEvent,
    TextDelta,
    UsageEvent,
)
from llmtap._upstream import Upstream
from llmtap._wire.accumulate import Accumulator
from llmtap._wire.dialects import Dialect, guess_server
from llmtap._wire.embeddings import EmbeddingsRequest
from llmtap._wire.request import ChatRequest

if TYPE_CHECKING:
    from llmtap._http import Exchange
    from llmtap._wire.chunks import ChunkDecoder

__all__ = [
    "ENDED",
    "RESUMABLE_SERVERS",
    "Call",
    "Direct",
    "Ended",
    "Progress",
    "Request",
    "Route",
]

_log = get_logger()
_ids = itertools.count(1)
_DEBUG_HOOKS = Hooks([log_debug])
#: The last chunk of a raw answer that had none.
_NOTHING: Mapping[str, Any] = MappingProxyType({})

#: What :meth:`Call.open` gives as the first item of an answer that ended without one.
ENDED: Any = object()

#: Servers known to continue a final assistant message (a prefill) and send only new text.
RESUMABLE_SERVERS = frozenset({"ollama", "llama.cpp", "vllm"})

#: What one attempt sends.
Request = ChatRequest | EmbeddingsRequest


class Ended(NamedTuple):
    """How an attempt on a server ended: ``ok`` (with its time from sending to the first
    chunk), failed with ``error``, or neither (the caller stopped reading, or nothing was
    sent)."""

    ok: bool = False
    error: LLMError | None = None
    ttft: float | None = None


#: An attempt whose caller stopped reading: no verdict on its server.
_STOPPED = Ended()


class Route(Protocol):
    """Where a call's attempts go: a client's one server, or a router's servers."""

    @property
    def upstream(self) -> Upstream | None:
        """The one server every attempt goes to (a client's); ``None`` for a router, which
        picks one per attempt."""
        ...

    @property
    def log_prefix(self) -> str:
        """Prefix of the retry log events (``llm_retry``, ``router_retry``)."""
        ...

    @property
    def budget(self) -> Callable[[], bool] | None:
        """Takes one retry from a retry budget (``None``: no budget)."""
        ...

    async def acquire(self, call: Call, wait: float) -> Upstream:
        """A server for the next attempt, after waiting ``wait`` seconds unless it is one the
        call has not tried; raises when none can take it."""
        ...

    def release(self, call: Call, upstream: Upstream, ended: Ended) -> None:
        """The attempt on ``upstream`` is over, and this is how it ended."""
        ...

    def elsewhere(self, call: Call) -> bool:
        """Whether a server the call has not tried can take its next attempt."""
        ...

    def deposit(self) -> None:
        """A first attempt was sent (it adds to a retry budget)."""
        ...


class Direct:
    """The one server of an :class:`LLMClient`."""

    __slots__ = ("upstream",)

    log_prefix = "llm"
    budget = None

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def acquire(self, call: Call, wait: float) -> Upstream:
        if wait > 0:
            await asyncio.sleep(wait)
        return self.upstream

    def release(self, call: Call, upstream: Upstream, ended: Ended) -> None:
        pass

    def elsewhere(self, call: Call) -> bool:
        return False

    def deposit(self) -> None:
        pass


class Progress:
    """What one answer has gathered so far, across its attempts; the sink its chunks go to
    (see ``llmtap._wire.chunks.Sink``).

    Args:
        dialect: The dialect of the chunks.
        quiet: Give no events back (``chat()``: nobody sees them), only accumulate.
    """

    __slots__ = (
        "_dialect",
        "_loop",
        "accumulator",
        "delivered",
        "first_at",
        "quiet",
        "response_id",
        "server",
    )

    def __init__(self, dialect: Dialect = "openai", *, quiet: bool = False) -> None:
        # A Responses answer reaches the accumulator as the chat chunks it amounts to.
        self.accumulator = Accumulator("ollama" if dialect == "ollama" else "openai")
        self.quiet = quiet
        #: Events produced so far (delivered to the caller, unless quiet).
        self.delivered = 0
        self._loop = asyncio.get_running_loop()
        #: Loop time of the first output event (text, reasoning, a tool call piece).
        self.first_at: float | None = None
        self._dialect = dialect
        #: Which server answered, as the chunks tell (see ``guess_server``): guessed from
        #: the first chunk, then from each finish chunk (vLLM marks those, and llama.cpp
        #: without a usage chunk) and usage chunk (llama.cpp marks it).
        self.server: ServerKind | None = None
        #: The answer's id, from the first chunk that carries one.
        self.response_id: str | None = None

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return self.accumulator.text

    def take(self, chunk: dict[str, Any]) -> Sequence[StreamEvent]:
        """Feed one chunk to the accumulator and return its events (none when quiet),
        noting when output began and which chunk may tell the server."""
        events = self.accumulator.feed(chunk)
        if self.server is None:
            self.server = guess_server(self._dialect, chunk)
            response_id = chunk.get("id")
            self.response_id = response_id if isinstance(response_id, str) else None
        if events:
            self.delivered += len(events)
            # Events come in the order reasoning, text, tool calls, finish, usage: a chunk
            # ending in text has no finish, and after the first output nothing is noted.
            if self.first_at is None or type(events[-1]) is not TextDelta:
                self._note(chunk, events)
        return () if self.quiet else events

    def server_on(self, upstream: Upstream) -> ServerKind:
        """The kind of server answering on ``upstream``: as a probe found it, else as the
        chunks told, else the default for its dialect."""
        return upstream.server or self.server or guess_server(upstream.dialect, None)

    def take_whole(self, body: dict[str, Any]) -> Sequence[StreamEvent]:
        """Feed a whole, non-streamed answer and return its events (none when quiet)."""
        events = self.accumulator.feed_completion(body)
        self.server = guess_server(self._dialect, body)
        response_id = body.get("id")
        self.response_id = response_id if isinstance(response_id, str) else None
        self.delivered += len(events)
        return () if self.quiet else events

    def _note(self, chunk: dict[str, Any], events: list[StreamEvent]) -> None:
        for event in events:
            kind = type(event)
            if kind is FinishEvent:
                self.server = guess_server(self._dialect, chunk)
            elif kind is UsageEvent:
                # llama-server puts its timings on the usage chunk when there is one (and
                # then not on the finish chunk); a usage chunk without a mark of its own
                # leaves the finish chunk's guess alone.
                guessed = guess_server(self._dialect, chunk)
                if guessed != "openai-compatible":
                    self.server = guessed
            elif self.first_at is None:
                self.first_at = self._loop.time()


class Call:
    """One logical call: its attempts, retries, deadline and hooks.

    Args:
        route: Where its attempts go.
        max_retries: Attempts after the first (refits not counted).
        hooks: Its hooks (``None``: none, and no record is built).
        operation: What it does (named in the hooks' records).
        model: The model asked for, for the records (``None``: the server's own).
        stream: Whether the answer is streamed, for the records.
        exposed: Output reaches the caller as it arrives (a stream), rather than only at the
            end (``chat()``): after output, only a resume may follow.
        resume: Continue an answer that breaks after text arrived, where the server can.
    """

    __slots__ = (
        "_attempt_at",
        "_broken",
        "_held",
        "_last_error",
        "_refitted",
        "_terminal",
        "_verdict",
        "attempts",
        "deadline",
        "done",
        "ended_at",
        "exchange",
        "exposed",
        "first_chunk_at",
        "headers",
        "hooks",
        "id",
        "max_retries",
        "model",
        "operation",
        "progress",
        "request",
        "resume",
        "retries",
        "route",
        "started",
        "stream",
        "tries",
        "upstream",
    )

    def __init__(
        self,
        route: Route,
        *,
        max_retries: int,
        hooks: Hooks | None = None,
        operation: Operation = "chat",
        model: str | None = None,
        stream: bool = True,
        exposed: bool = True,
        resume: bool = False,
    ) -> None:
        self.route = route
        self.stream = stream
        self.max_retries = max_retries
        process = installed()
        if process is not None:
            hooks = hooks + process if hooks is not None else process
        if logging.getLogger("llmtap").isEnabledFor(logging.DEBUG):
            hooks = _DEBUG_HOOKS + hooks if hooks is not None else _DEBUG_HOOKS
        self.hooks = hooks
        #: Headers the hooks asked to send with every attempt (``None``: none).
        self.headers: dict[str, str] | None = None
        #: Whether the call's last record (finished, failed, cancelled) went out.
        self._terminal = False
        self.operation = operation
        self.model = model
        self.exposed = exposed
        self.resume = resume
        self.id = next(_ids)
        #: Attempts sent so far (refits included), and retries among them.
        self.attempts = 0
        self.retries = 0
        #: Attempts per server (by its index), for a router's per-server retry limit.
        self.tries: dict[int, int] = {}
        self.deadline = math.inf
        self.started = 0.0
        #: The server, request, answer and reader of the current attempt.
        self.upstream: Upstream | None = None
        self.request: Request | None = None
        self.progress: Progress | None = None
        self.exchange: Exchange | None = None
        self.first_chunk_at: float | None = None
        self._attempt_at = 0.0
        #: Loop time at which the whole answer had been read; and whether it had.
        self.ended_at: float | None = None
        self.done = False
        self._verdict: _retry.Verdict | None = None
        self._refitted: Request | None = None
        self._broken: LLMError | None = None
        self._last_error: LLMError | None = None
        #: Whether the current server's slot is held (given back exactly once).
        self._held = False

    def add_hook(self, hook: Hook) -> None:
        """Give ``hook`` this call's records too (before the call is opened)."""
        own = Hooks([hook])
        self.hooks = self.hooks + own if self.hooks is not None else own

    # --- the loop -------------------------------------------------------------------------

    async def open(
        self,
        request_for: Callable[[Upstream], Request],
        *,
        first: Request | None = None,
        quiet: bool = False,
        typed: bool = False,
        collect_text: bool = False,
        wait: float = 0.0,
    ) -> tuple[AsyncGenerator[Any, None], Any]:
        """Send the call's request until an answer begins (or the call fails); the loop.

        Each attempt takes a server from the route, sends the request and reads the
        answer's first item. A failure is judged (:meth:`_failed`): the request is then sent
        again after the verdict's wait (refitted, to another server, or the same), or the
        error is raised. A failure after output that is judged inside the reader (``chat()``
        restarting an answer nobody has seen, or resuming one) comes back here the same way.

        Args:
            request_for: The request for a server (a router's servers each get their own).
            first: The first attempt's request, when already built (a client's).
            quiet: For ``typed``: accumulate, give no events (``chat()``).
            typed: Feed chunks to a :class:`Progress` (kept as :attr:`progress`) and give
                its events.
            collect_text: For raw chunks: keep their text, for the error after output.
            wait: Seconds to wait before the first attempt (a resume's backoff).

        Returns:
            The answer's reader and its first item (:data:`ENDED` when the answer ended
            without one: ``chat()``, which gives none). The caller reads the rest straight
            from the reader; the call learns how it ends through the reader's callbacks.

        Raises:
            LLMError: As the last attempt raised.
        """
        hooks = self.hooks
        if not self.attempts and not self.started:
            self.started = asyncio.get_running_loop().time()
            if hooks is not None:
                await self._announce(first)
        try:
            return await self._attempts(request_for, first, quiet, typed, collect_text, wait)
        except BaseException as exc:
            if hooks is not None and not isinstance(exc, LLMError):
                self._cancelled()  # cancelled (or a bug): the call ends here
            raise

    async def _attempts(
        self,
        request_for: Callable[[Upstream], Request],
        first: Request | None,
        quiet: bool,
        typed: bool,
        collect_text: bool,
        wait: float,
    ) -> tuple[AsyncGenerator[Any, None], Any]:
        """The attempts of :meth:`open`."""
        hooks = self.hooks
        loop = asyncio.get_running_loop()
        upstream: Upstream | None = None
        while True:
            try:
                if self._refitted is not None and upstream is not None:
                    request, self._refitted = self._refitted, None  # the same server, at once
                    if typed:
                        self.progress = Progress(upstream.dialect, quiet=quiet)
                else:
                    upstream = await self._acquire(wait)
                    request = self._request_for(upstream, request_for, first, quiet, typed)
                    first = None
            except LLMError as error:
                if hooks is not None:
                    await self._emit_failed(error)
                raise
            self.request = request
            self.attempts += 1
            self.tries[upstream.index] = self.tries.get(upstream.index, 0) + 1
            if self.attempts == 1:
                self.route.deposit()
            self.first_chunk_at = None
            self._attempt_at = loop.time()
            try:
                exchange = self.exchange = await upstream.session.send(
                    "POST", request.url, request.body, total_at=self.deadline, headers=self.headers
                )
                reader = self._reader(exchange, request, collect_text)
                try:
                    item = await reader.__anext__()
                except StopAsyncIteration:
                    item = ENDED
                return reader, item
            except LLMError as error:
                verdict, self._verdict = self._verdict, None
                if verdict is None:  # failed before a reader judged it (sending)
                    verdict = await self._failed(error, delivered=0)
                if not verdict.again:
                    raise
                wait = verdict.wait
            except BaseException:  # cancelled (or a bug): no verdict on the server
                self._give_back()
                raise

    async def items(
        self, request_for: Callable[[Upstream], Request], first: Request | None
    ) -> AsyncGenerator[Any, None]:
        """Every typed event of the answer, for a caller who sees them as they come and wants
        a broken answer resumed: after a resume the events go on from where it broke.

        Raises:
            LLMError: As :meth:`open`; :class:`LLMStreamInterrupted` when the answer broke
                after output and could not be resumed.
        """
        wait = 0.0
        while True:
            reader, item = await self.open(request_for, first=first, typed=True, wait=wait)
            first = None
            try:
                if item is ENDED:
                    return
                yield item
                async for item in reader:
                    yield item
                return
            except LLMError:
                verdict, self._verdict = self._verdict, None
                if verdict is None or not verdict.again:
                    raise
                wait = verdict.wait  # a resume: open() continues the answer
            finally:
                await reader.aclose()

    def abandon(self) -> None:
        """The reader closed: if the caller stopped reading before the answer ended, give
        the server back with no verdict on it (a server about to take a refitted request
        keeps its slot)."""
        if self._refitted is None:
            if self._held and self.hooks is not None:
                self._cancelled()  # the answer had not ended: the caller stopped reading
            self._give_back()

    async def _acquire(self, wait: float) -> Upstream:
        """A server for the next attempt; when none can take it after a failure, what the
        caller gets is that failure (or, for a broken answer, ``LLMStreamInterrupted``)."""
        try:
            upstream = await self.route.acquire(self, wait)
        except LLMError:
            broken = self._broken
            if broken is not None:  # a resume found no server to continue on
                progress = self.progress
                assert progress is not None
                raise LLMStreamInterrupted.after(
                    broken, progress.text, progress.delivered
                ) from broken
            if self._last_error is not None:
                raise self._last_error from None
            raise
        self._held = True
        if self.attempts == 0:
            total = upstream.config.total_timeout
            self.deadline = math.inf if total is None else self.started + total
        self.upstream = upstream
        return upstream

    def _request_for(
        self,
        upstream: Upstream,
        request_for: Callable[[Upstream], Request],
        first: Request | None,
        quiet: bool,
        typed: bool,
    ) -> Request:
        """The request of the next attempt on ``upstream``: a continuation of the broken
        answer, or a new answer (with a new :class:`Progress`)."""
        try:
            broken = self._broken
            if broken is not None:
                self._broken = None
                return self._continuation(upstream, request_for, broken)
            request = first if first is not None else request_for(upstream)
            if typed:
                dialect = request.dialect if isinstance(request, ChatRequest) else "openai"
                self.progress = Progress(dialect, quiet=quiet)
            return request
        except BaseException:
            self._give_back()
            raise

    def _continuation(
        self, upstream: Upstream, request_for: Callable[[Upstream], Request], broken: LLMError
    ) -> ChatRequest:
        """The request that continues the broken answer on ``upstream``; raises
        :class:`LLMStreamInterrupted` when that server cannot continue it."""
        progress = self.progress
        assert progress is not None
        request = request_for(upstream)
        previous = self.request
        server = progress.server_on(upstream)
        if (
            server not in RESUMABLE_SERVERS
            or not isinstance(request, ChatRequest)
            or not isinstance(previous, ChatRequest)
            or request.dialect != previous.dialect
        ):
            raise LLMStreamInterrupted.after(broken, progress.text, progress.delivered) from broken
        return request.continuation(progress.text, server)

    def _reader(
        self, exchange: Exchange, request: Request, collect_text: bool
    ) -> AsyncGenerator[Any, None]:
        if isinstance(request, EmbeddingsRequest):
            return exchange.read_object(
                decode=request.vectors,
                on_first=self._on_first,
                on_end=self._on_end,
                on_failure=self._on_failure,
                on_close=self.abandon,
            )
        return exchange.read_answer(
            sink=self.progress,
            collect_text=collect_text,
            responses=isinstance(request, ChatRequest) and request.dialect == "responses",
            output_limit=request.output_limit if isinstance(request, ChatRequest) else None,
            on_first=self._on_first,
            on_end=self._on_end,
            on_failure=self._on_failure,
            on_close=self.abandon,
        )

    # --- how an attempt ends ----------------------------------------------------------------

    def _on_first(self) -> Awaitable[None] | None:
        now = asyncio.get_running_loop().time()
        self.first_chunk_at = now
        hooks = self.hooks
        if hooks is None:
            return None
        assert self.upstream is not None
        return hooks.emit(
            FirstChunk(self.id, self.attempts, self.upstream.name, now - self.started)
        )

    def _on_end(self, decoder: ChunkDecoder | None) -> Awaitable[None] | None:
        """The answer was read to its end: the call is done."""
        now = asyncio.get_running_loop().time()
        self.ended_at = now
        self.done = True
        first = self.first_chunk_at
        self._give_back(Ended(True, None, None if first is None else first - self._attempt_at))
        hooks = self.hooks
        if hooks is None:
            return None
        self._terminal = True
        return hooks.emit(self._finished(decoder, now))

    def _finished(self, decoder: ChunkDecoder | None, ended: float) -> RequestFinished:
        upstream = self.upstream
        assert upstream is not None
        progress = self.progress
        if progress is not None:
            accumulator = progress.accumulator
            return RequestFinished(
                self.id,
                upstream.name,
                upstream.server or progress.server,
                accumulator.model or self.model,
                self.attempts,
                accumulator.finish_reason,
                progress.response_id,
                (
                    accumulator.usage,
                    accumulator.server_metrics,
                    self.started,
                    progress.first_at,
                    ended,
                    accumulator,
                ),
                decoder.chunks if decoder is not None else 1,
                upstream.url,
                self.request.body if self.request is not None else None,
            )
        # A raw stream: its last chunk holds the counts (and, from Ollama, its metrics),
        # read only when a hook asks for the usage or timings.
        last: Mapping[str, Any] = (decoder.last if decoder is not None else None) or _NOTHING
        model = last.get("model")
        response_id = last.get("id")
        return RequestFinished(
            self.id,
            upstream.name,
            upstream.server or guess_server(upstream.dialect, last),
            model if type(model) is str else self.model,
            self.attempts,
            decoder.finish_reason if decoder is not None else None,
            response_id if type(response_id) is str else None,
            (last, last, self.started, self.first_chunk_at, ended, decoder),
            decoder.chunks if decoder is not None else 1,
            upstream.url,
            self.request.body if self.request is not None else None,
        )

    async def _on_failure(self, error: LLMError, delivered: int) -> LLMError:
        """The reader failed after ``delivered`` items: judge it now (the loop takes the
        verdict from :attr:`_verdict`) and return what the caller gets: the error, or
        :class:`LLMStreamInterrupted` when it broke after output reached the caller."""
        progress = self.progress
        produced = progress.delivered if progress is not None else delivered
        verdict = self._verdict = await self._failed(error, delivered=produced)
        if verdict.again or not produced or not self.exposed:
            return error
        text = progress.text if progress is not None else self._raw_text()
        interrupted = LLMStreamInterrupted.after(error, text, produced)
        if self.hooks is not None:
            await self._emit_failed(interrupted)
        return interrupted

    def _raw_text(self) -> str:
        exchange = self.exchange
        decoder = exchange.decoder if exchange is not None else None
        return decoder.text if decoder is not None else ""

    async def _failed(self, error: LLMError, *, delivered: int) -> _retry.Verdict:
        """Decide what follows a failed attempt, give its server back (with the verdict on
        it), log and emit the hooks. ``delivered``: output produced before the failure."""
        upstream = self.upstream
        request = self.request
        assert upstream is not None
        config = upstream.config
        output: _retry.Output = "none" if not delivered else "shown" if self.exposed else "hidden"
        refit = None
        if output == "none" and isinstance(request, ChatRequest):
            refit = request.refit(error)
        verdict = _retry.decide(
            error,
            retries=self.retries,
            max_retries=self.max_retries,
            output=output,
            can_refit=refit is not None,
            can_resume=output != "none" and self._can_resume(upstream),
            elsewhere=output == "none" and self.route.elsewhere(self),
            now=asyncio.get_running_loop().time(),
            deadline=self.deadline,
            backoff_base=config.retry_backoff_base,
            backoff_max=config.retry_backoff_max,
            budget=self.route.budget,
        )
        action = verdict.action
        if refit is not None and action == "refit":
            name, self._refitted = refit
            upstream.refused.add(name)
            _log.info("llm_request_refit", refused=name, url=upstream.name)
        else:
            self._give_back(Ended(error=error))
            self._last_error = error
        if action == "resume":
            self._broken = error
        if action in ("retry", "restart", "resume"):
            self.retries += 1
            _log.warning(
                f"{self.route.log_prefix}_{'resume' if action == 'resume' else 'retry'}",
                attempt=self.retries,
                max_retries=self.max_retries,
                wait=round(verdict.wait, 3),
                error=f"{type(error).__name__}: {error.message}",
                url=upstream.name,
            )
        elif action == "raise" and verdict.reason == "the retry budget is used up":
            _log.warning(
                f"{self.route.log_prefix}_retry_budget_exhausted",
                endpoint=upstream.name,
                error=f"{type(error).__name__}: {error.message}",
            )
        hooks = self.hooks
        if hooks is not None:
            record = AttemptFailed(
                self.id,
                self.attempts,
                upstream.name,
                error,
                verdict.again,
                action,
                verdict.wait,
                verdict.reason,
            )
            if (waiting := hooks.emit(record)) is not None:
                await waiting
            if not verdict.again and output != "shown":
                await self._emit_failed(error)
        return verdict

    async def _emit_failed(self, error: LLMError) -> None:
        assert self.hooks is not None
        if self._terminal:
            return
        self._terminal = True
        record = RequestFailed(self.id, attempts=self.attempts, error=error, **self._where())
        if (waiting := self.hooks.emit(record)) is not None:
            await waiting

    async def _announce(self, first: Request | None) -> None:
        """Emit :class:`RequestStarted`, and keep the headers the hooks asked for."""
        assert self.hooks is not None
        upstream = self.route.upstream
        record = RequestStarted(
            self.id,
            self.operation,
            self.model or (first.model if first is not None else None),
            upstream.name if upstream is not None else None,
            upstream.server if upstream is not None else None,
            self.stream,
            1,
            first.body if first is not None else None,
        )
        if (waiting := self.hooks.emit(record)) is not None:
            await waiting
        if record.headers:
            self.headers = record.headers

    def _cancelled(self) -> None:
        """The call ends without its answer and without an error: emit
        :class:`RequestCancelled` (once; nothing when the call had already ended)."""
        if self._terminal or self.hooks is None:
            return
        self._terminal = True
        self.hooks.emit_soon(RequestCancelled(self.id, attempts=self.attempts, **self._where()))

    def _where(self) -> dict[str, Any]:
        """Where the current attempt went, for a record that ends the call: the endpoint,
        its URL, the request's body and the kind of server, as far as known (all ``None``:
        no attempt reached one)."""
        upstream, request = self.upstream, self.request
        if upstream is None:
            return {"endpoint": None, "url": None, "body": None, "server": None}
        progress = self.progress
        return {
            "endpoint": upstream.name,
            "url": upstream.url,
            "body": request.body if request is not None else None,
            "server": (
                progress.server_on(upstream)
                if progress is not None
                else upstream.server or guess_server(upstream.dialect, None)
            ),
        }

    def _can_resume(self, upstream: Upstream) -> bool:
        """Resuming was asked for, text was delivered, no tool call began, and the server is
        one that continues a partial answer (a router checks the next one again), over chat
        completions."""
        progress = self.progress
        if not self.resume or progress is None:
            return False
        accumulator = progress.accumulator
        if accumulator.tool_calls_started or not accumulator.text:
            return False
        if upstream.dialect == "responses":  # no assistant prefill in the Responses API
            return False
        return progress.server_on(upstream) in RESUMABLE_SERVERS

    def _give_back(self, ended: Ended | None = None) -> None:
        """Give the current server's slot back, once, with how the attempt ended (``None``:
        the caller stopped reading)."""
        if self._held and self.upstream is not None:
            self._held = False
            self.route.release(self, self.upstream, ended or _STOPPED)
