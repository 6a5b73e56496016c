"""The scenarios, the server process, and how one measured run is taken.

Client CPU is ``time.process_time()`` of this process around the measured run (the server is
another process). Before each measured run the client's pool is warmed with as many
concurrent one-chunk requests as the run has streams, held by the server until all have
arrived, so that every client starts with the same number of idle connections and no run
pays for connecting; the server's count of accepted connections then shows whether a client
reused them (``connections`` opened during the run: 0 when keep-alive works).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._wire import Spec, expected_chars
from benchmarks.clients import Adapter, Outcome, make_adapter, runs_in

__all__ = [
    "PEER_ROUNDS",
    "SCENARIOS",
    "Scenario",
    "ServerProcess",
    "machine",
    "measure_streams",
    "raise_fd_limit",
    "run_scenario",
    "warm",
]

ROOT = Path(__file__).resolve().parent.parent
#: Most rounds of a scenario that a peer library (``Adapter.peer``) runs in, unless the
#: scenario's ``peer_rounds`` says fewer.
PEER_ROUNDS = 3
#: Most requests a peer library makes in a round of a request scenario: at 6-20 ms a
#: request, 50 pin its figure; llmtap's, at a fraction of a millisecond, take more to
#: measure a few percent (a hook's cost) above the noise.
PEER_REQUESTS = 50
#: The two "clients" of the batch scenario: llmtap.batch.run, and the loop a user would write.
BATCH_RUN = "llmtap.batch.run"
BATCH_LOOP = "gather+semaphore"
_RUN_TIMEOUT = 180.0
_groups = itertools.count()


@dataclass(frozen=True)
class Scenario:
    """One scenario and its sizes, full and ``--quick``.

    Attributes:
        name: Its key (``--only`` takes it).
        title: What it measures, for the table.
        kind: ``streams``, ``idle_pool``, ``ttfc``, ``import`` or ``rss``.
        metric: The figure the table shows and the ratios use.
        unit: That figure's unit.
        full: Sizes for the full run.
        quick: Sizes for ``--quick``.
    """

    name: str
    title: str
    kind: str
    metric: str
    unit: str
    full: dict[str, Any]
    quick: dict[str, Any] = field(default_factory=dict)

    def sizes(self, quick: bool) -> dict[str, Any]:
        """The sizes to use."""
        return {**self.full, **self.quick} if quick else dict(self.full)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "one_stream",
            "one stream, {chunks:,} chunks written at once",
            "streams",
            "cpu_us_per_chunk",
            "µs/chunk",
            {"streams": 1, "chunks": 20_000, "pace_ms": 0, "rounds": 5},
            {"chunks": 5_000, "rounds": 2},
        ),
        Scenario(
            "streams_200",
            "{streams:,} concurrent streams × {chunks:,} chunks, written at once",
            "streams",
            "cpu_us_per_chunk",
            "µs/chunk",
            {"streams": 200, "chunks": 100, "pace_ms": 0, "rounds": 5},
            {"chunks": 40, "rounds": 1},
        ),
        Scenario(
            "streams_1000",
            "{streams:,} concurrent streams × {chunks:,} chunks, written at once",
            "streams",
            "cpu_us_per_chunk",
            "µs/chunk",
            # Three rounds, for a median of the hook's per-round ratios (one round in three is
            # off by 10-20%); the peer libraries' figures need no third (30 s more).
            {"streams": 1000, "chunks": 20, "pace_ms": 0, "rounds": 3, "peer_rounds": 2},
            {"streams": 500, "chunks": 10, "rounds": 1},
        ),
        Scenario(
            "paced_200",
            "{streams:,} streams × {chunks:,} chunks, one event per stream every {pace_ms} ms",
            "streams",
            "cpu_us_per_chunk",
            "µs/chunk",
            # Each round is a one-second run whose CPU figure varies by about ±10% from round
            # to round on a shared two-core machine (the floor's too): five rounds' medians.
            {"streams": 200, "chunks": 50, "pace_ms": 20, "rounds": 5},
            {"chunks": 20, "rounds": 1},
        ),
        Scenario(
            "idle_pool",
            "{requests} sequential {chunks}-chunk requests (other libraries 50),"
            " {pool} idle connections in the pool",
            "idle_pool",
            "cpu_ms_per_request",
            "ms/request",
            {"pool": 200, "requests": 300, "chunks": 5, "rounds": 5},
            {"requests": 20, "rounds": 1},
        ),
        Scenario(
            "idle_pool_1",
            "{requests} sequential {chunks}-chunk requests (other libraries 50),"
            " {pool} idle connection in the pool",
            "idle_pool",
            "cpu_ms_per_request",
            "ms/request",
            {"pool": 1, "requests": 300, "chunks": 5, "rounds": 5},
            {"requests": 20, "rounds": 1},
        ),
        Scenario(
            "ttfc",
            "time to first chunk over a kept-alive connection, {requests} requests (wall, median)",
            "ttfc",
            "ttfc_us",
            "µs",
            {"requests": 100, "chunks": 5, "rounds": 3},
            {"requests": 20, "rounds": 1},
        ),
        Scenario(
            "import",
            "import time in a fresh process (wall, median of {runs})",
            "import",
            "import_ms",
            "ms",
            {"runs": 5, "modules": ["llmtap", "openai", "ollama", "aiohttp"]},
            {"runs": 2},
        ),
        Scenario(
            "batch",
            "llmtap.batch.run and a bare asyncio.gather + semaphore loop of chat() that writes "
            "each result as a JSON line: {lines:,} requests of {chunks} chunks, concurrency "
            "{concurrency}, in a process of their own",
            "batch",
            "cpu_us_per_request",
            "µs/request",
            {"lines": 2000, "chunks": 20, "concurrency": 64, "rounds": 5},
            {"lines": 500, "rounds": 2},
        ),
        Scenario(
            "batch_rss",
            "llmtap.batch.run's peak RSS by input size (a target that answers at once: the "
            "run's own memory; one process each)",
            "batch_rss",
            "peak_rss_mb",
            "MB",
            {"lines": [10_000, 1_000_000]},
            {"lines": [10_000, 100_000]},
        ),
        Scenario(
            "log_stall",
            "the conversation log with {streams:,} concurrent streams of {chunks} chunks: "
            "what it adds to the event loop's longest stall when they end (medians of "
            "{rounds} rounds)",
            "log_stall",
            "added_p99_ms",
            "ms",
            {"streams": 1000, "chunks": 20, "rounds": 5},
            {"rounds": 2},
        ),
        Scenario(
            "log_search",
            "llmtap logs -q: a two-word search over a log of {rows:,} rows (median of {runs})",
            "log_search",
            "search_ms",
            "ms",
            {"rows": 100_000, "runs": 50},
            {"rows": 20_000, "runs": 10},
        ),
        Scenario(
            "cache_hit",
            "a response cache hit for a 4 KB answer: chat() from memory and from the file "
            "(medians of {hits} and 200)",
            "cache_hit",
            "file_hit_us",
            "µs",
            {"hits": 1000},
            {"hits": 200},
        ),
        Scenario(
            "rss",
            "peak RSS growth holding {streams:,} open streams (one process per client)",
            "rss",
            "rss_kb_per_stream",
            "KiB/stream",
            {"streams": 1000, "chunks": 10, "pace_ms": 50},
            {"streams": 200, "chunks": 5},
        ),
    )
}


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """The machine and software the figures come from."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "event_loop": "asyncio (default selector loop)",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            name: _version(name)
            for name in ("llmtap", "aiohttp", "orjson", "openai", "httpx2", "ollama", "httpx")
        },
    }


