"""Tables, ratios and the targets, from the results the harness collected.

Tables are pipe tables: readable in a terminal and pasted as is into Markdown.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["render", "reported", "summary_table", "targets"]

BASE = "llmtap.stream_chat"
BATCH_RUN = "llmtap.batch.run"
BATCH_LOOP = "gather+semaphore"
FLOOR = "floor"
HOOKED = "llmtap.stream_chat+hook"
OTEL = "llmtap.stream_chat+otel"
OTEL_SDK = "llmtap.stream_chat+otel-sdk"
_CPU_SCENARIOS = ("one_stream", "streams_200", "streams_1000", "paced_200", "idle_pool")
#: The scenarios a hook's cost per chunk is measured in (its per-request cost: idle_pool).
_PER_CHUNK = tuple(scenario for scenario in _CPU_SCENARIOS if scenario != "idle_pool")
_SUMMARY = (
    ("one_stream", "one stream µs/chunk"),
    ("streams_200", "{streams:,} streams µs/chunk"),
    ("streams_1000", "{streams:,} streams µs/chunk"),
    ("paced_200", "{streams:,} paced streams µs/chunk"),
    ("idle_pool", "ms/request, {pool} idle conns"),
    ("ttfc", "first chunk µs"),
    ("rss", "RSS KiB/stream"),
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + (":" if i else "-")) for i, w in enumerate(widths))
    return "\n".join([line(headers), rule + "|", *(line(r) for r in rows)])


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _value(results: dict[str, Any], scenario: str, client: str) -> float | None:
    entry = results["scenarios"].get(scenario)
    if entry is None:
        return None
    figures = entry["clients"].get(client)
    if not figures or figures.get("errors"):
        return None
    value = figures.get(entry["metric"])
    return float(value) if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def summary_table(results: dict[str, Any]) -> str:
    """Every client against every scenario's main figure."""
    scenarios = results["scenarios"]
    columns = [(k, t.format(**scenarios[k]["sizes"])) for k, t in _SUMMARY if k in scenarios]
    clients: list[str] = []
    for key, _ in columns:
        for name in results["scenarios"][key]["clients"]:
            if name not in clients:
                clients.append(name)
    rows = []
    for name in clients:
        cells = [name]
        for key, _ in columns:
            figures = results["scenarios"][key]["clients"].get(name)
            if figures is not None and figures.get("errors"):
                cells.append(f"{figures['errors']} errors")
            else:
                cells.append(_num(_value(results, key, name)))
        rows.append(cells)
    return _table(["client", *(t for _, t in columns)], rows)


def _scenario_table(name: str, entry: dict[str, Any], results: dict[str, Any]) -> str:
    unit = entry["unit"]
    base_name = "llmtap" if name == "import" else BASE
    reference = "openai" if name == "import" else FLOOR
    first: dict[str, Any] = next(iter(entry["clients"].values()), {})
    rate = next((k for k in ("chunks_per_s", "requests_per_s") if k in first), "")
    rows = []
    for client, figures in entry["clients"].items():
        value = _value(results, name, client)
        row = [
            client,
            _num(value),
            _num(_ratio(value, _value(results, name, base_name)), 3),
            _num(_ratio(value, _value(results, name, reference)), 3),
        ]
        if rate:
            row.append(_num(figures.get(rate)))
        if "connections_opened" in figures:
            row.append(str(figures["connections_opened"]))
        row.append(str(figures.get("errors", 0)))
        rows.append(row)
    headers = ["client", unit, f"× {base_name}", f"× {reference}"]
    if rate:
        headers.append(rate.replace("_per_s", "/s"))
    if any("connections_opened" in f for f in entry["clients"].values()):
        headers.append("conns opened")
    headers.append("errors")
    lines = [f"## {name}: {entry['title']} ({entry['seconds']} s)", _table(headers, rows)]
    errors = [(c, f["first_error"]) for c, f in entry["clients"].items() if f.get("first_error")]
    lines.extend(f"  {client}: first error: {error}" for client, error in errors)
    short = [c for c, f in entry["clients"].items() if f.get("held_all_connections") is False]
    if short:
        lines.append(
            f"  could not hold {entry['sizes'].get('streams') or entry['sizes'].get('pool')} "
            f"connections open at once (pool limit): {', '.join(short)}"
        )
    shares = [f["server_cpu_share"] for f in entry["clients"].values() if "server_cpu_share" in f]
    if shares:
        lines.append(f"  server process CPU: at most {max(shares):.0%} of one core")
    return "\n".join(lines)


