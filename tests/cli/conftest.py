"""Running the ``llmtap`` command as a subprocess (or in a pseudo-terminal) against the
loopback test server, which keeps serving in the test's own event loop."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

#: Variables that would let the developer's own settings leak into a test (or the test's
#: conversation log and cache into the developer's: without XDG_DATA_HOME and XDG_CACHE_HOME
#: they are under the test's private HOME).
_SCRUBBED = re.compile(
    r"^(LLMTAP_.*|OLLAMA_HOST|OPENAI_BASE_URL|OPENAI_API_KEY|FORCE_COLOR|NO_COLOR|COLUMNS|LINES"
    r"|XDG_CONFIG_HOME|XDG_DATA_HOME|XDG_CACHE_HOME|TERM|PYTHONSTARTUP|OTEL_.*)$"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI run: no user settings, a private HOME, UTC."""
    env = {name: value for name, value in os.environ.items() if not _SCRUBBED.match(name)}
    env.update({"HOME": str(home), "TZ": "UTC", "PYTHONIOENCODING": "utf-8"})
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class CLIResult:
    """How one run of the command ended."""

    code: int
    out: str
    err: str


Runner = Callable[..., Awaitable[CLIResult]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME with no config file in it."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(home: Path) -> Runner:
    """Run ``python -m llmtap.cli ARGS`` with stdin from ``stdin`` (a closed, empty pipe by
    default) and collect its exit code, stdout and stderr; a run still going after
    ``give_up_after`` seconds is killed and fails the test."""

    async def run(
        *args: str,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        give_up_after: float = 120.0,
    ) -> CLIResult:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmtap.cli",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home, env),
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), timeout=give_up_after)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"llmtap {' '.join(args)} still ran after {give_up_after:g} s"
            ) from None
        assert process.returncode is not None
        return CLIResult(process.returncode, out.decode(), err.decode())

    return run


@pytest.fixture
def terminal(home: Path) -> Iterator[Callable[..., pexpect.spawn]]:
    """Start ``python -m llmtap.cli ARGS`` in a pseudo-terminal (100 x 40, xterm colours)."""
    children: list[pexpect.spawn] = []

    def spawn(*args: str, env: Mapping[str, str] | None = None) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "llmtap.cli", *args],
            env=cli_env(home, {"TERM": "xterm-256color", **(env or {})}),
            encoding="utf-8",
            timeout=30,
            dimensions=(40, 100),
        )
        children.append(child)
        return child

    yield spawn
    for child in children:
        if child.isalive():
            child.terminate(force=True)
        child.close()


async def run_and_close_stdout(home: Path, *args: str, keep: int) -> CLIResult:
    """Run ``python -m llmtap.cli ARGS`` with stdout into a pipe whose reader takes the first
    ``keep`` bytes and then closes it (as ``| head -c KEEP`` does); ``out`` is what it took."""
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmtap.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home),
        )
    finally:
        os.close(write_end)
    try:
        taken = b""
        while len(taken) < keep:
            piece = await asyncio.wait_for(
                loop.run_in_executor(None, os.read, read_end, keep - len(taken)), timeout=60
            )
            if not piece:
                break
            taken += piece
    finally:
        os.close(read_end)
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return CLIResult(process.returncode, taken.decode(), err.decode())


def assert_clean_error(result: CLIResult) -> None:
    """Error output is short and has no traceback."""
    assert "Traceback" not in result.err
    assert 1 <= len(result.err.strip().splitlines()) <= 2, result.err
