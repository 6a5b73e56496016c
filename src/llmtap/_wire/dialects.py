"""What differs between servers on the wire: request payloads and error bodies. No I/O here.

Three request dialects exist: ``openai`` (``/v1/chat/completions``: OpenAI, vLLM, llama.cpp,
LM Studio, and Ollama's ``/v1`` layer), ``ollama`` (Ollama's native ``/api/chat``) and
``responses`` (OpenAI's Responses API, ``/v1/responses``: see ``llmtap._wire.responses``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson

from llmtap._messages import Message
from llmtap._results import ServerKind

__all__ = [
    "Dialect",
    "ErrorInfo",
    "MessageLike",
    "ServerKind",
    "build_payload",
    "completion_to_chunk",
    "guess_server",
    "parse_error_body",
    "parse_error_object",
]

Dialect = Literal["openai", "ollama", "responses"]

MessageLike = Message | Mapping[str, Any]

#: Top-level keys of Ollama's native /api/chat request; other parameters go into ``options``.
_OLLAMA_TOP_LEVEL = frozenset(
    {"format", "keep_alive", "think", "tools", "truncate", "shift", "logprobs", "top_logprobs"}
)


def _message_dict(message: MessageLike, dialect: Dialect) -> dict[str, Any]:
    if isinstance(message, Message):
        return message.to_ollama_dict() if dialect == "ollama" else message.to_api_dict()
    return dict(message)


def build_payload(
    dialect: Dialect,
    *,
    model: str,
    messages: Iterable[MessageLike],
    tools: Sequence[Mapping[str, Any]] | None,
    temperature: float | None,
    max_tokens: int | None,
    stream: bool,
    include_usage: bool,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON body of one chat request.

    ``params`` pass through: top level for ``openai``; for ``ollama`` the native top-level keys
    stay there and the rest (``num_ctx``, ``seed``, ``stop``, ...) go into ``options``.
    """
    if dialect == "responses":
        from llmtap._wire.responses import build_responses_payload

        return build_responses_payload(
            model=model,
            messages=messages,
            tools=tools,
            temperature=temperature,
            max_tokens=max_tokens,
            stream=stream,
            params=params,
        )
    payload: dict[str, Any] = {
        "model": model,
        "messages": [_message_dict(message, dialect) for message in messages],
        "stream": stream,
    }
    if tools:
        payload["tools"] = [dict(tool) for tool in tools]
    if dialect == "openai":
        if temperature is not None:
            payload["temperature"] = temperature
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if stream and include_usage and "stream_options" not in params:
            payload["stream_options"] = {"include_usage": True}
        payload.update(params)
        return payload

    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for key, value in params.items():
        if key == "options":
            options.update(value)
        elif key == "response_format":
            payload["format"] = _ollama_format(value)
        elif key == "max_tokens":
            options["num_predict"] = value
        elif key in _OLLAMA_TOP_LEVEL:
            payload[key] = value
        else:
            options[key] = value
    if options:
        payload["options"] = options
    return payload


def _ollama_format(response_format: Any) -> Any:
    """OpenAI's ``response_format`` as Ollama's native ``format``."""
    if isinstance(response_format, Mapping):
        if response_format.get("type") == "json_object":
            return "json"
        schema = response_format.get("json_schema")
        if isinstance(schema, Mapping):
            return schema.get("schema", schema)
    return response_format


class ErrorInfo:
    """What an error body said: message, type, string code, numeric code."""

    __slots__ = ("code", "message", "number", "type")

    def __init__(
        self,
        message: str,
        type: str | None = None,
        code: str | None = None,
        number: int | None = None,
    ) -> None:
        self.message = message
        self.type = type
        self.code = code
        self.number = number


def _from_object(error: Mapping[str, Any]) -> ErrorInfo:
    inner = error.get("error")
    if isinstance(inner, Mapping):  # vLLM before 0.10.1 nested its flat error in {"error": ...}
        error = inner
    message = error.get("message")
    if message is None:
        message = error.get("detail", "")
    raw_code = error.get("code")
    number = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    if number is None and isinstance(raw_code, str) and raw_code.isdigit():
        number = int(raw_code)
    code = raw_code if isinstance(raw_code, str) and not raw_code.isdigit() else None
    kind = error.get("type")
    return ErrorInfo(
        str(message) if not isinstance(message, str) else message,
        kind if isinstance(kind, str) else None,
        code,
        number,
    )


def parse_error_object(obj: Any) -> ErrorInfo:
    """An error from a decoded JSON value: ``{"error": {...}}``, ``{"error": "text"}``, a flat
    ``{"object": "error", "message": ...}``, FastAPI's ``{"detail": ...}``, or a bare string."""
    if isinstance(obj, str):
        return ErrorInfo(obj)
    if not isinstance(obj, Mapping):
        return ErrorInfo(orjson.dumps(obj).decode())
    error = obj.get("error", obj)
    if isinstance(error, str):
        return ErrorInfo(error)
    if isinstance(error, Mapping):
        return _from_object(error)
    return ErrorInfo(orjson.dumps(obj).decode())


def parse_error_body(body: bytes) -> ErrorInfo:
    """An error from a response body: JSON in any server's envelope, else the text itself."""
    try:
        return parse_error_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace").strip()
        return ErrorInfo(text)


def completion_to_chunk(body: dict[str, Any]) -> dict[str, Any]:
    """A whole non-streaming ``chat.completion`` reshaped as one ``chat.completion.chunk``, for a
    server that ignored ``stream: true``: the message becomes the delta, tool calls get indices."""
    chunk = {key: value for key, value in body.items() if key != "choices"}
    chunk["object"] = "chat.completion.chunk"
    choices = []
    for number, choice in enumerate(body.get("choices") or ()):
        delta = dict(choice.get("message") or {})
        if isinstance(delta.get("tool_calls"), list):
            delta["tool_calls"] = [
                {"index": index, **call} for index, call in enumerate(delta["tool_calls"])
            ]
        choices.append(
            {
                "index": choice.get("index", number),
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    chunk["choices"] = choices
    return chunk


def guess_server(dialect: Dialect, chunk: Mapping[str, Any] | None) -> ServerKind:
    """The kind of server, told by the marks its chunks carry, when preflight did not run:
    Ollama's ``fp_ollama`` fingerprint, llama.cpp's ``timings``, vLLM's ``stop_reason``."""
    if dialect == "ollama":
        return "ollama"
    if chunk is not None:
        if chunk.get("system_fingerprint") == "fp_ollama":
            return "ollama"
        if "timings" in chunk:
            return "llama.cpp"
        choices = chunk.get("choices")
        if choices and isinstance(choices[0], Mapping) and "stop_reason" in choices[0]:
            return "vllm"
    return "openai-compatible"
