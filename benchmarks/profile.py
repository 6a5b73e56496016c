"""Where a client's CPU goes: a profiled scenario run, and llmtap's parts timed alone.

``python -m benchmarks.profile run --client llmtap.stream_chat --scenario one_stream`` starts
the benchmark server, warms the client, takes one unprofiled measured run (the true CPU per
chunk), then one run under cProfile, writes the profile to
``/tmp/llmtap-profile-<client>-<scenario>.prof`` (open it with ``python -m pstats`` or
snakeviz) and prints the functions with the most own time, in µs per chunk. The profiler
counts CPU time (``time.process_time``), not wall time, so that time the process spends
descheduled on a busy machine is not charged to whatever function was running. It slows
small Python functions several times over, so read the profiled figures as shares, and the
unprofiled figure as the total. cProfile counts each resumption of a coroutine or generator
as a call, so "calls" of async code are resumptions.

``python -m benchmarks.profile parts`` times llmtap's per-chunk and per-request pieces alone,
without I/O (SSE decoding, ``orjson.loads``, the accumulator, building the ``ChatResult``),
with ``timeit``: exact costs to set against the profile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from benchmarks._wire import MESSAGES, MODEL, WORDS, Spec
from benchmarks.clients import CLIENTS, make_adapter
from benchmarks.harness import SCENARIOS, ServerProcess, raise_fd_limit, warm

__all__ = ["main", "parts", "profile_run"]


def _print_top(stats: pstats.Stats, units: int, unit: str, top: int) -> None:
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in entries.values())
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print(f"profiled total own time: {total / units * 1e6:.2f} µs/{unit}")
    own, cum, calls = f"own µs/{unit}", f"cum µs/{unit}", f"calls/{unit}"
    print(f"{own:>12} {'share':>6} {cum:>12} {calls:>10}  function")
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in rows:
        where = _short(filename)
        print(
            f"{tottime / units * 1e6:12.3f} {tottime / total:6.1%} {cumtime / units * 1e6:12.2f}"
            f" {calls / units:10.2f}  {name} ({where}:{line})"
        )


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def profile_run(
    client: str, scenario: str, out: Path, top: int, streams: int | None = None
) -> None:
    """Profile one measured run of ``scenario`` for ``client`` and print the top functions.

    ``streams`` overrides the scenario's stream count: profiling slows the client several
    times over, and a paced scenario whose client falls behind its server gets several
    events per read, which is not what it is meant to measure.
    """
    definition = SCENARIOS[scenario]
    sizes = definition.sizes(quick=False)
    if streams is not None:
        sizes["streams"] = streams
    pool = definition.kind == "idle_pool"
    server = ServerProcess()
    server.start()
    adapter = make_adapter(client)
    if pool:
        units, unit = sizes["requests"], "request"
        spec = Spec(chunks=sizes["chunks"])
    else:
        units, unit = sizes["streams"] * sizes["chunks"], "chunk"
        spec = Spec(chunks=sizes["chunks"], pace_ms=sizes["pace_ms"])

    async def once(profiler: cProfile.Profile | None) -> float:
        await warm(adapter, sizes["pool"] if pool else sizes["streams"])
        adapter.between_runs()
        gc.collect()
        if profiler is not None:
            profiler.enable()
        cpu = time.process_time()
        if pool:
            for _ in range(units):
                await adapter.run(spec)
        else:
            await asyncio.gather(*(adapter.run(spec) for _ in range(sizes["streams"])))
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        return float(cpu / units * 1e6)

    # CPU time, not wall time: on a shared machine, time spent descheduled would otherwise be
    # charged to whichever function was running.
    profiler = cProfile.Profile(time.process_time)
    try:
        await adapter.open(server.url, keep_idle=pool)
        plain = await once(None)
        print(f"{client}, {scenario}: unprofiled CPU {plain:.2f} µs/{unit} ({sizes})")
        await once(profiler)
    finally:
        await adapter.close()
        await server.close_stats()
        server.stop()
    profiler.dump_stats(out)
    print(f"profile written to {out}")
    _print_top(pstats.Stats(profiler), units, unit, top)


def _chunk(word: str) -> bytes:
    return (
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732860000,'
        b'"model":"m","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
        b'{"content":"' + word.encode() + b'"},"logprobs":null,"finish_reason":null}]}\n\n'
    )


def parts(number: int = 20_000) -> dict[str, float]:
    """Time llmtap's pieces alone; µs per chunk (or per answer where marked)."""
    import orjson

    from llmtap import Accumulator, LLMClient, LLMConfig
    from llmtap._client import upstream_of
    from llmtap._wire.sse import SSEDecoder

    events = [_chunk(WORDS[i % len(WORDS)]) for i in range(number)]
    burst = b"".join(events)
    payloads = [e[6:-2] for e in events]
    dicts = [orjson.loads(p) for p in payloads]
    finish = orjson.loads(
        b'{"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
    )
    usage = orjson.loads(
        b'{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
        b'"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}'
    )
    results: dict[str, float] = {}

    def per(label: str, func: Callable[[], object], count: int, repeat: int = 5) -> None:
        best = min(timeit.repeat(func, number=1, repeat=repeat))
        results[label] = best / count * 1e6

    def sse_burst() -> None:
        decoder = SSEDecoder()
        decoder.feed(burst)

    def sse_one_per_read() -> None:
        decoder = SSEDecoder()
        feed = decoder.feed
        for event in events:
            feed(event)

    def loads_all() -> None:
        loads = orjson.loads
        for payload in payloads:
            loads(payload)

    def accumulate() -> None:
        acc = Accumulator("openai")
        feed = acc.feed
        for chunk in dicts:
            feed(chunk)

    per("SSEDecoder.feed, all events in one read (per event)", sse_burst, number)
    per("SSEDecoder.feed, one event per read (per event)", sse_one_per_read, number)
    per("orjson.loads of one chunk", loads_all, number)
    per("Accumulator.feed (per chunk, events built)", accumulate, number)

    answers = 2000
    five = dicts[:5]

    def results_only() -> None:
        for _ in range(answers):
            acc = Accumulator("openai")
            for chunk in five:
                acc.feed(chunk)
            acc.feed(finish)
            acc.feed(usage)
            acc.result(server="vllm")

    per("Accumulator of a 5-chunk answer + result() (per answer)", results_only, answers)

    upstream = upstream_of(LLMClient(LLMConfig(endpoint="http://127.0.0.1:9", model=MODEL)))

    def build_requests() -> None:
        for _ in range(answers):
            upstream.chat_request(MESSAGES, None, {"bench": {"chunks": 5}}, stream=True)

    per("building one request (payload + orjson.dumps) (per request)", build_requests, answers)
    return results


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="profile one scenario run of one client")
    run.add_argument("--client", default="llmtap.stream_chat", choices=list(CLIENTS))
    run.add_argument(
        "--scenario",
        default="one_stream",
        choices=[n for n, s in SCENARIOS.items() if s.kind in ("streams", "idle_pool")],
    )
    run.add_argument("--out", type=Path, help="where to write the profile (default: /tmp/...)")
    run.add_argument("--top", type=int, default=30, help="how many functions to list")
    run.add_argument("--streams", type=int, help="override the scenario's number of streams")
    sub.add_parser("parts", help="time llmtap's pieces alone")
    args = parser.parse_args()
    if args.command == "parts":
        for label, value in parts().items():
            print(f"{value:9.3f} µs  {label}")
        return
    raise_fd_limit()
    out = args.out or Path(f"/tmp/llmtap-profile-{args.client}-{args.scenario}.prof")
    asyncio.run(profile_run(args.client, args.scenario, out, args.top, args.streams))


if __name__ == "__main__":
    main()
