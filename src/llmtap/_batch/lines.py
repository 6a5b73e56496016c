"""A batch's input lines: OpenAI's Batch API format or llmtap's short form, one request per
line, read as they are needed (memory does not grow with the file).

OpenAI's format::

    {"custom_id": "t-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [...], "temperature": 0}}
    {"custom_id": "e-1", "method": "POST", "url": "/v1/embeddings",
     "body": {"model": "nomic-embed-text", "input": ["a", "b"]}}

The short form: ``{"custom_id"?, "messages": [...]}`` or ``{"custom_id"?, "prompt": "..."}``,
any other key a request parameter (``"temperature": 0``). A line without ``custom_id`` gets
its line number (``"17"``). A line that cannot be used becomes an error line of the output,
with its line number; it never ends the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from llmtap._errors import BatchFileError

__all__ = ["BadLine", "Defaults", "Job", "parse", "read", "scan"]

CHAT_URL = "/v1/chat/completions"
EMBEDDINGS_URL = "/v1/embeddings"
_URLS = {CHAT_URL: "chat", "/chat/completions": "chat", EMBEDDINGS_URL: "embeddings"}
#: Keys of a chat body that are not request parameters.
_CHAT_OWN = frozenset({"model", "messages", "stream", "stream_options"})
_EMBEDDINGS_OWN = frozenset({"model", "input", "encoding_format", "user"})
_SHORT_OWN = frozenset({"custom_id", "messages", "prompt", "model"})
#: The 64 bits of an id's hash the duplicate check uses.
_KEY = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class Defaults:
    """What the caller gives every line.

    Attributes:
        model: The model of every line (over a body's own, so that a file made for
            OpenAI runs against a local server unchanged); ``None``: each line's own.
        params: Request parameters for lines that do not set them.
        system: A system message put first in every chat line that has none.
    """

    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    system: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One request to make."""

    line: int
    custom_id: str
    kind: Literal["chat", "embeddings"]
    model: str | None
    #: The conversation (chat) or the texts (embeddings).
    messages: list[Any] | None
    texts: list[str] | None
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that cannot be sent, and why."""

    line: int
    custom_id: str
    message: str


def custom_id_of(data: Any, line: int) -> str:
    """The line's ``custom_id`` (its line number when it has none, or is not a string)."""
    if isinstance(data, dict):
        found = data.get("custom_id")
        if isinstance(found, str) and found:
            return found
    return str(line)


def parse(raw: bytes, line: int, defaults: Defaults) -> Job | BadLine:
    """The request on line ``line`` (1-based), or why there is none."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BadLine(line, str(line), f"line {line} is not JSON: {exc}")
    custom_id = custom_id_of(data, line)
    if not isinstance(data, dict):
        return BadLine(line, custom_id, f"line {line} is not a JSON object")
    found = data.get("custom_id")
    if found is not None and not (isinstance(found, str) and found):
        return BadLine(line, custom_id, f"line {line}: custom_id must be a non-empty string")
    try:
        if "body" in data or "url" in data:
            return _openai(data, line, custom_id, defaults)
        return _short(data, line, custom_id, defaults)
    except _Refused as exc:
        return BadLine(line, custom_id, f"line {line}: {exc}")


class _Refused(Exception):
    pass


def _openai(data: dict[str, Any], line: int, custom_id: str, defaults: Defaults) -> Job:
    method = data.get("method", "POST")
    if method != "POST":
        raise _Refused(f"method {method!r}: only POST is sent")
    url = data.get("url")
    kind = _URLS.get(url) if isinstance(url, str) else None
    if kind is None:
        raise _Refused(f"url {url!r} is not supported (use {CHAT_URL!r} or {EMBEDDINGS_URL!r})")
    body = data.get("body")
    if not isinstance(body, dict):
        raise _Refused("body must be a JSON object")
    model = defaults.model or _model(body.get("model"))
    if kind == "embeddings":
        encoding = body.get("encoding_format", "float")
        if encoding != "float":
            raise _Refused(f"encoding_format {encoding!r} is not supported (only 'float')")
        texts = _texts(body.get("input"))
        params = {k: v for k, v in body.items() if k not in _EMBEDDINGS_OWN}
        return Job(line, custom_id, "embeddings", model, None, texts, params)
    messages = _messages(body.get("messages"), defaults)
    params = {**defaults.params, **{k: v for k, v in body.items() if k not in _CHAT_OWN}}
    return Job(line, custom_id, "chat", model, messages, None, params)


def _short(data: dict[str, Any], line: int, custom_id: str, defaults: Defaults) -> Job:
    if "messages" in data:
        messages = _messages(data["messages"], defaults)
    elif "prompt" in data:
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise _Refused("prompt must be a non-empty string")
        messages = _messages([{"role": "user", "content": prompt}], defaults)
    else:
        raise _Refused(
            'no request: give "messages" or "prompt" (or OpenAI\'s batch format: "url" and "body")'
        )
    model = defaults.model or _model(data.get("model"))
    params = {**defaults.params, **{k: v for k, v in data.items() if k not in _SHORT_OWN}}
    return Job(line, custom_id, "chat", model, messages, None, params)


def _model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _Refused("model must be a non-empty string")
    return value


def _messages(value: Any, defaults: Defaults) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _Refused("messages must be a non-empty list")
    if defaults.system and not (isinstance(value[0], dict) and value[0].get("role") == "system"):
        return [{"role": "system", "content": defaults.system}, *value]
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(text, str) for text in value):
        return value
    raise _Refused("input must be a string or a non-empty list of strings")


def read(path: Path) -> Iterator[tuple[int, bytes]]:
    """Each non-blank line of the input with its number (1-based), read as needed."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            if raw.strip():
                yield number, raw


