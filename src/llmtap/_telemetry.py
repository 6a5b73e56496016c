"""What the telemetry adapters (``llmtap.otel``, ``llmtap.prometheus``) read from the hook
records, with no telemetry library imported: the provider's name, the server's address, the
error's type, the request's parameters, and (when asked for) the messages in the shape the
OpenTelemetry GenAI conventions give them.

Everything here runs once per call (never per chunk), and reads only what llmtap sent or
received: request bodies never hold an API key (it travels in a header llmtap never
records), and addresses are read from URLs without their user or password.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from llmtap._errors import LLMError, LLMResponseError

__all__ = [
    "PROVIDERS",
    "address",
    "error_type",
    "input_messages",
    "output_messages",
    "provider_name",
    "request_parameters",
]

#: ``gen_ai.provider.name`` by the kind of server llmtap found (custom values where the
#: conventions have none; an OpenAI-compatible server of no kind llmtap tells apart, LM
#: Studio's among them, speaks OpenAI's API and is named ``openai``).
PROVIDERS: Mapping[str, str] = {
    "ollama": "ollama",
    "llama.cpp": "llama_cpp",
    "vllm": "vllm",
    "openai-compatible": "openai",
}


def provider_name(server: str | None) -> str:
    """The ``gen_ai.provider.name`` for a kind of server (``"openai"`` when unknown)."""
    return PROVIDERS.get(server or "", "openai")


@functools.lru_cache(maxsize=512)
def address(url: str | None) -> tuple[str, int] | None:
    """The host and port of ``url`` (the scheme's port when it names none); ``None`` for
    no URL or one without a host."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return host, port


def error_type(error: LLMError) -> str:
    """``error.type`` for a failed call: the HTTP status when the server answered with one
    (``"503"``), else the llmtap error class (``"LLMTimeoutError"``)."""
    if isinstance(error, LLMResponseError) and error.status_code:
        return str(error.status_code)
    return type(error).__name__


def decode(body: bytes | None) -> Mapping[str, Any] | None:
    """A request body decoded (``None`` for none, or one that is not a JSON object)."""
    if not body:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _number(value: Any) -> int | float | None:
    return value if type(value) in (int, float) else None


def request_parameters(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The ``gen_ai.request.*`` attributes a request body holds (OpenAI's top-level fields,
    or Ollama's native ``options``): max_tokens, temperature, top_p, top_k, seed,
    frequency and presence penalty, stop sequences, choice count."""
    options = payload.get("options")
    native: Mapping[str, Any] = options if isinstance(options, dict) else {}

    def pick(*names: str) -> Any:
        for name in names:
            if name in payload:
                return payload[name]
            if name in native:
                return native[name]
        return None

    found: dict[str, Any] = {}
    for attribute, names in (
        ("gen_ai.request.max_tokens", ("max_tokens", "max_completion_tokens", "num_predict")),
        ("gen_ai.request.temperature", ("temperature",)),
        ("gen_ai.request.top_p", ("top_p",)),
        ("gen_ai.request.top_k", ("top_k",)),
        ("gen_ai.request.seed", ("seed",)),
        ("gen_ai.request.frequency_penalty", ("frequency_penalty",)),
        ("gen_ai.request.presence_penalty", ("presence_penalty",)),
    ):
        value = _number(pick(*names))
        if value is not None:
            found[attribute] = value
    stop = pick("stop")
    if isinstance(stop, str):
        found["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        found["gen_ai.request.stop_sequences"] = tuple(stop)
    choices = _number(payload.get("n"))
    if isinstance(choices, int) and choices != 1:
        found["gen_ai.request.choice.count"] = choices
    return found


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        mime = head[5:].split(";", 1)[0] or None
        part: dict[str, Any] = {"type": "blob", "modality": "image", "content": data}
        if mime:
            part["mime_type"] = mime
        return part
    return {"type": "uri", "modality": "image", "uri": url}


def _parts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if message.get("role") == "tool":
        return [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id") or message.get("tool_name"),
                "response": content,
            }
        ]
    parts: list[dict[str, Any]] = []
    for name in ("reasoning_content", "reasoning", "thinking"):
        reasoning = message.get(name)
        if isinstance(reasoning, str) and reasoning:
            parts.append({"type": "reasoning", "content": reasoning})
            break
    if isinstance(content, str):
        if content:
            parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for piece in content:
            if not isinstance(piece, dict):
                continue
            if piece.get("type") == "text":
                parts.append({"type": "text", "content": piece.get("text", "")})
            elif piece.get("type") == "image_url":
                image = piece.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if isinstance(url, str):
                    parts.append(_image(url))
    for image in message.get("images") or ():  # Ollama's native base64 images
        if isinstance(image, str):
            parts.append({"type": "blob", "modality": "image", "content": image})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _arguments(function.get("arguments")),
                }
            )
    return parts


def input_messages(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's messages as ``gen_ai.input.messages`` (the conventions' JSON schema:
    ``{"role", "parts": [{"type": "text", "content"}, ...]}``), system messages included,
    in the order they were sent."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return []
    return [
        {"role": message.get("role"), "parts": _parts(message)}
        for message in messages
        if isinstance(message, dict)
    ]


def output_messages(
    text: str,
    reasoning: str | None,
    tool_calls: Sequence[tuple[str | None, str, Any]],
    finish_reason: str | None,
) -> list[dict[str, Any]]:
    """The answer as ``gen_ai.output.messages``: one assistant message with its reasoning,
    text and tool calls (``(id, name, arguments)``) as parts."""
    parts: list[dict[str, Any]] = []
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    if text:
        parts.append({"type": "text", "content": text})
    for call_id, name, arguments in tool_calls:
        parts.append({"type": "tool_call", "id": call_id, "name": name, "arguments": arguments})
    return [{"role": "assistant", "parts": parts, "finish_reason": finish_reason or "stop"}]
