"""Peak RSS growth of one client holding many streams open at once, in a fresh process.

``python -m benchmarks.rss CLIENT URL [--streams 1000]`` prints one JSON object. The process
imports and opens the client and runs one warm-up request; its resident set size then is the
baseline. It then opens ``--streams`` streams, which the server holds until all have arrived
and then paces (so all are open at once), reads them to the end, and reports how far the
resident set grew above the baseline at its peak.

The peak is sampled from ``/proc/self/statm`` every 2 ms rather than read from
``getrusage().ru_maxrss``: on Linux ``ru_maxrss`` survives ``exec``, so a child of a large
harness process reports the harness's peak, and it also keeps the import-time peak, which can
hide the streams' growth.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
from typing import Any

from benchmarks._wire import Spec, expected_chars
from benchmarks.clients import make_adapter

__all__ = ["hold_streams", "main"]


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _rss_kib() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


async def _sample_peak(peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], _rss_kib())
        await asyncio.sleep(0.002)


async def hold_streams(name: str, url: str, streams: int, chunks: int, pace_ms: float) -> Any:
    """Open ``streams`` streams at once with client ``name``; the peak RSS growth."""
    adapter = make_adapter(name)
    await adapter.open(url)
    try:
        await adapter.run(Spec(chunks=chunks))
        gc.collect()
        baseline = _rss_kib()
        spec = Spec(chunks=chunks, pace_ms=pace_ms, hold=streams, group=f"rss-{name}")
        sampled = [baseline]
        sampler = asyncio.create_task(_sample_peak(sampled))
        outcomes = await asyncio.gather(
            *(adapter.run(spec) for _ in range(streams)), return_exceptions=True
        )
        sampler.cancel()
        peak = max(sampled[0], _rss_kib())
    finally:
        await adapter.close()
    failures = [
        o for o in outcomes if isinstance(o, BaseException) or o.chars != expected_chars(chunks)
    ]
    return {
        "streams": streams,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "rss_kb_per_stream": (peak - baseline) / streams,
        "rss_mib_per_1000_streams": (peak - baseline) / streams * 1000 / 1024,
        "errors": len(failures),
        "first_error": repr(failures[0]) if failures else None,
    }


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rss", description=__doc__)
    parser.add_argument("client")
    parser.add_argument("url")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--pace-ms", type=float, default=50.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.streams)), hard))
    result = asyncio.run(
        hold_streams(args.client, args.url, args.streams, args.chunks, args.pace_ms)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