def _target(label: str, figure: float | None, limit: float, detail: str = "") -> dict[str, Any]:
    return {
        "target": label,
        "figure": None if figure is None else round(figure, 3),
        "limit": limit,
        "met": None if figure is None else figure <= limit,
        "detail": detail,
    }


def _round_figures(results: dict[str, Any], scenario: str, client: str) -> list[float] | None:
    """``client``'s main figure in each round of ``scenario``, in round order; ``None`` unless
    every round has one."""
    entry = results["scenarios"].get(scenario)
    figures = entry["clients"].get(client) if entry is not None else None
    if not figures or figures.get("errors"):
        return None
    values = [sample.get(entry["metric"]) for sample in figures.get("rounds") or ()]
    if not values or not all(isinstance(v, int | float) for v in values):
        return None
    return [float(v) for v in values]


def _paired_ratio(results: dict[str, Any], scenario: str, client: str) -> float | None:
    """``client``'s figure over plain stream_chat's in ``scenario``, paired by round: the median
    of the per-round ratios, each of the two clients' samples from the same round (run within
    seconds of each other, so drift across a run, from the heap, the CPU's clock or other load,
    cancels out). Falls back to the ratio of the medians when the two did not run the same
    rounds."""
    mine, base = _round_figures(results, scenario, client), _round_figures(results, scenario, BASE)
    if mine is None or base is None or len(mine) != len(base) or not all(base):
        return _ratio(_value(results, scenario, client), _value(results, scenario, BASE))
    return statistics.median(a / b for a, b in zip(mine, base, strict=True))


