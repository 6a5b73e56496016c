"""The error tree drawn in the streaming guide is llmtap's real one: every exception class
that ``llmtap`` exports appears once, under its real parent."""

from __future__ import annotations

import re

import llmtap
from tests.docs.markdown import ROOT, blocks

GUIDE = ROOT / "docs" / "guides" / "streaming.md"


def drawn_tree() -> dict[str, str]:
    """Each class of the drawing → its parent (as drawn by indentation, or in brackets)."""
    [tree] = [block for block in blocks(GUIDE, "text") if block.body.startswith("LLMError\n")]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in tree.body.splitlines():
        found = re.match(r"^([│├└─\s]*)(LLM\w+|\w+Error)\b(?: \((\w+)\))?", line)
        if found is None:
            continue  # a description's second line
        name = found.group(2)
        depth = len(found.group(1)) // 4
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = found.group(3) or (stack[-1][1] if stack else "Exception")
        stack.append((depth, name))
    return parents


def test_the_guide_draws_the_real_error_tree() -> None:
    exported = {
        name: value
        for name in llmtap.__all__
        if isinstance(value := getattr(llmtap, name), type) and issubclass(value, BaseException)
    }
    real = {name: cls.__bases__[0].__name__ for name, cls in exported.items()}
    assert drawn_tree() == real
