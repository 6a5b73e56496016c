"""``llmtap check`` run as a subprocess: every step passing, and each step failing with its
fix and its exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from llmtap.testing import Reply, TestServer
from tests.cli.conftest import CLIResult, Runner, run_and_close_stdout

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