class ServerProcess:
    """The benchmark server in a child process, and a connection for reading its counters."""

    def __init__(self) -> None:
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def start(self) -> str:
        """Start the server; return its URL."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server", "--stdin-stops"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the benchmark server did not start: {line!r}")
        self.url = line.split()[-1]
        return self.url

    async def stats(self) -> dict[str, Any]:
        """The server's counters (``accepted``, ``open``, ``requests``, ``cpu``)."""
        if self._writer is None:
            host, _, port = self.url.removeprefix("http://").partition(":")
            self._reader, self._writer = await asyncio.open_connection(host, int(port))
        assert self._reader is not None
        self._writer.write(b"GET /stats HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        stats: dict[str, Any] = json.loads(await self._reader.readexactly(length))
        return stats

    async def close_stats(self) -> None:
        """Close the counters connection (before the loop ends)."""
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._writer = self._reader = None

    def stop(self) -> None:
        """Stop the server (it exits when its standard input closes)."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(10)


def _check(outcome: Outcome | BaseException, chunks: int) -> str | None:
    """Why an outcome is wrong, or ``None``."""
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    if outcome.chunks not in (-1, chunks):
        return f"{outcome.chunks} content chunks instead of {chunks}"
    if outcome.chars != expected_chars(chunks):
        return f"{outcome.chars} characters instead of {expected_chars(chunks)}"
    return None


async def warm(adapter: Adapter, connections: int, server: ServerProcess | None = None) -> bool:
    """Have ``adapter`` open ``connections`` connections at once and leave them idle.

    Returns:
        Whether the client held all of them open at once (known only with ``server``: the
        server releases a held group early, and counts it, when not all requests arrive).
    """
    spec = Spec(chunks=1, hold=connections, group=f"warm-{next(_groups)}")
    before = await server.stats() if server is not None else None
    async with asyncio.timeout(_RUN_TIMEOUT):
        outcomes = await asyncio.gather(
            *(adapter.run(spec) for _ in range(connections)), return_exceptions=True
        )
    problems = [p for p in (_check(o, 1) for o in outcomes) if p]
    if problems:
        raise RuntimeError(f"{adapter.name}: warm-up failed: {problems[0]}")
    if server is None or before is None:
        return True
    after = await server.stats()
    return bool(after["hold_timeouts"] == before["hold_timeouts"])


async def measure_streams(
    adapter: Adapter, server: ServerProcess, streams: int, spec: Spec
) -> dict[str, Any]:
    """One measured run of ``streams`` concurrent requests for ``spec``."""
    held_all = await warm(adapter, streams, server)
    adapter.between_runs()
    gc.collect()
    before = await server.stats()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.timeout(_RUN_TIMEOUT):
        outcomes = await asyncio.gather(
            *(adapter.run(spec) for _ in range(streams)), return_exceptions=True
        )
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    after = await server.stats()
    problems = [p for p in (_check(o, spec.chunks) for o in outcomes) if p]
    chunks = streams * spec.chunks
    return {
        "cpu_us_per_chunk": cpu / chunks * 1e6,
        "chunks_per_s": chunks / wall,
        "cpu_s": cpu,
        "wall_s": wall,
        "errors": len(problems),
        "first_error": problems[0] if problems else None,
        "connections_opened": after["accepted"] - before["accepted"],
        "server_cpu_share": (after["cpu"] - before["cpu"]) / wall,
        "held_all_connections": held_all,
    }


async def measure_idle_pool(
    adapter: Adapter, server: ServerProcess, pool: int, requests: int, chunks: int
) -> dict[str, Any]:
    """Sequential small requests with ``pool`` idle connections open."""
    held_all = await warm(adapter, pool, server)
    adapter.between_runs()
    gc.collect()
    before = await server.stats()
    spec = Spec(chunks=chunks)
    problems: list[str] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(requests):
        try:
            outcome: Outcome | BaseException = await adapter.run(spec)
        except Exception as exc:
            outcome = exc
        if problem := _check(outcome, chunks):
            problems.append(problem)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    after = await server.stats()
    return {
        "cpu_ms_per_request": cpu / requests * 1e3,
        "requests_per_s": requests / wall,
        "errors": len(problems),
        "first_error": problems[0] if problems else None,
        "connections_opened": after["accepted"] - before["accepted"],
        "idle_connections": pool,
        "held_all_connections": held_all,
    }


async def measure_ttfc(
    adapter: Adapter, server: ServerProcess, requests: int, chunks: int
) -> dict[str, Any]:
    """Time from the call to the first content chunk, one request at a time, warm pool."""
    await warm(adapter, 1)
    adapter.between_runs()
    gc.collect()
    before = await server.stats()
    spec = Spec(chunks=chunks)
    times: list[float] = []
    problems: list[str] = []
    for _ in range(requests):
        started = time.perf_counter()
        try:
            outcome: Outcome | BaseException = await adapter.run(spec)
        except Exception as exc:
            outcome = exc
        if problem := _check(outcome, chunks):
            problems.append(problem)
        elif isinstance(outcome, Outcome):
            times.append(outcome.first_at - started)
    after = await server.stats()
    return {
        "ttfc_us": statistics.median(times) * 1e6 if times else float("nan"),
        "errors": len(problems),
        "first_error": problems[0] if problems else None,
        "connections_opened": after["accepted"] - before["accepted"],
    }


def _combine(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; errors summed; connections opened: the most in any round."""
    combined: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for sample in samples for key in sample))
    for key in keys:
        values = [s[key] for s in samples if key in s]
        if key == "errors":
            combined[key] = sum(values)
        elif key == "held_all_connections":
            combined[key] = all(values)
        elif key == "connections_opened":
            combined[key] = max(values)
        elif key == "first_error":
            combined[key] = next((v for v in values if v), None)
        elif values and all(isinstance(v, int | float) for v in values):
            combined[key] = statistics.median(values)
    combined["rounds"] = list(samples)
    return combined


