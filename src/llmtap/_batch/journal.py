"""A batch's output and errors files: OpenAI's batch output format, one line per request,
appended and handed to the operating system as each request completes (a process killed
at any moment loses at most the requests in flight, never a written line).

A success line::

    {"id": "batch_req_...", "custom_id": "t-1",
     "response": {"status_code": 200, "request_id": "req_...", "body": {chat.completion}},
     "error": null}

A failure, in the errors file::

    {"id": "batch_req_...", "custom_id": "t-1", "response": null,
     "error": {"code": "503", "message": "...", "line": 17}}

Resuming reads both files, repairs a last line that a crash left half-written, and gives
the ``custom_id``s already there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from llmtap._errors import BatchFileError
from llmtap._results import ChatResult

__all__ = ["Journal", "chat_completion", "embeddings_list", "error_line", "success_line"]

#: finish_reason values OpenAI's chat.completion allows; any other is reported as "stop".
_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def _id(prefix: str) -> str:
    return f"{prefix}{os.urandom(16).hex()}"


def chat_completion(
    result: ChatResult, response_id: str | None, model: str | None
) -> dict[str, Any]:
    """A ``ChatResult`` as OpenAI's ``chat.completion`` object, whatever the server's
    dialect: text, reasoning (``reasoning_content``), tool calls (arguments as JSON text),
    the finish reason and, where the server reported it, the usage."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.text if result.text or not result.tool_calls else None,
    }
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": orjson.dumps(call.arguments).decode(),
                },
            }
            for call in result.tool_calls
        ]
    reason = result.finish_reason or "stop"
    body: dict[str, Any] = {
        "id": response_id or _id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model or model or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reason if reason in _FINISH_REASONS else "stop",
                "logprobs": None,
            }
        ],
    }
    usage = result.usage
    if usage.prompt_tokens is not None and usage.completion_tokens is not None:
        body["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        }
    return body


def embeddings_list(vectors: Sequence[Sequence[float]], model: str | None) -> dict[str, Any]:
    """Vectors as OpenAI's embeddings ``list`` object (usage 0: llmtap's ``embed()`` gives
    the vectors alone)."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": list(vector)}
            for index, vector in enumerate(vectors)
        ],
        "model": model or "",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def success_line(custom_id: str, body: dict[str, Any]) -> bytes:
    """The output line of a request that got its answer (its ``request_id`` made here:
    llmtap does not keep the server's ``x-request-id`` of an answer)."""
    return orjson.dumps(
        {
            "id": _id("batch_req_"),
            "custom_id": custom_id,
            "response": {
                "status_code": 200,
                "request_id": _id("req_"),
                "body": body,
            },
            "error": None,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def error_line(custom_id: str, code: str, message: str, line: int) -> bytes:
    """The errors-file line of a request that failed (or a line that could not be sent)."""
    return orjson.dumps(
        {
            "id": _id("batch_req_"),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message, "line": line},
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


class Journal:
    """The output and errors files of one run.

    Args:
        output: Where answers go.
        errors: Where failures go.
    """

    def __init__(self, output: Path, errors: Path) -> None:
        self.output = output
        self.errors = errors
        self._files: list[int] = []

    def done(self) -> set[str]:
        """The ``custom_id``s already in the output and errors files (after repairing a last
        line a crash left half-written)."""
        found: set[str] = set()
        for path in (self.output, self.errors):
            if path.exists():
                found.update(_read_ids(path))
        return found

    def refuse_existing(self) -> None:
        """Raise when a file with lines in it is there: a new run would mix its answers with
        an old run's (resuming is what continues one)."""
        for path in (self.output, self.errors):
            if path.exists() and path.stat().st_size > 0:
                raise BatchFileError(
                    f"{path} already has lines: resume the run that wrote them (--resume, or "
                    "resume=True), or move the file away",
                    path=path,
                )

    def open(self) -> None:
        """Open both files for appending (created when missing)."""
        for path in (self.output, self.errors):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._files.append(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
            except OSError as exc:
                self.close()
                raise BatchFileError(
                    f"cannot write {path}: {exc.strerror or exc}", path=path
                ) from exc

    def write(self, line: bytes, *, failed: bool = False) -> None:
        """Append one whole line, in one write: it is in the operating system's hands when
        this returns (a process killed afterwards keeps it)."""
        descriptor = self._files[1 if failed else 0]
        view = memoryview(line)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]

    def close(self) -> None:
        for descriptor in self._files:
            os.close(descriptor)
        self._files = []


def _read_ids(path: Path) -> list[str]:
    """The ``custom_id`` of every line of ``path``; a last line cut short (no newline, or
    not JSON) is cut off the file."""
    ids: list[str] = []
    good_until = 0
    try:
        with path.open("rb+") as file:
            for number, raw in enumerate(file, 1):
                whole = raw.endswith(b"\n")
                try:
                    data = orjson.loads(raw) if whole else None
                except orjson.JSONDecodeError:
                    data = None
                if isinstance(data, dict) and isinstance(data.get("custom_id"), str):
                    ids.append(data["custom_id"])
                    good_until += len(raw)
                    continue
                if file.read(1):  # not the last line
                    raise BatchFileError(
                        f"{path}, line {number}, is not a line a batch wrote (not JSON with a "
                        "custom_id); a file llmtap wrote only ever has a cut last line, after "
                        "a crash",
                        path=path,
                    )
                file.truncate(good_until)  # the half-written last line of a crash
                break
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror or exc}", path=path) from exc
    return ids
