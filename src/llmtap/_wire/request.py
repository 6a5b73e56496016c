"""One chat request as sent, and the changes a server's refusal of it calls for. No I/O here.

Some servers refuse a part of a request that others take, and say so in a way that can be
recognised: an older server answers 400 to ``stream_options``; llama-cpp-python answers 500
to ``response_format: {"type": "json_schema"}``, and takes the same schema as
``{"type": "json_object", "schema": ...}``. Each such case is a :class:`Refit`: how to
recognise the refusal, and how to change the request so that the server takes it. The attempt
loop sends the changed request at once (it is not a retry), and the endpoint remembers the
refusal, so that its later requests are built changed from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmtap._errors import LLMError, LLMResponseError, LLMUsageError
from llmtap._results import ServerKind
from llmtap._wire.dialects import Dialect, MessageLike, build_payload

__all__ = ["REFITS", "ChatRequest", "Refit", "build_request", "tool_schema"]


@dataclass(frozen=True, slots=True)
class Refit:
    """A part of a request that some servers refuse, and the change that makes them take it.

    Attributes:
        name: What is refused (``"stream_options"``, ``"json_schema"``).
        refused: Whether an error is a server refusing that part.
        change: Changes a payload in place so that the part is gone or in the accepted
            shape; ``False`` when the payload did not have it (nothing to change).
    """

    name: str
    refused: Callable[[LLMResponseError], bool]
    change: Callable[[dict[str, Any]], bool]


def _names(error: LLMResponseError, *words: str) -> bool:
    said = f"{error.server_message or ''} {error.error_code or ''}"
    return all(word in said for word in words)


def _drop_stream_options(payload: dict[str, Any]) -> bool:
    return payload.pop("stream_options", None) is not None


def _json_object_with_schema(payload: dict[str, Any]) -> bool:
    response_format = payload.get("response_format")
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return False
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    payload["response_format"] = {"type": "json_object", "schema": schema}
    return True


#: The refusals llmtap knows how to work around, by name.
REFITS: dict[str, Refit] = {
    refit.name: refit
    for refit in (
        # Servers before OpenAI added it: a 400 naming the field.
        Refit(
            "stream_options",
            lambda error: error.status_code in (400, 422) and _names(error, "stream_options"),
            _drop_stream_options,
        ),
        # llama-cpp-python 0.3: a 500 (a validation error) naming response_format and the
        # types it takes, 'text' or 'json_object'.
        Refit(
            "json_schema",
            lambda error: (
                error.status_code in (400, 422, 500)
                and _names(error, "response_format", "json_object")
            ),
            _json_object_with_schema,
        ),
    )
}


def tool_schema(tool: Any) -> Mapping[str, Any]:
    """A tool as its OpenAI schema: a mapping as is, or an object's ``to_schema()``."""
    if isinstance(tool, Mapping):
        return tool
    to_schema = getattr(tool, "to_schema", None)
    if callable(to_schema):
        schema = to_schema()
        if isinstance(schema, Mapping):
            return schema
    raise LLMUsageError(
        f"tools must be schema dicts or objects with to_schema(), not {type(tool).__name__}"
    )


class ChatRequest:
    """One chat request as sent (and re-sent on retries): dialect, URL and encoded body.

    Only the encoded body is kept (one bytes object, not the payload's dicts and lists, which
    a thousand concurrent streams would otherwise hold); :attr:`payload` decodes it again for
    the rare uses that need it.
    """

    __slots__ = ("body", "dialect", "model", "options", "output_limit", "stream", "url")

    def __init__(self, dialect: Dialect, url: str, payload: dict[str, Any]) -> None:
        self.dialect = dialect
        self.url = url
        #: The model the request names.
        self.model = str(payload.get("model", ""))
        #: Whether the answer is asked for as a stream.
        self.stream = bool(payload.get("stream"))
        #: Ollama's ``options`` as sent (``num_ctx``, ...), if any.
        self.options: Any = payload.get("options")
        #: A Responses request's ``max_output_tokens`` (``None``: none, or another dialect).
        limit = payload.get("max_output_tokens") if dialect == "responses" else None
        self.output_limit: int | None = limit if type(limit) is int else None
        self.body = orjson.dumps(payload)

    @property
    def payload(self) -> dict[str, Any]:
        """A fresh copy of the payload, decoded from the body."""
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload

    def refit(self, error: LLMError) -> tuple[str, ChatRequest] | None:
        """After ``error``: when it is a server refusing a part of this request that a known
        change makes acceptable, the refusal's name and the changed request."""
        if not isinstance(error, LLMResponseError):
            return None
        for refit in REFITS.values():
            if refit.refused(error):
                payload = self.payload
                if refit.change(payload):
                    return refit.name, ChatRequest(self.dialect, self.url, payload)
        return None

    def continuation(self, partial_text: str, server: ServerKind | None) -> ChatRequest:
        """The request that continues ``partial_text`` as the assistant's own unfinished
        message (a prefill), so the server sends only what follows it."""
        payload = self.payload
        payload["messages"].append({"role": "assistant", "content": partial_text})
        if server == "vllm":
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        return ChatRequest(self.dialect, self.url, payload)


def build_request(
    dialect: Dialect,
    url: str,
    *,
    model: str,
    messages: Iterable[MessageLike],
    tools: Sequence[Any] | None,
    temperature: float | None,
    max_tokens: int | None,
    stream: bool,
    params: Mapping[str, Any],
    refused: Iterable[str] = (),
) -> ChatRequest:
    """The chat request for these arguments, with the changes for every refusal the server
    made before (``refused``: names of :data:`REFITS`) applied.

    Raises:
        LLMUsageError: No messages, or a tool that is neither a schema nor has one.
    """
    messages = list(messages)
    if not messages:
        raise LLMUsageError("messages is empty: send at least one message")
    payload = build_payload(
        dialect,
        model=model,
        messages=messages,
        tools=[tool_schema(tool) for tool in tools] if tools else None,
        temperature=temperature,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=True,
        params=params,
    )
    for name in refused:
        REFITS[name].change(payload)
    return ChatRequest(dialect, url, payload)
