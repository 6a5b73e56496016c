"""``llmtap check`` run as a subprocess: every step passing, and each step failing with its
fix and its exit code."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from llmtap.testing import Reply, TestServer
from tests.cli.conftest import CLIResult, Runner, run_and_close_stdout
from tests.conftest import SilentServer

_NUMBER = re.compile(r"\d+")


def _lines(result: CLIResult) -> list[str]:
    """The report's lines with every number replaced by N (durations vary)."""
    return [_NUMBER.sub("N", line.rstrip()) for line in result.out.splitlines()]


async def test_all_steps_pass(cli: Runner) -> None:
    """A healthy Ollama with the model: every step ✓ and exit code 0."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("check", "--endpoint", server.url, "--model", "llama3.2")
    assert result.code == 0
    assert _lines(result) == [
        "✓ reachable      http://N.N.N.N:N answers (N ms)",
        "✓ server         Ollama N.N.N",
        "✓ auth           no key needed",
        "✓ model          llamaN.N:latest is on the server",
        "✓ model answers  llamaN.N:latest loaded and answered (max_tokens=N)",
        "✓ first token    N.N s",
    ]
    assert server.chat_requests[0].json["max_tokens"] == 1


async def test_json_lists_the_steps(cli: Runner) -> None:
    """--json gives ok, the exit code and every step with its outcome."""
    async with TestServer(dialect="vllm") as server:
        result = await cli("check", "--endpoint", server.url, "--json")
    data = json.loads(result.out)
    assert (result.code, data["ok"], data["exit_code"]) == (0, True, 0)
    assert [(s["step"], s["ok"]) for s in data["steps"]] == [
        ("reachable", True),
        ("server", True),
        ("auth", True),
        ("model", True),
        ("answer", True),
        ("first_token", True),
    ]
    assert data["steps"][1]["detail"] == "vLLM 0.12.0"


async def test_llamacpp_server_step_names_its_build(cli: Runner) -> None:
    """On llama.cpp the server step names its build, from ``GET /props``."""
    async with TestServer(dialect="llamacpp", version="b0-unknown") as server:
        result = await cli("check", "--endpoint", server.url, "--json")
    data = json.loads(result.out)
    assert (result.code, data["steps"][1]["detail"]) == (0, "llama.cpp b0-unknown")


async def test_server_not_running_exits_3(cli: Runner, closed_port_url: str) -> None:
    """Nothing listening: ✗ reachable with how to start the server; exit code 3."""
    result = await cli("check", "--endpoint", closed_port_url)
    assert result.code == 3
    lines = result.out.splitlines()
    assert lines[0] == f"✗ reachable      nothing answers at {closed_port_url} (connection refused)"
    assert lines[1] == (
        "  fix: start the server (Ollama: `ollama serve`), or pass --endpoint with the right "
        "host and port (Ollama 11434, llama.cpp 8080, vLLM 8000)"
    )
    assert lines[2:] == [
        "- server         skipped",
        "- auth           skipped",
        "- model          skipped",
        "- model answers  skipped",
        "- first token    skipped",
    ]


async def test_missing_model_exits_4_with_the_pull_fix(cli: Runner) -> None:
    """The model is not on the Ollama server: ✗ model with `ollama pull`; exit code 4."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("check", "--endpoint", server.url, "--model", "qwen3")
    assert result.code == 4
    assert _lines(result)[3:] == [
        "✗ model          Model 'qwenN' is not on the server",
        "  fix: ollama pull qwenN   (or: llmtap pull qwenN)",
        "- model answers  skipped",
        "- first token    skipped",
    ]


async def test_missing_key_exits_5(cli: Runner) -> None:
    """A server that wants a key and got none: ✗ auth with --api-key; exit code 5."""
    async with TestServer(dialect="openai", api_key="sk-test") as server:
        result = await cli("check", "--endpoint", server.url)
    assert result.code == 5
    assert result.out.splitlines()[1:4] == [
        "✓ server         an OpenAI-compatible API (details need a valid key)",
        "✗ auth           the server wants an API key (401)",
        "  fix: pass --api-key KEY, or set LLMTAP_API_KEY",
    ]


