"""``run_tools``: ask, run the tools the model calls, answer it, and ask again until it is done.

Each round is one chat request. When the answer calls tools, every call runs (concurrently;
sync functions in worker threads), and the assistant message and one ``tool`` message per call
join the transcript for the next round. A call that cannot run (an unknown name, arguments that
do not fit, an exception in the tool) is answered with a ``tool`` message that tells the model
what went wrong, so that it can correct itself; the loop goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pydantic

from llmtap._api import ChatAPI
from llmtap._errors import LLMToolLoopError, LLMUsageError
from llmtap._log import get_logger
from llmtap._messages import Message, ToolCall, check_messages
from llmtap._results import ChatResult, TextDelta
from llmtap._tools import Tool, format_validation_errors, to_tool_output
from llmtap._wire.dialects import MessageLike

__all__ = [
    "ObjectTool",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolEvent",
    "ToolEventHandler",
    "ToolRun",
    "run_tools",
]

_log = get_logger()


@dataclass(slots=True, frozen=True)
class ToolCallStarted:
    """A tool call is about to run (its arguments not yet checked).

    Example:
        >>> ToolCallStarted(ToolCall(id="call_1", name="get_weather")).call.name
        'get_weather'
    """

    type: ClassVar[Literal["tool_call_started"]] = "tool_call_started"
    call: ToolCall


@dataclass(slots=True, frozen=True)
class ToolCallFinished:
    """A tool call is over, and this is what the model is told.

    Attributes:
        call: The call.
        output: The text of the ``tool`` message sent back: the tool's result, or a
            description of what went wrong.
        error: ``None`` when the tool ran and returned; otherwise a short statement of the
            failure (an unknown tool, invalid arguments, the exception it raised).
        seconds: How long the call took, argument checks included.
    """

    type: ClassVar[Literal["tool_call_finished"]] = "tool_call_finished"
    call: ToolCall
    output: str
    error: str | None
    seconds: float


ToolEvent = ToolCallStarted | ToolCallFinished | TextDelta
"""What ``on_event`` receives: calls starting and finishing, and with ``stream=True`` the text
of each round's answer as it streams."""

ToolEventHandler = Callable[[ToolEvent], Awaitable[None] | None]
"""A callback for ``on_event``: a plain function or a coroutine function."""


@dataclass(frozen=True)
class ToolRun:
    """The outcome of :meth:`LLMClient.run_tools`.

    Attributes:
        result: The final answer (the round in which the model called no tools).
        messages: The whole transcript: the caller's messages, each round's assistant message
            and ``tool`` messages, and the final assistant message; send it again (with a new
            user message) to go on with the conversation.
    """

    result: ChatResult
    messages: list[MessageLike]

    @property
    def text(self) -> str:
        """The final answer's text."""
        return self.result.text


