"""The OpenAI-style ``/v1/chat/completions`` shapes: OpenAI, Ollama ``/v1``, llama.cpp, vLLM.

`OpenAIShape` is OpenAI's own format; each other server overrides what it does differently
(see ``WIRE.md`` sections 1-4). Pure code, no I/O.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, ClassVar

from llmtap.testing._reply import StreamErrorStyle
from llmtap.testing._wire import (
    ALNUM,
    BAD_UTF8_MARK,
    DONE,
    JSON,
    LOWER_ALNUM,
    Call,
    ChatFacts,
    Content,
    Flavor,
    Shape,
    llamacpp_error_type,
    random_id,
    vllm_error_type,
)

__all__ = ["LlamaCppShape", "OllamaShape", "OpenAIShape", "VllmShape", "llamacpp_timings"]


def llamacpp_timings(content: Content) -> JSON:
    """llama-server's ``timings`` object for an answer (``server_slot_stats``), made up."""
    prompt, predicted = content.usage or (10, len(content.text_pieces))
    return {
        "cache_n": 0,
        "prompt_n": prompt,
        "prompt_ms": prompt * 0.5,
        "prompt_per_token_ms": 0.5,
        "prompt_per_second": 2000.0,
        "predicted_n": predicted,
        "predicted_ms": predicted * 1.0,
        "predicted_per_token_ms": 1.0,
        "predicted_per_second": 1000.0,
    }


class OpenAIShape(Shape):
    """OpenAI's own shapes; the other ``/v1/chat/completions`` servers override the differences."""

    flavor: ClassVar[Flavor] = "openai"
    has_reasoning: ClassVar[bool] = False
    reasoning_key: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    json_content_type: ClassVar[str] = "application/json"
    ping: ClassVar[bytes] = b": ping\n\n"
    terminator: ClassVar[bytes] = DONE
    #: Whether a ``data: [DONE]`` follows a ``data: {"error": ...}`` event.
    done_after_error: ClassVar[bool] = False

    def __init__(self, facts: ChatFacts) -> None:
        super().__init__(facts)
        self.id = self.new_completion_id()
        self.created = int(time.time())
        self.fingerprint = "fp_" + secrets.token_hex(5)

    # -- identity -------------------------------------------------------------------------
    def new_completion_id(self) -> str:
        return "chatcmpl-" + random_id(ALNUM, 29)

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(ALNUM, 24)

    def frame(self, obj: Any) -> bytes:
        return b"data: " + self.dumps(obj) + b"\n\n"

    # -- stream chunks --------------------------------------------------------------------
    def envelope(self, choices: list[JSON]) -> JSON:
        obj: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.facts.model,
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }
        if self.facts.include_usage:
            obj["usage"] = None
        if self.facts.include_obfuscation:
            obj["obfuscation"] = random_id(ALNUM, 1 + secrets.randbelow(12))
        return obj

    def choice(self, delta: JSON, finish: str | None = None) -> JSON:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def role_delta(self) -> JSON:
        return {"role": "assistant", "content": "", "refusal": None}

    def text_delta(self, piece: str) -> JSON:
        return {"content": piece}

    def reasoning_delta(self, piece: str) -> JSON:
        return {self.reasoning_key: piece}

    def tool_call_deltas(self, call: Call, fragments: int) -> list[JSON]:
        first = {
            "index": call.index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        rest = [
            {"index": call.index, "function": {"arguments": piece}}
            for piece in call.pieces(fragments)
        ]
        return [{"tool_calls": [fragment]} for fragment in (first, *rest)]

    def finish_chunk(self, content: Content) -> JSON:
        return self.envelope([self.choice({}, content.finish)])

    def usage_object(self, prompt: int, completion: int) -> JSON:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def usage_chunk(self, content: Content, usage: tuple[int, int]) -> JSON:
        obj = self.envelope([])
        obj["usage"] = self.usage_object(*usage)
        return obj

    def stream_frames(self, content: Content, fragments: int) -> list[bytes]:
        chunks: list[JSON] = [self.envelope([self.choice(self.role_delta())])]
        chunks += [
            self.envelope([self.choice(self.reasoning_delta(p))]) for p in content.reasoning_pieces
        ]
        chunks += [self.envelope([self.choice(self.text_delta(p))]) for p in content.text_pieces]
        for call in content.calls:
            chunks += [
                self.envelope([self.choice(d)]) for d in self.tool_call_deltas(call, fragments)
            ]
        if content.finish is not None:
            chunks.append(self.finish_chunk(content))
        if self.facts.include_usage and content.usage is not None:
            chunks.append(self.usage_chunk(content, content.usage))
        return [self.frame(chunk) for chunk in chunks]

    # -- whole answers --------------------------------------------------------------------
    def whole_tool_call(self, call: Call) -> JSON:
        return {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }

    def message(self, content: Content) -> JSON:
        message: JSON = {
            "role": "assistant",
            "content": content.text if content.text or not content.calls else None,
            "refusal": None,
            "annotations": [],
        }
        if content.calls:
            message["tool_calls"] = [self.whole_tool_call(c) for c in content.calls]
        return message

    def completion(self, content: Content) -> JSON:
        obj: JSON = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.facts.model,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(content),
                    "logprobs": None,
                    "finish_reason": content.finish,
                }
            ],
        }
        if content.usage is not None:
            obj["usage"] = self.usage_object(*content.usage)
        obj["service_tier"] = "default"
        obj["system_fingerprint"] = self.fingerprint
        return obj

    # -- faults ---------------------------------------------------------------------------
    def stream_error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": "server_error", "param": None, "code": None}

    def default_stream_error(self, message: str, code: int | None) -> bytes:
        tail = DONE if self.done_after_error else b""
        return self.frame({"error": self.stream_error_object(message, code)}) + tail

    def stream_error(
        self, message: str, code: int | None, style: StreamErrorStyle | None, *, sequence: int = 0
    ) -> bytes:
        if style == "event":
            return b"event: error\ndata: " + self.dumps({"message": message}) + b"\n\n"
        if style == "legacy_line":
            legacy = {
                "code": 500 if code is None else code,
                "message": message,
                "type": "server_error",
            }
            return b"error: " + self.dumps(legacy) + b"\n\n" + DONE
        if style == "data":
            tail = DONE if self.done_after_error else b""
            return self.frame({"error": self.stream_error_object(message, code)}) + tail
        return self.default_stream_error(message, code)

    def malformed(self) -> bytes:
        return b'data: {"choices": [{"delta": {"content": "oops"\n\n'

    def invalid_utf8(self, *, sequence: int = 0) -> bytes:
        frame = self.frame(self.envelope([self.choice(self.text_delta(BAD_UTF8_MARK))]))
        return frame.replace(BAD_UTF8_MARK.encode(), b"\xff\xfe")

    def oversized(self, size: int) -> bytes:
        return b"data: " + b"x" * size + b"\n\n"


