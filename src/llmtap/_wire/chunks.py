"""A streamed answer's body as items: bytes in, chunk dicts (or what a sink makes of them) out.

The HTTP reader feeds every read of the body to one of these decoders (``b""`` at the end of
the body) and hands on the items it returns. The decoder knows what the stream means: which
payload ends it (``[DONE]``, a line with ``done: true``, a pull's ``success``), which ends too
early (a ``[DONE]`` before any ``finish_reason``, a body that just stops), and which is an
error. It never raises: a failure is kept on :attr:`ChunkDecoder.failure`, and the reader
raises it once the items before it have been delivered, so that a caller always gets every
chunk that arrived whole before a stream went bad. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from llmtap._errors import LLMError, LLMResponseError, LLMStreamError
from llmtap._results import PullProgress
from llmtap._wire.dialects import ErrorInfo, parse_error_object
from llmtap._wire.listings import int_or_none, text_or_none
from llmtap._wire.ndjson import NDJSONDecoder
from llmtap._wire.responses import TERMINAL, ResponsesEvents
from llmtap._wire.sse import SSEDecoder, SSEEvent

__all__ = [
    "CUT_BY_NEWER_REQUEST",
    "ChunkDecoder",
    "NDJSONChunks",
    "PullLines",
    "ResponsesChunks",
    "SSEChunks",
    "Sink",
    "chunk_text",
    "excerpt",
]

#: What a ``[DONE]`` before any ``finish_reason`` usually means, and what to do about it.
CUT_BY_NEWER_REQUEST = (
    "llama-cpp-python's server ends a running stream this way when a newer request arrives "
    "(its --interrupt_requests, on by default): send one request at a time to it "
    "(max_concurrency=1 on that Router endpoint), or start the server with "
    "--interrupt_requests False"
)


class Sink(Protocol):
    """Where a decoder sends each chunk instead of returning it: typed streams accumulate
    the answer there and get events back (``chat()`` gets none)."""

    def take(self, chunk: dict[str, Any]) -> Sequence[Any]:
        """What to deliver for ``chunk``, in order (possibly nothing)."""
        ...

    def take_whole(self, body: dict[str, Any]) -> Sequence[Any]:
        """What to deliver for a whole, non-streamed answer."""
        ...


def excerpt(data: bytes | str, limit: int = 200) -> str:
    """A short, quoted piece of ``data`` for an error message."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "…")


def chunk_text(chunk: dict[str, Any]) -> str | None:
    """The text content a raw chunk carries (OpenAI-style or Ollama native); ``None`` when
    it carries none, or carries something other than text where text belongs."""
    try:
        choices = chunk.get("choices")
        if choices:
            delta = choices[0].get("delta")
            content = delta.get("content") if delta else None
        else:
            message = chunk.get("message")
            content = message.get("content") if isinstance(message, dict) else None
    except (AttributeError, TypeError, KeyError, IndexError):
        return None
    return content if type(content) is str else None


