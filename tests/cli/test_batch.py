"""``llmtap batch`` as a user runs it: a subprocess against loopback servers, killed with
SIGKILL and resumed, stopped with Ctrl-C, several endpoints as a router."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from llmtap.testing import RecordedRequest, Reply, TestServer, echo_reply
from tests.cli.conftest import Runner, cli_env


def write_input(path: Path, count: int) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps({"custom_id": f"c{n}", "prompt": f"q{n}"}) + b"\n" for n in range(count)
        )
    )
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def whole_lines(path: Path) -> set[str]:
    """custom_ids of the complete lines of ``path`` (a crash may have cut the last)."""
    if not path.exists():
        return set()
    found = set()
    for raw in path.read_bytes().split(b"\n")[:-1]:
        found.add(orjson.loads(raw)["custom_id"])
    return found


def prompt_of(request: RecordedRequest) -> str:
    return str(request.json["messages"][-1]["content"])


def slow_echo(request: RecordedRequest) -> Reply:
    return Reply(text=echo_reply(request).text, delay_between=0.005)


async def test_killed_three_times_then_resumed_each_line_once(home: Path, tmp_path: Path) -> None:
    """SIGKILL at a random moment, three times, each run resuming the last: in the end
    every custom_id is in the output exactly once, every line whole, and no line already
    written when a run was killed was sent again afterwards."""
    count = 1500
    source = write_input(tmp_path / "in.jsonl", count)
    output = tmp_path / "out.jsonl"
    chance = random.Random(7)
    #: At each kill: how many requests the server had had, and the prompts written by then.
    checks: list[tuple[int, set[str]]] = []
    async with TestServer(dialect="ollama", models=["m"]) as server:
        server.fallback = slow_echo
        args = [
            "batch", str(source), "-o", str(output), "-e", server.url, "-m", "m",
            "--concurrency", "16",
        ]  # fmt: skip
        for run in range(4):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "llmtap.cli", *args, *(["--resume"] if run else []),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=cli_env(home),
            )  # fmt: skip
            if run < 3:
                # kill once some answers are written (and well before the end)
                for _ in range(600):
                    await asyncio.sleep(0.01)
                    if len(whole_lines(output)) > 50 * (run + 1) + chance.randrange(200):
                        break
                process.send_signal(signal.SIGKILL)
                await process.wait()
                assert len(whole_lines(output)) < count, "the run ended before the kill"
                written = {f"q{name[1:]}" for name in whole_lines(output)}
                checks.append((len(server.chat_requests), written))
            else:
                _out, err = await asyncio.wait_for(process.communicate(), timeout=120)
                assert process.returncode == 0, err.decode()
        prompts = [prompt_of(request) for request in server.chat_requests]
    ids = [line["custom_id"] for line in lines_of(output)]
    assert sorted(ids) == sorted(f"c{n}" for n in range(count))
    assert lines_of(tmp_path / "out.errors.jsonl") == []
    for line in lines_of(output):
        n = line["custom_id"][1:]
        assert line["response"]["body"]["choices"][0]["message"]["content"] == f"echo: q{n}"
    assert len(checks) == 3
    for sent_before, written_prompts in checks:
        # what later runs sent includes no line already written
        assert not written_prompts & set(prompts[sent_before:])


async def test_ctrl_c_stops_writes_what_was_in_flight_and_says_how_to_resume(
    home: Path, tmp_path: Path
) -> None:
    """SIGINT mid-run: no new request, those in flight written, exit 130, and the printed
    command resumes the run to the end."""
    count = 400
    source = write_input(tmp_path / "in.jsonl", count)
    output = tmp_path / "out.jsonl"
    async with TestServer(dialect="openai", models=["m"]) as server:
        server.fallback = slow_echo
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmtap.cli", "batch", str(source), "-o", str(output),
            "-e", server.url, "-m", "m", "--concurrency", "8",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home),
        )  # fmt: skip
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(whole_lines(output)) > 40:
                break
        process.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        sent = len(server.chat_requests)
        written = lines_of(output)
        assert process.returncode == 130
        text = err.decode()
        assert "stopping: no new request" in text
        assert "interrupted:" in text
        assert "--resume" in text
        assert len(written) == sent  # everything in flight was answered and written
        assert sent < count
        resume = text.rsplit("resume with: ", 1)[1].strip().split()
        assert resume[:2] == ["llmtap", "batch"]
        again = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmtap.cli", *resume[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home),
        )  # fmt: skip
        await asyncio.wait_for(again.communicate(), timeout=60)
        assert again.returncode == 0
        assert len(server.chat_requests) == count
    assert sorted(line["custom_id"] for line in lines_of(output)) == sorted(
        f"c{n}" for n in range(count)
    )


async def test_several_endpoints_share_the_work_and_json_reports(
    cli: Runner, tmp_path: Path
) -> None:
    """Two --endpoint flags: a router; --json prints the report with the spread."""
    source = write_input(tmp_path / "in.jsonl", 60)
    async with TestServer(models=["m"]) as a, TestServer(models=["m"]) as b:
        result = await cli(
            "batch", str(source), "-o", str(tmp_path / "out.jsonl"), "-e", a.url, "-e", b.url,
            "-m", "m", "--json",
        )  # fmt: skip
        served = (len(a.chat_requests), len(b.chat_requests))
    assert result.code == 0, result.err
    report = orjson.loads(result.out)
    assert (report["succeeded"], report["failures"], report["stopped"]) == (60, 0, None)
    assert sorted(report["endpoints"].values()) == sorted(served)
    assert min(served) > 0
    assert result.err == ""  # quiet when not a terminal


async def test_duplicates_exit_2_before_sending(cli: Runner, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"custom_id": "a", "prompt": "x"}\n{"custom_id": "a", "prompt": "y"}\n')
    async with TestServer(models=["m"]) as server:
        result = await cli("batch", str(source), "-o", str(tmp_path / "out.jsonl"), "-e",
                           server.url, "-m", "m")  # fmt: skip
        assert server.chat_requests == []
    assert result.code == 2
    assert "'a' on lines 1, 2" in result.err


async def test_an_unreachable_server_stops_before_any_line(
    cli: Runner, tmp_path: Path, closed_port_url: str
) -> None:
    """A server that cannot be reached: exit 3 at once, no errors file full of lines."""
    source = write_input(tmp_path / "in.jsonl", 20)
    result = await cli("batch", str(source), "-o", str(tmp_path / "out.jsonl"), "-e",
                       closed_port_url, "-m", "m")  # fmt: skip
    assert result.code == 3
    assert lines_of(tmp_path / "out.errors.jsonl") == []
