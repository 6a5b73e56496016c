"""``llmtap bench`` run as a subprocess: the sweep's JSON shape, the table, the PNG plot."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

from llmtap.testing import Reply, TestServer
from tests.cli.conftest import Runner, assert_clean_error

_SWEEP = ("--concurrency", "1,2", "--requests", "2", "--prompt", "one two three")


async def test_json_has_one_entry_per_level(cli: Runner) -> None:
    """--json: the server, model and settings, and per level the requests, errors, tokens,
    TTFT p50/p95 and tokens per second (per stream and in total)."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("bench", "--endpoint", server.url, *_SWEEP, "--json")
        requests = len(server.chat_requests)
    assert result.code == 0
    data = json.loads(result.out)
    assert {k: data[k] for k in ("server", "model", "max_tokens", "requests_per_stream")} == {
        "server": "ollama",
        "model": "llama3.2:latest",
        "max_tokens": 128,
        "requests_per_stream": 2,
    }
    assert (data["prompt"], data["errors"]) == ("one two three", [])
    levels = data["levels"]
    # "echo: one two three" streams as 4 word pieces, so each answer is 4 tokens.
    assert [(lv["concurrency"], lv["requests"], lv["errors"], lv["tokens"]) for lv in levels] == [
        (1, 2, 0, 8),
        (2, 4, 0, 16),
    ]
    for level in levels:
        assert set(level) == {
            "concurrency",
            "requests",
            "errors",
            "tokens",
            "wall_time",
            "ttft_p50",
            "ttft_p95",
            "tokens_per_second",
            "aggregate_tokens_per_second",
        }
        assert level["ttft_p50"] > 0
        assert level["ttft_p95"] >= level["ttft_p50"]
        assert level["aggregate_tokens_per_second"] > 0
    assert requests == 1 + 2 + 4  # the warm-up, then the two levels


async def test_max_tokens_is_sent(cli: Runner) -> None:
    """--max-tokens is what each request asks for; --no-warmup sends no extra request."""
    async with TestServer(dialect="vllm") as server:
        result = await cli(
            "bench",
            "-e",
            server.url,
            "--concurrency",
            "1",
            "--requests",
            "1",
            "--max-tokens",
            "16",
            "--no-warmup",
            "--json",
        )
    assert result.code == 0
    assert [r.json["max_tokens"] for r in server.chat_requests] == [16]