Progress = Callable[[str], None]


async def _measure(
    scenario: Scenario, sizes: dict[str, Any], adapter: Adapter, server: ServerProcess
) -> dict[str, Any]:
    if scenario.kind == "streams":
        spec = Spec(chunks=sizes["chunks"], pace_ms=sizes["pace_ms"])
        return await measure_streams(adapter, server, sizes["streams"], spec)
    if scenario.kind == "idle_pool":
        requests = min(sizes["requests"], PEER_REQUESTS) if adapter.peer else sizes["requests"]
        return await measure_idle_pool(adapter, server, sizes["pool"], requests, sizes["chunks"])
    return await measure_ttfc(adapter, server, sizes["requests"], sizes["chunks"])


async def _in_process(
    scenario: Scenario,
    sizes: dict[str, Any],
    names: Sequence[str],
    server: ServerProcess,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """Run an in-process scenario: every client once per round, interleaved, rotating."""
    adapters = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        adapter = make_adapter(name)
        if scenario.kind == "ttfc" and not adapter.streams_chunks:
            continue
        samples[name] = []
        try:
            await adapter.open(server.url, keep_idle=scenario.kind == "idle_pool")
        except Exception as exc:  # a peer that is not installed: say so, measure the rest
            samples[name].append({"errors": 1, "first_error": f"{type(exc).__name__}: {exc}"})
            continue
        adapters[name] = adapter
    try:
        if scenario.kind in ("streams", "idle_pool"):
            # Every client but the peer libraries (which keep few of them idle, and whose
            # figures are 10-60 times llmtap's) opens its pool before round 1: else the first
            # client of round 1 runs in a smaller process than the others (with 1,000 streams,
            # 4-8% cheaper a chunk than in later rounds, when every client's pool is open).
            connections = sizes["streams"] if scenario.kind == "streams" else sizes["pool"]
            for name, adapter in adapters.items():
                if adapter.peer:
                    continue
                progress(f"{scenario.name}: opening {connections} connections: {name}")
                with contextlib.suppress(Exception):  # its measured runs report a failure
                    await warm(adapter, connections)
        order = list(adapters)
        for round_number in range(1, sizes["rounds"] + 1):
            # A B C, then B C A, ...: every client runs once per round, and no client is
            # always the one that runs first (after the scenario's set-up) or last.
            shift = (round_number - 1) % len(order) if order else 0
            for name in order[shift:] + order[:shift]:
                adapter = adapters[name]
                if adapter.peer and round_number > sizes.get("peer_rounds", PEER_ROUNDS):
                    continue
                progress(f"{scenario.name}: round {round_number}/{sizes['rounds']}: {name}")
                try:
                    sample = await _measure(scenario, sizes, adapter, server)
                except Exception as exc:  # one client failing must not stop the others
                    sample = {"errors": 1, "first_error": f"{type(exc).__name__}: {exc}"}
                samples[name].append(sample)
    finally:
        for adapter in adapters.values():
            await adapter.close()
    return {name: _combine(rounds) for name, rounds in samples.items()}


def _import_times(sizes: dict[str, Any], progress: Progress) -> dict[str, dict[str, Any]]:
    """Wall time of ``import X`` in fresh interpreters, modules interleaved."""
    times: dict[str, list[float]] = {module: [] for module in sizes["modules"]}
    for run in range(1, sizes["runs"] + 1):
        for module in times:
            progress(f"import: run {run}/{sizes['runs']}: {module}")
            code = (
                "import time; t = time.perf_counter(); import "
                f"{module}; print(time.perf_counter() - t)"
            )
            out = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
            )
            times[module].append(float(out.stdout) * 1e3)
    return {
        module: {"import_ms": statistics.median(values), "runs_ms": values}
        for module, values in times.items()
    }


