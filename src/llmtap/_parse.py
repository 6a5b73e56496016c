"""``parse``: ask for an answer shaped as a Python type, check it, and ask once more if it is not.

The type's JSON schema goes out as ``response_format`` (``json_schema``); servers that enforce
it (llama.cpp and vLLM through grammars, Ollama through ``format``, OpenAI in strict mode) can
only produce matching JSON, and the rest are at least told. The reply is validated with
pydantic; on failure a repair round shows the model its reply and the errors, unless the reply
stopped at ``max_tokens`` (``finish_reason == "length"``): asking again would meet the same
limit, so that raises at once and says to raise ``max_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pydantic
from pydantic import TypeAdapter

from llmtap._api import ChatAPI
from llmtap._errors import LLMParseError, LLMUsageError
from llmtap._log import get_logger
from llmtap._messages import Message, check_messages
from llmtap._tools import format_validation_errors, tidy_schema
from llmtap._wire.dialects import MessageLike

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from llmtap._results import Usage

__all__ = ["OutputT", "parse", "response_format_for", "strict_schema", "unfence"]

OutputT = TypeVar("OutputT")
"""The type ``parse`` returns."""

_log = get_logger()

#: A fenced code block, optionally labelled json: what models wrap JSON in.
_FENCE = re.compile(r"```[ \t]*(?:json5?|JSON)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```", re.DOTALL)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def unfence(text: str) -> str:
    """The JSON inside a reply: the text itself, or the content of a fenced block (```json)
    when the reply does not start as JSON.

    Example:
        >>> unfence('Sure!\\n```json\\n{"a": 1}\\n```')
        '{"a": 1}'
    """
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    match = _FENCE.search(stripped)
    return match.group(1) if match else stripped


def strict_schema(schema: Any) -> bool:
    """Whether OpenAI's strict mode can take ``schema``: an object at the root, and every
    object lists all its properties as required and forbids others."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return False
    return _all_objects_closed(schema)


def _all_objects_closed(node: Any) -> bool:
    if isinstance(node, list):
        return all(_all_objects_closed(item) for item in node)
    if not isinstance(node, dict):
        return True
    if node.get("type") == "object" or "properties" in node:
        properties = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return False
        if set(node.get("required") or ()) != set(properties):
            return False
    return all(
        _all_objects_closed(value)
        for key, value in node.items()
        if key not in {"default", "enum", "const", "examples", "required"}
    )


def _schema_name(output_type: Any) -> str:
    name = getattr(output_type, "__name__", None)
    if not isinstance(name, str):
        return "output"
    return _NAME_CHARS.sub("_", name)[:64] or "output"


def response_format_for(output_type: Any) -> tuple[TypeAdapter[Any], dict[str, Any]]:
    """The validator for ``output_type`` and the ``response_format`` that asks for it.

    Raises:
        LLMUsageError: Pydantic cannot validate the type or give its JSON schema.
    """
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(output_type)
        schema = tidy_schema(adapter.json_schema())
    except pydantic.PydanticUserError as exc:
        raise LLMUsageError(
            f"parse() cannot use {output_type!r}: {exc}. Pass a pydantic model, a dataclass, "
            "a TypedDict or another type pydantic can describe as JSON schema"
        ) from exc
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": _schema_name(output_type),
            "schema": schema,
            "strict": strict_schema(schema),
        },
    }
    return adapter, response_format


def _repair_request(errors: list[ErrorDetails]) -> str:
    return (
        "Your reply does not match the required JSON schema:\n"
        f"{format_validation_errors(errors)}\n"
        "Reply again with only the corrected JSON, and no other text."
    )


def _cut_off(name: str, raw_text: str, errors: list[ErrorDetails], usage: Usage) -> LLMParseError:
    """The error for a reply that stopped at ``max_tokens`` before it validated."""
    tokens = usage.completion_tokens
    after = f" after {tokens} tokens" if tokens is not None else ""
    return LLMParseError(
        f"The model's reply was cut at max_tokens (finish_reason='length'){after}, before its "
        f"JSON for {name} was complete; raise max_tokens and ask again. The reply so far is "
        "in .raw_text",
        raw_text=raw_text,
        errors=errors,
    )


@overload
async def parse(
    client: ChatAPI,
    messages: Iterable[MessageLike],
    output_type: type[OutputT],
    *,
    repair_rounds: int = 1,
    **params: Any,
) -> OutputT: ...


@overload
async def parse(
    client: ChatAPI,
    messages: Iterable[MessageLike],
    output_type: Any,
    *,
    repair_rounds: int = 1,
    **params: Any,
) -> Any: ...


async def parse(
    client: ChatAPI,
    messages: Iterable[MessageLike],
    output_type: Any,
    *,
    repair_rounds: int = 1,
    **params: Any,
) -> Any:
    """Structured output behind :meth:`LLMClient.parse` (documented there)."""
    if repair_rounds < 0:
        raise LLMUsageError(f"repair_rounds must be 0 or more, not {repair_rounds}")
    if "response_format" in params or "format" in params:
        raise LLMUsageError(
            "parse() sets response_format itself from the type you pass; leave it out"
        )
    adapter, response_format = response_format_for(output_type)
    name = response_format["json_schema"]["name"]
    transcript: list[MessageLike] = check_messages(messages)
    for attempt in range(repair_rounds + 1):
        result = await client.chat(transcript, response_format=response_format, **params)
        raw_text = result.text
        try:
            return adapter.validate_json(unfence(raw_text))
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False)
        if result.finish_reason == "length":  # a repair round would meet the same limit
            raise _cut_off(name, raw_text, errors, result.usage)
        _log.warning(
            "parse_invalid_reply",
            type=name,
            attempt=attempt + 1,
            errors=len(errors),
            detail=format_validation_errors(errors),
        )
        transcript += [Message.assistant(raw_text), Message.user(_repair_request(errors))]
    attempts = repair_rounds + 1
    raise LLMParseError(
        f"The model's reply did not validate as {name} after {attempts} "
        f"{'attempt' if attempts == 1 else 'attempts'}:\n{format_validation_errors(errors)}\n"
        "The reply is in .raw_text and the errors in .errors; a clearer prompt, a larger model "
        "or more repair_rounds may help",
        raw_text=raw_text,
        errors=errors,
    )
