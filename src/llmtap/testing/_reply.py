"""What a test scripts (`Reply`, `ToolCallSpec`) and what the server saw (`RecordedRequest`).

Plain data, no I/O: the dialects turn a `Reply` into body bytes and the writer applies its
pacing and faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["RecordedRequest", "Reply", "StreamErrorStyle", "ToolCallSpec"]

#: How an error that happens after the 200 is written into the stream (see `Reply`).
StreamErrorStyle = Literal["data", "event", "legacy_line"]

_STREAM_ERROR_STYLES: frozenset[str] = frozenset({"data", "event", "legacy_line"})


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the test server received it.

    Attributes:
        method: The HTTP method, upper case (``"POST"``).
        path: The decoded path without the query string (``"/v1/chat/completions"``).
        query: The query parameters; for a repeated name the last value wins.
        headers: The request headers with lower-cased names; repeated headers are joined
            with ``", "``.
        body: The raw request body (``b""`` when there was none).
        connection: Which connection it came on: 1 for the first the server accepted, 2
            for the next... (a client that keeps connections alive sends several requests
            on one).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    connection: int = 0

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` when it is empty or not valid JSON."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


@dataclass
class ToolCallSpec:
    """A tool call the scripted model makes.

    Attributes:
        name: The function name.
        arguments: The arguments. A dict is serialized as compact JSON; a string is sent
            verbatim, so a test can send arguments that are not valid JSON. (Native Ollama
            sends arguments as a JSON object: a string that parses to an object is sent as
            that object, any other string as a JSON string.)
        id: The tool-call id. ``None`` lets the server make one in its dialect's style:
            Ollama ``call_`` + 8 of ``[a-z0-9]``, llama.cpp 32 alphanumerics, vLLM
            ``chatcmpl-tool-<hex>``, OpenAI ``call_`` + 24 alphanumerics.
        chunks: Explicit pieces of the argument string, one per chunk, for the servers that
            stream arguments in fragments (llama.cpp, vLLM, OpenAI); when given, they are the
            arguments (joined), ``arguments`` is ignored, and ``Reply.tool_fragments`` does
            not apply to this call.
    """

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    chunks: list[str] | None = None


@dataclass(kw_only=True)
class Reply:
    """One scripted answer to a chat or Responses API request, with optional pacing and faults.

    Content is sent in this order: the role chunk (OpenAI-style dialects), reasoning pieces,
    text pieces, tool calls, the finish chunk, the usage chunk (only when the request set
    ``stream_options.include_usage``), then the terminator (``data: [DONE]``).

    Faults that fire "after N chunks" count the data chunks written so far, the role chunk
    included, and fire just before the next chunk (or the terminator) would be written. An
    N larger than the number of chunks fires after the last chunk, before the terminator.
    Only one ending fault fires; when several are set, the one with the smallest N wins, and
    on a tie the order is: reset, cut mid-chunk, truncate, malformed, error, invalid UTF-8.

    Faults that shape a stream (``truncate_after``, ``malformed_after``, ``error_after``,
    ``invalid_utf8_after``, ``oversized_line``, ``pings``, ``omit_done``) only apply to
    streamed answers. Pacing, resets, ``cut_mid_chunk_after`` and ``split_writes`` also apply
    to a whole JSON body (which counts as one chunk).

    Over the Responses API (``POST /v1/responses``) the same reply comes out as the dialect's
    typed events (``WIRE-responses.md``), with no ``[DONE]`` (``omit_done`` does nothing
    there); each event is one chunk for the faults. The stream is ``response.created`` and
    ``response.in_progress``, then a reasoning item, a message item and one ``function_call``
    item per tool call, each added, filled by one delta per piece and done, then the terminal
    event; OpenAI, Ollama and vLLM number the events with ``sequence_number`` from 0,
    llama.cpp does not. A request without ``stream`` gets one response object. Per dialect:

    * Reasoning: OpenAI ``response.reasoning_summary_text.*`` inside
      ``response.reasoning_summary_part.*``; Ollama ``response.reasoning_summary_text.*``
      alone; vLLM ``response.reasoning_text.*`` inside content parts; llama.cpp
      ``response.reasoning_text.delta`` only.
    * Tool calls: the arguments in ``tool_fragments`` deltas (or ``ToolCallSpec.chunks``),
      except Ollama's single delta; ``response.function_call_arguments.done`` names the
      function on OpenAI and vLLM, not on Ollama; llama.cpp sends none, and sends every
      item's ``.done`` events at the end. llama.cpp's item id is ``fc_`` and its call id
      ``call_``, each followed by the call's id. On Ollama, text followed by tool calls
      leaves the message without ``.done`` events, gives the first call the message's
      ``output_index`` and lists the message last (its whole answer drops the message).
    * ``finish_reason="length"``: vLLM and OpenAI end with ``response.incomplete``
      (``incomplete_details.reason`` ``"max_output_tokens"``, the last item
      ``incomplete``); Ollama and llama.cpp end with ``response.completed``, as the real
      servers do. OpenAI's ``"content_filter"`` is incomplete for that reason. Any other
      finish ends completed, and ``None`` sends no terminal event.
    * ``usage`` is in the terminal event's response: OpenAI and vLLM count
      ``reasoning_tokens`` (one per reasoning piece), Ollama says 0, llama.cpp has no
      ``output_tokens_details`` and adds its ``timings`` beside the response.
    * ``error_after``: OpenAI sends an ``error`` event then ``response.failed``; Ollama just
      stops (no event, no terminal event); llama.cpp sends ``data: {"error": ...}`` with no
      ``event:`` line, then ends; vLLM drops the connection with no event.
      ``stream_error_style`` ``"data"`` or ``"event"`` picks llama.cpp's or OpenAI's way on
      any dialect.
    * ``status`` other than 200 answers with the dialect's error envelope, as for chat.

    Attributes:
        text: The answer text. Unless ``chunks`` is given it is split into word pieces
            (``"Hello there"`` -> ``"Hello"``, ``" there"``), one piece per chunk.
        chunks: Explicit text pieces, one per chunk; when given, ``text`` is ignored.
        reasoning: Reasoning ("thinking") text, sent before the answer text under the
            dialect's name: Ollama ``/v1`` and vLLM ``reasoning``, Ollama native
            ``thinking``, llama.cpp ``reasoning_content``. OpenAI's chat completions have no
            reasoning field and leave it out (its Responses API sends a reasoning summary).
        reasoning_chunks: Explicit reasoning pieces; when given, ``reasoning`` is ignored.
        tool_calls: Tool calls, sent after the text. Ollama sends each call whole in one
            chunk; llama.cpp, vLLM and OpenAI send fragments (the first one carries
            ``index``, ``id``, ``type``, ``function.name`` and empty arguments, the later
            ones ``index`` and a piece of the argument string).
        tool_fragments: Into how many pieces the argument string of each call is split.
        finish_reason: ``"auto"`` means ``"tool_calls"`` when there are tool calls and
            ``"stop"`` otherwise (native Ollama says ``"stop"`` even after tool calls);
            ``None`` sends no finish chunk at all; any other string is sent as it is.
        usage: ``(prompt_tokens, completion_tokens)``. ``"auto"`` means ``(10, N)`` with N
            the number of text and reasoning chunks sent; ``None`` sends no usage.
        model: The model name the answer reports. ``None`` echoes the request's model
            (llama.cpp reports its own first model name instead).
        status: The HTTP status. Anything other than 200 answers with the dialect's error
            envelope (or ``raw_body``).
        headers: Headers added to the response (``Retry-After``, ``x-request-id``, ...).
        error_message: The message in the error envelope when ``status`` is not 200
            (default: the status phrase).
        error_code: The string ``code`` of OpenAI-shaped error envelopes
            (``"insufficient_quota"``); vLLM and llama.cpp always report the status there.
        error_type: Overrides the ``type`` of the error envelope.
        error_fields: Further fields of the error object, after the dialect's own (such as
            llama.cpp's ``n_prompt_tokens`` and ``n_ctx`` beside an
            ``exceed_context_size_error``). Not for native Ollama, whose error is a string.
        raw_body: Send exactly these bytes as the body, with ``status`` and
            ``content_type``, instead of anything the dialect would send.
        content_type: The content type for ``raw_body`` (default ``text/html``).
        json_instead_of_stream: Answer a streaming request with a whole JSON chat
            completion.
        delay_before_headers: Seconds to wait before the status line is sent.
        delay_between: Seconds to wait before every chunk but the first.
        stall_after: ``(N, seconds)``: after N chunks, wait once, then go on.
        reset_before_headers: Close the connection without sending any response.
        reset_after: After N chunks, drop the connection: the body ends without its chunked
            terminator, so the client sees a broken payload.
        cut_mid_chunk_after: After N chunks, send half of the next chunk's bytes (inside
            an HTTP chunk that announced the full length), then drop the connection.
        truncate_after: After N chunks, end the body cleanly, with no finish chunk and no
            terminator.
        malformed_after: After N chunks, send a line of broken JSON, then end cleanly.
        error_after: After N chunks, send the dialect's in-stream error, then end the
            way that server does (vLLM still sends ``[DONE]``; llama.cpp, OpenAI and native
            Ollama just end; Ollama ``/v1`` loses the message and sends one chunk with
            ``"model": ""`` and a delta of only ``"content": ""``, with no finish chunk).
        stream_error_message: The message of that in-stream error.
        stream_error_code: The integer code of that error, where the dialect has one.
        stream_error_style: Overrides how the error is written (OpenAI-style dialects):
            ``"data"`` a ``data: {"error": ...}`` event, ``"event"`` an
            ``event: error`` event, ``"legacy_line"`` old llama.cpp's
            ``error: {...}`` line followed by ``data: [DONE]``.
        oversized_line: Send one line carrying this many bytes of ``x`` first
            (``data: xxx...`` for SSE), then end the body.
        split_writes: Write every piece of the body in slices of this many bytes, yielding
            to the event loop between them, so lines and multi-byte UTF-8 characters are
            split across network reads.
        pings: Write this many SSE comment lines before every event (``:`` for llama.cpp,
            ``: ping`` elsewhere; native Ollama's NDJSON has no comments and ignores this).
        omit_done: Send the finish chunk but no ``[DONE]``.
        invalid_utf8_after: After N chunks, send a chunk whose JSON string holds the bytes
            ``ff fe`` (invalid UTF-8), then end cleanly.
    """

    text: str = ""
    chunks: list[str] | None = None
    reasoning: str = ""
    reasoning_chunks: list[str] | None = None
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    tool_fragments: int = 3
    finish_reason: str | None = "auto"
    usage: tuple[int, int] | Literal["auto"] | None = "auto"
    model: str | None = None

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str | None = None
    error_code: str | None = None
    error_type: str | None = None
    error_fields: dict[str, Any] = field(default_factory=dict)
    raw_body: bytes | None = None
    content_type: str | None = None
    json_instead_of_stream: bool = False

    delay_before_headers: float = 0.0
    delay_between: float = 0.0
    stall_after: tuple[int, float] | None = None
    reset_before_headers: bool = False
    reset_after: int | None = None
    cut_mid_chunk_after: int | None = None
    truncate_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    stream_error_message: str = "internal error"
    stream_error_code: int | None = 500
    stream_error_style: StreamErrorStyle | None = None
    oversized_line: int | None = None
    split_writes: int | None = None
    pings: int = 0
    omit_done: bool = False
    invalid_utf8_after: int | None = None

    def __post_init__(self) -> None:
        if self.tool_fragments < 1:
            raise ValueError("tool_fragments must be at least 1")
        if self.split_writes is not None and self.split_writes < 1:
            raise ValueError("split_writes must be at least 1 byte")
        if self.pings < 0:
            raise ValueError("pings must not be negative")
        if self.delay_before_headers < 0 or self.delay_between < 0:
            raise ValueError("delays must not be negative")
        if self.stream_error_style is not None and (
            self.stream_error_style not in _STREAM_ERROR_STYLES
        ):
            raise ValueError(
                f"stream_error_style must be one of {sorted(_STREAM_ERROR_STYLES)}, "
                f"not {self.stream_error_style!r}"
            )
        for name in (
            "reset_after",
            "cut_mid_chunk_after",
            "truncate_after",
            "malformed_after",
            "error_after",
            "invalid_utf8_after",
            "oversized_line",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.stall_after is not None and (self.stall_after[0] < 0 or self.stall_after[1] < 0):
            raise ValueError("stall_after must be (chunks >= 0, seconds >= 0)")