def _overhead(results: dict[str, Any], client: str) -> tuple[float | None, str, float | None]:
    """What ``client`` costs against plain stream_chat: CPU per chunk (the geometric mean of
    the per-chunk scenarios' ratios, ``None`` unless all were measured), those ratios as text,
    and CPU per request (idle_pool). Every ratio is paired by round (:func:`_paired_ratio`).

    A hook's cost is a few microseconds a call, far below the rounds' noise in any one
    scenario (±5-10%); hence one figure over the per-chunk scenarios, each of which the tables
    show on its own (as the ratio of the medians, which can differ from the paired one).
    """
    ratios = {scenario: _paired_ratio(results, scenario, client) for scenario in _PER_CHUNK}
    known = [ratio for ratio in ratios.values() if ratio is not None]
    per_chunk = math.prod(known) ** (1 / len(known)) if len(known) == len(ratios) else None
    detail = ", ".join(f"{name} {_num(ratio)}" for name, ratio in ratios.items())
    per_request = _paired_ratio(results, "idle_pool", client)
    return per_chunk, detail, per_request


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The lead's targets, each with its figure from this run and whether it is met."""

    def v(scenario: str, client: str) -> float | None:
        return _value(results, scenario, client)

    out = [
        _target(
            "stream_chat, one stream: CPU/chunk ≤ 3× the floor",
            _ratio(v("one_stream", BASE), v("one_stream", FLOOR)),
            3.0,
        ),
        _target(
            "stream_chat, one stream: CPU/chunk ≤ 1/10 of openai-python",
            _ratio(v("one_stream", BASE), v("one_stream", "openai")),
            0.1,
        ),
        _target(
            "stream_chat, 200 paced streams: CPU/chunk ≤ 2.5× the floor",
            _ratio(v("paced_200", BASE), v("paced_200", FLOOR)),
            2.5,
        ),
        _target(
            "stream_chat, 200 paced streams: CPU/chunk ≤ 1/4 of openai-python",
            _ratio(v("paced_200", BASE), v("paced_200", "openai")),
            0.25,
        ),
    ]
    for typed in ("llmtap.stream", "llmtap.chat"):
        for scenario in _CPU_SCENARIOS:
            out.append(
                _target(
                    f"{typed} ≤ 1.3× stream_chat ({scenario})",
                    _ratio(v(scenario, typed), v(scenario, BASE)),
                    1.3,
                )
            )
    # A no-op hook, and llmtap.otel's hook with no OpenTelemetry SDK configured (the API's
    # no-op providers): what an application pays for telemetry it has not turned on.
    for client, what in (
        (HOOKED, "stream_chat with one no-op hook"),
        (OTEL, "stream_chat with llmtap.otel, API only"),
    ):
        per_chunk, detail, per_request = _overhead(results, client)
        out.append(
            _target(
                f"{what}: CPU/chunk ≤ 1.05× without (geometric mean of {', '.join(_PER_CHUNK)})",
                per_chunk,
                1.05,
                detail,
            )
        )
        if client == HOOKED:
            out.append(
                _target(f"{what}: CPU/request ≤ 1.05× without (idle_pool)", per_request, 1.05)
            )
    out.append(
        _target(
            "stream_chat CPU/request with 200 idle connections ≤ 1.5× the bare aiohttp loop",
            _ratio(v("idle_pool", BASE), v("idle_pool", "aiohttp")),
            1.5,
        )
    )
    # Every client, the floor included, costs ~10-20% more per request with 200 idle
    # connections than with 1 (a bigger process); growth is judged against the bare loop's.
    growth = _ratio(v("idle_pool", BASE), v("idle_pool_1", BASE))
    reference_growth = _ratio(v("idle_pool", "aiohttp"), v("idle_pool_1", "aiohttp"))
    out.append(
        _target(
            "stream_chat CPU/request: no growth with pool size (its growth from 1 to 200 idle "
            "connections ÷ the bare aiohttp loop's ≤ 1.1)",
            _ratio(growth, reference_growth),
            1.1,
            f"stream_chat grows ×{_num(growth)}, aiohttp ×{_num(reference_growth)}",
        )
    )
    thousand = results["scenarios"].get("streams_1000")
    if thousand is not None:
        for name, figures in thousand["clients"].items():
            if name.startswith("llmtap"):
                errors = figures.get("errors", 0)
                out.append(
                    _target(
                        f"{name}: {thousand['sizes']['streams']:,} concurrent streams complete "
                        "with no error",
                        float(errors),
                        0.0,
                        figures.get("first_error") or "",
                    )
                )
    else:
        out.append(_target("1,000 concurrent streams complete with no error", None, 0.0))
    run_cpu, loop_cpu = v("batch", BATCH_RUN), v("batch", BATCH_LOOP)
    rates = results["scenarios"].get("batch", {}).get("clients", {})
    out.append(
        _target(
            "llmtap.batch.run CPU/request ≤ 1.2× a bare asyncio.gather + semaphore loop of "
            "chat() writing each result as a JSON line (same concurrency)",
            _ratio(run_cpu, loop_cpu),
            1.2,
            ", ".join(
                f"{name} {_num(rates.get(name, {}).get('requests_per_s'))} requests/s"
                for name in (BATCH_RUN, BATCH_LOOP)
            ),
        )
    )
    sizes = results["scenarios"].get("batch_rss", {}).get("sizes", {}).get("lines", [])
    if len(sizes) == 2:
        small, large = (f"{lines:,} lines" for lines in sizes)
        out.append(
            _target(
                f"llmtap.batch.run peak RSS with {large} ≤ 1.1× with {small}",
                _ratio(v("batch_rss", large), v("batch_rss", small)),
                1.1,
            )
        )
    else:
        out.append(_target("llmtap.batch.run peak RSS: 1,000,000 lines ≤ 1.1× 10,000", None, 1.1))
    over_responses = {
        scenario: _ratio(
            _paired_ratio(results, scenario, "llmtap.stream[responses]"),
            _paired_ratio(results, scenario, "llmtap.stream"),
        )
        for scenario in _PER_CHUNK
    }
    known = [ratio for ratio in over_responses.values() if ratio is not None]
    out.append(
        _target(
            "llmtap.stream() over the Responses API: CPU/chunk ≤ 1.3× over chat completions "
            "(geometric mean of " + ", ".join(_PER_CHUNK) + ")",
            math.prod(known) ** (1 / len(known)) if len(known) == len(over_responses) else None,
            1.3,
            ", ".join(f"{name} {_num(ratio)}" for name, ratio in over_responses.items()),
        )
    )
    store = "llmtap"
    stall = results["scenarios"].get("log_stall", {}).get("clients", {}).get(store, {})
    out.append(
        _target(
            "conversation log: longest event-loop stall added when 1,000 concurrent streams "
            "end ≤ 1 ms at the 99th percentile (the hook's share + the writer thread's)",
            v("log_stall", store),
            1.0,
            f"hook {_num(stall.get('hook_ms'))} ms for {stall.get('rows', '–')} calls ending at "
            f"once, writer +{_num(stall.get('writer_added_p99_ms'))} ms at p99 (longest "
            f"{_num(stall.get('writing_max_ms'))} ms), {stall.get('rows', '–')} rows written",
        )
    )
    out.append(
        _target(
            "llmtap logs -q over 100,000 rows ≤ 100 ms",
            v("log_search", store),
            100.0,
        )
    )
    hits = results["scenarios"].get("cache_hit", {}).get("clients", {}).get(store, {})
    out.append(
        _target(
            "response cache hit for a 4 KB answer ≤ 1 ms (1,000 µs), read from the file",
            v("cache_hit", store),
            1000.0,
            f"from memory {_num(hits.get('memory_hit_us'))} µs; from the file p99 "
            f"{_num(hits.get('file_hit_p99_us'))} µs",
        )
    )
    out.append(
        _target(
            "import llmtap ≤ 1/2 of import openai",
            _ratio(v("import", "llmtap"), v("import", "openai")),
            0.5,
        )
    )
    return out


