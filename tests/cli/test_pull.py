"""``llmtap pull`` run as a subprocess (and once on a terminal): progress, success, resume,
unknown models, and servers that cannot pull."""

from __future__ import annotations

import re
from collections.abc import Callable

import pexpect

from llmtap.testing import TestServer
from tests.cli.conftest import ANSI, Runner, assert_clean_error
from tests.conftest import SilentServer


async def test_pull_shows_stages_and_layers_then_success(cli: Runner) -> None:
    """Redirected output: one line per stage and per layer (with its size), ending in success;
    the model is on the server afterwards."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("pull", "qwen3", "--endpoint", server.url)
        models = list(server.models)
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        "pulling manifest",
        "pulling 7e36e7aff34c: 1.1 GB",
        "pulling 95e9c5ca27db: 1.6 KB",
        "pulling 30e1eb1d81f6: 96 B",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert models == ["llama3.2:latest", "qwen3:latest"]


async def test_pull_again_resumes_a_broken_download(cli: Runner) -> None:
    """A pull cut off mid-layer fails with exit 3; running it again resumes from the bytes
    Ollama already has."""
    async with TestServer(dialect="ollama", pull_reset_after=3) as server:
        broken = await cli("pull", "qwen3", "--endpoint", server.url)
        server.pull_reset_after = None
        again = await cli("pull", "qwen3", "--endpoint", server.url)
    assert broken.code == 3
    assert broken.err.startswith("error: The connection broke while reading the answer")
    assert again.code == 0
    assert again.out.splitlines()[1] == "pulling 7e36e7aff34c: 1.1 GB, resuming at 284.9 MB"


async def test_unknown_model_exits_4(cli: Runner) -> None:
    """A name the registry does not have: exit 4 and where to check the name."""
    async with TestServer(dialect="ollama", pull_registry=["llama3.2"]) as server:
        result = await cli("pull", "nosuchmodel:7b", "--endpoint", server.url)
    assert result.code == 4
    assert result.out == "pulling manifest\n"
    assert result.err == (
        "error: Model 'nosuchmodel:7b' is not in the Ollama library (pull model manifest: file "
        "does not exist); check the name and tag at https://ollama.com/library\n"
    )


async def test_non_ollama_server_is_refused(cli: Runner) -> None:
    """A vLLM server cannot pull: exit 2 and how models get onto such a server."""
    async with TestServer(dialect="vllm") as server:
        result = await cli("pull", "qwen3", "--endpoint", server.url)
    assert result.code == 2
    assert result.err == (
        f"error: Pulling models works with Ollama only, and {server.url} is a vLLM server; "
        "vLLM downloads a model when it starts: `vllm serve MODEL`\n"
    )
    assert [r.path for r in server.requests] == ["/api/version", "/v1/models"]
    assert_clean_error(result)


async def test_openai_compatible_server_is_refused_in_good_english(cli: Runner) -> None:
    """The refusal names the kind of server with its article: "an OpenAI-compatible server"."""
    async with TestServer(dialect="openai") as server:
        result = await cli("pull", "qwen3", "--endpoint", server.url)
    assert result.code == 2
    assert result.err == (
        f"error: Pulling models works with Ollama only, and {server.url} is an "
        "OpenAI-compatible server; add models with the server's own tools\n"
    )


async def test_progress_bars_on_a_terminal(
    terminal: Callable[..., pexpect.spawn],
) -> None:
    """On a terminal each layer gets a bar with bytes; the stages print around the bars."""
    async with TestServer(dialect="ollama", pull_delay=0.01) as server:
        child = terminal("pull", "qwen3", "--endpoint", server.url)
        await child.expect(pexpect.EOF, async_=True)
        child.close()
    assert child.exitstatus == 0
    words = ANSI.sub("", child.before).split()
    assert words[:2] == ["pulling", "manifest"]
    assert words[-6:] == ["verifying", "sha256", "digest", "writing", "manifest", "success"]
    lines = re.split(r"\r\n|\r|\n", ANSI.sub("", child.before))
    bars = [line.split() for line in lines if line.startswith("pulling ") and "━" in line]
    assert [(row[1], row[2], row[3]) for row in bars[-3:]] == [
        ("7e36e7aff34c", "━" * 40, "1.1/1.1"),
        ("95e9c5ca27db", "━" * 40, "1.6/1.6"),
        ("30e1eb1d81f6", "━" * 40, "96/96"),
    ]


async def test_server_that_never_answers_ends_at_preflight_timeout(
    cli: Runner, silent_server: SilentServer
) -> None:
    """A server that accepts the connection and never answers: `pull` gives up after
    preflight_timeout with exit 3, instead of hanging."""
    result = await cli(
        "pull",
        "qwen3",
        "-e",
        silent_server.url,
        env={"LLMTAP_PREFLIGHT_TIMEOUT": "0.5"},
        give_up_after=30,
    )
    assert result.code == 3
    assert result.err == (
        f"error: No complete answer from {silent_server.url} to GET /api/version "
        "within preflight_timeout (0.5 s; LLMTAP_PREFLIGHT_TIMEOUT); the server may be "
        "hung or overloaded, or the address may be wrong\n"
    )
    assert_clean_error(result)