class OllamaShape(OpenAIShape):
    """Ollama's ``/v1`` layer (``middleware/openai.go``), v0.32.6 and later."""

    flavor: ClassVar[Flavor] = "ollama"
    has_reasoning: ClassVar[bool] = True
    reasoning_key: ClassVar[str] = "reasoning"
    stream_content_type: ClassVar[str] = "text/event-stream"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"

    def new_completion_id(self) -> str:
        return f"chatcmpl-{secrets.randbelow(999)}"

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(LOWER_ALNUM, 8)

    def envelope(self, choices: list[JSON]) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.facts.model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
        }

    def choice(self, delta: JSON, finish: str | None = None) -> JSON:
        return {"index": 0, "delta": delta, "finish_reason": finish}

    def role_delta(self) -> JSON:
        return {"role": "assistant", "content": ""}

    def reasoning_delta(self, piece: str) -> JSON:
        # Go serializes content even when it is empty; every other delta field is omitempty.
        return {"content": "", "reasoning": piece}

    def tool_call_deltas(self, call: Call, fragments: int) -> list[JSON]:
        whole = {
            "id": call.id,
            "index": call.index,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        return [{"content": "", "tool_calls": [whole]}]

    def message(self, content: Content) -> JSON:
        message: JSON = {"role": "assistant", "content": content.text}
        if content.reasoning:
            message["reasoning"] = content.reasoning
        if content.calls:
            message["tool_calls"] = [
                {"id": c.id, "index": c.index, **self.whole_tool_call(c)} for c in content.calls
            ]
        return message

    def completion(self, content: Content) -> JSON:
        obj: JSON = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.facts.model,
            "system_fingerprint": "fp_ollama",
            "choices": [
                {"index": 0, "message": self.message(content), "finish_reason": content.finish}
            ],
        }
        if content.usage is not None:
            obj["usage"] = self.usage_object(*content.usage)
        return obj

    def stream_error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": "api_error", "param": None, "code": None}

    def default_stream_error(self, message: str, code: int | None) -> bytes:
        # The native {"error": ...} line is decoded as a ChatResponse, which has no error
        # field: the client gets one empty chunk with no model, and the message is lost.
        chunk = self.envelope([self.choice({"content": ""})])
        chunk["model"] = ""
        return self.frame(chunk)