class ChunkDecoder:
    """What every stream decoder keeps: its outcome so far.

    Args:
        method: The request's method, for error messages.
        url: The request's URL, for error messages.
        sink: Where chunks go instead of being returned (see :class:`Sink`).
        collect_text: Keep the text of the chunks returned (:attr:`text`), for a caller who
            needs the part of an answer delivered before a failure. Not with a sink, which
            knows its own text.
    """

    __slots__ = (
        "chunks",
        "done",
        "failure",
        "finish_reason",
        "last",
        "method",
        "parts",
        "sink",
        "url",
    )

    def __init__(
        self, method: str, url: str, *, sink: Sink | None = None, collect_text: bool = False
    ) -> None:
        self.method = method
        self.url = url
        self.sink = sink
        #: The text of the chunks returned so far, when collected.
        self.parts: list[str] | None = [] if collect_text and sink is None else None
        #: Chunks decoded so far.
        self.chunks = 0
        #: The stream ended as it should (its terminator, or its final chunk, arrived).
        self.done = False
        #: What went wrong, once something did: an error, or an error object the server sent
        #: (an :class:`ErrorInfo`, which the HTTP layer turns into its error). Nothing is
        #: decoded after it.
        self.failure: LLMError | ErrorInfo | None = None
        #: The first ``finish_reason`` seen (OpenAI-style streams), or ``"stop"``/``"length"``
        #: from a native ``done_reason``.
        self.finish_reason: str | None = None
        #: The last chunk decoded (it carries the usage, when the server sends it).
        self.last: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """The text of the chunks returned so far (``collect_text``)."""
        return "".join(self.parts or ())

    def feed(self, data: bytes) -> list[Any]:
        """The items ``data`` completes, in order; ``b""`` means the body has ended."""
        raise NotImplementedError

    def _stream_error(self, message: str) -> LLMStreamError:
        return LLMStreamError(message, method=self.method, url=self.url)

    def _not_json(self, raw: bytes) -> LLMStreamError:
        return self._stream_error(f"The server sent a chunk that is not JSON: {excerpt(raw)}")

    def _bad_chunk(self, raw: bytes, chunk: Any) -> LLMError | ErrorInfo:
        """The failure for a chunk that parsed but is not a JSON object, or is an error."""
        if type(chunk) is not dict:
            return self._stream_error(
                f"The server sent a chunk that is not a JSON object: {excerpt(raw)}"
            )
        return parse_error_object(chunk)

    def _cut_short(self, what: str) -> LLMStreamError:
        if self.chunks == 0:
            return self._stream_error(
                "The server closed the stream without an answer (a 200 with no chunks). "
                "A prompt longer than the model's context does this on some servers"
            )
        return self._stream_error(f"The stream ended before the answer was complete ({what})")


class SSEChunks(ChunkDecoder):
    """An OpenAI-style chat stream: ``data: {chunk}`` events, ``data: [DONE]`` at the end.

    Complete when ``[DONE]`` arrives after a ``finish_reason``, or the body ends after one.
    A ``[DONE]`` with no ``finish_reason`` before it is a cut (llama-cpp-python ends a stream
    that way when a newer request arrives); so is a body that ends with neither. Error
    objects (``data: {"error": ...}``, ``event: error``, old llama.cpp ``error:`` lines) are
    failures.

    Args:
        max_line_bytes: Longest SSE line accepted.
        method, url, sink, collect_text: As for :class:`ChunkDecoder`.
    """

    __slots__ = ("_sse", "finished")

    def __init__(
        self,
        max_line_bytes: int,
        method: str,
        url: str,
        *,
        sink: Sink | None = None,
        collect_text: bool = False,
    ) -> None:
        super().__init__(method, url, sink=sink, collect_text=collect_text)
        self._sse = SSEDecoder(max_line_bytes)
        #: A ``finish_reason`` has been seen.
        self.finished = False

    def feed(self, data: bytes) -> list[Any]:
        # The per-token hot path: one read usually carries one event, taken whole by
        # ``lone_data`` without splitting lines or building an event object.
        if self.failure is not None or self.done:
            return []
        if data:
            lone = self._sse.lone_data(data)
            if lone is not None:
                payloads: Sequence[bytes | ErrorInfo] = (lone,)
            else:
                try:
                    payloads = self._payloads(self._sse.feed(data))
                except LLMStreamError as error:  # a line over max_line_bytes
                    self.failure = error
                    return []
        else:
            payloads = self._payloads(self._sse.close())
        out: list[Any] = []
        sink = self.sink
        parts = self.parts
        for raw in payloads:
            if not isinstance(raw, bytes):  # an error event
                self.failure = raw
                return out
            if raw.startswith(b"[DONE]"):
                if self.finished:
                    self.done = True
                else:
                    self.failure = self._cut_short(
                        f"[DONE] came before any finish_reason; {CUT_BY_NEWER_REQUEST}"
                    )
                return out
            try:
                chunk = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.failure = self._not_json(raw)
                return out
            if type(chunk) is not dict or chunk.get("error") is not None:
                self.failure = self._bad_chunk(raw, chunk)
                return out
            choices = chunk.get("choices")
            if choices:
                try:
                    choice = choices[0]
                    if not self.finished:
                        reason = choice.get("finish_reason")
                        if reason:
                            self.finished = True
                            self.finish_reason = str(reason)
                except (AttributeError, TypeError, KeyError, IndexError):
                    self.failure = self._stream_error(
                        f"The server sent a chunk of an unexpected shape: {excerpt(raw)}"
                    )
                    return out
                if parts is not None and type(choice) is dict:
                    delta = choice.get("delta")
                    if type(delta) is dict:
                        text = delta.get("content")
                        if text and type(text) is str:
                            parts.append(text)
            self.chunks += 1
            self.last = chunk
            if sink is None:
                out.append(chunk)
            else:
                out.extend(sink.take(chunk))
        if not data:
            if self.finished:
                self.done = True
            else:
                self.failure = self._cut_short("no [DONE] and no finish_reason")
        return out

    def _payloads(self, events: list[SSEEvent]) -> list[bytes | ErrorInfo]:
        """The data of ``events``, in order; an error event becomes its error."""
        return [
            event.data if event.event != "error" else parse_error_object(_loads_or_text(event.data))
            for event in events
        ]


