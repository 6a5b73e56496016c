"""No command prints a secret: the password of an endpoint URL or an API key, on stdout or
stderr, in text or JSON, on success or on an error path."""

from __future__ import annotations

import pytest

from llmtap.testing import TestServer
from tests.cli.conftest import CLIResult, Runner

_PASSWORD = "hunter2secret"
_KEY = "sk-llmtap-test-key-0123456789"
_WRONG_KEY = "sk-llmtap-wrong-key-9876543210"
_TINY_BENCH = ("--concurrency", "1", "--requests", "1", "--max-tokens", "4", "--no-warmup")


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://user:{_PASSWORD}@", 1)


def _leaks(result: CLIResult) -> list[str]:
    shown = result.out + result.err
    return [secret for secret in (_PASSWORD, _KEY, _WRONG_KEY) if secret in shown]


@pytest.mark.parametrize("key_from", ["--api-key", "LLMTAP_API_KEY", "no key"])
async def test_no_command_prints_the_password_or_the_key(
    cli: Runner, closed_port_url: str, key_from: str
) -> None:
    """Every command, with a password in the endpoint URL and an API key (from the flag or
    the variable; and once with no key, so that the password goes to the server and into
    every report), runs as usual and prints neither secret anywhere."""
    key = None if key_from == "no key" else _KEY
    flag = ["--api-key", _KEY] if key_from == "--api-key" else []
    env = {"LLMTAP_API_KEY": _KEY} if key_from == "LLMTAP_API_KEY" else {}
    async with (
        TestServer(dialect="ollama", api_key=key) as ollama,
        TestServer(dialect="vllm", api_key=key) as vllm,
        TestServer(dialect="openai", api_key=_KEY) as keyed,
    ):
        url = _with_password(ollama.url)
        runs: dict[str, list[str]] = {
            "chat": ["chat", "-e", url, "hi", *flag],
            "chat --json": ["chat", "--json", "-e", url, "hi", *flag],
            "chat --debug": ["chat", "--debug", "-e", url, "hi", *flag],
            "models": ["models", "-e", url, *flag],
            "models --json": ["models", "--json", "-e", url, *flag],
            "check": ["check", "-e", url, "-m", "llama3.2", *flag],
            "check --json": ["check", "--json", "-e", url, "-m", "llama3.2", *flag],
            "pull": ["pull", "qwen3", "-e", url, *flag],
            "bench --json": ["bench", "--json", "-e", url, "-m", "llama3.2", *_TINY_BENCH, *flag],
            "pull, refused": ["pull", "qwen3", "-e", _with_password(vllm.url), *flag],
            "chat, no such model": ["chat", "-e", url, "-m", "nosuch", "hi", *flag],
            "check, no such model": ["check", "-e", url, "-m", "nosuch", *flag],
            "chat, unreachable": ["chat", "-e", _with_password(closed_port_url), "hi", *flag],
            "check, unreachable": ["check", "-e", _with_password(closed_port_url), *flag],
            "check --json, unreachable": [
                "check", "--json", "-e", _with_password(closed_port_url), *flag,
            ],
            "chat, wrong key": [
                "chat", "-e", _with_password(keyed.url), "--api-key", _WRONG_KEY, "hi",
            ],
            "check, wrong key": [
                "check", "-e", _with_password(keyed.url), "--api-key", _WRONG_KEY,
            ],
            "models, API route": ["models", "-e", url + "/v1/chat/completions", *flag],
            "models, bad port": ["models", "-e", f"http://user:{_PASSWORD}@127.0.0.1:99999"],
            "models, not a URL": ["models", "-e", f"user:{_PASSWORD}@gpu-box", *flag],
        }  # fmt: skip
        results = {name: await cli(*args, env=env) for name, args in runs.items()}
    assert {name: _leaks(result) for name, result in results.items()} == {name: [] for name in runs}
    assert {name: result.code for name, result in results.items()} == {
        "chat": 0,
        "chat --json": 0,
        "chat --debug": 0,
        "models": 0,
        "models --json": 0,
        "check": 0,
        "check --json": 0,
        "pull": 0,
        "bench --json": 0,
        "pull, refused": 2,
        "chat, no such model": 4,
        "check, no such model": 4,
        "chat, unreachable": 3,
        "check, unreachable": 3,
        "check --json, unreachable": 3,
        "chat, wrong key": 5,
        "check, wrong key": 5,
        "models, API route": 2,
        "models, bad port": 2,
        "models, not a URL": 2,
    }
    shown = "http://127.0.0.1" if key else "http://user:***@127.0.0.1"
    assert results["check"].out.startswith(f"✓ reachable      {shown}:{ollama.port} answers")
