"""The fenced blocks of the README and the docs pages, as the tests that run them need them.

A block may be preceded (on the line just above its fence) by an HTML comment naming how the
tests run it, which the rendered page does not show:

- ``<!-- example: NAME -->`` before a ```python block: the scenario of ``tests/docs/scenarios.py``
  that sets up its servers and checks what it printed (default: ``"ollama"``).
- ``<!-- transcript: NAME -->`` before a ```console block: the same for a transcript (default:
  ``"ollama"``).

A ```console block is a transcript: each ``$ `` line a command, the lines below it until the
next command what it printed (stdout and stderr, as a terminal shows them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(
    r"^(?:<!-- (?P<kind>example|transcript): (?P<name>[\w-]+) -->\n)?"
    r"```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)


@dataclass(frozen=True)
class Block:
    """One fenced block.

    Attributes:
        path: The Markdown file.
        line: The line of its opening fence (1-based).
        lang: The fence's language (``python``, ``console``, ...).
        body: The text between the fences.
        scenario: The name its comment gives, else ``"ollama"``.
        start: Where the body starts in the file's text.
        end: Where the body ends in the file's text.
    """

    path: Path
    line: int
    lang: str
    body: str
    scenario: str
    start: int
    end: int

    @property
    def where(self) -> str:
        """``path:line``, relative to the repository."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Step:
    """A transcript's command and the lines it printed, as the page shows them."""

    command: str
    output: str


def documents() -> list[Path]:
    """The README and every page of the docs site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def blocks(path: Path, lang: str | None = None) -> list[Block]:
    """The fenced blocks of ``path`` (of the language ``lang``, if given), in order."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if lang is not None and match["lang"] != lang:
            continue
        fence = match.start("lang") - 3
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, fence) + 1,
                lang=match["lang"],
                body=match["body"],
                scenario=match["name"] or "ollama",
                start=match.start("body"),
                end=match.end("body"),
            )
        )
    return found


def steps(body: str) -> list[Step]:
    """A transcript's commands, each with what it printed."""
    found: list[Step] = []
    command: str | None = None
    output: list[str] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            if command is not None:
                found.append(Step(command, "\n".join(output)))
            command, output = line[2:], []
        elif command is None:
            raise ValueError(f"a transcript starts with a command ($ ...), not {line!r}")
        else:
            output.append(line)
    if command is not None:
        found.append(Step(command, "\n".join(output)))
    return found


def transcript(steps_: list[Step]) -> str:
    """The body of a transcript block made of ``steps_``."""
    lines = []
    for step in steps_:
        lines.append(f"$ {step.command}")
        if step.output:
            lines.append(step.output)
    return "\n".join(lines) + "\n"


def example(marker: str) -> Block:
    """The one Python example, in the README or the docs, that holds ``marker``."""
    found = [
        block for path in documents() for block in blocks(path, "python") if marker in block.body
    ]
    if len(found) != 1:
        where = ", ".join(block.where for block in found) or "none"
        raise LookupError(f"{len(found)} Python examples hold {marker!r} ({where}), not one")
    return found[0]
