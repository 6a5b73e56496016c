"""Conversation messages and tool calls, their wire forms, and the check of what may be sent.

``check_messages`` is the one place that decides whether a conversation can be sent: every
call path runs it where the request is built, so that a bare string, a tuple or a mapping with
an unknown role fails with an ``LLMUsageError`` naming the problem rather than a ``ValueError``
from deep inside, or a server's refusal. ``Message`` applies the same rules when it is built.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmtap._errors import LLMUsageError

__all__ = ["Message", "Role", "ToolCall", "check_messages", "image_media_type"]

Role = Literal["system", "user", "assistant", "tool"]

#: The roles of a ``Message``.
_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
#: The roles a message given as a mapping may have: a ``Message``'s, and OpenAI's
#: ``developer`` (its newer name for ``system``), which mappings pass on as they are.
_MAPPING_ROLE_NAMES: tuple[str, ...] = (*_ROLES, "developer")
_MAPPING_ROLES = frozenset(_MAPPING_ROLE_NAMES)

_FIX_IMAGE = "send PNG, JPEG, GIF or WebP bytes (or a data: or http(s): URL)"
#: Formats sent by mistake, told by their first bytes, so that the error can name them.
_NOT_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML document"),
)
_HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif")


class ToolCall(BaseModel):
    """One function call the model asked for.

    Attributes:
        id: The call's id; a ``tool`` message answering it carries the same ``tool_call_id``.
        name: The function's name.
        arguments: The decoded arguments (always a dict; empty, ``null`` and ``"{}"`` all give
            ``{}``).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def to_api_dict(self) -> dict[str, Any]:
        """The OpenAI wire form: arguments as a JSON string."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": orjson.dumps(self.arguments).decode()},
        }


def image_media_type(data: bytes) -> str:
    """The media type of image bytes, told by their first bytes (their "magic number").

    Raises:
        LLMUsageError: The bytes are not PNG, JPEG, GIF or WebP.

    Example:
        >>> image_media_type(b"\\x89PNG\\r\\n\\x1a\\n...")
        'image/png'
    """
    media_type = _media_type(data)
    if media_type is None:
        raise LLMUsageError(f"The bytes are {_not_an_image(data)}")
    return media_type


def _media_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _not_an_image(data: bytes) -> str:
    """What the bytes are instead of an image, and the fix."""
    for magic, name in _NOT_IMAGES:
        if data.startswith(magic):
            return f"{name}, which a model does not take as an image: {_FIX_IMAGE}"
    if data[4:12] in _HEIF_BRANDS:
        return f"a HEIC or AVIF image, which a model does not take: {_FIX_IMAGE}"
    head = data[:8]
    shown = " ".join(f"{byte:02x}" for byte in head)
    return (
        f"not a PNG, JPEG, GIF or WebP image (it starts with {shown or 'nothing'}, "
        f"{head!r}): {_FIX_IMAGE}"
    )


def _decoded_head(text: str) -> bytes | None:
    """The first bytes that base64 ``text`` encodes, or ``None`` if it is not base64."""
    head = "".join(text[:64].split())[:24]
    head = head[: len(head) - len(head) % 4]
    try:
        return base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_image(image: bytes | str, where: str) -> None:
    """Refuse an image no server can take, before anything is sent."""
    if isinstance(image, str):
        if image.startswith(("data:", "http://", "https://")):
            return
        head = _decoded_head(image)
        if not head:
            shown = image if len(image) <= 40 else image[:40] + "…"
            raise LLMUsageError(
                f"{where} is the string {shown!r}, which is neither base64 image data nor a "
                "data: or http(s): URL; to send a file, pass its bytes (Path(...).read_bytes())"
            )
        data = head
    else:
        data = image
    if _media_type(data) is None:
        raise LLMUsageError(f"{where} is {_not_an_image(data)}")


def _image_base64(image: bytes | str) -> str:
    """Raw bytes become base64; a string is taken as base64 already (a data URL is unwrapped)."""
    if isinstance(image, bytes):
        return base64.b64encode(image).decode("ascii")
    if image.startswith("data:"):
        return image.partition(",")[2]
    return image


def _image_url(image: bytes | str) -> str:
    """A data URL whose media type is the one the bytes are in (a URL as it is)."""
    if isinstance(image, bytes):
        return f"data:{image_media_type(image)};base64,{_image_base64(image)}"
    if image.startswith(("data:", "http://", "https://")):
        return image
    head = _decoded_head(image) or b""
    return f"data:{image_media_type(head)};base64,{image}"


class Message(BaseModel):
    """One message of a conversation.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: The text. ``None`` is allowed for an assistant message that calls tools, and
            for a user message that carries only images.
        tool_calls: Calls made by an assistant message.
        tool_call_id: For a ``tool`` message, the id of the call it answers.
        name: The tool's name (``tool`` messages) or a participant's name.
        images: Images for vision models: raw bytes, base64 text, or a ``data:``/``http(s):`` URL.

    A message no server would take is refused when it is built, with an ``LLMUsageError``
    that names the problem (as ``chat()`` refuses such a message given as a mapping): an
    unknown role, a system, user or tool message without text, an assistant message with
    neither text nor tool calls, image bytes that are not PNG, JPEG, GIF or WebP. A value of
    the wrong type (``content=5``) raises pydantic's ``ValidationError``, as for any model.

    Example:
        >>> Message(role="user", content="Hi").to_api_dict()
        {'role': 'user', 'content': 'Hi'}
    """

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    images: tuple[bytes | str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_role(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("role") not in _ROLES:
            raise LLMUsageError(
                f"a message's role is {_quoted(_ROLES, 'or')}, not {data.get('role')!r}"
            )
        return data

    @model_validator(mode="after")
    def _check_sendable(self) -> Message:
        if self.content is None:
            if self.role == "assistant" and not self.tool_calls:
                raise LLMUsageError(
                    "an assistant message needs content or tool calls; Message.assistant(None) "
                    "is only for a message that calls tools (tool_calls=[...])"
                )
            if self.role != "assistant" and not (self.role == "user" and self.images):
                raise LLMUsageError(
                    f"a {self.role} message needs its text (content='...'); only an assistant "
                    "message that calls tools may have content=None"
                )
        for number, image in enumerate(self.images or ()):
            _check_image(image, f"images[{number}]")
        return self

    @classmethod
    def system(cls, content: str) -> Message:
        """A system message."""
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str, *, images: list[bytes | str] | None = None) -> Message:
        """A user message, optionally with images."""
        return cls(role="user", content=content, images=tuple(images) if images else None)

    @classmethod
    def assistant(cls, content: str | None, *, tool_calls: list[ToolCall] | None = None) -> Message:
        """An assistant message, optionally with the tool calls it made."""
        return cls(
            role="assistant", content=content, tool_calls=tuple(tool_calls) if tool_calls else None
        )

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, name: str | None = None) -> Message:
        """The result of one tool call."""
        return cls(role="tool", content=content, tool_call_id=tool_call_id, name=name)

    def to_api_dict(self) -> dict[str, Any]:
        """The OpenAI chat-completions wire form of this message."""
        data: dict[str, Any] = {"role": self.role}
        if self.images:
            parts: list[dict[str, Any]] = []
            if self.content:
                parts.append({"type": "text", "text": self.content})
            parts.extend(
                {"type": "image_url", "image_url": {"url": _image_url(image)}}
                for image in self.images
            )
            data["content"] = parts
        else:
            data["content"] = self.content
        if self.tool_calls:
            data["tool_calls"] = [call.to_api_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    def to_ollama_dict(self) -> dict[str, Any]:
        """The wire form of Ollama's native ``/api/chat``: images as bare base64, tool-call
        arguments as objects."""
        data: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.images:
            data["images"] = [_image_base64(image) for image in self.images]
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}}
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.role == "tool" and self.name is not None:
            data["tool_name"] = self.name
        return data


def _quoted(names: Iterable[str], last: str) -> str:
    quoted = [repr(name) for name in names]
    return f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def check_messages(
    messages: Iterable[Message | Mapping[str, Any]],
) -> list[Message | Mapping[str, Any]]:
    """The conversation as a list, once it is clear that it can be sent.

    Every call that builds a request runs this, so that a mistake fails before anything is
    sent, with an error that names it. ``Message`` objects were checked when they were built;
    a mapping (a message in its wire form) must have a known role (a ``Message``'s, or
    ``"developer"``), text content (a string or a list of content parts) unless it is an
    assistant message with tool calls or a user message with images.

    Raises:
        LLMUsageError: ``messages`` is a string, a single message, or not iterable; or one of
            its items is not a message, or cannot be sent (the error says which, and why).

    Example:
        >>> check_messages(iter([{"role": "user", "content": "hi"}]))
        [{'role': 'user', 'content': 'hi'}]
    """
    kind = type(messages)
    if kind is not list and kind is not tuple:  # the usual cases go straight on
        if isinstance(messages, str):
            shown = messages if len(messages) <= 40 else messages[:40] + "…"
            raise LLMUsageError(
                f"messages is the string {shown!r}, not a list of messages; "
                f"pass [Message.user({shown!r})]"
            )
        if isinstance(messages, Message):
            raise LLMUsageError("messages is one Message, not a list of messages; pass [message]")
        if isinstance(messages, Mapping):
            raise LLMUsageError("messages is one mapping, not a list of messages; pass [message]")
    try:
        items = list(messages)
    except TypeError:
        raise LLMUsageError(
            f"messages must be a list of messages, not {type(messages).__name__}"
        ) from None
    roles = _MAPPING_ROLES
    for number, item in enumerate(items):
        if type(item) is dict:  # the usual wire-form message, checked inline (once per request)
            role = item.get("role")
            if type(item.get("content")) is str and type(role) is str and role in roles:
                continue
        elif type(item) is Message or isinstance(item, Message):
            continue
        _check_mapping(item, number)
    return items


def _check_mapping(item: object, number: int) -> None:
    """Check one message given in another form than a ``Message``; ``number``: its place."""
    where = f"messages[{number}]"
    if isinstance(item, str):
        shown = item if len(item) <= 40 else item[:40] + "…"
        raise LLMUsageError(
            f"{where} is the string {shown!r}, not a message; messages must be a list of "
            "messages, like [Message.user('...')]"
        )
    if not isinstance(item, Mapping):
        shown = repr(item)
        shown = shown if len(shown) <= 60 else shown[:60] + "…"
        raise LLMUsageError(
            f"{where} is a {type(item).__name__} ({shown}); a message must be a Message "
            "(Message.user(...), ...) or a mapping with a 'role'"
        )
    role = item.get("role")
    if not isinstance(role, str) or role not in _MAPPING_ROLES:
        said = "has no 'role'" if role is None else f"has role {role!r}"
        roles = _quoted(_MAPPING_ROLE_NAMES, "or")
        raise LLMUsageError(f"{where} {said}; a message's role is {roles}")
    content = item.get("content")
    if content is None:
        if role == "assistant":
            if not item.get("tool_calls"):
                raise LLMUsageError(
                    f"{where} is an assistant message with neither content nor tool calls; "
                    "give it its text, or the tool_calls it made"
                )
        elif not (role == "user" and item.get("images")):
            raise LLMUsageError(
                f"{where} is a {role} message without content; a {role} message needs its "
                "text (content='...')"
            )
    elif not isinstance(content, str | list):
        raise LLMUsageError(
            f"{where} has content of type {type(content).__name__}; content is text (or a "
            "list of content parts)"
        )
