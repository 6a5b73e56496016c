"""A Griffe extension (mkdocs.yml loads it) that reads llmtap's docstrings as they are written.

llmtap's docstrings are Google style with two habits Griffe does not share:

- ``Example:`` heads a section of doctests. Griffe knows only ``Examples:`` as that section and
  renders ``Example:`` as an admonition of Markdown, where ``>>>`` lines become nested quotes
  and ``x[0]["text"]`` reads as a Markdown link. Here ``Example:`` becomes ``Examples:``.
- Sphinx roles (``:class:`LLMClient```, ``:meth:`~LLMClient.stream```) name other objects.
  Markdown has no roles, so each becomes plain code: ``LLMClient``, ``stream`` (a leading
  ``~`` keeps the last part only, as Sphinx shows it).

Only the text Griffe renders changes; the sources stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^Example:[ \t]*$", re.MULTILINE)
_SPHINX_ROLE = re.compile(r":(?:class|meth|func|data|attr|exc|mod|obj):`(?P<target>~?[^`]+)`")


def _role_as_code(match: re.Match[str]) -> str:
    target = match["target"]
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"``{target}``"


def rewrite(text: str) -> str:
    """The docstring ``text`` as Griffe's Google parser and Markdown should read it."""
    return _SPHINX_ROLE.sub(_role_as_code, _EXAMPLE_HEADING.sub("Examples:", text))


class LlmtapDocstrings(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module's docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by Griffe for each module, class, function and attribute it loads."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
