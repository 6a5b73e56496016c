"""Building blocks shared by every dialect: JSON encoding, error envelopes, ids, the shape API.

Pure code, no I/O. A *flavor* is one wire format: ``"openai"``, ``"ollama"`` (Ollama's
OpenAI-compatible ``/v1`` layer), ``"ollama_native"`` (``/api/chat``), ``"llamacpp"``
(llama-server) and ``"vllm"``. The chat shapes follow the fact sheet in ``WIRE.md`` (Ollama
after v0.32.6, current llama-server, vLLM after v0.10.1); the Responses API shapes follow
``WIRE-responses.md`` (`_responses_shapes`).
"""

from __future__ import annotations

import re
import secrets
import string
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Literal

import orjson

from llmtap.testing._reply import StreamErrorStyle

__all__ = [
    "ALNUM",
    "BAD_UTF8_MARK",
    "DONE",
    "JSON",
    "LOWER_ALNUM",
    "Call",
    "ChatFacts",
    "Content",
    "Flavor",
    "Shape",
    "encode",
    "error_envelope",
    "llamacpp_error_type",
    "llamacpp_http_error",
    "random_id",
    "rfc3339_now",
    "split_even",
    "split_words",
    "vllm_error_type",
]


Flavor = Literal["openai", "ollama", "ollama_native", "llamacpp", "vllm"]

JSON = dict[str, Any]

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
_WORD = re.compile(r"\s*\S+")
DONE = b"data: [DONE]\n\n"
BAD_UTF8_MARK = "@@llmtap-invalid-utf8@@"


