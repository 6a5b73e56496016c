"""The package's public face: exported names, no side effects at import, the README's commands
(its examples run in tests/docs)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import llmtap

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
