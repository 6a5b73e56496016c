"""What ``llmtap.batch.run`` costs: CPU per request against a bare loop, and memory against the
size of its input.

``python -m benchmarks.batch cpu URL`` runs, in one process and interleaved round by round,
``llmtap.batch.run`` and the loop a user would otherwise write (``asyncio.gather`` over a
semaphore of ``chat()`` calls at the same concurrency, each result written as a JSON line),
over the same requests to the benchmark server at ``URL``; it prints JSON: CPU (process time)
per request and requests per second of each, medians over the rounds.

``python -m benchmarks.batch rss LINES`` writes an input of ``LINES`` short lines and runs it
through ``llmtap.batch.run`` with an in-process target that answers at once (no network: what
is measured is the run's own memory: reading, the duplicate check, bookkeeping, writing), and
prints its peak RSS. ``python -m benchmarks`` compares 1,000,000 lines with 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks._wire import MESSAGES, MODEL

__all__ = ["cpu", "rss"]


def _write_input(path: Path, lines: int, chunks: int) -> None:
    with path.open("wb") as file:
        for number in range(lines):
            file.write(
                orjson.dumps(
                    {"custom_id": f"r{number}", "messages": MESSAGES, "bench": {"chunks": chunks}}
                )
                + b"\n"
            )


async def _gather_loop(client: Any, lines: int, chunks: int, concurrency: int, out: Path) -> None:
    """The loop a user writes: a semaphore, gather, one JSON line per result."""
    semaphore = asyncio.Semaphore(concurrency)
    with out.open("wb") as file:

        async def one(number: int) -> None:
            async with semaphore:
                result = await client.chat(MESSAGES, bench={"chunks": chunks})
            file.write(orjson.dumps({"custom_id": f"r{number}", "text": result.text}) + b"\n")
            file.flush()

        await asyncio.gather(*(one(number) for number in range(lines)))


async def cpu(
    url: str, *, lines: int, chunks: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    """CPU per request and requests/s of ``llmtap.batch.run`` and of the bare loop."""
    import llmtap
    from llmtap import LLMClient, LLMConfig

    figures: dict[str, list[tuple[float, float]]] = {"batch": [], "gather": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        source = folder / "in.jsonl"
        _write_input(source, lines, chunks)
        async with LLMClient(LLMConfig(endpoint=url, model=MODEL)) as client:
            await client.chat(MESSAGES, bench={"chunks": chunks})  # warm
            for round_number in range(rounds):
                order = ["batch", "gather"] if round_number % 2 == 0 else ["gather", "batch"]
                for name in order:
                    out = folder / f"{name}-{round_number}.jsonl"
                    began, cpu_began = time.perf_counter(), time.process_time()
                    if name == "batch":
                        report = await llmtap.batch.run(
                            client, source, out, concurrency=concurrency
                        )
                        assert report.succeeded == lines, report
                    else:
                        await _gather_loop(client, lines, chunks, concurrency, out)
                    wall = time.perf_counter() - began
                    spent = time.process_time() - cpu_began
                    figures[name].append((spent / lines * 1e6, lines / wall))
    result: dict[str, Any] = {}
    for name, samples in figures.items():
        result[name] = {
            "cpu_us_per_request": statistics.median(s[0] for s in samples),
            "requests_per_second": statistics.median(s[1] for s in samples),
        }
    result["sizes"] = {
        "lines": lines, "chunks": chunks, "concurrency": concurrency, "rounds": rounds,
    }  # fmt: skip
    return result


class _AtOnce:
    """A batch target that answers every request at once, in process."""

    def __init__(self) -> None:
        from llmtap import ChatResult, Message, Usage

        self._result = ChatResult(
            message=Message.assistant("ok"),
            text="ok",
            finish_reason="stop",
            usage=Usage(prompt_tokens=5, completion_tokens=1, total_tokens=6),
            model=MODEL,
        )

    async def chat(self, messages: Sequence[Any], tools: Any = None, **params: Any) -> Any:
        await asyncio.sleep(0)
        return self._result

    async def embed(self, texts: Any, *, model: str | None = None, **params: Any) -> Any:
        return [[0.0] for _ in texts]


def _peak_rss_kib() -> int:
    """This process's peak RSS in KiB: Linux's ``VmHWM``, which starts afresh with the
    program (``ru_maxrss`` does not: after ``exec`` it keeps the peak of the process that
    forked it, here the benchmark harness)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def rss(lines: int, concurrency: int) -> dict[str, Any]:
    """Peak RSS of a run over ``lines`` lines (the input written first, not counted: the
    RSS before the run is reported too)."""
    import llmtap

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        source = folder / "in.jsonl"
        _write_input(source, lines, 1)
        before = _peak_rss_kib()
        began = time.perf_counter()
        report = await llmtap.batch.run(
            _AtOnce(), source, folder / "out.jsonl", concurrency=concurrency
        )
        assert report.succeeded == lines, report
        wall = time.perf_counter() - began
        peak = _peak_rss_kib()
    return {
        "lines": lines,
        "peak_rss_mb": peak / 1024,
        "rss_before_run_mb": before / 1024,
        "seconds": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("cpu")
    measure.add_argument("url")
    measure.add_argument("--lines", type=int, default=2000)
    measure.add_argument("--chunks", type=int, default=20)
    measure.add_argument("--concurrency", type=int, default=64)
    measure.add_argument("--rounds", type=int, default=5)
    memory = commands.add_parser("rss")
    memory.add_argument("lines", type=int)
    memory.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    if args.command == "cpu":
        figures = asyncio.run(
            cpu(
                args.url,
                lines=args.lines,
                chunks=args.chunks,
                concurrency=args.concurrency,
                rounds=args.rounds,
            )
        )
    else:
        figures = asyncio.run(rss(args.lines, args.concurrency))
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
