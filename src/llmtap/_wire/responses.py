"""OpenAI's Responses API (``POST /v1/responses``) as a dialect: requests built from llmtap's
messages, and answers turned into what the rest of llmtap reads. No I/O here.

A request: the leading system messages become ``instructions``; user and assistant turns
become ``message`` items (images as ``input_image``), an assistant's tool calls
``function_call`` items, tool results ``function_call_output`` items; function tools take the
flat shape; ``max_tokens`` is ``max_output_tokens``; a chat ``response_format`` (what
``parse()`` sends) is ``text.format``.

An answer: the stream is typed events (``event:`` + ``data:`` lines) that end with
``response.completed`` or ``response.incomplete``, not ``[DONE]``. :class:`ResponsesEvents`
turns each event into the chat-completions chunk it amounts to (or nothing: most events only
frame the answer), so that one accumulator serves both dialects and the results are equal
for the same answer. Deltas are keyed by ``item_id`` (llama-server sends no indexes); a
``.done`` event gives the whole text or arguments only when no delta did. The finish
reason comes from the end: ``length`` when the response is incomplete for its output limit,
``tool_calls`` when it called functions, else ``stop``. ``../WIRE-responses.md`` (in the
team's notes) has the facts per server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from llmtap._messages import Message

__all__ = [
    "TERMINAL",
    "ResponsesEvents",
    "build_responses_payload",
    "response_to_completion",
    "responses_url",
]

#: Events that end a Responses stream with an answer.
TERMINAL = frozenset({"response.completed", "response.incomplete"})


def responses_url(chat_url: str) -> str:
    """The Responses URL beside a chat completions URL (``.../v1/chat/completions`` →
    ``.../v1/responses``); any other chat path gets ``/v1/responses`` at its root."""
    if chat_url.endswith("/chat/completions"):
        return chat_url[: -len("/chat/completions")] + "/responses"
    return chat_url.rsplit("/", 1)[0] + "/responses"


# --- requests ----------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    """A chat message's content as Responses input content: text as it is, parts as
    ``input_text`` and ``input_image``."""
    if not isinstance(content, list):
        return content if isinstance(content, str) else ""
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            parts.append({"type": "input_image", "image_url": url})
        else:
            parts.append(dict(part))  # already a Responses part (input_text, input_image, ...)
    return parts


def _items(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The input items of one chat-form message (a Responses item passes as it is)."""
    if "type" in message and "role" not in message:
        return [dict(message)]
    role = message.get("role")
    content = message.get("content")
    if role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": message.get("tool_call_id"),
                "output": content if isinstance(content, str) else _text_of(content),
            }
        ]
    if role == "assistant":
        items: list[dict[str, Any]] = []
        text = _text_of(content)
        if text:
            items.append(
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text}],
                }
            )
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments")
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else orjson.dumps(arguments or {}).decode(),
                }
            )
        return items
    return [{"type": "message", "role": role, "content": _user_content(content)}]


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A chat function tool in the Responses' flat shape (others pass as they are)."""
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, Mapping):
        return dict(tool)
    return {"type": "function", **function}


