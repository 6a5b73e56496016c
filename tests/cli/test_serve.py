"""``llmtap serve-test`` as a subprocess: start it, talk to it with LLMClient, stop it."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from llmtap import LLMClient, LLMConfig, LLMResponseError, LLMStreamInterrupted, Message
from llmtap.testing import TestServer
from tests.cli.conftest import Runner, cli_env

_URL = re.compile(r"listening on (http://\S+)")

Started = tuple[asyncio.subprocess.Process, str]
Serve = Callable[..., AbstractAsyncContextManager[Started]]


@pytest.fixture
def serve(home: Path) -> Serve:
    """Start ``llmtap serve-test --port 0 ARGS``; yields the process and its URL."""

    @asynccontextmanager
    async def start(*args: str) -> AsyncIterator[Started]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmtap.cli",
            "serve-test",
            "--port",
            "0",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home),
        )
        try:
            assert process.stdout is not None
            first = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            match = _URL.search(first.decode())
            assert match is not None, first
            yield process, match.group(1)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    return start


def _client(url: str, **settings: object) -> LLMClient:
    return LLMClient(LLMConfig(endpoint=url, max_retries=0, **settings))  # type: ignore[arg-type]


async def test_serve_test_answers_and_stops_on_ctrl_c(serve: Serve) -> None:
    """It serves Ollama's API with echo answers; Ctrl-C (SIGINT) stops it with exit code 0."""
    async with serve() as (process, url):
        async with _client(url) as client:
            report = await client.preflight_check()
            result = await client.chat([Message.user("hi there")])
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert (report.server, report.model) == ("ollama", "llama3.2:latest")
    assert result.text == "echo: hi there"
    assert process.returncode == 0
    assert out.decode().splitlines() == [
        "models: llama3.2:latest",
        f'try: llmtap chat --endpoint {url} "hello"   (Ctrl-C stops the server)',
        "stopped after 1 chat request",
    ]
    assert err == b""


async def test_suggested_command_carries_the_api_key(serve: Serve) -> None:
    """With --api-key, the command it suggests passes the key, so that it works as shown;
    a server stopped before any chat says "0 chat requests"."""
    async with serve("--api-key", "sk-test 1") as (process, url):
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert out.decode().splitlines() == [
        "models: llama3.2:latest",
        f"try: llmtap chat --endpoint {url} --api-key 'sk-test 1' \"hello\"   (Ctrl-C stops "
        "the server)",
        "stopped after 0 chat requests",
    ]
    assert process.returncode == 0


async def test_dialect_and_models_are_served(serve: Serve) -> None:
    """--dialect vllm --models A,B serves vLLM's listing with those models."""
    async with serve("--dialect", "vllm", "--models", "org/a,org/b") as (process, url):
        async with _client(url, model="org/b") as client:
            report = await client.preflight_check()
            models = [m.name for m in await client.list_models()]
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=60)
    assert (report.server, report.model, models) == ("vllm", "org/b", ["org/a", "org/b"])
    assert process.returncode == 0


async def test_think_and_delay_shape_every_answer(serve: Serve) -> None:
    """--think adds reasoning to every answer; --delay paces the chunks."""
    async with serve("--think", "--delay", "0.01") as (process, url):
        async with _client(url) as client:
            result = await client.chat([Message.user("hello")], model="llama3.2")
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), timeout=60)
    assert (result.reasoning, result.text) == ("The user said: hello", "echo: hello")
    assert result.timings is not None
    assert result.timings.total is not None
    assert result.timings.total >= 0.01


async def test_fail_rate_one_fails_every_answer(serve: Serve) -> None:
    """--fail-rate 1 answers every chat request with a 503."""
    async with serve("--fail-rate", "1") as (process, url):
        async with _client(url, model="llama3.2") as client:
            with pytest.raises(LLMResponseError) as info:
                await client.chat([Message.user("hello")])
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), timeout=60)
    assert info.value.status_code == 503
    assert info.value.server_message == "scripted failure (serve-test --fail-rate)"


async def test_reset_after_breaks_every_answer(serve: Serve) -> None:
    """--reset-after N drops the connection after N chunks of each answer."""
    async with serve("--reset-after", "2") as (process, url):
        async with _client(url, model="llama3.2") as client:
            with pytest.raises(LLMStreamInterrupted) as info:
                async for _chunk in client.stream_chat([Message.user("one two three")]):
                    pass
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), timeout=60)
    assert info.value.partial_text == "echo:"


async def test_port_in_use_is_a_usage_error(cli: Runner) -> None:
    """A port that is taken: exit 2 and the advice to use --port 0."""
    async with TestServer(dialect="ollama") as taken:
        result = await cli("serve-test", "--port", str(taken.port))
    assert result.code == 2
    assert result.err == (
        f"error: Cannot listen on 127.0.0.1:{taken.port}: the port is in use. Pass --port 0 "
        "for a free port\n"
    )