class ResponsesChunks(SSEChunks):
    """A Responses API stream (``/v1/responses``): typed events, each ``event: <type>`` then
    ``data: {...}`` (the type is read from the data, which every server puts there). An SSE
    stream like :class:`SSEChunks` (its decoder), read by its own rules.

    Complete when ``response.completed`` or ``response.incomplete`` arrives; a body that ends
    before either is a cut (Ollama and vLLM end a failed stream that way). Failures: an
    ``error`` event, ``response.failed`` (its ``response.error``), and a bare ``data:
    {"error": ...}`` line (llama-server's error after the 200). With a sink, each event goes
    to it as the chat completions chunk it amounts to (:class:`ResponsesEvents`); without
    one, the events are returned as the server sent them.

    Args:
        max_line_bytes: Longest SSE line accepted.
        method, url, sink, collect_text: As for :class:`ChunkDecoder`.
        output_limit: The request's ``max_output_tokens``, if it set one.
    """

    __slots__ = ("events",)

    def __init__(
        self,
        max_line_bytes: int,
        method: str,
        url: str,
        *,
        sink: Sink | None = None,
        collect_text: bool = False,
        output_limit: int | None = None,
    ) -> None:
        super().__init__(max_line_bytes, method, url, sink=sink, collect_text=collect_text)
        #: What the events have told so far.
        self.events = ResponsesEvents(output_limit)

    def feed(self, data: bytes) -> list[Any]:
        if self.failure is not None or self.done:
            return []
        try:
            events = self._sse.feed(data) if data else self._sse.close()
        except LLMStreamError as error:  # a line over max_line_bytes
            self.failure = error
            return []
        out: list[Any] = []
        sink, parts, told = self.sink, self.parts, self.events
        for sse in events:
            raw = sse.data
            if raw.startswith(b"[DONE]"):
                if not self.done:
                    self.failure = self._cut_short("[DONE] came before response.completed")
                return out
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.failure = self._not_json(raw)
                return out
            if type(event) is not dict:
                self.failure = self._bad_chunk(raw, event)
                return out
            kind = event.get("type")
            if kind == "error" or sse.event == "error" or ("error" in event and kind is None):
                self.failure = parse_error_object(event)
                return out
            if kind == "response.failed":
                response = event.get("response")
                reported = response.get("error") if isinstance(response, dict) else None
                self.failure = parse_error_object(
                    reported if reported else "the server reported the response failed"
                )
                return out
            self.chunks += 1
            self.last = event
            if parts is not None and kind == "response.output_text.delta":
                delta = event.get("delta")
                if type(delta) is str:
                    parts.append(delta)
            chunk = told.take(event)
            if kind in TERMINAL:
                self.done = True
                self.finish_reason = told.finish_reason
            if sink is None:
                out.append(event)
            elif chunk is not None:
                out.extend(sink.take(chunk))
            if self.done:
                return out
        if not data:
            self.failure = self._cut_short("no response.completed")
        return out


