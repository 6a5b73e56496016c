"""``llmtap bench``: time to first token, tokens per second, and a concurrency sweep, measured
the way a user meets them: streamed answers through the client, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._errors import LLMError
from llmtap._messages import Message
from llmtap._results import ReasoningDelta, TextDelta
from llmtap.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    consoles,
    plural,
    preflight,
    shown_endpoint,
)
from llmtap.cli._terminal import for_console, strip_controls

__all__ = ["BenchPlan", "bench_command", "check_plot_file", "parse_levels", "percentile"]

#: What --plot can write, by the file name's suffix.
PLOT_FORMATS = ("png", "svg", "pdf")

DEFAULT_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
)


def parse_levels(text: str) -> list[int]:
    """``"1,2,4,8"`` → ``[1, 2, 4, 8]``.

    Raises:
        CLIError: Not a comma-separated list of positive integers.
    """
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(level < 1 for level in levels):
        raise CLIError(
            f"--concurrency takes positive whole numbers separated by commas (such as 1,2,4,8), "
            f"not {text!r}",
            EXIT_USAGE,
        )
    return sorted(set(levels))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 to 1) by linear interpolation; ``None`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class BenchPlan:
    """What to measure."""

    levels: list[int]
    requests: int
    max_tokens: int
    prompt: str = DEFAULT_PROMPT
    warmup: bool = True


@dataclass
class Sample:
    """One streamed answer."""

    ttft: float | None = None
    tokens: int = 0
    decode_seconds: float | None = None
    error: LLMError | None = None

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed after the first token."""
        if self.error or not self.tokens or not self.decode_seconds:
            return None
        return self.tokens / self.decode_seconds