def _rss(
    sizes: dict[str, Any], names: Sequence[str], url: str, progress: Progress
) -> dict[str, dict[str, Any]]:
    """Peak RSS growth per open stream, one fresh process per client."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        progress(f"rss: {name} holding {sizes['streams']} streams")
        command = [
            sys.executable,
            "-m",
            "benchmarks.rss",
            name,
            url,
            "--streams",
            str(sizes["streams"]),
            "--chunks",
            str(sizes["chunks"]),
            "--pace-ms",
            str(sizes["pace_ms"]),
        ]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            results[name] = {"errors": 1, "first_error": out.stderr.strip()[-500:]}
            continue
        results[name] = json.loads(out.stdout)
    return results


def _batch_cpu(sizes: dict[str, Any], url: str, progress: Progress) -> dict[str, dict[str, Any]]:
    """``python -m benchmarks.batch cpu``: llmtap.batch.run and the bare loop, interleaved."""
    progress(f"batch: {sizes['rounds']} rounds of {sizes['lines']} requests each way")
    command = [
        sys.executable, "-m", "benchmarks.batch", "cpu", url,
        "--lines", str(sizes["lines"]), "--chunks", str(sizes["chunks"]),
        "--concurrency", str(sizes["concurrency"]), "--rounds", str(sizes["rounds"]),
    ]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        failure = {"errors": 1, "first_error": out.stderr.strip()[-500:]}
        return {BATCH_RUN: failure, BATCH_LOOP: dict(failure)}
    figures = json.loads(out.stdout)
    return {
        name: {
            "cpu_us_per_request": figures[key]["cpu_us_per_request"],
            "requests_per_s": figures[key]["requests_per_second"],
            "errors": 0,
        }
        for name, key in ((BATCH_RUN, "batch"), (BATCH_LOOP, "gather"))
    }


#: The one "client" of the log and cache scenarios.
STORE = "llmtap"


def _store(kind: str, sizes: dict[str, Any], url: str, progress: Progress) -> dict[str, Any]:
    """``python -m benchmarks.store``: the log's stall, its search, a cache hit."""
    progress(kind)
    if kind == "log_stall":
        command = [
            sys.executable, "-m", "benchmarks.store", "stall", url, "--streams",
            str(sizes["streams"]), "--chunks", str(sizes["chunks"]), "--rounds",
            str(sizes["rounds"]),
        ]  # fmt: skip
    elif kind == "log_search":
        command = [
            sys.executable, "-m", "benchmarks.store", "search", str(sizes["rows"]),
            "--runs", str(sizes["runs"]),
        ]  # fmt: skip
    else:
        command = [
            sys.executable,
            "-m",
            "benchmarks.store",
            "cache",
            url,
            "--hits",
            str(sizes["hits"]),
        ]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {STORE: {"errors": 1, "first_error": out.stderr.strip()[-500:]}}
    return {STORE: {**json.loads(out.stdout), "errors": 0}}


