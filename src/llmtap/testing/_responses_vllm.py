"""vLLM's Responses shape (0.34): the common stream and whole answer, with events in
alphabetical order, the reasoning as ``reasoning_text`` in content parts, and vLLM's objects.

Pure code, no I/O.
"""

from __future__ import annotations

import secrets
from typing import ClassVar

from llmtap.testing._responses_base import ResponsesShape
from llmtap.testing._wire import JSON, Call, Content, Flavor, vllm_error_type

__all__ = ["VllmResponsesShape"]


class VllmResponsesShape(ResponsesShape):
    """vLLM 0.34 (``responses/serving.py``, ``streaming_events.py``): events are
    openai-python models, so their keys come out in alphabetical order and ``null`` fields
    are kept; reasoning comes as ``reasoning_text`` inside content parts; an answer cut by
    length ends with ``response.incomplete`` and its last item ``incomplete``; an error after
    the 200 cuts the connection with no event (its generator raises)."""

    flavor: ClassVar[Flavor] = "vllm"
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    json_content_type: ClassVar[str] = "application/json"
    error_resets: ClassVar[bool] = True
    # Reasoning only ever comes as reasoning_text in content parts (streaming_events.py).
    reasoning_text_event: ClassVar[str] = "response.reasoning_text"
    reasoning_part_event: ClassVar[str | None] = "response.content_part"
    reasoning_part_index: ClassVar[str] = "content_index"

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_" + secrets.token_hex(8)

    def new_tool_call_id(self) -> str:
        return "chatcmpl-tool-" + secrets.token_hex(8)

    def event_payload(self, event: JSON, sequence: int) -> JSON:
        return dict(sorted((event | {"sequence_number": sequence}).items()))

    # -- items ----------------------------------------------------------------------------
    def reasoning_item(self, item_id: str, text: str | None, status: str | None) -> JSON:
        return {
            "id": item_id,
            "summary": [],
            "type": "reasoning",
            "content": None if text is None else [self.reasoning_part(text)],
            "encrypted_content": None,
            "status": status,
        }

    def reasoning_part(self, text: str) -> JSON:
        return {"text": text, "type": "reasoning_text"}

    def message_item(self, item_id: str, text: str, status: str) -> JSON:
        return {
            "id": item_id,
            "content": [self.text_part(text)] if text else [],
            "role": "assistant",
            "status": status,
            "type": "message",
        }

    def text_part(self, text: str) -> JSON:
        return {"annotations": [], "text": text, "type": "output_text", "logprobs": None}

    def added_text_part(self) -> JSON:
        return self.text_part("") | {"logprobs": []}  # null once the part is done

    def call_item(self, item_id: str, call: Call, status: str) -> JSON:
        return {
            "arguments": "" if status == "in_progress" else call.arguments,
            "call_id": call.id,
            "name": call.name,
            "type": "function_call",
            "id": item_id,
            "namespace": None,
            "status": status,
        }

    # -- the response ---------------------------------------------------------------------
    def usage_object(self, prompt: int, completion: int, reasoning: int) -> JSON:
        return {
            "input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "input_tokens_per_turn": [prompt],
                "cached_tokens_per_turn": [0],
            },
            "output_tokens": completion,
            "output_tokens_details": {
                "reasoning_tokens": reasoning,
                "tool_output_tokens": 0,
                "output_tokens_per_turn": [completion],
                "tool_output_tokens_per_turn": [0],
            },
            "total_tokens": prompt + completion,
        }

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        request = self.request
        reason = self.incomplete_reason(content) if content is not None else None
        prompt = content.usage[0] if content is not None and content.usage is not None else 10
        max_tokens = request.get("max_output_tokens")
        return {
            "id": self.response_id,
            "created_at": self.created,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": request.get("instructions"),
            "metadata": request.get("metadata"),
            "model": self.facts.model,
            "object": "response",
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "temperature": request.get("temperature", 1.0),
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools", []),
            "top_p": request.get("top_p", 1.0),
            "background": bool(request.get("background", False)),
            "max_output_tokens": max_tokens if isinstance(max_tokens, int) else 4096 - prompt,
            "max_tool_calls": request.get("max_tool_calls"),
            "previous_response_id": request.get("previous_response_id"),
            "prompt": None,
            "prompt_cache_key": None,
            "prompt_cache_retention": None,
            "reasoning": request.get("reasoning"),
            "safety_identifier": None,
            "service_tier": request.get("service_tier", "auto"),
            "status": status,
            "text": request.get("text"),
            "top_logprobs": None,
            "truncation": request.get("truncation", "disabled"),
            "usage": self.usage(content) if content is not None else None,
            "user": None,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "input_messages": None,
            "output_messages": None,
        }

    # -- faults ---------------------------------------------------------------------------
    def error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": vllm_error_type(code), "param": None, "code": code}

    def default_stream_error(self, message: str, code: int | None, sequence: int) -> bytes:
        return b""  # the generator raises: no event, and the connection is cut (error_resets)
