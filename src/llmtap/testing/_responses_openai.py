"""OpenAI's Responses shape: the common stream and whole answer as they stand, with OpenAI's
objects (as recorded in June 2025 and typed by openai-python 3.x).

Pure code, no I/O.
"""

from __future__ import annotations

import secrets
from typing import ClassVar

from llmtap.testing._responses_base import ResponsesShape
from llmtap.testing._wire import ALNUM, JSON, Call, Content, Flavor, random_id

__all__ = ["OpenAIResponsesShape"]


class OpenAIResponsesShape(ResponsesShape):
    """OpenAI's own stream, as recorded in June 2025 and typed by openai-python 3.x."""

    flavor: ClassVar[Flavor] = "openai"
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    json_content_type: ClassVar[str] = "application/json"

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_" + secrets.token_hex(24)

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(ALNUM, 24)

    def incomplete_reason(self, content: Content) -> str | None:
        if content.finish == "content_filter":
            return "content_filter"
        return super().incomplete_reason(content)

    # -- items ----------------------------------------------------------------------------
    def reasoning_item(self, item_id: str, text: str | None, status: str | None) -> JSON:
        summary = [] if text is None else [self.reasoning_part(text)]
        return {"id": item_id, "type": "reasoning", "summary": summary}

    def reasoning_part(self, text: str) -> JSON:
        return {"type": "summary_text", "text": text}

    def message_item(self, item_id: str, text: str, status: str) -> JSON:
        content = [] if status == "in_progress" else [self.text_part(text)]
        return {
            "id": item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    def text_part(self, text: str) -> JSON:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def call_item(self, item_id: str, call: Call, status: str) -> JSON:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": "" if status == "in_progress" else call.arguments,
            "call_id": call.id,
            "name": call.name,
        }

    # -- the response ---------------------------------------------------------------------
    def usage_object(self, prompt: int, completion: int, reasoning: int) -> JSON:
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion,
        }

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        request = self.request
        reasoning = request.get("reasoning")
        reasoning = reasoning if isinstance(reasoning, dict) else {}
        reason = self.incomplete_reason(content) if content is not None else None
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": bool(request.get("background", False)),
            "error": None,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "model": self.facts.model,
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": {
                "effort": reasoning.get("effort"),
                "summary": reasoning.get("summary"),
            },
            "service_tier": "default" if content is not None else "auto",
            "store": request.get("store", True),
            "temperature": request.get("temperature", 1.0),
            "text": request.get("text", {"format": {"type": "text"}}),
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools", []),
            "top_p": request.get("top_p", 1.0),
            "truncation": request.get("truncation", "disabled"),
            "usage": self.usage(content) if content is not None else None,
            "user": None,
            "metadata": request.get("metadata", {}),
        }
