"""The response cache on the command line: ``llmtap chat`` answering a repeat from it,
``llmtap cache info`` and ``llmtap cache clear``; and no API key in the log or the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmtap.testing import TestServer
from tests.cli.conftest import Runner


def files_under(folder: Path) -> list[Path]:
    """Every file in ``folder`` and below."""
    return [path for path in folder.rglob("*") if path.is_file()]


async def cache_info(cli: Runner, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``llmtap cache info --json``, parsed."""
    result = await cli("cache", "info", "--json", env=env)
    assert (result.code, result.err) == (0, "")
    info: dict[str, Any] = json.loads(result.out)
    return info


async def test_repeated_chat_is_answered_from_the_cache_until_cleared(
    cli: Runner, tmp_path: Path
) -> None:
    """With LLMTAP_CACHE=FILE, a second identical chat at --temperature 0 sends no request
    and prints the same answer; `cache info` counts one answer; `cache clear` deletes it, and
    the next chat asks the server again."""
    cache = tmp_path / "answers.db"
    env = {"LLMTAP_CACHE": str(cache)}
    ask = ("chat", "--temperature", "0", "Why is the sky blue?")
    async with TestServer(dialect="ollama") as server:
        first = await cli(*ask, "-e", server.url, env=env)
        second = await cli(*ask, "-e", server.url, env=env)
        sent = len(server.chat_requests)
        info = await cache_info(cli, env)
        cleared = await cli("cache", "clear", env=env)
        emptied = await cache_info(cli, env)
        await cli(*ask, "-e", server.url, env=env)
    assert (first.code, second.code) == (0, 0)
    assert first.out == second.out == "echo: Why is the sky blue?\n"
    assert (sent, len(server.chat_requests)) == (1, 2)
    assert (info["path"], info["answers"]) == (str(cache), 1)
    assert info["bytes"] > 0
    assert info["oldest"] == info["newest"]
    assert (cleared.code, cleared.out) == (0, f"deleted 1 answer from {cache}\n")
    assert (emptied["answers"], emptied["bytes"], emptied["oldest"]) == (0, 0, None)


async def test_cached_answer_is_logged_as_cached(cli: Runner) -> None:
    """The answer the cache gave is a row of the log too, marked cached (and MODEL says so
    in the table)."""
    env = {"LLMTAP_CACHE": "1"}
    async with TestServer(dialect="ollama") as server:
        for _ in range(2):
            await cli("chat", "-e", server.url, "--temperature", "0", "Hi", env=env)
    result = await cli("logs", "--json")
    table = await cli("logs")
    assert [row["cached"] for row in json.loads(result.out)] == [False, True]
    assert table.out.splitlines()[-1].split()[3:5] == ["llama3.2:latest", "(cached)"]


async def test_no_cache_flag_asks_the_server(cli: Runner, tmp_path: Path) -> None:
    """--no-cache sends the request even with LLMTAP_CACHE set; --cache uses the default
    file when nothing names one."""
    env = {"LLMTAP_CACHE": str(tmp_path / "answers.db")}
    async with TestServer(dialect="ollama") as server:
        for _ in range(2):
            await cli("chat", "-e", server.url, "--temperature", "0", "--no-cache", "Hi", env=env)
        for _ in range(2):
            await cli("chat", "-e", server.url, "--temperature", "0", "--cache", "Hi")
    assert len(server.chat_requests) == 3
    assert (await cache_info(cli, env))["answers"] == 0
    assert (await cache_info(cli))["answers"] == 1


async def test_cache_info_as_text_and_with_no_file(cli: Runner, home: Path) -> None:
    """`cache info` without --json: one `name value` line each; with no cache file yet it
    shows the default file, empty, and does not make it."""
    default = home / ".cache" / "llmtap" / "cache.db"
    result = await cli("cache", "info")
    assert (result.code, result.err) == (0, "")
    assert result.out == (f"file     {default}\nanswers  0\nsize     0 B\noldest   -\nnewest   -\n")
    assert not default.exists()


async def test_clear_older_than_keeps_the_fresh_answers(cli: Runner) -> None:
    """`cache clear --older-than 1h` leaves an answer kept just now."""
    env = {"LLMTAP_CACHE": "1"}
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "--temperature", "0", "Hi", env=env)
    result = await cli("cache", "clear", "--older-than", "1h")
    assert result.out.startswith("deleted 0 answers kept more than 1h ago from ")  # as typed
    result = await cli("cache", "clear", "--older-than", "90")
    assert result.out.startswith("deleted 0 answers kept more than 90 s ago from ")
    assert (await cache_info(cli))["answers"] == 1


@pytest.mark.parametrize("duration", ["soon", "-5", "3y", ""])
async def test_bad_duration_is_a_usage_error(cli: Runner, duration: str) -> None:
    """--older-than that is no duration: exit 2, with examples of ones that are."""
    result = await cli("cache", "clear", "--older-than", duration)
    assert (result.code, result.err) == (
        2,
        "error: --older-than takes seconds or a duration such as 90s, 15m, 12h, 7d or 2w, "
        f"not {duration!r}\n",
    )


@pytest.mark.parametrize("how", ["--api-key", "LLMTAP_API_KEY"])
async def test_no_api_key_in_the_log_or_the_cache(cli: Runner, home: Path, how: str) -> None:
    """The API key (given as a flag or in the environment) is in no byte of any file the
    command leaves under HOME: the log, the cache, their -wal and -shm files (where the
    answer itself is found as plain text)."""
    secret = "sk-llmtap-test-5f0c1e9d7b3a"
    flags = ["--api-key", secret] if how == "--api-key" else []
    env = {"LLMTAP_CACHE": "1", **({"LLMTAP_API_KEY": secret} if not flags else {})}
    async with TestServer(dialect="openai", api_key=secret, models=["gpt-test"]) as server:
        for _ in range(2):
            result = await cli(
                "chat", "-e", server.url, *flags, "--temperature", "0", "Hi", env=env
            )
            assert result.code == 0
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {secret}"
    files = files_under(home)
    assert {"logs.db", "cache.db"} <= {path.name for path in files}
    assert any(b"echo: Hi" in path.read_bytes() for path in files)  # what they hold is plain
    assert [path for path in files if secret.encode() in path.read_bytes()] == []
