"""Conversation messages and tool calls, and their wire forms."""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Message", "Role", "ToolCall"]

Role = Literal["system", "user", "assistant", "tool"]


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


def _image_base64(image: bytes | str) -> str:
    """Raw bytes become base64; a string is taken as base64 already (a data URL is unwrapped)."""
    if isinstance(image, bytes):
        return base64.b64encode(image).decode("ascii")
    if image.startswith("data:"):
        return image.partition(",")[2]
    return image


def _image_url(image: bytes | str) -> str:
    if isinstance(image, str) and image.startswith(("data:", "http://", "https://")):
        return image
    return f"data:image/png;base64,{_image_base64(image)}"


class Message(BaseModel):
    """One message of a conversation.

    Args:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: The text. ``None`` is allowed for an assistant message that only calls tools.
        tool_calls: Calls made by an assistant message.
        tool_call_id: For a ``tool`` message, the id of the call it answers.
        name: The tool's name (``tool`` messages) or a participant's name.
        images: Images for vision models: raw bytes, base64 text, or a ``data:``/``http(s):`` URL.

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