@dataclass(frozen=True, slots=True)
class Scan:
    """What one pass over the input found."""

    lines: int


def scan(path: Path) -> Scan:
    """Count the input's lines and refuse duplicate ``custom_id``s, before anything is sent.

    Memory stays small for any file: ids pass through a Bloom filter of 12 bits a line (1.5 MB
    for a million lines, about 1 % false alarms); the few ids it says may have been seen are
    read again exactly, so only true duplicates are refused.

    Raises:
        BatchFileError: The file cannot be read, or two lines share a ``custom_id`` (the
            message names them).
    """
    try:
        bits = max(1 << 16, 12 * _newlines(path))
        bitmap = bytearray(bits // 8 + 1)
        suspects: set[int] = set()
        lines = 0
        for number, raw in read(path):
            lines += 1
            key = hash(_scanned_id(raw, number)) & _KEY
            first, step = key & 0xFFFF_FFFF, (key >> 32) | 1
            one, two, three = first % bits, (first + step) % bits, (first + 2 * step) % bits
            a, b, c = one >> 3, two >> 3, three >> 3
            x, y, z = 1 << (one & 7), 1 << (two & 7), 1 << (three & 7)
            if bitmap[a] & x and bitmap[b] & y and bitmap[c] & z:
                suspects.add(key)  # maybe seen before: checked exactly below
            else:
                bitmap[a] |= x
                bitmap[b] |= y
                bitmap[c] |= z
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror or exc}", path=path) from exc
    del bitmap
    if suspects:
        _refuse_duplicates(path, suspects)
    return Scan(lines)


def _newlines(path: Path) -> int:
    """How many lines ``path`` has, at most (a quick count of its newlines)."""
    count = 1
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
    return count


def _scanned_id(raw: bytes, number: int) -> str:
    try:
        return custom_id_of(orjson.loads(raw), number)
    except orjson.JSONDecodeError:
        return str(number)


def _refuse_duplicates(path: Path, suspects: set[int]) -> None:
    where: dict[str, list[int]] = {}
    for number, raw in read(path):
        custom_id = _scanned_id(raw, number)
        if hash(custom_id) & _KEY in suspects:
            where.setdefault(custom_id, []).append(number)
    duplicates = {custom_id: lines for custom_id, lines in where.items() if len(lines) > 1}
    if not duplicates:
        return
    shown = "; ".join(
        f"{custom_id!r} on lines {', '.join(map(str, lines[:5]))}"
        + (f" (and {len(lines) - 5} more)" if len(lines) > 5 else "")
        for custom_id, lines in list(duplicates.items())[:10]
    )
    more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
    raise BatchFileError(
        f"{path}: {len(duplicates)} custom_id(s) appear on more than one line: {shown}{more}. "
        "Every line needs its own custom_id (a line without one gets its line number); "
        "nothing was sent",
        path=path,
    )