def _text_format(response_format: Any) -> dict[str, Any] | None:
    """A chat ``response_format`` as the Responses' ``text.format``."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = response_format.get("json_schema") or {}
        found = {"type": "json_schema", "name": schema.get("name") or "output"}
        for key in ("schema", "strict", "description"):
            if key in schema:
                found[key] = schema[key]
        return found
    return {"type": kind} if isinstance(kind, str) else None


def build_responses_payload(
    *,
    model: str,
    messages: Iterable[Message | Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    temperature: float | None,
    max_tokens: int | None,
    stream: bool,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON body of one ``/v1/responses`` request.

    ``params`` pass through at the top level, except the chat completions names this API
    spells otherwise: ``max_tokens`` (``max_output_tokens``), ``response_format``
    (``text.format``), ``reasoning_effort`` (``reasoning.effort``), a named ``tool_choice``
    (``{"type": "function", "name"}``); ``stream_options`` is dropped.
    """
    wire = [m.to_api_dict() if isinstance(m, Message) else m for m in messages]
    instructions: list[str] = []
    start = 0
    while start < len(wire) and wire[start].get("role") in ("system", "developer"):
        instructions.append(_text_of(wire[start].get("content")))
        start += 1
    payload: dict[str, Any] = {"model": model}
    if instructions:
        payload["instructions"] = "\n\n".join(instructions)
    payload["input"] = [item for message in wire[start:] for item in _items(message)]
    payload["stream"] = stream
    if tools:
        payload["tools"] = [_tool(tool) for tool in tools]
    if temperature is not None:
        payload["temperature"] = temperature
    if max_tokens is not None:
        payload["max_output_tokens"] = max_tokens
    for key, value in params.items():
        if key == "max_tokens" or key == "max_completion_tokens":
            payload["max_output_tokens"] = value
        elif key == "response_format":
            found = _text_format(value)
            if found is not None:
                payload["text"] = {**payload.get("text", {}), "format": found}
        elif key == "reasoning_effort":
            payload["reasoning"] = {**payload.get("reasoning", {}), "effort": value}
        elif key == "tool_choice" and isinstance(value, Mapping) and "function" in value:
            payload["tool_choice"] = {"type": "function", "name": value["function"].get("name")}
        elif key == "tools" and isinstance(value, list):
            payload["tools"] = [_tool(tool) for tool in value]
        elif key != "stream_options":
            payload[key] = value
    return payload


# --- answers -------------------------------------------------------------------------------------


