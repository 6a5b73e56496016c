"""The batch run: every line of the input through a client or a router, a bounded number
in flight, each answer written as it completes; resumable, stoppable, reported."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from llmtap import _telemetry
from llmtap._batch.journal import (
    Journal,
    chat_completion,
    embeddings_list,
    error_line,
    success_line,
)
from llmtap._batch.lines import BadLine, Defaults, Job, parse, read, scan
from llmtap._errors import LLMError, LLMUsageError
from llmtap._hooks import (
    AttemptFailed,
    HookRecord,
    RequestFailed,
    RequestFinished,
    install,
    uninstall,
)
from llmtap._results import ChatResult
from llmtap._wire.dialects import MessageLike

__all__ = ["BatchReport", "BatchTarget", "run"]

#: Why a run ended before its last line: its errors reached ``max_errors``, or it was told
#: to stop (Ctrl-C).
Stopped = Literal["max_errors", "interrupted"]


class BatchTarget(Protocol):
    """What a batch sends its requests through: an ``LLMClient`` or a ``Router``."""

    async def chat(
        self, messages: Sequence[MessageLike], tools: Sequence[Any] | None = None, **params: Any
    ) -> ChatResult: ...

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None, **params: Any
    ) -> list[list[float]]: ...


@dataclass(frozen=True, slots=True)
class BatchReport:
    """How a batch run went (also handed to ``on_progress`` while it runs).

    Attributes:
        lines: Requests in the input (its non-blank lines).
        done: Lines finished in this run (answered or failed).
        skipped: Lines skipped because the output or errors file already had them (resume).
        succeeded: Lines answered in this run.
        failed: Failed lines by error code: the HTTP status (``"503"``), else the error class
            (``"LLMTimeoutError"``), ``"invalid_line"`` for a line that could not be sent.
        retried: Retries made (attempts after a failure, failovers included).
        prompt_tokens: Prompt tokens of the answers, as the servers counted them.
        completion_tokens: Completion tokens of the answers.
        elapsed: Seconds since the run started.
        endpoints: Answers by the endpoint that gave them (a router's spread).
        stopped: ``None`` when every line was done; ``"max_errors"`` or ``"interrupted"``
            when the run stopped early (resume it to finish).
        output: The output file.
        errors: The errors file.
    """

    lines: int
    done: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: Mapping[str, int] = field(default_factory=dict)
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed: float = 0.0
    endpoints: Mapping[str, int] = field(default_factory=dict)
    stopped: Stopped | None = None
    output: Path = Path()
    errors: Path = Path()

    @property
    def failures(self) -> int:
        """Lines that failed in this run."""
        return sum(self.failed.values())

    @property
    def remaining(self) -> int:
        """Lines neither done now nor before."""
        return max(self.lines - self.skipped - self.done, 0)

    @property
    def requests_per_second(self) -> float:
        """Lines done per second of this run."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second of this run."""
        return self.completion_tokens / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``llmtap batch --json``)."""
        return {
            "lines": self.lines,
            "done": self.done,
            "skipped": self.skipped,
            "succeeded": self.succeeded,
            "failed": dict(self.failed),
            "failures": self.failures,
            "remaining": self.remaining,
            "retried": self.retried,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "elapsed": round(self.elapsed, 3),
            "requests_per_second": round(self.requests_per_second, 2),
            "tokens_per_second": round(self.tokens_per_second, 2),
            "endpoints": dict(self.endpoints),
            "stopped": self.stopped,
            "output": str(self.output),
            "errors": str(self.errors),
        }


class _Ticket:
    """What the hooks tell about the request of one line."""

    __slots__ = ("endpoint", "response_id", "retries", "retry_due", "unrouted")

    def __init__(self) -> None:
        self.retries = 0
        #: The last failed attempt was to be retried (the retry rules said so).
        self.retry_due = False
        #: The call failed because no endpoint could take its next attempt (a router's,
        #: all cooling down after failures): the retry rules wanted one more.
        self.unrouted = False
        self.endpoint: str | None = None
        self.response_id: str | None = None


_TICKET: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar(
    "llmtap_batch_ticket", default=None
)
_active_runs = 0
#: How long a line waits, at most, for a router endpoint to come back when every one that
#: serves its model is cooling down after failures and the retry rules want an attempt.
_MAX_WAIT_FOR_ENDPOINT = 60.0


def _observe(record: HookRecord) -> None:
    """The hook a run installs: the retries, answering endpoint and answer id of the line
    whose request this is (none for calls that are not a batch's)."""
    ticket = _TICKET.get()
    if ticket is None:
        return
    if type(record) is AttemptFailed:
        ticket.retry_due = record.will_retry
        if record.will_retry:
            ticket.retries += 1
    elif type(record) is RequestFinished:
        ticket.endpoint = record.endpoint
        ticket.response_id = record.response_id
    elif type(record) is RequestFailed:
        ticket.unrouted = record.attempts == 0 or ticket.retry_due


def errors_path_for(output: Path) -> Path:
    """The default errors file beside ``output``: ``out.jsonl`` → ``out.errors.jsonl``."""
    suffix = output.suffix or ".jsonl"
    return output.with_name(f"{output.stem if output.suffix else output.name}.errors{suffix}")


async def run(
    target: BatchTarget,
    input: str | Path,
    output: str | Path,
    *,
    errors: str | Path | None = None,
    concurrency: int = 64,
    max_rpm: float | None = None,
    resume: bool = False,
    max_errors: int | None = None,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    system: str | None = None,
    on_progress: Callable[[BatchReport], None] | None = None,
    stop: asyncio.Event | None = None,
    grace: float = 10.0,
) -> BatchReport:
    """Send every line of ``input`` through ``target`` and write each answer as it completes.

    Args:
        target: An ``LLMClient`` or a ``Router``.
        input: A JSONL file: OpenAI's Batch API format (chat completions and embeddings) or
            the short form (``{"messages": [...]}`` / ``{"prompt": "..."}``), read as needed.
        output: Where answers go, one line each in OpenAI's batch output format.
        errors: Where failures go (default: beside ``output``, ``out.errors.jsonl``).
        concurrency: Requests in flight at most.
        max_rpm: Requests started per minute at most (``None``: no limit).
        resume: Skip every ``custom_id`` the output and errors files already hold (repairing
            a last line a crash cut short). Without it, files that have lines are refused.
        max_errors: Stop once this many lines have failed (what is in flight still finishes
            and is written).
        model: The model of every line (over a body's own ``model``, so that a file made for
            OpenAI runs against a local server unchanged).
        params: Request parameters for lines that do not set them (``{"temperature": 0}``).
        system: A system message for chat lines that have none.
        on_progress: Called with a :class:`BatchReport` after each line.
        stop: When set, no new line is sent; what is in flight gets ``grace`` seconds to
            finish and be written (the CLI sets it on Ctrl-C).
        grace: Seconds in-flight requests get after ``stop``.

    Returns:
        The report of the run.

    Raises:
        BatchFileError: Before anything is sent: duplicate ``custom_id``s (naming their
            lines), output files that already have lines without ``resume``, a file that
            cannot be read or written.
        LLMUsageError: An argument out of range.

    Example:
        >>> import llmtap.batch
        >>> async with Router(["http://gpu1:11434", "http://gpu2:11434"], model="qwen3") as router:
        ...     report = await llmtap.batch.run(router, "in.jsonl", "out.jsonl", resume=True)
        ...     print(report.succeeded, report.failures, report.failed)
        3 0 {}
    """
    if concurrency < 1:
        raise LLMUsageError(f"concurrency must be at least 1, not {concurrency}")
    if max_rpm is not None and not max_rpm > 0:
        raise LLMUsageError(f"max_rpm must be more than 0, not {max_rpm}")
    if max_errors is not None and max_errors < 1:
        raise LLMUsageError(f"max_errors must be at least 1, not {max_errors}")
    source = Path(input)
    journal = Journal(Path(output), Path(errors) if errors else errors_path_for(Path(output)))
    if resume:
        done = await asyncio.to_thread(journal.done)
    else:
        journal.refuse_existing()
        done = set()
    scanned = await asyncio.to_thread(scan, source)
    batch = _Run(
        target,
        read(source),
        journal,
        done,
        Defaults(model, dict(params or {}), system),
        lines=scanned.lines,
        concurrency=concurrency,
        max_rpm=max_rpm,
        max_errors=max_errors,
        on_progress=on_progress,
    )
    return await batch.go(stop, grace)


class _Run:
    """One run's state: the workers share the input reader and the counts."""

    def __init__(
        self,
        target: BatchTarget,
        source: Iterator[tuple[int, bytes]],
        journal: Journal,
        done: set[str],
        defaults: Defaults,
        *,
        lines: int,
        concurrency: int,
        max_rpm: float | None,
        max_errors: int | None,
        on_progress: Callable[[BatchReport], None] | None,
    ) -> None:
        self.target = target
        self.source = source
        self.journal = journal
        self.already = done
        self.defaults = defaults
        self.lines = lines
        self.concurrency = concurrency
        self.interval = 60.0 / max_rpm if max_rpm else 0.0
        self.max_errors = max_errors
        self.on_progress = on_progress
        self.stopping: Stopped | None = None
        self.next_start = 0.0
        self.started = time.monotonic()
        self.done = 0
        self.skipped = 0
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.retried = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.endpoints: Counter[str] = Counter()

    def report(self) -> BatchReport:
        return BatchReport(
            lines=self.lines,
            done=self.done,
            skipped=self.skipped,
            succeeded=self.succeeded,
            failed=dict(self.failed),
            retried=self.retried,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            elapsed=time.monotonic() - self.started,
            endpoints=dict(self.endpoints),
            stopped=self.stopping,
            output=self.journal.output,
            errors=self.journal.errors,
        )

    async def go(self, stop: asyncio.Event | None, grace: float) -> BatchReport:
        global _active_runs
        self.journal.open()
        if _active_runs == 0:
            install(_observe)
        _active_runs += 1
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        try:
            finished = asyncio.ensure_future(asyncio.wait(workers))
            waiting: set[asyncio.Future[Any]] = {finished}
            if stopper is not None:
                waiting.add(stopper)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():  # told to stop: no new line; what is in flight gets `grace`
                self.stopping = "interrupted"
                await asyncio.wait(workers, timeout=grace)
            finished.cancel()
            for worker in workers:
                if not worker.done():
                    worker.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result
        finally:
            for worker in workers:
                worker.cancel()
            if stopper is not None:
                stopper.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            _active_runs -= 1
            if _active_runs == 0:
                uninstall(_observe)
            self.journal.close()
        if self.stopping is None and self.remaining_lines():
            self.stopping = "interrupted"
        report = self.report()
        if self.on_progress is not None:
            self.on_progress(report)
        return report

    def remaining_lines(self) -> bool:
        return self.lines - self.skipped - self.done > 0

    async def _worker(self) -> None:
        while self.stopping is None:
            item = next(self.source, None)
            if item is None:
                return
            number, raw = item
            job = parse(raw, number, self.defaults)
            if job.custom_id in self.already:
                self.skipped += 1
                continue
            if isinstance(job, BadLine):
                self._failed(job.custom_id, "invalid_line", job.message, number)
                continue
            if self.interval:
                await self._pace()
                if self.stopping is not None:
                    return  # taken, not sent: a resume sends it
            await self._send(job)

    async def _pace(self) -> None:
        """Wait for this request's turn under ``max_rpm``."""
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    async def _send(self, job: Job) -> None:
        """Send one line's request (again, while a router has no endpoint to take it) and
        write how it ended."""
        waited, pause = 0.0, 0.05
        while True:
            ticket = _Ticket()
            token = _TICKET.set(ticket)
            try:
                body = await self._ask(job, ticket)
            except LLMError as error:
                self.retried += ticket.retries
                if ticket.unrouted and waited < _MAX_WAIT_FOR_ENDPOINT:
                    # The retry rules wanted another attempt, and no endpoint could take it
                    # (every one cooling down after failures): wait for one to come back.
                    await asyncio.sleep(pause)
                    waited += pause
                    pause = min(pause * 2, 2.0)
                    continue
                self._failed(job.custom_id, _telemetry.error_type(error), error.message, job.line)
                return
            except (LLMUsageError, ValueError, TypeError) as error:  # no server takes it
                self._failed(job.custom_id, "invalid_request", str(error), job.line)
                return
            finally:
                _TICKET.reset(token)
            break
        self.retried += ticket.retries
        self.journal.write(success_line(job.custom_id, body))
        self.succeeded += 1
        self.done += 1
        if ticket.endpoint is not None:
            self.endpoints[ticket.endpoint] += 1
        if self.on_progress is not None:
            self.on_progress(self.report())

    async def _ask(self, job: Job, ticket: _Ticket) -> dict[str, Any]:
        """The answer's body in OpenAI's shape (counting its tokens)."""
        if job.kind == "embeddings":
            assert job.texts is not None
            vectors = await self.target.embed(job.texts, model=job.model, **job.params)
            return embeddings_list(vectors, job.model)
        assert job.messages is not None
        params = job.params if job.model is None else {**job.params, "model": job.model}
        result = await self.target.chat(job.messages, **params)
        usage = result.usage
        self.prompt_tokens += usage.prompt_tokens or 0
        self.completion_tokens += usage.completion_tokens or 0
        return chat_completion(result, ticket.response_id, job.model)

    def _failed(self, custom_id: str, code: str, message: str, line: int) -> None:
        self.journal.write(error_line(custom_id, code, message, line), failed=True)
        self.failed[code] += 1
        self.done += 1
        if self.max_errors is not None and self.failures() >= self.max_errors:
            self.stopping = self.stopping or "max_errors"
        if self.on_progress is not None:
            self.on_progress(self.report())

    def failures(self) -> int:
        return sum(self.failed.values())
