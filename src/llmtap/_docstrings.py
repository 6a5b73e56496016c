"""Read a function's docstring: its description and the description of each parameter.

Pure text in, text out. Three styles are understood, and may not be mixed within one docstring:

- Google: an ``Args:`` (or ``Arguments:``, ``Parameters:``, ``Keyword Args:``...) section whose
  entries read ``name (type): description``.
- NumPy: a ``Parameters`` heading underlined with dashes, entries ``name : type`` with the
  description indented below.
- reST (Sphinx): ``:param name: description`` or ``:param type name: description`` fields.

The description is the text before the first section, field or doctest, with each paragraph's
lines joined by spaces.
"""

from __future__ import annotations

import inspect
import re
from typing import NamedTuple

__all__ = ["Docstring", "parse_docstring"]

#: Google section headings (``Args:``); the ones whose entries describe parameters are below.
_GOOGLE_HEADING = re.compile(
    r"(?P<name>Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Kwargs|"
    r"Other Parameters|Returns?|Yields?|Raises|Exceptions?|Examples?|Notes?|Attributes|"
    r"See Also|Warnings?|Todo|References|Methods)\s*:\s*"
)
_GOOGLE_PARAM_SECTIONS = frozenset(
    {
        "Args",
        "Arguments",
        "Parameters",
        "Params",
        "Keyword Args",
        "Keyword Arguments",
        "Kwargs",
        "Other Parameters",
    }
)
#: ``name (type): description``, ``*args: description``, ``name: description``.
_GOOGLE_ENTRY = re.compile(r"\*{0,2}(?P<name>\w+)\s*(?:\([^)]*\))?\s*:(?:\s+(?P<text>.*))?")

_NUMPY_UNDERLINE = re.compile(r"-{3,}\s*")
_NUMPY_PARAM_SECTIONS = frozenset({"Parameters", "Other Parameters", "Keyword Arguments"})
#: ``x : int``, ``x, y : float``, ``x``.
_NUMPY_ENTRY = re.compile(r"(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?")

#: ``:param name: text``, ``:param int name: text``, ``:keyword name: text``.
_REST_FIELD = re.compile(r":(?P<kind>\w+)(?:\s+(?P<args>[^:]*))?:(?:\s+(?P<text>.*))?")
_REST_PARAM_KINDS = frozenset({"param", "parameter", "arg", "argument", "key", "keyword"})


class Docstring(NamedTuple):
    """What a docstring says about a function.

    Attributes:
        description: The text before the first section (paragraphs kept apart by a blank
            line, each paragraph's lines joined by spaces); ``""`` if there is none.
        params: Each documented parameter's description, by name (without ``*``).
    """

    description: str
    params: dict[str, str]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(lines: list[str]) -> str:
    """Lines as text: each paragraph's lines joined by spaces, paragraphs by a blank line."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join(" ".join(words) for words in paragraphs if words)


def _is_numpy_heading(lines: list[str], index: int) -> bool:
    return (
        index + 1 < len(lines)
        and bool(lines[index].strip())
        and _indent(lines[index]) == 0
        and _NUMPY_UNDERLINE.fullmatch(lines[index + 1].strip()) is not None
    )


def _section_starts(line: str, lines: list[str], index: int) -> bool:
    """Whether ``line`` opens a section: a Google heading, a NumPy heading, a reST field or
    a doctest."""
    stripped = line.strip()
    if _indent(line) == 0 and _GOOGLE_HEADING.fullmatch(stripped):
        return True
    if _is_numpy_heading(lines, index):
        return True
    return stripped.startswith(">>>") or (
        _indent(line) == 0 and _REST_FIELD.fullmatch(stripped) is not None
    )


def _google_params(lines: list[str], params: dict[str, str]) -> None:
    index = 0
    while index < len(lines):
        heading = _GOOGLE_HEADING.fullmatch(lines[index].strip())
        index += 1
        if heading is None or _indent(lines[index - 1]) != 0:
            continue
        if heading.group("name") not in _GOOGLE_PARAM_SECTIONS:
            continue
        base: int | None = None
        name: str | None = None
        text: list[str] = []
        while index < len(lines):
            line = lines[index]
            if not line.strip():
                index += 1
                continue
            if _indent(line) == 0:
                break  # back at the margin: the section is over
            if base is None:
                base = _indent(line)
            entry = _GOOGLE_ENTRY.fullmatch(line.strip()) if _indent(line) <= base else None
            if entry is not None:
                if name is not None:
                    params[name] = _join(text)
                name, text = entry.group("name"), [entry.group("text") or ""]
            elif name is not None:
                text.append(line)
            index += 1
        if name is not None:
            params[name] = _join(text)


def _numpy_params(lines: list[str], params: dict[str, str]) -> None:
    index = 0
    while index < len(lines):
        if not _is_numpy_heading(lines, index):
            index += 1
            continue
        section = lines[index].strip()
        index += 2
        if section not in _NUMPY_PARAM_SECTIONS:
            continue
        names: list[str] = []
        text: list[str] = []
        while index < len(lines) and not _is_numpy_heading(lines, index):
            line = lines[index]
            entry = _NUMPY_ENTRY.fullmatch(line.strip()) if _indent(line) == 0 else None
            if entry is not None:
                for name in names:
                    params[name] = _join(text)
                names = [part.strip().lstrip("*") for part in entry.group("names").split(",")]
                text = []
            elif names:
                text.append(line)
            index += 1
        for name in names:
            params[name] = _join(text)


def _rest_params(lines: list[str], params: dict[str, str]) -> None:
    name: str | None = None
    text: list[str] = []
    for line in lines:
        field = _REST_FIELD.fullmatch(line.strip()) if _indent(line) == 0 else None
        if name is not None and (field is not None or _indent(line) == 0):
            params[name] = _join(text)  # a field ends at the next field or unindented line
            name, text = None, []
        if field is not None:
            words = (field.group("args") or "").split()
            if field.group("kind") in _REST_PARAM_KINDS and words:
                name, text = words[-1].lstrip("*"), [field.group("text") or ""]
        elif name is not None:
            text.append(line)
    if name is not None:
        params[name] = _join(text)


def parse_docstring(doc: str | None) -> Docstring:
    """Split a docstring into its description and its parameter descriptions.

    Args:
        doc: The docstring as written (indentation is removed here), or ``None``.

    Returns:
        The description and a dict of parameter descriptions (empty ones are left out).

    Example:
        >>> parse_docstring('''Get the weather.
        ...
        ...     Args:
        ...         city: The city's name.
        ... ''')
        Docstring(description='Get the weather.', params={'city': "The city's name."})
    """
    if not doc:
        return Docstring("", {})
    lines = inspect.cleandoc(doc).splitlines()
    end = next(
        (i for i, line in enumerate(lines) if _section_starts(line, lines, i)),
        len(lines),
    )
    params: dict[str, str] = {}
    _google_params(lines, params)
    _numpy_params(lines, params)
    _rest_params(lines, params)
    return Docstring(_join(lines[:end]), {name: text for name, text in params.items() if text})