def _usage(response: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Responses ``usage`` in chat completions' names."""
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return None
    found: dict[str, Any] = {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and isinstance(details.get("reasoning_tokens"), int):
        found["completion_tokens_details"] = {"reasoning_tokens": details["reasoning_tokens"]}
    cached = usage.get("input_tokens_details")
    if isinstance(cached, Mapping) and isinstance(cached.get("cached_tokens"), int):
        found["prompt_tokens_details"] = {"cached_tokens": cached["cached_tokens"]}
    return found


def _finish(response: Mapping[str, Any], event_type: str, called: bool, limit: int | None) -> str:
    """Why the answer ended: ``length`` (or the reason given) when it is incomplete,
    ``tool_calls`` when it called functions, else ``stop``; but ``length`` too when the
    answer used all of the request's ``max_output_tokens`` (``limit``): Ollama and
    llama-server say ``completed`` for an answer cut there."""
    if event_type == "response.incomplete" or response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return "length" if reason in (None, "max_output_tokens") else str(reason)
    if called:
        return "tool_calls"
    usage = response.get("usage")
    used = usage.get("output_tokens") if isinstance(usage, Mapping) else None
    if limit is not None and isinstance(used, int) and used >= limit:
        return "length"
    return "stop"


def _final_chunk(
    response: Mapping[str, Any], event_type: str, called: bool, timings: Any, limit: int | None
) -> dict[str, Any]:
    finish = _finish(response, event_type, called, limit)
    chunk: dict[str, Any] = {
        "id": response.get("id"),
        "object": "chat.completion.chunk",
        "model": response.get("model"),
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
    }
    usage = _usage(response)
    if usage is not None:
        chunk["usage"] = usage
    if isinstance(timings, dict):
        chunk["timings"] = timings
    return chunk


def _delta(delta: dict[str, Any]) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


class ResponsesEvents:
    """One Responses stream's events turned into chat completions chunks (see the module's
    docstring), with what the stream has told so far.

    Args:
        limit: The request's ``max_output_tokens``, if it set one.
    """

    __slots__ = ("_calls", "_limit", "_streamed", "finish_reason", "model", "response_id")

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        #: Function-call item ids by their order (the chat chunks' tool call index).
        self._calls: dict[str, int] = {}
        #: Items (by id) whose deltas have come: their ``.done`` adds nothing.
        self._streamed: set[str] = set()
        self.response_id: str | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None

    def take(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The chat chunk ``event`` amounts to, or ``None`` (an event that only frames the
        answer)."""
        kind = event.get("type")
        if kind == "response.output_text.delta":
            self._streamed.add(event.get("item_id") or "")
            return _delta({"content": event.get("delta") or ""})
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            self._streamed.add(event.get("item_id") or "")
            return _delta({"reasoning_content": event.get("delta") or ""})
        if kind == "response.function_call_arguments.delta":
            item = event.get("item_id") or ""
            self._streamed.add(item)
            index = self._calls.get(item)
            if index is None:
                index = self._calls[item] = len(self._calls)
            return _delta(
                {"tool_calls": [{"index": index, "function": {"arguments": event.get("delta")}}]}
            )
        if kind == "response.output_item.added" or kind == "response.output_item.done":
            return self._item(event.get("item"), done=kind == "response.output_item.done")
        if kind in ("response.output_text.done",):
            return self._whole(event, "text", "content")
        if kind in ("response.reasoning_text.done", "response.reasoning_summary_text.done"):
            return self._whole(event, "text", "reasoning_content")
        if kind == "response.function_call_arguments.done":
            item = event.get("item_id") or ""
            if item in self._streamed or item not in self._calls:
                return None
            self._streamed.add(item)
            arguments = event.get("arguments")
            return _delta(
                {"tool_calls": [{"index": self._calls[item], "function": {"arguments": arguments}}]}
            )
        if kind == "response.created":
            response = event.get("response")
            if isinstance(response, Mapping):
                self.response_id = response.get("id") or self.response_id
                self.model = response.get("model") or self.model
                # The answer's id and model (llama-server names no model until the end).
                chunk: dict[str, Any] = {"id": self.response_id, "choices": []}
                if self.model is not None:
                    chunk["model"] = self.model
                return chunk
            return None
        if kind in TERMINAL:
            response = event.get("response")
            if not isinstance(response, Mapping):
                response = {}
            timings = event.get("timings") or response.get("timings")
            chunk = _final_chunk(response, str(kind), bool(self._calls), timings, self._limit)
            self.finish_reason = chunk["choices"][0]["finish_reason"]
            return chunk
        return None

    def _whole(self, event: Mapping[str, Any], key: str, field: str) -> dict[str, Any] | None:
        """A ``.done`` event's whole text, when no delta of its item came."""
        item = event.get("item_id") or ""
        if item in self._streamed:
            return None
        self._streamed.add(item)
        text = event.get(key)
        return _delta({field: text}) if isinstance(text, str) and text else None

    def _item(self, item: Any, *, done: bool) -> dict[str, Any] | None:
        """An output item added or done: a function call starts (its id and name), or one
        that was never announced comes whole."""
        if not isinstance(item, Mapping) or item.get("type") != "function_call":
            return None
        key = item.get("id") or item.get("call_id") or ""
        if done and key in self._calls:
            if key in self._streamed or not item.get("arguments"):
                return None
            self._streamed.add(key)
            index = self._calls[key]
            return _delta(
                {"tool_calls": [{"index": index, "function": {"arguments": item["arguments"]}}]}
            )
        if key in self._calls:
            return None
        index = self._calls[key] = len(self._calls)
        arguments = item.get("arguments") or ""
        if arguments:
            self._streamed.add(key)
        return _delta(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": item.get("call_id"),
                        "type": "function",
                        "function": {"name": item.get("name"), "arguments": arguments},
                    }
                ]
            }
        )


def response_to_completion(body: Mapping[str, Any], limit: int | None = None) -> dict[str, Any]:
    """A whole Responses answer (``"object": "response"``) as a ``chat.completion``: the
    message items' text, the reasoning items' text, the function calls, the finish reason
    (``limit``: the request's ``max_output_tokens``) and the usage."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in body.get("output") or ():
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "message":
            text.extend(
                part.get("text", "")
                for part in item.get("content") or ()
                if isinstance(part, Mapping) and part.get("type") == "output_text"
            )
        elif kind == "reasoning":
            parts = [
                part.get("text", "")
                for part in item.get("content") or ()
                if isinstance(part, Mapping) and part.get("type") == "reasoning_text"
            ] or [
                part.get("text", "")
                for part in item.get("summary") or ()
                if isinstance(part, Mapping) and part.get("type") == "summary_text"
            ]
            reasoning.extend(parts)
        elif kind == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    completion: dict[str, Any] = {
        "id": body.get("id"),
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish(body, "", bool(calls), limit),
            }
        ],
    }
    usage = _usage(body)
    if usage is not None:
        completion["usage"] = usage
    if isinstance(body.get("timings"), dict):
        completion["timings"] = body["timings"]
    return completion