async def test_wrong_key_exits_5(cli: Runner) -> None:
    """A key the server refuses: ✗ auth saying so, and the key is never shown."""
    async with TestServer(dialect="vllm", api_key="sk-right") as server:
        result = await cli("check", "--endpoint", server.url, "--api-key", "sk-wrong-99")
    assert result.code == 5
    assert result.out.splitlines()[2:4] == [
        "✗ auth           the server refused the API key (401)",
        "  fix: check the key (--api-key, LLMTAP_API_KEY, OPENAI_API_KEY or the config file)",
    ]
    assert "sk-wrong-99" not in result.out + result.err


async def test_model_that_does_not_answer_exits_6(cli: Runner) -> None:
    """The model is listed but the one-token chat fails: ✗ model answers; exit code 6."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(status=500, error_message="model requires more system memory"))
        result = await cli("check", "--endpoint", server.url, env={"LLMTAP_MAX_RETRIES": "0"})
    assert result.code == 6
    assert result.out.splitlines()[4:7] == [
        "✗ model answers  llama3.2:latest did not answer: The server answered 500: model "
        "requires more system memory",
        "  fix: see the server's log; running out of memory is the usual cause (try a smaller "
        "model or quantization)",
        "- first token    skipped",
    ]


async def test_loading_server_exits_1(cli: Runner) -> None:
    """A llama.cpp server still loading: ✗ server with "wait and run again"; exit code 1."""
    async with TestServer(dialect="llamacpp", loading=True) as server:
        result = await cli("check", "--endpoint", server.url)
    assert result.code == 1
    assert result.out.splitlines()[1:3] == [
        "✗ server         the server is unavailable (503); llama.cpp answers so while it loads "
        "its model",
        "  fix: wait a few seconds and run `llmtap check` again",
    ]


async def test_closed_stdout_stops_quietly(home: Path) -> None:
    """`llmtap check | head -1`: the reader takes the first line and closes the pipe; check
    stops with exit 141 and nothing on stderr (no BrokenPipeError)."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="OK", delay_before_headers=1.0))
        result = await run_and_close_stdout(
            home, "check", "--endpoint", server.url, "--model", "llama3.2", keep=11
        )
    assert (result.out, result.code, result.err) == ("✓ reachab", 141, "")


async def test_single_model_server_that_ignores_the_name_says_so(cli: Runner) -> None:
    """llama.cpp's llama-server answers any model name with its one model: check --model foo
    says the name is not listed, that the server ignores it and which model answers; it
    still passes (chat works, with the same warning)."""
    async with TestServer(dialect="llamacpp") as server:
        result = await cli("check", "--endpoint", server.url, "--model", "foo")
    assert result.code == 0
    assert _lines(result)[3:] == [
        "! model          Model 'foo' is not listed; this llama.cpp server serves only 'tiny' "
        "and answers with it whatever name is asked",
        "  fix: pass --model tiny (or leave --model out) to name the model that answers",
        "✓ model answers  tiny answered a request for foo (max_tokens=N)",
        "✓ first token    N.N s",
    ]
    assert server.chat_requests[0].json["model"] == "foo"


async def test_single_model_warning_is_in_the_json(cli: Runner) -> None:
    """--json marks that step as passed with a warning."""
    async with TestServer(dialect="llamacpp") as server:
        result = await cli("check", "--endpoint", server.url, "--model", "foo", "--json")
    model = json.loads(result.out)["steps"][3]
    assert (result.code, model["step"], model["ok"], model["warning"]) == (0, "model", True, True)


async def test_chat_warns_when_the_server_ignores_the_name(cli: Runner) -> None:
    """chat --model foo against llama-server answers (with tiny), and says so on stderr."""
    async with TestServer(dialect="llamacpp") as server:
        result = await cli("chat", "--endpoint", server.url, "--model", "foo", "hi")
    assert (result.code, result.out) == (0, "echo: hi\n")
    assert result.err == (
        "warning: Model 'foo' is not listed; this llama.cpp server serves only 'tiny' and "
        "answers with it whatever name is asked\n"
    )


_SLOW_AIOHTTP = """
import importlib.abc
import sys
import time


class SlowAiohttp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp":
            time.sleep(1.0)
        return None


sys.meta_path.insert(0, SlowAiohttp())
"""