def random_id(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def split_words(text: str) -> list[str]:
    """Split ``text`` into word pieces that carry their leading whitespace.

    ``"Hello there"`` gives ``["Hello", " there"]``; trailing whitespace joins the last piece,
    so the pieces always concatenate to ``text``. An empty text gives no pieces.
    """
    pieces = _WORD.findall(text)
    rest = text[sum(len(p) for p in pieces) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


def split_even(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` consecutive pieces of nearly equal length."""
    if not text:
        return []
    parts = min(parts, len(text))
    return [text[i * len(text) // parts : (i + 1) * len(text) // parts] for i in range(parts)]


def rfc3339_now(offset_seconds: float = 0.0) -> str:
    """Return the current UTC time as Go formats it in JSON (RFC 3339 with nanoseconds)."""
    now = time.time_ns() + int(offset_seconds * 1e9)
    seconds, nanos = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def encode(flavor: Flavor, obj: Any, *, sort_keys: bool = False) -> bytes:
    """Serialize ``obj`` as compact JSON the way the flavor's server does.

    Ollama is written in Go, whose encoder escapes ``<``, ``>``, ``&``, U+2028 and U+2029, and
    writes the keys of a map (not of a struct) sorted: ``sort_keys`` does that at every level.
    llama.cpp's ``nlohmann::ordered_json`` keeps keys in the order the server inserts them, as
    orjson does: its shapes build their dicts in that order.
    """
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    if flavor in ("ollama", "ollama_native"):
        # These characters can only occur inside JSON strings, so a byte replace is safe.
        data = (
            data.replace(b"<", b"\\u003c")
            .replace(b">", b"\\u003e")
            .replace(b"&", b"\\u0026")
            .replace("\u2028".encode(), b"\\u2028")
            .replace("\u2029".encode(), b"\\u2029")
        )
    return data


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


_LLAMACPP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


def llamacpp_error_type(status: int | None) -> str:
    if status is None:
        return "server_error"
    default = "server_error" if status >= 500 else "invalid_request_error"
    return _LLAMACPP_TYPES.get(status, default)


def vllm_error_type(status: int | None) -> str:
    """vLLM's error type: the status phrase in CamelCase ending in Error (404 NotFoundError)."""
    if status is None:
        return "InternalServerError"
    name = "".join(word.capitalize() for word in re.split(r"[\s-]+", _phrase(status)))
    return name if name.endswith("Error") else name + "Error"


def _ollama_type(status: int) -> str:
    return {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")


def _openai_type(status: int, code: str | None) -> str:
    if status == 429:
        return "insufficient_quota" if code == "insufficient_quota" else "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_envelope(
    flavor: Flavor,
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    error_type: str | None = None,
    fields: dict[str, Any] | None = None,
) -> JSON:
    """Return the JSON error body the flavor's server sends with an HTTP error status.

    Args:
        flavor: Whose envelope to build.
        status: The HTTP status.
        message: The message; the status phrase when ``None``.
        code: The string ``code`` (OpenAI-shaped envelopes only; vLLM and llama.cpp put the
            integer status there).
        error_type: Overrides the ``type`` the server would pick for this status.
        fields: Further fields of the error object, after the server's own.
    """
    text = message if message is not None else _phrase(status)
    error: JSON
    if flavor == "ollama_native":
        return {"error": text}
    if flavor == "llamacpp":  # format_error_response (server-common.cpp)
        kind = error_type or llamacpp_error_type(status)
        error = {"code": status, "message": text, "type": kind}
    elif flavor == "vllm":
        kind = error_type or vllm_error_type(status)
        error = {"message": text, "type": kind, "param": None, "code": status}
    else:
        kind = error_type or (
            _ollama_type(status) if flavor == "ollama" else _openai_type(status, code)
        )
        error = {"message": text, "type": kind, "param": None, "code": code}
    error.update(fields or {})
    return {"error": error}


def llamacpp_http_error(status: int, message: str, error_type: str) -> JSON:
    """The error llama-server's HTTP layer writes itself (``server-http.cpp``: unknown route,
    bad API key, loading): its fields in another order than its handlers' errors."""
    return {"error": {"message": message, "type": error_type, "code": status}}


@dataclass(frozen=True)
class ChatFacts:
    """What the answer depends on from the request and the server's configuration.

    Attributes:
        model: The model name the answer reports.
        stream: Whether the client asked for a stream.
        include_usage: Whether it set ``stream_options.include_usage``.
        include_obfuscation: OpenAI only: whether chunks carry the ``obfuscation`` field.
        build: llama.cpp only: the build its ``system_fingerprint`` names.
        request: The request body, for the fields a Responses API answer echoes
            (``instructions``, ``tools``, ``temperature``...); empty for chat.
    """

    model: str
    stream: bool
    include_usage: bool = False
    include_obfuscation: bool = True
    build: str = ""
    request: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    index: int
    id: str
    name: str
    arguments: str  # the JSON text (verbatim when the spec gave a string)
    raw: dict[str, Any] | str
    chunks: tuple[str, ...] | None = None  # the argument pieces, when the spec gave them

    def pieces(self, fragments: int) -> list[str]:
        """The argument text in its pieces: as scripted, else split in ``fragments``."""
        return (
            list(self.chunks) if self.chunks is not None else split_even(self.arguments, fragments)
        )


@dataclass(frozen=True)
class Content:
    text_pieces: list[str]
    reasoning_pieces: list[str]  # empty when the flavor has no reasoning field
    calls: list[Call]
    finish: str | None
    usage: tuple[int, int] | None

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_pieces)


class Shape:
    """The interface every flavor implements; `_sse_shapes.OpenAIShape` bases the SSE ones."""

    flavor: ClassVar[Flavor]
    has_reasoning: ClassVar[bool] = True
    stream_content_type: ClassVar[str]
    json_content_type: ClassVar[str]
    ping: ClassVar[bytes] = b""
    terminator: ClassVar[bytes] = b""
    #: Whether ``error_after`` drops the connection after the error tail instead of ending
    #: the body cleanly (vLLM's Responses stream, whose generator raises).
    error_resets: ClassVar[bool] = False

    def __init__(self, facts: ChatFacts) -> None:
        self.facts = facts

    def dumps(self, obj: Any) -> bytes:
        return encode(self.flavor, obj)

    def new_tool_call_id(self) -> str:
        raise NotImplementedError

    def auto_finish(self, has_calls: bool) -> str:
        return "tool_calls" if has_calls else "stop"

    def stream_frames(self, content: Content, fragments: int) -> list[bytes]:
        raise NotImplementedError

    def completion(self, content: Content) -> JSON:
        raise NotImplementedError

    def stream_error(
        self, message: str, code: int | None, style: StreamErrorStyle | None, *, sequence: int = 0
    ) -> bytes:
        """What ``error_after`` writes; ``sequence`` is how many events precede it (for the
        formats that number their events)."""
        raise NotImplementedError

    def malformed(self) -> bytes:
        raise NotImplementedError

    def invalid_utf8(self, *, sequence: int = 0) -> bytes:
        raise NotImplementedError

    def oversized(self, size: int) -> bytes:
        raise NotImplementedError
