"""The examples of the README and the docs, and a file that uses the public API as a user
would, pass ``mypy --strict`` in a user's project: no pydantic mypy plugin (issue 21, item 4)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: mypy as a user's project runs it: strict, and no plugins (the pydantic plugin is ours).
USER_CONFIG = "[mypy]\nstrict = true\npython_version = 3.11\n"


def documentation() -> list[Path]:
    """The README and every page of the docs."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def mypy(directory: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` (no plugins) over every .py file in ``directory``."""
    (directory / "mypy.ini").write_text(USER_CONFIG)
    files = sorted(str(path.name) for path in directory.glob("*.py"))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-error-summary", *files],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_docs_have_python_examples() -> None:
    """The check below has something to check: the README's example and the guides'."""
    assert python_blocks(ROOT / "README.md")
    assert sum(len(python_blocks(path)) for path in documentation()) >= 15


def test_docs_examples_and_the_api_file_pass_mypy_strict_without_plugins(
    tmp_path: Path,
) -> None:
    """Every ```python block of the README (and docs/), and tests/typing/api.py, type-check
    with ``mypy --strict`` as a user's project runs it, without the pydantic plugin."""
    for path in documentation():
        for number, block in enumerate(python_blocks(path)):
            name = f"{path.stem.lower()}_{number}.py"
            (tmp_path / name).write_text(block)
    (tmp_path / "api.py").write_text((ROOT / "tests" / "typing" / "api.py").read_text())
    out = mypy(tmp_path)
    assert out.stdout.splitlines() + out.stderr.splitlines() == []
    assert out.returncode == 0
