"""The package's public face: exported names, no side effects at import, README examples."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llmtap
from llmtap.testing import TestServer

ROOT = Path(__file__).resolve().parent.parent


def test_exported_members_are_exactly_the_public_names() -> None:
    """__all__ is sorted and lists every public name the package exposes, no more."""
    # imported by tests (or by users, for what needs an extra), never by llmtap itself
    subpackages = {"testing", "cli", "otel", "prometheus", "ray"}
    public = {n for n in vars(llmtap) if not n.startswith("_")} - subpackages
    assert llmtap.__all__ == sorted(llmtap.__all__)
    assert set(llmtap.__all__) - {"__version__"} == public
    for name in llmtap.__all__:
        member = getattr(llmtap, name)
        if isinstance(member, type):
            assert member.__module__.startswith("llmtap"), name


def test_import_has_no_side_effects() -> None:
    """import llmtap configures no logging (beyond a NullHandler on its own logger), touches
    no structlog config, imports no CLI or test server, and defers aiohttp, structlog and
    sqlite3 until they are needed."""
    code = textwrap.dedent(
        """
        import logging, sys
        import llmtap
        assert "llmtap.cli" not in sys.modules
        assert "llmtap.testing" not in sys.modules
        assert "typer" not in sys.modules
        assert "aiohttp" not in sys.modules  # loaded with the first session, not at import
        assert "structlog" not in sys.modules  # loaded with the first log event
        assert "sqlite3" not in sys.modules  # loaded by a client with a log or a cache
        import structlog
        assert not structlog.is_configured()
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        # Only the NullHandler a library adds to its own logger (the logging HOWTO's advice).
        assert [type(h) for h in logging.getLogger("llmtap").handlers] == [logging.NullHandler]
        print("clean")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "clean"
    assert out.stderr == ""


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_starts_with_the_two_commands() -> None:
    """The README opens with one install-and-test command and one `llmtap chat` command."""
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert first_block is not None
    commands = first_block.group(1).strip().splitlines()
    assert len(commands) == 2
    assert "pytest" in commands[0]
    assert "llmtap chat" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci


async def test_readme_library_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's library example runs as written against a loopback Ollama-like server."""
    readme = (ROOT / "README.md").read_text()
    example = _python_blocks(readme)[0]
    async with TestServer(dialect="ollama", models=["qwen3:latest"]) as server:
        monkeypatch.setenv("LLMTAP_ENDPOINT", server.url)
        code = example.replace("asyncio.run(main())", "")
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        await namespace["main"]()  # type: ignore[operator]
        assert len(server.chat_requests) == 1


async def test_readme_streaming_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's streaming example prints the answer, usage and speed as written."""
    from llmtap.testing import Reply

    readme = (ROOT / "README.md").read_text()
    example = next(block for block in _python_blocks(readme) if "client.stream(" in block)
    async with TestServer(dialect="ollama", models=["qwen3:latest"]) as server:
        server.script(Reply(reasoning="Hmm.", text="Cwnd doubles each RTT.", usage=(9, 6)))
        monkeypatch.setenv("LLMTAP_ENDPOINT", server.url)
        namespace: dict[str, object] = {}
        code = example.replace("asyncio.run(main())", "")
        exec(compile(code, "README.md", "exec"), namespace)
        await namespace["main"]()  # type: ignore[operator]
    out = capsys.readouterr().out
    assert "Cwnd doubles each RTT." in out
    assert "\x1b[2mHmm.\x1b[0m" in out
    assert "stop: 6 tokens" in out


async def test_readme_tools_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's tools and parse example runs as written against scripted replies."""
    from llmtap.testing import Reply, ToolCallSpec

    readme = (ROOT / "README.md").read_text()
    example = next(block for block in _python_blocks(readme) if "run_tools(" in block)
    async with TestServer(dialect="ollama", models=["qwen3:latest"]) as server:
        server.script(
            Reply(
                tool_calls=[
                    ToolCallSpec("get_weather", {"city": "Paris"}),
                    ToolCallSpec("get_time", {"timezone": "Europe/Paris"}),
                ]
            ),
            Reply(text="Sunny and 14:05."),
            Reply(text='{"name": "Paris", "country": "France", "population": 2102650}'),
        )
        monkeypatch.setenv("LLMTAP_ENDPOINT", server.url)
        namespace: dict[str, object] = {}
        code = example.replace("asyncio.run(main())", "")
        exec(compile(code, "README.md", "exec"), namespace)
        await namespace["main"]()  # type: ignore[operator]
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines[:2]) == [  # the calls run concurrently: either may finish first
        "get_time({'timezone': 'Europe/Paris'}) -> 14:05",
        "get_weather({'city': 'Paris'}) -> sunny, 21 °C in Paris",
    ]
    assert lines[2:] == ["Sunny and 14:05.", "Paris 2102650"]


async def test_readme_router_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Router example runs as written, with its three URLs pointed at three
    loopback Ollama-like servers."""
    readme = (ROOT / "README.md").read_text()
    example = next(block for block in _python_blocks(readme) if "Router(" in block)
    async with (
        TestServer(dialect="ollama", models=["qwen3:latest"]) as one,
        TestServer(dialect="ollama", models=["qwen3:latest"]) as two,
        TestServer(dialect="ollama", models=["qwen3:latest"]) as three,
    ):
        code = example.replace("asyncio.run(main())", "")
        for name, server in (("gpu1", one), ("gpu2", two), ("gpu3", three)):
            code = code.replace(f"http://{name}:11434", server.url)
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        await namespace["main"]()  # type: ignore[operator]
        answered = sum(len(server.chat_requests) for server in (one, two, three))
    out = capsys.readouterr().out
    assert "echo: Why is the sky blue?" in out
    assert "[answered by " in out
    assert answered == 1