class NDJSONChunks(ChunkDecoder):
    """Ollama's native chat stream: one JSON object per line, the last with ``done: true``.

    A body that ends before that line is a cut; a line with ``error`` is a failure.
    """

    __slots__ = ("_lines",)

    def __init__(
        self,
        max_line_bytes: int,
        method: str,
        url: str,
        *,
        sink: Sink | None = None,
        collect_text: bool = False,
    ) -> None:
        super().__init__(method, url, sink=sink, collect_text=collect_text)
        self._lines = NDJSONDecoder(max_line_bytes)

    def feed(self, data: bytes) -> list[Any]:
        if self.failure is not None or self.done:
            return []
        try:
            lines = self._lines.feed(data) if data else self._lines.close()
        except LLMStreamError as error:  # a line over max_line_bytes
            self.failure = error
            return []
        out: list[Any] = []
        sink = self.sink
        parts = self.parts
        for line in lines:
            try:
                chunk = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.failure = self._not_json(line)
                return out
            if type(chunk) is not dict or chunk.get("error") is not None:
                self.failure = self._bad_chunk(line, chunk)
                return out
            self.chunks += 1
            self.last = chunk
            if sink is None:
                if parts is not None and (text := chunk_text(chunk)):
                    parts.append(text)
                out.append(chunk)
            else:
                out.extend(sink.take(chunk))
            if chunk.get("done"):
                reason = chunk.get("done_reason")
                self.finish_reason = str(reason) if reason else "stop"
                self.done = True
                return out
        if not data:
            self.failure = self._cut_short("no line with done: true")
        return out


class PullLines(ChunkDecoder):
    """The progress lines of an Ollama pull (``POST /api/pull``) as :class:`PullProgress`.

    Done at ``status: "success"``; a line with ``error`` is a failure (a model missing from
    the registry is a 404 that names ``ollama pull``'s registry); a body that ends before
    ``success`` is a cut that a new pull resumes.
    """

    __slots__ = ("_lines", "model")

    def __init__(self, max_line_bytes: int, method: str, url: str, *, model: str) -> None:
        super().__init__(method, url)
        self._lines = NDJSONDecoder(max_line_bytes)
        self.model = model

    def feed(self, data: bytes) -> list[Any]:
        if self.failure is not None or self.done:
            return []
        try:
            lines = self._lines.feed(data) if data else self._lines.close()
        except LLMStreamError as error:
            self.failure = error
            return []
        out: list[Any] = []
        for line in lines:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.failure = self._stream_error(
                    f"Ollama sent a progress line that is not JSON: {excerpt(line)}"
                )
                return out
            if not isinstance(obj, dict):
                continue
            said = obj.get("error")
            if said:
                self.failure = pull_error(self.model, str(said), self.method, self.url)
                return out
            event = PullProgress(
                status=str(obj.get("status") or ""),
                digest=text_or_none(obj.get("digest")),
                total=int_or_none(obj.get("total")),
                completed=int_or_none(obj.get("completed")),
            )
            self.chunks += 1
            out.append(event)
            if event.done:
                self.done = True
                return out
        if not data:
            self.failure = self._stream_error(
                f"The pull of {self.model!r} ended before Ollama said success; run it again "
                "to resume (Ollama keeps the layers it has)"
            )
        return out


def pull_error(model: str, message: str, method: str, url: str) -> LLMResponseError:
    """The error for a pull that Ollama refused or that failed, from its message."""
    lowered = message.lower()
    if "file does not exist" in lowered or "not found" in lowered:
        return LLMResponseError(
            f"Model {model!r} is not in the Ollama library ({message}); check the name and "
            "tag at https://ollama.com/library",
            404,
            server_message=message,
            method=method,
            url=url,
        )
    return LLMResponseError(
        f"Ollama could not pull {model!r}: {message}. Run the same pull again to resume",
        None,
        server_message=message,
        method=method,
        url=url,
    )


def _loads_or_text(data: bytes) -> Any:
    """An ``event: error`` payload: JSON if it parses, else its text."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")
    if isinstance(obj, dict) and "error" not in obj:
        return {"error": obj}
    return obj
