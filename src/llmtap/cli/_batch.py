"""``llmtap batch``: a JSONL file of requests through one server or several (a Router), with
a progress bar on a terminal, a summary at the end, Ctrl-C that stops without losing what is
in flight, and ``--resume``."""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from llmtap._client import LLMClient
from llmtap._config import LLMConfig, endpoints_from_env
from llmtap._errors import LLMError
from llmtap._router import Router
from llmtap.batch import BatchReport, run
from llmtap.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_NO_MODEL,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_TERMINATED,
    CLIError,
    consoles,
    preflight,
)

__all__ = ["BatchPlan", "batch_command"]

#: Seconds the requests in flight get to finish after Ctrl-C.
GRACE = 10.0


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What ``llmtap batch`` was asked to do."""

    input: Path
    output: Path
    errors: Path | None
    concurrency: int
    max_rpm: float | None
    resume: bool
    max_errors: int | None
    model: str | None
    params: Mapping[str, Any]
    system: str | None
    as_json: bool
    argv: Sequence[str]


async def batch_command(configs: Sequence[LLMConfig], plan: BatchPlan) -> int:
    """Run the batch over one endpoint (a client) or several (a router); the exit code."""
    out, err = consoles()
    logger = logging.getLogger("llmtap")
    if logger.level > logging.DEBUG:  # no --debug: retries are counted, not shown one by one
        logger.setLevel(logging.ERROR)
    target = _target_for(configs, plan.model)
    stop = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None
    why: list[int] = []

    def on_signal(code: int) -> None:
        why.append(code)
        if len(why) == 1:
            stop.set()
            err.print(
                f"stopping: no new request; those in flight get up to {GRACE:g} s to finish "
                "and be written (Ctrl-C again to stop at once)",
                style="yellow",
            )
        else:
            task.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, on_signal, EXIT_INTERRUPTED)
    loop.add_signal_handler(signal.SIGTERM, on_signal, EXIT_TERMINATED)
    display = _Display(err, show=err.is_terminal and not plan.as_json)
    try:
        async with target:
            await _preflight(target, err)
            with display:
                report = await run(
                    target,
                    plan.input,
                    plan.output,
                    errors=plan.errors,
                    concurrency=plan.concurrency,
                    max_rpm=plan.max_rpm,
                    resume=plan.resume,
                    max_errors=plan.max_errors,
                    model=plan.model,
                    params=plan.params,
                    system=plan.system,
                    on_progress=display.update,
                    stop=stop,
                    grace=GRACE,
                )
    except asyncio.CancelledError:
        if not why:
            raise
        err.print(
            "stopped at once: what was in flight is not written; "
            f"resume with: {_resume_command(plan)}",
            style="yellow",
            markup=False,
        )
        return why[0]
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    if plan.as_json:
        out.print_json(orjson.dumps(report.to_dict()).decode())
    elif err.is_terminal:
        err.print(_summary(report))
    if report.stopped is not None and report.remaining:
        err.print(
            f"{report.stopped.replace('_', ' ')}: {report.remaining:,} of {report.lines:,} "
            f"lines left; resume with: {_resume_command(plan)}",
            style="yellow",
            markup=False,
        )
    if why:
        return why[0]
    return EXIT_OK if report.failures == 0 and report.stopped is None else EXIT_SERVER


async def _preflight(target: LLMClient | Router, err: Console) -> None:
    """Check the server(s) before the first line: one that cannot be reached stops the run
    here rather than filling the errors file; a server's only model becomes the model of
    lines that name none. Several models and no ``--model`` is fine (lines may name theirs)."""
    if isinstance(target, Router):
        results = await target.preflight_check()
        failures = [result for result in results if isinstance(result, LLMError)]
        if len(failures) == len(results):
            raise failures[0]
        return
    try:
        await preflight(target)
    except CLIError as exc:
        if exc.code != EXIT_NO_MODEL:
            raise
        err.print(
            f"note: {exc.message}; lines that name no model fail (give --model)",
            style="yellow",
            markup=False,
        )


def _target_for(configs: Sequence[LLMConfig], model: str | None) -> LLMClient | Router:
    """One endpoint: a client; several: a router over them."""
    if len(configs) == 1:
        return LLMClient(configs[0])
    return Router(list(configs), model=model)


def _resume_command(plan: BatchPlan) -> str:
    """The command line again, with ``--resume``."""
    args = list(plan.argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["llmtap", *args])


class _Display:
    """The progress bar on a terminal (nothing elsewhere)."""

    def __init__(self, console: Console, *, show: bool) -> None:
        self.show = show
        self.progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[errors]}"),
            TextColumn("{task.fields[spread]}"),
            console=console,
            disable=not show,
        )
        self.task = self.progress.add_task(
            "batch", total=None, rate="", errors="", spread="", start=False
        )
        self.update: Callable[[BatchReport], None] = self._update if show else _ignore

    def __enter__(self) -> _Display:
        if self.show:  # a disabled bar still writes a newline at its end (rich 13.8)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.show:
            self.progress.__exit__(None, None, None)

    def _update(self, report: BatchReport) -> None:
        progress = self.progress
        if not progress.tasks[0].started:
            progress.start_task(self.task)
        failures = report.failures
        spread = ""
        if len(report.endpoints) > 1:
            spread = " · ".join(f"{name} {count:,}" for name, count in report.endpoints.items())
        progress.update(
            self.task,
            total=report.lines - report.skipped,
            completed=report.done,
            rate=f"{report.requests_per_second:,.1f} req/s {report.tokens_per_second:,.0f} tok/s",
            errors=f"[red]{failures:,} errors[/red]" if failures else "",
            spread=spread,
        )


def _ignore(report: BatchReport) -> None:
    pass


def _summary(report: BatchReport) -> Table:
    table = Table(title="batch", show_header=False, title_justify="left")
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [
        ("lines", f"{report.lines:,}"),
        ("skipped (already written)", f"{report.skipped:,}"),
        ("answered", f"{report.succeeded:,}"),
        ("failed", f"{report.failures:,}"),
    ]
    rows += [(f"  {code}", f"{count:,}") for code, count in sorted(report.failed.items())]
    rows += [
        ("retries", f"{report.retried:,}"),
        ("tokens in / out", f"{report.prompt_tokens:,} / {report.completion_tokens:,}"),
        ("time", f"{report.elapsed:,.1f} s"),
        ("requests/s", f"{report.requests_per_second:,.2f}"),
        ("tokens/s", f"{report.tokens_per_second:,.1f}"),
    ]
    rows += [(f"  {name}", f"{count:,}") for name, count in report.endpoints.items()]
    rows += [("output", str(report.output)), ("errors", str(report.errors))]
    for name, value in rows:
        table.add_row(name, value)
    return table


def endpoints_from(flags: Sequence[str]) -> list[str | None]:
    """The endpoints of the run: the ``--endpoint`` flags, else ``LLMTAP_ENDPOINTS``
    (comma-separated), else the one default endpoint (``None``)."""
    if flags:
        return list(flags)
    return [*endpoints_from_env()] or [None]


def argv() -> list[str]:
    """This command line after ``llmtap`` (for the resume hint)."""
    return sys.argv[1:]