class ObjectTool:
    """A tool given as an object of its own: ``to_schema()`` (an OpenAI tool schema) and
    ``call(arguments)`` (or called with the arguments as keywords), sync or async. Its
    arguments are passed as the model sent them: there is no signature to check them against.

    Args:
        obj: The object.

    Raises:
        LLMUsageError: Its schema names no function.
    """

    __slots__ = ("name", "obj", "schema")

    def __init__(self, obj: Any) -> None:
        schema = obj.to_schema()
        function = schema.get("function") if isinstance(schema, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise LLMUsageError(f"{obj!r}.to_schema() names no function: it cannot be a tool")
        self.obj = obj
        self.schema: dict[str, Any] = schema
        self.name = name

    def to_schema(self) -> dict[str, Any]:
        """The tool's OpenAI schema."""
        return self.schema

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments, as they are."""
        return dict(arguments)

    async def call_validated(self, kwargs: dict[str, Any]) -> str:
        """Run it; its result as text (see :func:`~llmtap._tools.to_tool_output`)."""
        call = getattr(self.obj, "call", None)
        result = call(kwargs) if callable(call) else self.obj(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return to_tool_output(result)


#: A tool run_tools can run.
Runnable = Tool[..., Any] | ObjectTool


def as_tools(tools: Iterable[Any]) -> dict[str, Runnable]:
    """The tools by name: ``Tool`` objects as they are, objects with ``to_schema()`` as
    :class:`ObjectTool`, plain functions wrapped."""
    by_name: dict[str, Runnable] = {}
    for item in tools:
        wrapped: Runnable
        if isinstance(item, Tool):
            wrapped = item
            if item.method_of is not None:
                owner = item.method_of.__name__
                raise LLMUsageError(
                    f"tool {item.name!r} is a method of {owner}, taken from the class: it has "
                    f"no instance to run on; pass it from an instance ({owner.lower()}."
                    f"{item.fn.__name__}, for {owner.lower()} = {owner}(...))"
                )
        elif not isinstance(item, type) and callable(getattr(item, "to_schema", None)):
            wrapped = ObjectTool(item)
        elif callable(item):
            wrapped = Tool.from_function(item)
        else:
            raise LLMUsageError(
                f"run_tools() runs the tools, so it needs functions or Tool objects, not "
                f"{type(item).__name__}; pass schema dicts to chat() instead"
            )
        if wrapped.name in by_name:
            raise LLMUsageError(
                f"two tools are named {wrapped.name!r}; give one another name with tool(name=...)"
            )
        by_name[wrapped.name] = wrapped
    if not by_name:
        raise LLMUsageError("run_tools() needs at least one tool; use chat() without tools")
    return by_name


async def _emit(on_event: ToolEventHandler | None, event: ToolEvent) -> None:
    if on_event is None:
        return
    outcome = on_event(event)
    if inspect.isawaitable(outcome):
        await outcome


async def _execute(tools: dict[str, Runnable], call: ToolCall) -> ToolCallFinished:
    """Run one call; every failure becomes a message for the model, never an exception."""
    started = time.perf_counter()
    error: str | None = None
    found = tools.get(call.name)
    if found is None:
        names = ", ".join(sorted(tools))
        error = f"unknown tool {call.name!r}"
        output = f"Error: there is no tool named {call.name!r}. The tools are: {names}."
        _log.warning("tool_unknown", tool=call.name, call_id=call.id, available=sorted(tools))
    else:
        try:
            kwargs = found.validate(call.arguments)
        except pydantic.ValidationError as exc:
            problems = format_validation_errors(exc.errors(include_url=False))
            error = f"invalid arguments: {problems}"
            output = (
                f"Error: the arguments for {call.name} are invalid:\n{problems}\n"
                f"Call {call.name} again with corrected arguments."
            )
            _log.warning(
                "tool_arguments_invalid",
                tool=call.name,
                call_id=call.id,
                errors=exc.error_count(),
                detail=problems,
            )
        else:
            try:
                output = await found.call_validated(kwargs)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                output = f"Error: {call.name} failed: {error}"
                _log.warning("tool_failed", tool=call.name, call_id=call.id, error=error)
    return ToolCallFinished(call, output, error, time.perf_counter() - started)


async def _run_round(
    tools: dict[str, Runnable],
    calls: Sequence[ToolCall],
    on_event: ToolEventHandler | None,
) -> list[ToolCallFinished]:
    """Run a round's calls concurrently; ``on_event`` hears of each as it finishes. The
    results come back in the order of the calls."""
    for call in calls:
        await _emit(on_event, ToolCallStarted(call))
    tasks = [asyncio.create_task(_execute(tools, call)) for call in calls]
    try:
        for next_done in asyncio.as_completed(tasks):
            await _emit(on_event, await next_done)
    finally:
        for task in tasks:
            task.cancel()  # only the unfinished ones, if on_event raised or we were cancelled
        await asyncio.gather(*tasks, return_exceptions=True)
    return [task.result() for task in tasks]


async def _ask(
    client: ChatAPI,
    messages: list[MessageLike],
    tools: dict[str, Runnable],
    on_event: ToolEventHandler | None,
    stream: bool,
    params: dict[str, Any],
) -> ChatResult:
    schemas = list(tools.values())
    if not stream:
        return await client.chat(messages, schemas, **params)
    async with client.stream(messages, schemas, **params) as answer:
        async for event in answer:
            if type(event) is TextDelta:
                await _emit(on_event, event)
        return await answer.result()


async def run_tools(
    client: ChatAPI,
    messages: Iterable[MessageLike],
    tools: Iterable[Any],
    *,
    max_rounds: int = 8,
    on_event: ToolEventHandler | None = None,
    stream: bool = False,
    **params: Any,
) -> ToolRun:
    """The tool loop behind :meth:`LLMClient.run_tools` (documented there)."""
    if max_rounds < 1:
        raise LLMUsageError(f"max_rounds must be at least 1, not {max_rounds}")
    by_name = as_tools(tools)
    transcript: list[MessageLike] = check_messages(messages)
    for _round in range(max_rounds):
        result = await _ask(client, transcript, by_name, on_event, stream, params)
        transcript.append(result.message)
        if not result.tool_calls:
            return ToolRun(result, transcript)
        finished = await _run_round(by_name, result.tool_calls, on_event)
        transcript.extend(
            Message.tool(done.output, tool_call_id=done.call.id, name=done.call.name)
            for done in finished
        )
    raise LLMToolLoopError(
        f"The model was still calling tools after max_rounds={max_rounds} rounds (each one "
        "request and the calls it made). The transcript so far is in .messages; pass it to "
        "run_tools() again to go on, raise max_rounds, or check that the tools' answers give "
        "the model what it asks for",
        messages=transcript,
    )
