"""Ollama's native ``/api/chat`` shape: NDJSON lines of ``api.ChatResponse``.

See ``WIRE.md`` section 1.4. Pure code, no I/O.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from llmtap.testing._reply import StreamErrorStyle
from llmtap.testing._wire import (
    BAD_UTF8_MARK,
    JSON,
    LOWER_ALNUM,
    Call,
    Content,
    Flavor,
    Shape,
    random_id,
    rfc3339_now,
)

__all__ = ["OllamaNativeShape"]


class OllamaNativeShape(Shape):
    """Ollama's native ``/api/chat``: NDJSON lines of ``api.ChatResponse``."""

    flavor: ClassVar[Flavor] = "ollama_native"
    stream_content_type: ClassVar[str] = "application/x-ndjson"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(LOWER_ALNUM, 8)

    def auto_finish(self, has_calls: bool) -> str:
        return "stop"  # native Ollama says "stop" even after tool calls

    def line(self, obj: Any) -> bytes:
        return self.dumps(obj) + b"\n"

    def response(self, message: JSON) -> JSON:
        return {
            "model": self.facts.model,
            "created_at": rfc3339_now(),
            "message": {"role": "assistant", **message},
            "done": False,
        }

    @staticmethod
    def native_arguments(call: Call) -> Any:
        if isinstance(call.raw, dict):
            return call.raw
        try:
            parsed = orjson.loads(call.raw)
        except orjson.JSONDecodeError:
            return call.raw
        return parsed if isinstance(parsed, dict) else call.raw

    def tool_call(self, call: Call) -> JSON:
        return {
            "id": call.id,
            "function": {
                "index": call.index,
                "name": call.name,
                "arguments": self.native_arguments(call),
            },
        }

    def metrics(self, content: Content) -> JSON:
        metrics: JSON = {"total_duration": 0, "load_duration": 2_000_000}
        prompt, completion = content.usage or (0, 0)
        if content.usage is not None:
            metrics["prompt_eval_count"] = prompt
        metrics["prompt_eval_duration"] = 100_000 * max(prompt, 1)
        if content.usage is not None:
            metrics["eval_count"] = completion
        metrics["eval_duration"] = 1_000_000 * max(completion, 1)
        metrics["total_duration"] = (
            metrics["load_duration"]
            + metrics["prompt_eval_duration"]
            + metrics["eval_duration"]
            + 500_000
        )
        return metrics

    def final(self, content: Content, message: JSON) -> JSON:
        obj = self.response(message)
        assert content.finish is not None
        obj["done_reason"] = content.finish
        obj["done"] = True
        obj.update(self.metrics(content))
        return obj

    def stream_frames(self, content: Content, fragments: int) -> list[bytes]:
        lines = [self.response({"content": "", "thinking": p}) for p in content.reasoning_pieces]
        lines += [self.response({"content": p}) for p in content.text_pieces]
        lines += [
            self.response({"content": "", "tool_calls": [self.tool_call(c)]}) for c in content.calls
        ]
        if content.finish is not None:
            lines.append(self.final(content, {"content": ""}))
        return [self.line(obj) for obj in lines]

    def completion(self, content: Content) -> JSON:
        message: JSON = {"content": content.text}
        if content.reasoning:
            message["thinking"] = content.reasoning
        if content.calls:
            message["tool_calls"] = [self.tool_call(c) for c in content.calls]
        if content.finish is None:
            return self.response(message)
        return self.final(content, message)

    def stream_error(
        self, message: str, code: int | None, style: StreamErrorStyle | None, *, sequence: int = 0
    ) -> bytes:
        return self.line({"error": message})

    def malformed(self) -> bytes:
        return b'{"message": {"content": "oops"\n'

    def invalid_utf8(self, *, sequence: int = 0) -> bytes:
        line = self.line(self.response({"content": BAD_UTF8_MARK}))
        return line.replace(BAD_UTF8_MARK.encode(), b"\xff\xfe")

    def oversized(self, size: int) -> bytes:
        return b"x" * size + b"\n"
