"""llama-server's Responses shape (0c1e57098): a stream of its own, whose deltas name only
their item and whose ``.done`` events all wait for the end, on the common framing, ids and
faults; a whole answer of its own.

Pure code, no I/O.
"""

from __future__ import annotations

import time
from typing import ClassVar

from llmtap.testing._responses_base import ResponsesShape
from llmtap.testing._sse_shapes import llamacpp_timings
from llmtap.testing._wire import ALNUM, JSON, Call, Content, Flavor, llamacpp_error_type, random_id

__all__ = ["LlamaCppResponsesShape"]


class LlamaCppResponsesShape(ResponsesShape):
    """llama-server (``server-task.cpp``): no ``sequence_number``, deltas that carry only
    ``item_id``, the ``.done`` events of every item at the end, ``created`` and
    ``in_progress`` that hold only ``id``, ``object`` and ``status``, and its ``timings`` on
    the completed event. It never says an answer was cut short. A tool call's item id is
    ``fc_`` and its call id ``call_``, each followed by the id of the call."""

    flavor: ClassVar[Flavor] = "llamacpp"
    stream_content_type: ClassVar[str] = "text/event-stream"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"
    ping: ClassVar[bytes] = b":\n\n"

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_" + random_id(ALNUM, 32)

    def new_tool_call_id(self) -> str:
        return random_id(ALNUM, 32)

    def incomplete_reason(self, content: Content) -> str | None:
        return None  # always "completed"

    def event_payload(self, event: JSON, sequence: int) -> JSON:
        return event

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        """Each item added and filled in turn; the ``.done`` events come in `final_events`."""
        events = self.opening_events()
        rs, msg = self.reasoning_id, self.message_id
        if content.reasoning:
            events.append(self.item_event("added", self.reasoning_item(rs, None, "in_progress")))
            events += [
                {"type": "response.reasoning_text.delta", "delta": p, "item_id": rs}
                for p in content.reasoning_pieces
            ]
        if content.text:
            events += [
                self.item_event("added", self.message_item(msg, "", "in_progress")),
                {
                    "type": "response.content_part.added",
                    "item_id": msg,
                    "part": {"type": "output_text", "text": ""},
                },
                *(self.text_delta(0, piece) for piece in content.text_pieces),
            ]
        for call in content.calls:
            # The call appears with the first piece of its arguments, as one diff.
            added = {
                "id": "fc_" + call.id,
                "arguments": "",
                "call_id": "call_" + call.id,
                "name": call.name,
                "type": "function_call",
                "status": "in_progress",
            }
            events.append(self.item_event("added", added))
            events += [
                {
                    "type": "response.function_call_arguments.delta",
                    "delta": piece,
                    "item_id": "fc_" + call.id,
                }
                for piece in call.pieces(fragments)
            ]
        if content.finish is not None:
            events += self.final_events(content)
        return events

    def started_response(self) -> JSON:
        return {"id": self.response_id, "object": "response", "status": "in_progress"}

    @staticmethod
    def item_event(stage: str, item: JSON) -> JSON:
        """``response.output_item.added`` or ``.done`` (``stage``), with no ``output_index``."""
        return {"type": f"response.output_item.{stage}", "item": item}

    def text_delta(self, output_index: int, piece: str) -> JSON:
        return {"type": "response.output_text.delta", "item_id": self.message_id, "delta": piece}

    def final_events(self, content: Content) -> list[JSON]:
        """The final result: every item's ``.done`` events, then ``response.completed``."""
        events: list[JSON] = []
        if content.reasoning:
            item = self.reasoning_item(self.reasoning_id, content.reasoning, None)
            events.append(self.item_event("done", item))
        if content.text:
            part = self.text_part(content.text)
            message = {  # in another order than the message added
                "type": "message",
                "status": "completed",
                "id": self.message_id,
                "content": [part],
                "role": "assistant",
            }
            events += [
                {
                    "type": "response.output_text.done",
                    "item_id": self.message_id,
                    "text": content.text,
                },
                {"type": "response.content_part.done", "item_id": self.message_id, "part": part},
                self.item_event("done", message),
            ]
        for call in content.calls:
            events.append(self.item_event("done", self.finished_call(call)))
        return [*events, self.terminal_event(content, self.done_items(events))]

    def terminal_event(self, content: Content, output: list[JSON]) -> JSON:
        return super().terminal_event(content, output) | {"timings": llamacpp_timings(content)}

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        output: list[JSON] = []
        if content.reasoning:
            rs = self.new_item_id("rs")
            output.append(self.reasoning_item(rs, content.reasoning, "completed"))
        if content.text:
            msg = self.new_item_id("msg")
            output.append(self.message_item(msg, content.text, "completed"))
        output += [self.finished_call(call) for call in content.calls]
        now = int(time.time())
        response: JSON = {
            "completed_at": now,
            "created_at": now,
            "id": self.response_id,
            "model": self.facts.model,
            "object": "response",
            "output": output,
            "status": "completed",
        }
        return response | self.usage_field(content)

    # -- items ----------------------------------------------------------------------------
    def reasoning_item(self, item_id: str, text: str | None, status: str | None) -> JSON:
        item: JSON = {
            "id": item_id,
            "summary": [],
            "type": "reasoning",
            "content": [] if text is None else [{"text": text, "type": "reasoning_text"}],
            "encrypted_content": "",
        }
        if status is not None:  # the reasoning item done at the end of a stream has none
            item["status"] = status
        return item

    def message_item(self, item_id: str, text: str, status: str) -> JSON:
        return {
            "content": [] if status == "in_progress" else [self.text_part(text)],
            "id": item_id,
            "role": "assistant",
            "status": status,
            "type": "message",
        }

    def text_part(self, text: str) -> JSON:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    @staticmethod
    def finished_call(call: Call) -> JSON:
        """The call item as it is done, streamed or whole."""
        return {
            "id": "fc_" + call.id,
            "type": "function_call",
            "status": "completed",
            "arguments": call.arguments,
            "call_id": "call_" + call.id,
            "name": call.name,
        }

    # -- the response ---------------------------------------------------------------------
    def usage_object(self, prompt: int, completion: int, reasoning: int) -> JSON:
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
        }  # and no output_tokens_details

    def usage_field(self, content: Content | None) -> JSON:
        """``usage``, present only when there is one."""
        usage = self.usage(content) if content is not None else None
        return {} if usage is None else {"usage": usage}

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        response: JSON = {
            "id": self.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": self.facts.model,
            "output": output,
        }
        return response | self.usage_field(content)

    # -- faults ---------------------------------------------------------------------------
    def error_object(self, message: str, code: int | None) -> JSON:
        return {"code": code, "message": message, "type": llamacpp_error_type(code)}

    def default_stream_error(self, message: str, code: int | None, sequence: int) -> bytes:
        # format_oai_sse({"error": ...}): a data line with no event line, then the end.
        return self.data_error(message, code)
