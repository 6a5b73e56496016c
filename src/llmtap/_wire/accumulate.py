"""The accumulator: decoded stream chunks in, typed events out, one ``ChatResult`` at the end.

Pure: no I/O, no asyncio. It sits on the per-token path, so each chunk costs the same however
long the answer grows: text pieces go into lists joined once at the end, and no pydantic model
is built per chunk.

Two dialects:

* ``"openai"``: ``chat.completion.chunk`` dicts from OpenAI, vLLM, llama.cpp, LM Studio and
  Ollama's ``/v1`` layer. Only the choice with ``index`` 0 is accumulated; other choices
  (``n`` > 1) are ignored.
* ``"ollama"``: the NDJSON lines of Ollama's native ``/api/chat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson

from llmtap._errors import LLMStreamError
from llmtap._messages import Message, ToolCall
from llmtap._results import (
    ChatResult,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
    UsageEvent,
    trusted,
)

__all__ = ["Accumulator"]

#: Native Ollama fields of the final line that ``Accumulator.server_metrics`` collects.
OLLAMA_METRICS = (
    "total_duration", "load_duration", "prompt_eval_count",
    "prompt_eval_duration", "eval_count", "eval_duration",
)  # fmt: skip

_EXCERPT = 200
_new = object.__new__
_set_text = TextDelta.__dict__["text"].__set__


class _PartialCall:
    """One tool call while its pieces arrive."""

    __slots__ = ("arguments", "id", "index", "name", "parts")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.parts: list[str] = []
        self.arguments: dict[str, Any] | None = None  # set when the server sent an object


class _ToolCalls:
    """Tool-call pieces in, partial calls held by index and id.

    Rules, in order, for one piece with server ``index``, ``id`` and ``name`` (each optional):

    1. A known ``id`` continues that call (servers that repeat the id on every piece).
    2. A known ``index`` continues the latest call at that index, unless the piece brings an
       ``id`` different from that call's: then it is a new call (older Ollama sends index 0 for
       every call; vLLM may send two calls at one index in one chunk).
    3. No ``index`` and no ``id``: the piece continues the last call unless it has a ``name``,
       which starts a new call.
    4. Anything else starts a new call, at the server's index when free, else the next free one.

    ``id`` and ``name`` are set once and never concatenated: the first one seen is kept.
    """

    __slots__ = ("_by_id", "_by_server_index", "_calls", "_used")

    def __init__(self) -> None:
        self._calls: list[_PartialCall] = []
        self._by_server_index: dict[int, _PartialCall] = {}
        self._by_id: dict[str, _PartialCall] = {}
        self._used: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._calls)

    def _new(self, server_index: int | None) -> _PartialCall:
        index = server_index if server_index is not None else len(self._calls)
        while index in self._used:
            index += 1
        call = _PartialCall(index)
        self._used.add(index)
        self._calls.append(call)
        if server_index is not None:
            self._by_server_index[server_index] = call
        return call

    def _find(self, index: int | None, call_id: str | None, name: str | None) -> _PartialCall:
        if call_id is not None and call_id in self._by_id:
            return self._by_id[call_id]
        if index is not None:
            call = self._by_server_index.get(index)
            if call is not None and (call_id is None or call.id is None):
                return call
            return self._new(index)
        if call_id is None and name is None and self._calls:
            return self._calls[-1]
        return self._new(None)

    def add(self, index: Any, call_id: Any, name: Any, arguments: Any) -> ToolCallDelta | None:
        """Take one piece; return its event, or ``None`` if it brought nothing new."""
        if not isinstance(index, int):
            index = None
        if not isinstance(call_id, str) or not call_id:
            call_id = None
        if not isinstance(name, str) or not name:
            name = None
        call = self._find(index, call_id, name)
        new_id = new_name = None
        if call_id is not None and call.id is None:
            call.id = new_id = call_id
            self._by_id[call_id] = call
        if name is not None and call.name is None:
            call.name = new_name = name
        if isinstance(arguments, str):
            text = arguments
            if text:
                call.parts.append(text)
        elif arguments is None:
            text = ""
        else:
            # An object (Ollama native) is used as is; anything else fails later, in result().
            text = orjson.dumps(arguments).decode()
            if isinstance(arguments, dict):
                call.arguments = arguments
            else:
                call.parts.append(text)
        if not text and new_id is None and new_name is None:
            return None
        return ToolCallDelta(call.index, new_id, new_name, text)

    def pieces(self) -> int:
        """How many argument pieces arrived, over all calls (a call sent whole is one)."""
        return sum(len(call.parts) or call.arguments is not None for call in self._calls)

    def build(self, finish_reason: str | None) -> tuple[ToolCall, ...]:
        """The finished calls, in index order, with decoded arguments and an id each."""
        taken = {call.id for call in self._calls if call.id is not None}
        calls = []
        for call in sorted(self._calls, key=lambda c: c.index):
            name = call.name
            if name is None:
                raise LLMStreamError(
                    f"Tool call #{call.index} arrived without a function name "
                    f"(arguments: {_excerpt(''.join(call.parts))!r})"
                )
            call_id = call.id
            if call_id is None:
                call_id = f"call_{call.index}"
                n = 1
                while call_id in taken:
                    call_id, n = f"call_{call.index}_{n}", n + 1
                taken.add(call_id)
            arguments = call.arguments
            if arguments is None:
                arguments = _decode_arguments(name, "".join(call.parts), finish_reason)
            calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
        return tuple(calls)


def _excerpt(text: str) -> str:
    if len(text) <= _EXCERPT:
        return text
    half = _EXCERPT // 2
    return f"{text[:half]}…{text[-half:]}"


def _decode_arguments(name: str, text: str, finish_reason: str | None) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise LLMStreamError(
            f"Tool call {name!r} has arguments that are not valid JSON: {_excerpt(text)!r}"
            f" — the answer was probably cut off (finish_reason={finish_reason!r});"
            " raise max_tokens"
        ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LLMStreamError(
            f"Tool call {name!r} has arguments that are not a JSON object: {_excerpt(text)!r}"
        )
    return value


_NO_USAGE = Usage()
_NO_TIMINGS = Timings()


def _with_speed(timings: Timings, tokens: int | None) -> Timings:
    """``timings`` with ``tokens_per_second`` from ``tokens`` generated between the first
    token and the end, when those are known."""
    first, total = timings.time_to_first_token, timings.total
    if not tokens or first is None or total is None or total <= first:
        return timings
    return trusted(
        Timings,
        time_to_first_token=first,
        total=total,
        tokens_per_second=tokens / (total - first),
        load_duration=timings.load_duration,
        prompt_duration=timings.prompt_duration,
        generation_duration=timings.generation_duration,
    )


def _expect_str(field: str, value: object) -> None:
    if type(value) is not str:
        raise TypeError(f"{field} is a {type(value).__name__}, not a string")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Accumulator:
    """Turns the decoded chunks of one chat stream into events and a final ``ChatResult``.

    Args:
        dialect: ``"openai"`` for ``chat.completion.chunk`` dicts (OpenAI, vLLM, llama.cpp,
            LM Studio, Ollama ``/v1``), ``"ollama"`` for Ollama's native ``/api/chat`` lines.

    Only choice 0 of an OpenAI-style chunk is accumulated. Unknown keys are ignored. A chunk
    with a non-null top-level ``error`` raises ``LLMStreamError``: the client must turn error
    objects into ``LLMResponseError`` before they get here; this is a safety net.

    Example:
        >>> acc = Accumulator()
        >>> acc.feed({"model": "m", "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
        [TextDelta(text='Hi')]
        >>> acc.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        [FinishEvent(finish_reason='stop')]
        >>> acc.result(server="vllm").text
        'Hi'
    """

    __slots__ = (
        "_chunks",
        "_finish_reason",
        "_llama_timings",
        "_model",
        "_native",
        "_ollama_metrics",
        "_reasoning",
        "_text",
        "_tool_state",
        "_usage",
        "_usage_key",
        "_whole",
    )

    def __init__(self, dialect: Literal["openai", "ollama"] = "openai") -> None:
        if dialect not in ("openai", "ollama"):
            raise ValueError(f"dialect must be 'openai' or 'ollama', not {dialect!r}")
        self._native = dialect == "ollama"
        self._chunks = 0
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_state: _ToolCalls | None = None  # made when the first call arrives
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._usage_key: tuple[int | None, int | None, int | None] | None = None
        self._model: str | None = None
        self._ollama_metrics: dict[str, int] | None = None  # made by a native final line
        #: llama.cpp's ``timings`` object, as the last chunk that had one sent it.
        self._llama_timings: dict[str, Any] | None = None
        #: Fed a whole answer (``feed_completion``), not a stream: its pieces are no count.
        self._whole = False

    # -- state -------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return "".join(self._text)

    @property
    def tool_calls_started(self) -> bool:
        """Whether any tool call has begun."""
        return self._tool_state is not None and bool(self._tool_state)

    def _tools(self) -> _ToolCalls:
        if self._tool_state is None:
            self._tool_state = _ToolCalls()
        return self._tool_state

    @property
    def finish_reason(self) -> str | None:
        """The finish reason, once the server has sent one."""
        return self._finish_reason

    @property
    def usage(self) -> Usage | None:
        """The latest token counts the server reported (``None`` before any; the result's
        usage counts the output chunks when the server never reported any)."""
        return self._usage

    def _final_usage(self) -> Usage:
        """The server's usage, or for a stream that carried none, its output counted.

        The count costs nothing per chunk: the lists the pieces were kept in already know
        how many there were (one text piece per chunk that carried text, and so on).
        """
        if self._usage is not None:
            return self._usage
        if self._whole:
            return _NO_USAGE
        pieces = len(self._text) + len(self._reasoning)
        if self._tool_state is not None:
            pieces += self._tool_state.pieces()
        return trusted(Usage, completion_tokens=pieces, source="counted")

    @property
    def model(self) -> str | None:
        """The model name from the first chunk that named one."""
        return self._model

    @property
    def chunks(self) -> int:
        """How many chunks (or whole responses) were fed."""
        return self._chunks

    @property
    def server_metrics(self) -> dict[str, Any]:
        """The server's own figures: native Ollama counters and nanosecond durations
        (``eval_count``, ...), or llama.cpp's ``timings`` object under ``"timings"``."""
        metrics: dict[str, Any] = dict(self._ollama_metrics or ())
        if self._llama_timings is not None:
            metrics["timings"] = self._llama_timings
        return metrics

    # -- input -------------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """Take one decoded chunk; return the events it produced, in order.

        Raises:
            LLMStreamError: The chunk is a server error object, or not shaped as a chunk of
                this dialect (``"choices": 5``, a number as ``content``, ...).
        """
        # The per-token path: one method call, and for the usual chunk (one choice whose
        # delta is text alone) a handful of dict lookups and no event list built up.
        try:
            self._chunks += 1
            if chunk.get("error") is not None:
                detail = _excerpt(orjson.dumps(chunk["error"], default=repr).decode())
                raise LLMStreamError(f"server error object reached the accumulator: {detail}")
            if self._model is None:
                model = chunk.get("model")
                if isinstance(model, str) and model:
                    self._model = model
            if self._native:
                events: list[StreamEvent] = []
                self._feed_native(chunk, events)
                return events
            choices = chunk.get("choices")
            if choices and len(choices) == 1:
                # The usual token: one choice whose delta is text alone, no finish, no usage.
                choice = choices[0]
                delta = choice.get("delta")
                if (
                    delta
                    and len(delta) == 1
                    and type(text := delta.get("content")) is str
                    and text
                    and not choice.get("finish_reason")
                    and choice.get("index", 0) == 0
                    and not chunk.get("usage")
                ):
                    self._text.append(text)
                    # TextDelta(text) without its frozen __init__ (half the cost): the same
                    # object, made as dataclasses' own __init__ would, minus the call.
                    event = _new(TextDelta)
                    _set_text(event, text)
                    return [event]
            events = []
            if choices:
                for choice in choices:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta")
                    if delta:
                        self._feed_delta(delta, events)
                    reason = choice.get("finish_reason")
                    if reason:
                        _expect_str("finish_reason", reason)
                        self._finish(reason, events)
            usage = chunk.get("usage")
            if usage:
                counts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
                self._set_usage((*counts, usage.get("total_tokens")), events)
            timings = chunk.get("timings")
            if type(timings) is dict:  # llama.cpp's own; kept as sent, read at the end
                self._llama_timings = timings
            return events
        except (AttributeError, TypeError, KeyError, IndexError) as exc:
            raise LLMStreamError(
                f"The server sent a chunk of an unexpected shape ({exc}): "
                f"{_excerpt(orjson.dumps(chunk, default=repr).decode())!r}"
            ) from None

    def feed_completion(self, body: dict[str, Any]) -> list[StreamEvent]:
        """Take a whole non-streaming response; same events and state as its stream would give.

        Raises:
            LLMStreamError: The body is a server error object.
        """
        self._whole = True
        if self._native:
            return self.feed(body)
        choices = body.get("choices")
        chunk = {key: value for key, value in body.items() if key != "choices"}
        if choices:
            chunk["choices"] = [
                {
                    "index": choice.get("index", 0),
                    "delta": choice.get("message"),
                    "finish_reason": choice.get("finish_reason"),
                }
                for choice in choices
            ]
        return self.feed(chunk)

    def _feed_delta(self, delta: dict[str, Any], events: list[StreamEvent]) -> None:
        """A delta other than text alone: reasoning, text, tool call pieces."""
        reasoning = delta.get("reasoning")
        other = delta.get("reasoning_content")
        if reasoning:
            self._add_reasoning("reasoning", reasoning, events)
        if other and other != reasoning:
            self._add_reasoning("reasoning_content", other, events)
        content = delta.get("content")
        if content:
            self._add_text(content, events)
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            add = self._tools().add
            for piece in tool_calls:
                function = piece.get("function") or {}
                event = add(
                    piece.get("index"),
                    piece.get("id"),
                    function.get("name"),
                    function.get("arguments"),
                )
                if event is not None:
                    events.append(event)
        elif function := delta.get("function_call"):  # legacy; ignored beside tool_calls
            event = self._tools().add(0, None, function.get("name"), function.get("arguments"))
            if event is not None:
                events.append(event)

    def _add_text(self, text: Any, events: list[StreamEvent]) -> None:
        _expect_str("content", text)
        self._text.append(text)
        events.append(TextDelta(text))

    def _add_reasoning(self, field: str, text: Any, events: list[StreamEvent]) -> None:
        _expect_str(field, text)
        self._reasoning.append(text)
        events.append(ReasoningDelta(text))

    def _finish(self, reason: str, events: list[StreamEvent]) -> None:
        if reason != self._finish_reason:
            self._finish_reason = reason
            events.append(FinishEvent(reason))

    def _feed_native(self, chunk: dict[str, Any], events: list[StreamEvent]) -> None:
        message = chunk.get("message")
        if message:
            thinking = message.get("thinking")
            if thinking:
                self._add_reasoning("thinking", thinking, events)
            content = message.get("content")
            if content:
                self._add_text(content, events)
            # Native calls always arrive whole, so each named entry is a call of its own.
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                event = self._tools().add(
                    None, call.get("id"), function.get("name"), function.get("arguments")
                )
                if event is not None:
                    events.append(event)
        if chunk.get("done"):
            reason = chunk.get("done_reason") or "stop"
            _expect_str("done_reason", reason)
            if reason == "stop" and self.tool_calls_started:
                reason = "tool_calls"
            self._finish(reason, events)
            metrics = self._ollama_metrics = self._ollama_metrics or {}
            for key in OLLAMA_METRICS:
                value = _count(chunk.get(key))
                if value is not None:
                    metrics[key] = value
            prompt = metrics.get("prompt_eval_count")
            completion = metrics.get("eval_count")
            if prompt is not None or completion is not None:
                total = (prompt or 0) + (completion or 0)
                self._set_usage((prompt, completion, total), events)

    def _set_usage(self, counts: tuple[Any, Any, Any], events: list[StreamEvent]) -> None:
        prompt, completion, total = _count(counts[0]), _count(counts[1]), _count(counts[2])
        if total is None and prompt is not None and completion is not None:
            total = prompt + completion
        key = (prompt, completion, total)
        if key != self._usage_key:
            self._usage_key = key
            self._usage = trusted(
                Usage, prompt_tokens=prompt, completion_tokens=completion, total_tokens=total
            )
            events.append(UsageEvent(self._usage))

    # -- output ------------------------------------------------------------------------------

    def result(
        self,
        *,
        server: str | None = None,
        timings: Timings | None = None,
        warnings: Sequence[str] = (),
        response_id: str | None = None,
    ) -> ChatResult:
        """Build the final result from everything fed so far.

        The usage is the server's, or for a stream that carried none, its output chunks
        counted (``Usage.source``). A ``tokens_per_second`` the caller did not give is the
        completion tokens over the time from the first token to the end, when both are known.

        Args:
            server: The kind of server, as the caller knows it.
            timings: Durations the caller measured.
            warnings: Notes to pass on to the caller.
            response_id: The answer's id, as the server gave it.

        Raises:
            LLMStreamError: A tool call has no name, or its arguments are not a JSON object
                (usually because the answer was cut off).
        """
        text = "".join(self._text)
        tool_calls = (
            self._tool_state.build(self._finish_reason) if self._tool_state is not None else ()
        )
        usage = self._final_usage()
        if timings is None:
            timings = _NO_TIMINGS
        elif timings.tokens_per_second is None:
            timings = _with_speed(timings, usage.completion_tokens)
        # Built from values this class produced and checked: no validation pass needed.
        message = trusted(
            Message,
            role="assistant",
            content=None if not text and tool_calls else text,
            tool_calls=tool_calls or None,
        )
        return trusted(
            ChatResult,
            message=message,
            text=text,
            reasoning="".join(self._reasoning),
            tool_calls=tool_calls,
            finish_reason=self._finish_reason,
            usage=usage,
            timings=timings,
            model=self._model,
            server=server,
            warnings=tuple(warnings),
            response_id=response_id,
        )