def _batch_rss(sizes: dict[str, Any], progress: Progress) -> dict[str, dict[str, Any]]:
    """``python -m benchmarks.batch rss``: one fresh process per input size."""
    results: dict[str, dict[str, Any]] = {}
    for lines in sizes["lines"]:
        name = f"{lines:,} lines"
        progress(f"batch_rss: {name}")
        command = [sys.executable, "-m", "benchmarks.batch", "rss", str(lines)]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            results[name] = {"errors": 1, "first_error": out.stderr.strip()[-500:]}
            continue
        figures = json.loads(out.stdout)
        results[name] = {"peak_rss_mb": figures["peak_rss_mb"], "errors": 0}
    return results


async def run_scenario(
    scenario: Scenario,
    *,
    quick: bool,
    names: Sequence[str],
    server: ServerProcess,
    progress: Progress,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Run one scenario for ``names`` (those of them that run in it); its settings and
    per-client figures."""
    names = [name for name in names if runs_in(name, scenario.name)]
    sizes = scenario.sizes(quick)
    if rounds is not None and "rounds" in sizes:
        sizes["rounds"] = rounds
    started = time.perf_counter()
    if scenario.kind == "import":
        clients = _import_times(sizes, progress)
    elif scenario.kind == "rss":
        clients = _rss(sizes, names, server.url, progress)
    elif scenario.kind == "batch":
        clients = _batch_cpu(sizes, server.url, progress)
    elif scenario.kind == "batch_rss":
        clients = _batch_rss(sizes, progress)
    elif scenario.kind in ("log_stall", "log_search", "cache_hit"):
        clients = _store(scenario.kind, sizes, server.url, progress)
    else:
        clients = await _in_process(scenario, sizes, names, server, progress)
    return {
        "title": scenario.title.format(**sizes),
        "metric": scenario.metric,
        "unit": scenario.unit,
        "sizes": sizes,
        "seconds": round(time.perf_counter() - started, 1),
        "clients": clients,
    }
