"""What the conversation log and the response cache cost.

``python -m benchmarks.store stall URL`` runs 1,000 concurrent streams to the benchmark server
at ``URL`` with the log on (each must become a row), then measures what the log adds to the
event loop's longest stall when they end: the hook's share (all 1,000 ending in one loop
iteration) and the writer thread's (a ticker's lateness at the 99th percentile while it
writes them, against the same ticker with the writer idle). See :func:`stall`.

``python -m benchmarks.store search ROWS`` writes a log of ``ROWS`` rows (prompts and answers
of 60 and 200 words drawn from a 5,000-word vocabulary) and times ``llmtap logs -q``'s query
(two words, the ten newest matches), median of 50 runs, with a fresh connection each.

``python -m benchmarks.store cache URL`` times a cache hit for a 4 KB answer: ``chat()`` with
the answer in memory (the same client again), and from the file (a new client each time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._wire import MESSAGES, MODEL, expected_chars

__all__ = ["cache_hit", "search", "stall"]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _ticks(samples: list[float], stop: asyncio.Event) -> None:
    """How late the loop wakes a task that sleeps 0.5 ms, again and again."""
    while not stop.is_set():
        began = time.perf_counter()
        await asyncio.sleep(0.0005)
        samples.append(time.perf_counter() - began - 0.0005)


async def _lateness(until: Any) -> list[float]:
    """The ticker's lateness samples while ``until`` (an awaitable) runs."""
    samples: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticks(samples, stop))
    await until
    stop.set()
    await ticker
    return samples


async def stall(url: str, *, streams: int, chunks: int, rounds: int) -> dict[str, Any]:
    """What the log costs the event loop when ``streams`` concurrent streams end.

    1. ``streams`` concurrent streams with the log on: every one becomes a row (checked), and
       their end records are kept.
    2. The loop's share: those records handed to a fresh log's hook one after another, as if
       every stream had ended in the same loop iteration (the worst case): the time that
       takes is the longest the hook can hold the loop.
    3. The writer's share: right after that, while the writer's thread builds and writes
       the rows, a ticker on the otherwise idle loop measures how late it is woken, against
       the same ticker with the writer idle. The difference is what the thread (holding the
       GIL while it builds a row) adds to a stall.

    Each round does 2 and 3 again with a new file; the figures are medians over rounds (the
    writer's share paired: the median of each round's difference).
    """
    from llmtap import LLMClient, LLMConfig, RequestFailed, RequestFinished
    from llmtap._store import LogHook

    ended: list[Any] = []

    def keep(record: Any) -> None:
        if isinstance(record, RequestFinished | RequestFailed):
            ended.append(record)

    figures: dict[str, list[float]] = {
        "hook_ms": [], "idle_p99_ms": [], "writing_p99_ms": [], "writing_max_ms": [],
        "written_ms": [], "writer_added_p99_ms": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        config = LLMConfig(endpoint=url, model=MODEL, log_db=folder / "log.db", hooks=[keep])
        async with LLMClient(config) as client:
            await asyncio.gather(*(_one(client, chunks) for _ in range(streams)))
        with sqlite3.connect(folder / "log.db") as connection:
            rows = connection.execute("SELECT count(*) FROM calls").fetchone()[0]
        for round_number in range(rounds):
            hook = LogHook(folder / f"round-{round_number}.db")
            idle = await _lateness(asyncio.sleep(0.3))
            began = time.perf_counter()
            for record in ended:
                hook(record)
            handed = time.perf_counter() - began
            writing = await _lateness(asyncio.to_thread(hook.flush))
            written = time.perf_counter() - began
            figures["hook_ms"].append(handed * 1e3)
            figures["idle_p99_ms"].append(_percentile(idle, 0.99) * 1e3)
            figures["writing_p99_ms"].append(_percentile(writing, 0.99) * 1e3)
            figures["writing_max_ms"].append(max(writing) * 1e3)
            figures["written_ms"].append(written * 1e3)
            figures["writer_added_p99_ms"].append(
                figures["writing_p99_ms"][-1] - figures["idle_p99_ms"][-1]
            )
    result: dict[str, Any] = {name: statistics.median(values) for name, values in figures.items()}
    result["added_p99_ms"] = result["hook_ms"] + max(0.0, result["writer_added_p99_ms"])
    result["hook_us_per_call"] = result["hook_ms"] * 1e3 / max(1, len(ended))
    result["rows"] = rows
    result["sizes"] = {"streams": streams, "chunks": chunks, "rounds": rounds}
    return result


async def _one(client: Any, chunks: int) -> None:
    async with client.stream(MESSAGES, bench={"chunks": chunks}) as stream:
        async for _event in stream:
            pass


def search(rows: int, *, runs: int) -> dict[str, Any]:
    """Median time of a two-word ``-q`` search over a log of ``rows`` rows."""
    from llmtap._store import open_log
    from llmtap._store import search as search_log

    chooser = random.Random(17)
    vocabulary = [f"w{number}" for number in range(5000)]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "log.db"
        connection = open_log(path)
        with connection:
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO calls (conversation_id, time, model, prompt, text, request) "
                "VALUES (?, '2026-12-03T00:00:00Z', 'm', ?, ?, '{}')",
                (
                    (
                        f"c{number // 4}",
                        " ".join(chooser.choices(vocabulary, k=60)),
                        " ".join(chooser.choices(vocabulary, k=200)),
                    )
                    for number in range(rows)
                ),
            )
            connection.execute("COMMIT")
        connection.close()
        timings: list[float] = []
        found = 0
        for run in range(runs):
            words = f"{vocabulary[run * 7 % 5000]} {vocabulary[run * 13 % 5000]}"
            began = time.perf_counter()
            reader = open_log(path)
            found = len(search_log(reader, query=words, limit=10))
            reader.close()
            timings.append(time.perf_counter() - began)
    return {
        "rows": rows,
        "search_ms": statistics.median(timings) * 1e3,
        "slowest_ms": max(timings) * 1e3,
        "found_last": found,
        "runs": runs,
    }


