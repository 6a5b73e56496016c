"""``python -m benchmarks``: llmtap and other Python LLM clients, measured side by side.

Starts the benchmark server in its own process, runs every scenario with every client
interleaved (A B C A B C ..., several rounds, medians), prints the tables with ratios to
llmtap's ``stream_chat`` and to the floor, and checks the performance targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.clients import CLIENTS
from benchmarks.harness import SCENARIOS, ServerProcess, machine, raise_fd_limit, run_scenario
from benchmarks.report import render, reported, targets


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under a minute)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--only",
        metavar="SCENARIO",
        help=f"comma-separated scenarios to run, of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--clients", metavar="NAMES", help=f"comma-separated clients, of: {', '.join(CLIENTS)}"
    )
    parser.add_argument("--rounds", type=int, help="override every scenario's rounds")
    return parser.parse_args(argv)


def _pick(value: str | None, known: dict[str, Any], what: str) -> list[str]:
    if not value:
        return list(known)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def _progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    scenarios = _pick(args.only, SCENARIOS, "scenario")
    clients = _pick(args.clients, CLIENTS, "client")
    # A client whose library is not installed (OpenTelemetry) is left out, not counted as
    # failing: its targets show as not measured.
    skipped = {name: why for name in clients if (why := CLIENTS[name].unavailable())}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr, flush=True)
    clients = [name for name in clients if name not in skipped]
    results: dict[str, Any] = {"scenarios": {}, "skipped": skipped}
    try:
        for name in scenarios:
            results["scenarios"][name] = await run_scenario(
                SCENARIOS[name],
                quick=args.quick,
                names=clients,
                server=server,
                progress=_progress,
                rounds=args.rounds,
            )
    finally:
        await server.close_stats()
    return results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parse(argv)
    started = time.perf_counter()
    fd_limit = raise_fd_limit()
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['python']}; "
        f"load average {info['load_average_at_start']}; open-file limit {fd_limit}",
        flush=True,
    )
    server = ServerProcess()
    server.start()
    try:
        results = asyncio.run(_run(args, server))
    finally:
        server.stop()
    results = {
        "machine": info,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        **results,
    }
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results)
    results["reported"] = reported(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
