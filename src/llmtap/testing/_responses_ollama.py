"""Ollama's Responses shape (v0.33): the common stream with its events written as sorted Go
maps, the reasoning as summary text with no part, each call whole, and the message left open
when tool calls follow; its own whole answer, in Go struct order.

Pure code, no I/O.
"""

from __future__ import annotations

import secrets
import time
from typing import ClassVar

from llmtap.testing._responses_base import ResponsesShape
from llmtap.testing._wire import JSON, LOWER_ALNUM, Call, Content, Flavor, encode, random_id

__all__ = ["OllamaResponsesShape"]


class OllamaResponsesShape(ResponsesShape):
    """Ollama's Responses layer (``openai/responses.go``, ``middleware/openai.go``), v0.33.

    Its stream events are Go maps, so every key comes out sorted; its whole answer is a Go
    struct, in field order. It never says that an answer was cut short, counts no reasoning
    tokens, and, when tool calls follow text, leaves the message without its ``.done``
    events, gives the first call the message's ``output_index`` and lists the message last.
    """

    flavor: ClassVar[Flavor] = "ollama"
    stream_content_type: ClassVar[str] = "text/event-stream"
    json_content_type: ClassVar[str] = "application/json"
    # The summary text events alone, with no part around them (R:1238-1308).
    reasoning_part_event: ClassVar[str | None] = None

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.randbelow(999999)}"

    def new_call_item_id(self) -> str:
        # fc_<rand>_<i>, i the call's place in its chunk: each call has a chunk of its own.
        return self.new_item_id("fc") + "_0"

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(LOWER_ALNUM, 8)

    def incomplete_reason(self, content: Content) -> str | None:
        return None  # status is "completed" even when cut at max tokens

    def dumps_event(self, payload: JSON) -> bytes:
        return encode(self.flavor, payload, sort_keys=True)  # a Go map: keys sorted

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        """The common order, except when tool calls follow text (R:1084-1120): the message
        is never done, the calls take its ``output_index`` and it is listed last."""
        events = self.opening_events()
        if content.reasoning:
            events += self.reasoning_events(0, content)
        index = 1 if content.reasoning else 0  # the message's, which the first call takes too
        if content.text:
            events += self.message_opening(index, content)
        for number, call in enumerate(content.calls, start=index):
            events += self.call_events(number, content, call, fragments)
        if content.text and not content.calls:
            events += self.message_closing(index, content)
        if content.finish is not None:
            output = self.done_items(events)
            if content.text and content.calls:  # the message, never done, is listed last
                output.append(self.message_item(self.message_id, content.text, "completed"))
            events.append(self.terminal_event(content, output))
        return events

    def argument_pieces(self, call: Call, fragments: int) -> list[str]:
        return [call.arguments]  # each call comes whole: its arguments in one delta

    def arguments_done(self, where: JSON, call: Call) -> JSON:
        event = super().arguments_done(where, call)
        del event["name"]  # .done does not name the function
        return event

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        """The whole answer (R:898-1030): the reasoning and the calls named after the
        response."""
        output: list[JSON] = []
        if content.reasoning:
            output.append(self.reasoning_item(f"rs_{self.response_id}", content.reasoning, None))
        if content.calls:  # the message is dropped when there are tool calls
            output += [
                self.call_item(f"fc_{self.response_id}_{n}", call, "completed", whole=True)
                for n, call in enumerate(content.calls)
            ]
        else:
            output.append(self.message_item(self.message_id, content.text, "completed"))
        return self.response_object("completed", output, content)

    # -- items ----------------------------------------------------------------------------
    def reasoning_item(self, item_id: str, text: str | None, status: str | None) -> JSON:
        item: JSON = {"id": item_id, "type": "reasoning", "summary": []}
        if text is not None:
            item["summary"] = [{"type": "summary_text", "text": text}]
            item["encrypted_content"] = text  # the thinking in plain text
        return item

    def message_item(self, item_id: str, text: str, status: str) -> JSON:
        return {
            "id": item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if status == "in_progress" else [self.text_part(text)],
        }

    def text_part(self, text: str) -> JSON:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def call_item(self, item_id: str, call: Call, status: str, *, whole: bool = False) -> JSON:
        item: JSON = {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": call.id,
            "name": call.name,
        }
        # A stream item is a map; the whole answer's is a struct with `arguments,omitempty`.
        if call.arguments or not whole:
            item["arguments"] = "" if status == "in_progress" else call.arguments
        return item

    # -- the response ---------------------------------------------------------------------
    def usage_object(self, prompt: int, completion: int, reasoning: int) -> JSON:
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},  # it counts none
        }

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        request = self.request
        tools = request.get("tools")
        reasoning = request.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        summary = reasoning.get("summary") if isinstance(reasoning, dict) else None
        text = request.get("text")
        text_format = text.get("format") if isinstance(text, dict) else None
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "incomplete_details": None,
            "model": self.facts.model,
            "previous_response_id": None,
            "instructions": request.get("instructions") or None,
            "output": output,
            "error": None,
            "tools": [
                {
                    "type": tool.get("type"),
                    "name": tool.get("name"),
                    "description": tool.get("description"),
                    "strict": tool.get("strict"),
                    "parameters": tool.get("parameters"),
                }
                for tool in (tools if isinstance(tools, list) else [])
                if isinstance(tool, dict)
            ],
            "tool_choice": "auto",
            "truncation": request.get("truncation") or "disabled",
            "parallel_tool_calls": True,
            "text": {"format": text_format or {"type": "text"}},
            "top_p": request.get("top_p", 1.0),
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "top_logprobs": 0,
            "temperature": request.get("temperature", 1.0),
            "reasoning": ({"effort": effort, "summary": summary} if effort or summary else None),
            "usage": self.usage(content) if content is not None else None,
            "max_output_tokens": request.get("max_output_tokens"),
            "max_tool_calls": None,
            "store": False,
            "background": bool(request.get("background", False)),
            "service_tier": "default",
            "metadata": {},
            "safety_identifier": None,
            "prompt_cache_key": None,
        }

    # -- faults ---------------------------------------------------------------------------
    def error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": "api_error", "param": None, "code": None}

    def default_stream_error(self, message: str, code: int | None, sequence: int) -> bytes:
        # The chat handler's {"error": ...} line decodes as an empty chunk, which makes no
        # event: the stream just ends, with no terminal event.
        return b""
