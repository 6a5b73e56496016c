"""Turn a scripted `Reply` into the body a given server would send (`build_chat_plan`,
`build_responses_plan`).

Pure code, no I/O: the result is a `BodyPlan` (the body pieces plus the bytes each fault
writes), which the writer in `_writer` sends. The per-server shapes live in `_sse_shapes` and
`_ndjson_shape` (chat) and `_responses_shapes` (the Responses API); the shared pieces in
`_wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from llmtap.testing._ndjson_shape import OllamaNativeShape
from llmtap.testing._reply import Reply
from llmtap.testing._responses_shapes import (
    LlamaCppResponsesShape,
    OllamaResponsesShape,
    OpenAIResponsesShape,
    VllmResponsesShape,
)
from llmtap.testing._sse_shapes import LlamaCppShape, OllamaShape, OpenAIShape, VllmShape
from llmtap.testing._wire import (
    Call,
    ChatFacts,
    Content,
    Flavor,
    Shape,
    error_envelope,
    split_words,
)

__all__ = ["BodyPlan", "ResponsesFlavor", "build_chat_plan", "build_responses_plan"]

#: The servers whose Responses API the test server imitates.
ResponsesFlavor = Literal["openai", "ollama", "llamacpp", "vllm"]


@dataclass(frozen=True)
class BodyPlan:
    """One answer, ready to write: status, headers and the body in pieces.

    Attributes:
        status: The HTTP status.
        content_type: The ``Content-Type`` header.
        headers: Further headers (from the reply).
        streamed: ``True`` for a chunked SSE/NDJSON stream; ``False`` for a whole body sent
            with ``Content-Length`` (then ``chunks`` holds exactly one piece).
        chunks: The data chunks, each a complete SSE event or NDJSON line.
        terminator: What ends a good stream (``data: [DONE]``), or ``b""``.
        ping: One keep-alive comment, or ``b""`` where the format has none.
        error_tail: What ``error_after`` writes (the error event and whatever follows it).
        error_resets: Whether the connection is dropped after ``error_tail`` rather than
            the body ended cleanly.
        malformed: What ``malformed_after`` writes.
        invalid_utf8: What ``invalid_utf8_after`` writes.
        oversized: What ``oversized_line`` writes.
    """

    status: int
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    streamed: bool = False
    chunks: tuple[bytes, ...] = ()
    terminator: bytes = b""
    ping: bytes = b""
    error_tail: bytes = b""
    error_resets: bool = False
    malformed: bytes = b""
    invalid_utf8: bytes = b""
    oversized: bytes = b""


_SHAPES: dict[Flavor, type[Shape]] = {
    "openai": OpenAIShape,
    "ollama": OllamaShape,
    "ollama_native": OllamaNativeShape,
    "llamacpp": LlamaCppShape,
    "vllm": VllmShape,
}
_RESPONSES_SHAPES: dict[ResponsesFlavor, type[Shape]] = {
    "openai": OpenAIResponsesShape,
    "ollama": OllamaResponsesShape,
    "llamacpp": LlamaCppResponsesShape,
    "vllm": VllmResponsesShape,
}


def _content(shape: Shape, reply: Reply) -> Content:
    text = list(reply.chunks) if reply.chunks is not None else split_words(reply.text)
    reasoning: list[str] = []
    if shape.has_reasoning:
        if reply.reasoning_chunks is not None:
            reasoning = list(reply.reasoning_chunks)
        else:
            reasoning = split_words(reply.reasoning)
    calls = []
    for index, spec in enumerate(reply.tool_calls):
        raw: dict[str, Any] | str = spec.arguments
        # An llmtap ToolCall (id, name, arguments) scripts a call as well as a ToolCallSpec.
        pieces: list[str] | None = getattr(spec, "chunks", None)
        if pieces is not None:
            raw = "".join(pieces)
        calls.append(
            Call(
                index=index,
                id=spec.id if spec.id is not None else shape.new_tool_call_id(),
                name=spec.name,
                arguments=raw if isinstance(raw, str) else orjson.dumps(raw).decode(),
                raw=raw,
                chunks=tuple(pieces) if pieces is not None else None,
            )
        )
    finish = reply.finish_reason
    if finish == "auto":
        finish = shape.auto_finish(bool(calls))
    usage = (10, len(text) + len(reasoning)) if reply.usage == "auto" else reply.usage
    return Content(text, reasoning, calls, finish, usage)


def build_chat_plan(flavor: Flavor, reply: Reply, facts: ChatFacts) -> BodyPlan:
    """Turn a scripted reply into the chat completion the flavor's server would send.

    Args:
        flavor: Which server to imitate.
        reply: The scripted answer.
        facts: What the request asked for, and the model to report.

    Returns:
        The plan the writer sends: one JSON body, or the chunks of a stream plus the bytes
        each fault writes.
    """
    return _plan(_SHAPES[flavor](facts), reply, facts)


def build_responses_plan(flavor: ResponsesFlavor, reply: Reply, facts: ChatFacts) -> BodyPlan:
    """Turn a scripted reply into the Responses API answer the flavor's server would send.

    Args:
        flavor: Which server to imitate.
        reply: The scripted answer.
        facts: What the request asked for (``facts.request`` is its body), and the model to
            report.

    Returns:
        The plan the writer sends: one JSON response object, or the events of a stream (one
        chunk each) plus the bytes each fault writes.
    """
    return _plan(_RESPONSES_SHAPES[flavor](facts), reply, facts)


def _plan(shape: Shape, reply: Reply, facts: ChatFacts) -> BodyPlan:
    headers = dict(reply.headers)
    if reply.raw_body is not None:
        content_type = reply.content_type or "text/html; charset=utf-8"
        return BodyPlan(reply.status, content_type, headers, chunks=(reply.raw_body,))
    if reply.status != 200:
        envelope = error_envelope(
            shape.flavor,
            reply.status,
            reply.error_message,
            code=reply.error_code,
            error_type=reply.error_type,
            fields=reply.error_fields,
        )
        return BodyPlan(
            reply.status, shape.json_content_type, headers, chunks=(shape.dumps(envelope),)
        )
    content = _content(shape, reply)
    if not facts.stream or reply.json_instead_of_stream:
        body = shape.dumps(shape.completion(content))
        return BodyPlan(200, shape.json_content_type, headers, chunks=(body,))
    chunks = tuple(shape.stream_frames(content, reply.tool_fragments))

    def position(after: int | None) -> int:
        """How many chunks go out before a fault set to fire after ``after`` chunks."""
        return len(chunks) if after is None else min(after, len(chunks))

    return BodyPlan(
        200,
        shape.stream_content_type,
        headers,
        streamed=True,
        chunks=chunks,
        terminator=shape.terminator,
        ping=shape.ping,
        error_tail=shape.stream_error(
            reply.stream_error_message,
            reply.stream_error_code,
            reply.stream_error_style,
            sequence=position(reply.error_after),
        ),
        error_resets=shape.error_resets and reply.stream_error_style is None,
        malformed=shape.malformed(),
        invalid_utf8=shape.invalid_utf8(sequence=position(reply.invalid_utf8_after)),
        oversized=b"" if reply.oversized_line is None else shape.oversized(reply.oversized_line),
    )