async def cache_hit(url: str, *, hits: int) -> dict[str, Any]:
    """Time per ``chat()`` answered by the cache: in memory, and from the file."""
    from llmtap import LLMClient, LLMConfig

    chunks = 1
    while expected_chars(chunks) < 4096:
        chunks += 1
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cache.db"
        config = LLMConfig(endpoint=url, model=MODEL, cache=path)
        params = {"bench": {"chunks": chunks}, "seed": 1}
        async with LLMClient(config) as client:
            first = await client.chat(MESSAGES, **params)
            memory: list[float] = []
            for _ in range(hits):
                began = time.perf_counter()
                result = await client.chat(MESSAGES, **params)
                memory.append(time.perf_counter() - began)
                assert result.cached
        disk: list[float] = []
        for _ in range(min(hits, 200)):
            async with LLMClient(config) as client:
                began = time.perf_counter()
                result = await client.chat(MESSAGES, **params)
                disk.append(time.perf_counter() - began)
                assert result.cached
    return {
        "answer_bytes": len(first.text.encode()),
        "memory_hit_us": statistics.median(memory) * 1e6,
        "file_hit_us": statistics.median(disk) * 1e6,
        "file_hit_p99_us": _percentile(disk, 0.99) * 1e6,
        "hits": hits,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("stall")
    loop.add_argument("url")
    loop.add_argument("--streams", type=int, default=1000)
    loop.add_argument("--chunks", type=int, default=20)
    loop.add_argument("--rounds", type=int, default=5)
    query = commands.add_parser("search")
    query.add_argument("rows", type=int)
    query.add_argument("--runs", type=int, default=50)
    hit = commands.add_parser("cache")
    hit.add_argument("url")
    hit.add_argument("--hits", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.command == "stall":
        figures = asyncio.run(
            stall(args.url, streams=args.streams, chunks=args.chunks, rounds=args.rounds)
        )
    elif args.command == "search":
        figures = search(args.rows, runs=args.runs)
    else:
        figures = asyncio.run(cache_hit(args.url, hits=args.hits))
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