@dataclass
class Level:
    """The samples of one concurrency level."""

    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The figures of this level, as reported."""
        good = [s for s in self.samples if s.error is None]
        ttfts = [s.ttft for s in good if s.ttft is not None]
        speeds = [v for s in good if (v := s.tokens_per_second) is not None]
        tokens = sum(s.tokens for s in good)
        return {
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "errors": len(self.samples) - len(good),
            "tokens": tokens,
            "wall_time": round(self.wall, 4),
            "ttft_p50": _round(percentile(ttfts, 0.5)),
            "ttft_p95": _round(percentile(ttfts, 0.95)),
            "tokens_per_second": _round(percentile(speeds, 0.5)),
            "aggregate_tokens_per_second": _round(tokens / self.wall if self.wall else None),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def _one(client: LLMClient, plan: BenchPlan) -> Sample:
    loop = asyncio.get_running_loop()
    sample = Sample()
    started = loop.time()
    first: float | None = None
    pieces = 0
    try:
        async with client.stream([Message.user(plan.prompt)], max_tokens=plan.max_tokens) as stream:
            async for event in stream:
                if type(event) is TextDelta or type(event) is ReasoningDelta:
                    if first is None:
                        first = loop.time()
                    pieces += 1
            result = await stream.result()
    except LLMError as exc:
        sample.error = exc
        return sample
    ended = loop.time()
    usage = result.usage
    sample.tokens = usage.completion_tokens if usage and usage.completion_tokens else pieces
    if first is not None:
        sample.ttft = first - started
        sample.decode_seconds = ended - first if ended > first else None
    return sample


async def _level(
    client: LLMClient, plan: BenchPlan, concurrency: int, progress: Progress, task: Any
) -> Level:
    level = Level(concurrency)

    async def stream() -> None:
        for _ in range(plan.requests):
            level.samples.append(await _one(client, plan))
            progress.advance(task)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(stream() for _ in range(concurrency)))
    level.wall = loop.time() - started
    return level


def check_plot_file(path: Path) -> str:
    """The format to write ``path`` in (from its suffix), checked before anything is
    measured: a plot that cannot be written must not cost a whole benchmark.

    Raises:
        CLIError: The suffix names no format, or the directory is missing or not writable.
    """
    suffix = path.suffix.lower().removeprefix(".")
    if suffix not in PLOT_FORMATS:
        raise CLIError(
            "--plot: the file name must end in .png, .svg or .pdf (the format is taken from "
            f"it), not {path.suffix or 'nothing'}",
            EXIT_USAGE,
        )
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"--plot: cannot write {path}: there is no directory {parent}", EXIT_USAGE)
    if not os.access(parent, os.W_OK):
        raise CLIError(
            f"--plot: cannot write {path}: the directory {parent} is not writable", EXIT_USAGE
        )
    return suffix


def _load_pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise CLIError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib",
            EXIT_USAGE,
        ) from None


def plot(
    levels: Sequence[dict[str, Any]], path: Path, title: str, pyplot: Any, file_format: str
) -> None:
    """Throughput and time to first token against concurrency, in ``file_format`` (SVG text
    stays text); both y axes start at zero, so that a change looks as large as it is."""
    x = [level["concurrency"] for level in levels]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        left.plot(x, [lv["aggregate_tokens_per_second"] for lv in levels], "o-", label="total")
        left.plot(x, [lv["tokens_per_second"] for lv in levels], "s--", label="per stream")
        left.set(xlabel="concurrent streams", ylabel="tokens / s", title="Throughput")
        right.plot(x, [lv["ttft_p50"] for lv in levels], "o-", label="p50")
        right.plot(x, [lv["ttft_p95"] for lv in levels], "s--", label="p95")
        right.set(xlabel="concurrent streams", ylabel="seconds", title="Time to first token")
        for axes in (left, right):
            axes.set_xscale("log", base=2)
            axes.set_xticks(x, [str(v) for v in x])
            axes.set_ylim(bottom=0)
            axes.grid(True, alpha=0.3)
            axes.legend()
        figure.suptitle(title)
        figure.tight_layout()
        try:
            with pyplot.rc_context({"svg.fonttype": "none"}):
                figure.savefig(path, format=file_format)
        except OSError as exc:
            raise CLIError(f"--plot: cannot write {path}: {exc.strerror}", EXIT_USAGE) from None
    finally:
        pyplot.close(figure)


def _table(summary: dict[str, Any]) -> Table:
    table = Table(
        title=strip_controls(
            f"{summary['server']} · {summary['model']} · "
            f"{plural(summary['max_tokens'], 'token')} per answer · "
            f"{plural(summary['requests_per_stream'], 'request')} per stream"
        ),
        title_justify="left",
    )
    for title in ("streams", "requests", "errors", "TTFT p50", "TTFT p95", "tok/s per stream"):
        table.add_column(title, justify="right")
    table.add_column("tok/s total", justify="right", style="bold")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for level in summary["levels"]:
        table.add_row(
            str(level["concurrency"]),
            str(level["requests"]),
            str(level["errors"]),
            seconds(level["ttft_p50"]),
            seconds(level["ttft_p95"]),
            rate(level["tokens_per_second"]),
            rate(level["aggregate_tokens_per_second"]),
        )
    return table


async def bench_command(
    config: LLMConfig, plan: BenchPlan, *, as_json: bool, plot_file: Path | None
) -> int:
    """Run the sweep; print a table (or JSON); optionally plot it."""
    out, err = consoles()
    plot_format = check_plot_file(plot_file) if plot_file is not None else ""
    pyplot = _load_pyplot() if plot_file is not None else None
    async with LLMClient(config) as client:
        report = await preflight(client)
        total = plan.requests * sum(plan.levels) + (1 if plan.warmup else 0)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        levels: list[Level] = []
        # Not even started off a terminal: rich before 14.3 ends a disabled bar with a newline.
        with progress if err.is_terminal else contextlib.nullcontext():
            task = progress.add_task("benchmarking", total=total)
            if plan.warmup:
                progress.update(task, description="warming up (loading the model)")
                warm = await _one(client, plan)
                if warm.error is not None:
                    raise warm.error
                progress.advance(task)
            for concurrency in plan.levels:
                progress.update(task, description=f"{concurrency} concurrent streams")
                levels.append(await _level(client, plan, concurrency, progress, task))
    samples = [s for level in levels for s in level.samples]
    errors = [s.error for s in samples if s.error is not None]
    if errors and len(errors) == len(samples):
        raise errors[0]
    summary: dict[str, Any] = {
        "endpoint": shown_endpoint(config),
        "server": report.server,
        "model": report.model,
        "max_tokens": plan.max_tokens,
        "requests_per_stream": plan.requests,
        "prompt": plan.prompt,
        "levels": [level.summary() for level in levels],
        "errors": sorted({error.message for error in errors}),
    }
    # The results first: a plot that fails to be written must not take them with it.
    if as_json:
        out.file.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        out.file.flush()
    else:
        out.print(_table(summary))
        for message in summary["errors"]:
            text = for_console(f"error in some requests: {message}", err)
            err.print(text, style="yellow", markup=False)
    if pyplot is not None and plot_file is not None:
        title = f"llmtap bench: {report.model} on {report.server}"
        plot(summary["levels"], plot_file, title, pyplot, plot_format)
        if not as_json:
            err.print(f"plot written to {plot_file}", markup=False)
    return EXIT_OK