def _figure(label: str, figure: float | None, detail: str = "") -> dict[str, Any]:
    return {
        "what": label,
        "figure": None if figure is None else round(figure, 3),
        "detail": detail,
    }


def reported(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures shown with no target: what llmtap.otel costs per request with the API alone
    (the target is per chunk), and with the SDK recording."""
    _per_chunk, _detail, api_per_request = _overhead(results, OTEL)
    what = "stream_chat with llmtap.otel and the SDK (in-memory exporter)"
    per_chunk, detail, per_request = _overhead(results, OTEL_SDK)
    return [
        _figure(
            "stream_chat with llmtap.otel, API only: CPU/request × without (idle_pool)",
            api_per_request,
        ),
        _figure(
            f"{what}: CPU/chunk × without (geometric mean of {', '.join(_PER_CHUNK)})",
            per_chunk,
            detail,
        ),
        _figure(f"{what}: CPU/request × without (idle_pool)", per_request),
    ]


def render(results: dict[str, Any]) -> str:
    """The whole report as text."""
    m = results["machine"]
    lines = [
        "# llmtap benchmarks",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['python']}, {m['platform']}",
        f"load average at start: {m['load_average_at_start']}; {m['event_loop']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"command: {results['command']}",
        "CPU figures are client-process CPU (time.process_time) per content chunk or per",
        "request, medians over interleaved rounds (openai, ollama and httpx: the first three);",
        "the server runs in another process.",
    ]
    lines += [f"skipped {name}: {why}" for name, why in results.get("skipped", {}).items()]
    lines += [
        "",
        summary_table(results),
        "",
    ]
    for name, entry in results["scenarios"].items():
        lines += [_scenario_table(name, entry, results), ""]
    lines.append("## targets")
    unmeasured = 0
    for target in results["targets"]:
        if target["met"] is None:
            unmeasured += 1
            continue
        state = "MET  " if target["met"] else "UNMET"
        detail = f"; {target['detail']}" if target.get("detail") else ""
        lines.append(
            f"{state} {target['target']}: {target['figure']:g} (limit {target['limit']:g}{detail})"
        )
    if unmeasured:
        lines.append(f"({unmeasured} targets need scenarios or clients this run left out)")
    shown = results["reported"] if "reported" in results else reported(results)
    figures = [figure for figure in shown if figure["figure"] is not None]
    if figures:
        lines += ["", "## reported, no target"]
        for figure in figures:
            detail = f" ({figure['detail']})" if figure.get("detail") else ""
            lines.append(f"{figure['what']}: {figure['figure']:g}{detail}")
    lines.append(f"\ntotal time: {results['seconds']} s")
    return "\n".join(lines)