class LlamaCppShape(OpenAIShape):
    """llama-server (``server-task.cpp``, ``server-chat.cpp``, ``chat.cpp``), as build 11434
    writes it. Its ``nlohmann::ordered_json`` keeps keys in the order the server inserts them:
    each dict here is built in that order (a chunk's ``choices`` first, a whole answer's
    ``id`` after its ``usage``)."""

    flavor: ClassVar[Flavor] = "llamacpp"
    has_reasoning: ClassVar[bool] = True
    reasoning_key: ClassVar[str] = "reasoning_content"
    stream_content_type: ClassVar[str] = "text/event-stream"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"
    ping: ClassVar[bytes] = b":\n\n"

    def __init__(self, facts: ChatFacts) -> None:
        super().__init__(facts)
        self.fingerprint = facts.build

    def new_completion_id(self) -> str:
        return "chatcmpl-" + random_id(ALNUM, 32)

    def new_tool_call_id(self) -> str:
        return random_id(ALNUM, 32)

    def envelope(self, choices: list[JSON]) -> JSON:
        return {
            "choices": choices,
            "created": int(time.time()),  # re-stamped on every chunk
            "id": self.id,
            "model": self.facts.model,
            "system_fingerprint": self.fingerprint,
            "object": "chat.completion.chunk",
        }

    def choice(self, delta: JSON, finish: str | None = None) -> JSON:
        return {"finish_reason": finish, "index": 0, "delta": delta}

    def role_delta(self) -> JSON:
        return {"role": "assistant", "content": None}

    def tool_call_deltas(self, call: Call, fragments: int) -> list[JSON]:
        # The call appears with the first piece of its arguments (each delta is a diff of the
        # parsed message), and a delta leaves out a field that is empty instead of sending "".
        first_piece, *rest = call.pieces(fragments) or [""]
        deltas: list[JSON] = []
        for number, piece in enumerate([first_piece, *rest]):
            function: JSON = {"name": call.name} if number == 0 else {}
            if piece:
                function["arguments"] = piece
            delta: JSON = {"index": call.index}
            if number == 0:
                delta |= {"id": call.id, "type": "function"}
            if function:
                delta["function"] = function
            deltas.append({"tool_calls": [delta]})
        return deltas

    def timings(self, content: Content) -> JSON:
        return llamacpp_timings(content)

    def finish_chunk(self, content: Content) -> JSON:
        obj = super().finish_chunk(content)
        # llama-server puts its timings on the last chunk: the usage chunk when one follows.
        if not (self.facts.include_usage and content.usage is not None):
            obj["timings"] = self.timings(content)
        return obj

    def usage_object(self, prompt: int, completion: int) -> JSON:
        return {
            "completion_tokens": completion,
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def usage_chunk(self, content: Content, usage: tuple[int, int]) -> JSON:
        obj = self.envelope([])
        obj["usage"] = self.usage_object(*usage)
        obj["timings"] = self.timings(content)
        return obj

    def whole_tool_call(self, call: Call) -> JSON:
        return {
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
            "id": call.id,
        }

    def message(self, content: Content) -> JSON:
        # Content is "" (never null) when there is none, tool calls or not.
        message: JSON = {"role": "assistant", "content": content.text}
        if content.reasoning:
            message["reasoning_content"] = content.reasoning
        if content.calls:
            message["tool_calls"] = [self.whole_tool_call(c) for c in content.calls]
        return message

    def completion(self, content: Content) -> JSON:
        obj: JSON = {
            "choices": [
                {"finish_reason": content.finish, "index": 0, "message": self.message(content)}
            ],
            "created": self.created,
            "model": self.facts.model,
            "system_fingerprint": self.fingerprint,
            "object": "chat.completion",
        }
        if content.usage is not None:
            obj["usage"] = self.usage_object(*content.usage)
        obj["id"] = self.id
        obj["timings"] = self.timings(content)
        return obj

    def stream_error_object(self, message: str, code: int | None) -> JSON:
        return {"code": code, "message": message, "type": llamacpp_error_type(code)}


class VllmShape(OpenAIShape):
    """vLLM's OpenAI server (``chat_completion/serving.py``), v0.10.1 and later."""

    flavor: ClassVar[Flavor] = "vllm"
    has_reasoning: ClassVar[bool] = True
    reasoning_key: ClassVar[str] = "reasoning"
    done_after_error: ClassVar[bool] = True

    def new_completion_id(self) -> str:
        return "chatcmpl-" + uuid.uuid4().hex

    def new_tool_call_id(self) -> str:
        return "chatcmpl-tool-" + uuid.uuid4().hex

    def envelope(self, choices: list[JSON]) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.facts.model,
            "choices": choices,
        }

    def role_delta(self) -> JSON:
        return {"role": "assistant", "content": ""}

    def finish_chunk(self, content: Content) -> JSON:
        # The last token's (empty) text rides on the finish chunk, with vLLM's stop_reason.
        delta: JSON = {} if content.calls else {"content": ""}
        choice = self.choice(delta, content.finish)
        choice["stop_reason"] = None
        return self.envelope([choice])

    def usage_object(self, prompt: int, completion: int) -> JSON:
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }

    def message(self, content: Content) -> JSON:
        return {
            "role": "assistant",
            "content": content.text if content.text or not content.calls else None,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [self.whole_tool_call(c) for c in content.calls],
            "reasoning": content.reasoning or None,
        }

    def completion(self, content: Content) -> JSON:
        obj: JSON = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.facts.model,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(content),
                    "logprobs": None,
                    "finish_reason": content.finish,
                    "stop_reason": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }
        if content.usage is not None:
            obj["usage"] = self.usage_object(*content.usage)
        return obj

    def stream_error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": vllm_error_type(code), "param": None, "code": code}