async def test_reachable_time_is_the_request_alone(cli: Runner, tmp_path: Path) -> None:
    """The time on the reachable line is the request's, not llmtap's start-up: with aiohttp
    made to take a second to import, the line still shows well under that second."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(_SLOW_AIOHTTP, encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")]))
    async with TestServer(dialect="ollama") as server:
        result = await cli("check", "-e", server.url, "-m", "llama3.2", env={"PYTHONPATH": path})
    found = re.fullmatch(r"✓ reachable      \S+ answers \((\d+) ms\)", result.out.splitlines()[0])
    assert result.code == 0
    assert found is not None
    assert int(found[1]) < 500


async def test_server_that_accepts_and_never_answers(
    cli: Runner, silent_server: SilentServer
) -> None:
    """A port that accepts connections and never answers: ✗ reachable saying exactly that,
    with a fix about a hung server, not "start the server"; exit 3."""
    result = await cli("check", "-e", silent_server.url, env={"LLMTAP_PREFLIGHT_TIMEOUT": "0.5"})
    assert result.code == 3
    assert result.out.splitlines()[:2] == [
        f"✗ reachable      {silent_server.url} accepted the connection but sent no answer "
        "within preflight_timeout (0.5 s; LLMTAP_PREFLIGHT_TIMEOUT)",
        "  fix: the server may be hung, overloaded or still starting (see its log), or this "
        "port is not an HTTP server's",
    ]


async def test_connect_timeout_blames_the_network(cli: Runner, full_backlog_url: str) -> None:
    """A connection that is never accepted (packets dropped): ✗ reachable naming
    connect_timeout, with a fix about the host or a firewall; exit 3."""
    result = await cli("check", "-e", full_backlog_url, env={"LLMTAP_CONNECT_TIMEOUT": "0.5"})
    host = full_backlog_url.removeprefix("http://")
    assert result.code == 3
    assert result.out.splitlines()[:2] == [
        f"✗ reachable      no connection to {host} within connect_timeout (0.5 s; "
        "LLMTAP_CONNECT_TIMEOUT)",
        "  fix: the host may be down or unreachable, or a firewall drops the connection: check "
        "the address",
    ]


async def test_busy_answer_is_not_blamed_on_memory(cli: Runner) -> None:
    """A 503 to the one-token chat: the fix says busy or loading, and to try again; not
    memory."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(status=503, error_message="server busy, please try again"))
        result = await cli(
            "check", "--endpoint", server.url, "-m", "llama3.2", env={"LLMTAP_MAX_RETRIES": "0"}
        )
    assert result.code == 6
    assert result.out.splitlines()[4:6] == [
        "✗ model answers  llama3.2:latest did not answer: The server answered 503: server busy, "
        "please try again",
        "  fix: the server is busy or still loading the model: wait a little and run `llmtap "
        "check` again",
    ]


async def test_idle_timeout_is_not_blamed_on_memory(cli: Runner) -> None:
    """An answer that starts and then goes silent: the fix names --idle-timeout, not
    memory."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="OK", stall_after=(1, 5.0)))
        result = await cli(
            "check",
            "--endpoint",
            server.url,
            "-m",
            "llama3.2",
            "--idle-timeout",
            "0.5",
            env={"LLMTAP_MAX_RETRIES": "0"},
        )
    assert result.code == 6
    assert result.out.splitlines()[4:6] == [
        "✗ model answers  llama3.2:latest did not answer: The server went silent for longer "
        "than idle_timeout (0.5 s; --idle-timeout or LLMTAP_IDLE_TIMEOUT); raise it if the "
        "model is slow to load or to answer",
        "  fix: the server stopped sending in the middle of the answer: it may be overloaded or "
        "stuck (see its log); or raise --idle-timeout (LLMTAP_IDLE_TIMEOUT)",
    ]


async def test_first_token_timeout_fix_names_the_flag(cli: Runner) -> None:
    """No first chunk in time: the fix says a cold load can take minutes and names
    --first-token-timeout with its variable."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="OK", delay_before_headers=5.0))
        result = await cli(
            "check",
            "-e",
            server.url,
            "-m",
            "llama3.2",
            "--first-token-timeout",
            "0.5",
            env={"LLMTAP_MAX_RETRIES": "0"},
        )
    assert result.code == 6
    assert result.out.splitlines()[5] == (
        "  fix: a cold load can take minutes: raise --first-token-timeout (or "
        "LLMTAP_FIRST_TOKEN_TIMEOUT), such as --first-token-timeout 600"
    )