async def test_failed_requests_are_counted(cli: Runner) -> None:
    """A request that fails is counted as an error, with its message, and the rest go on."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(status=400, error_message="bad request"))
        result = await cli(
            "bench",
            "-e",
            server.url,
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--no-warmup",
            "--json",
        )
    data = json.loads(result.out)
    assert result.code == 0
    assert (data["levels"][0]["requests"], data["levels"][0]["errors"]) == (2, 1)
    assert data["errors"] == ["The server answered 400: bad request"]


async def test_table_lists_each_level(cli: Runner) -> None:
    """Without --json: a table with a row per concurrency level."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("bench", "--endpoint", server.url, *_SWEEP)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == ("ollama · llama3.2:latest · 128 tokens per answer · 2 requests per stream")
    rows = [line.split("│")[1:4] for line in lines if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [["1", "2", "0"], ["2", "4", "0"]]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_plot_writes_a_png(cli: Runner, tmp_path: Path) -> None:
    """--plot FILE.png writes a 1000 x 400 PNG of throughput and latency."""
    target = tmp_path / "bench.png"
    async with TestServer(dialect="ollama") as server:
        result = await cli("bench", "--endpoint", server.url, *_SWEEP, "--plot", str(target))
    assert result.code == 0
    assert result.err == f"plot written to {target}\n"
    assert _png_size(target) == (1000, 400)


async def test_plot_without_matplotlib_is_a_usage_error(cli: Runner, tmp_path: Path) -> None:
    """Without matplotlib, --plot fails at once (no request sent) and says how to get it."""
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    async with TestServer(dialect="ollama") as server:
        result = await cli(
            "bench",
            "--endpoint",
            server.url,
            "--plot",
            str(tmp_path / "x.png"),
            env={"PYTHONPATH": str(shim.parent)},
        )
    assert result.code == 2
    assert result.err == (
        "error: --plot needs matplotlib, which is not installed: pip install matplotlib\n"
    )
    assert server.requests == []


async def test_bad_concurrency_is_a_usage_error(cli: Runner) -> None:
    """--concurrency must be positive numbers: exit 2 with an example."""
    result = await cli("bench", "--concurrency", "1,zero")
    assert result.code == 2
    assert result.err == (
        "error: --concurrency takes positive whole numbers separated by commas (such as "
        "1,2,4,8), not '1,zero'\n"
    )
    assert_clean_error(result)


_TINY = ("--concurrency", "1", "--requests", "1", "--max-tokens", "8", "--no-warmup")


async def test_plot_into_a_missing_directory_is_refused_before_measuring(
    cli: Runner, tmp_path: Path
) -> None:
    """--plot into a directory that does not exist: exit 2 before any request is sent."""
    target = tmp_path / "nonexistent" / "dir" / "b.png"
    async with TestServer(dialect="ollama") as server:
        result = await cli("bench", "-e", server.url, *_TINY, "--plot", str(target))
    assert result.code == 2
    assert result.err == (
        f"error: --plot: cannot write {target}: there is no directory {target.parent}\n"
    )
    assert server.requests == []


async def test_plot_with_an_unknown_format_is_refused_before_measuring(
    cli: Runner, tmp_path: Path
) -> None:
    """--plot FILE whose name ends in no format it can write: exit 2 before any request."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("bench", "-e", server.url, *_TINY, "--plot", str(tmp_path / "b.gif"))
    assert result.code == 2
    assert result.err == (
        "error: --plot: the file name must end in .png, .svg or .pdf (the format is taken "
        "from it), not .gif\n"
    )
    assert server.requests == []


async def test_table_is_printed_even_when_the_plot_cannot_be_written(
    cli: Runner, tmp_path: Path
) -> None:
    """A plot that fails after the measuring (here a file name too long for the file system)
    still leaves the table on stdout; the error follows on stderr, exit 2."""
    target = tmp_path / ("x" * 300 + ".png")
    async with TestServer(dialect="ollama") as server:
        result = await cli("bench", "-e", server.url, *_TINY, "--plot", str(target))
    assert result.code == 2
    assert result.out.splitlines()[0] == (
        "ollama · llama3.2:latest · 8 tokens per answer · 1 request per stream"
    )
    assert result.err == f"error: --plot: cannot write {target}: File name too long\n"


def _first_y_ticks(svg: Path) -> list[float]:
    """The lowest tick label of each y axis of a matplotlib SVG (text kept as text)."""
    root = ET.parse(svg).getroot()
    svg_g = "{http://www.w3.org/2000/svg}g"
    firsts = []
    for axis in root.iter(svg_g):
        if not axis.get("id", "").startswith("matplotlib.axis_"):
            continue
        ticks = [g for g in axis if g.tag == svg_g and g.get("id", "").startswith("ytick_")]
        if ticks:
            text = next(ticks[0].iter("{http://www.w3.org/2000/svg}text")).text or ""
            firsts.append(float(text.replace("\u2212", "-")))
    return firsts


async def test_plot_svg_is_svg_and_both_y_axes_start_at_zero(cli: Runner, tmp_path: Path) -> None:
    """--plot FILE.svg writes SVG (not PNG bytes under an .svg name), and both plots'
    y axes start at zero."""
    target = tmp_path / "bench.svg"
    async with TestServer(dialect="ollama") as server:
        server.fallback = lambda request: Reply(text="one two three four", delay_between=0.01)
        result = await cli("bench", "--endpoint", server.url, *_SWEEP, "--plot", str(target))
    assert result.code == 0
    assert target.read_bytes().startswith(b"<?xml")
    assert _first_y_ticks(target) == [0.0, 0.0]


async def test_title_counts_in_good_english(cli: Runner) -> None:
    """One token and one request read "1 token", "1 request"."""
    async with TestServer(dialect="ollama") as server:
        result = await cli(
            "bench", "-e", server.url, "--concurrency", "1", "--requests", "1", "--max-tokens",
            "1", "--no-warmup",
        )  # fmt: skip
    assert result.code == 0
    assert result.out.splitlines()[0] == (
        "ollama · llama3.2:latest · 1 token per answer · 1 request per stream"
    )
