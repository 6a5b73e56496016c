"""What every Responses API shape shares: the framing, the ids, the event sequence, the faults.

`ResponsesShape` frames each event as ``event: <type>`` then ``data: <json>``, names the
answer and its items, and builds the stream in OpenAI's order: ``response.created`` and
``response.in_progress``, then each output item (the reasoning, the message, one per tool
call) added, filled and done before the next, then the terminal event, whose response lists
the items as their ``output_item.done`` events carried them; a whole answer lists the same
items. The server modules (`_responses_openai`, `_responses_ollama`, `_responses_llamacpp`,
`_responses_vllm`) give the objects, whose keys each server orders its own way, and override
the steps their server takes differently. Pure code, no I/O.
"""

from __future__ import annotations

import time
from typing import ClassVar

from llmtap.testing._reply import StreamErrorStyle
from llmtap.testing._wire import BAD_UTF8_MARK, JSON, Call, ChatFacts, Content, Shape

__all__ = ["ResponsesShape"]


class ResponsesShape(Shape):
    """The common part of a Responses shape; a subclass gives its server's objects.

    A subclass sets `flavor` and the content types, says how its server names things
    (`new_item_id`, `new_tool_call_id`) and builds the objects it writes (`reasoning_item`,
    `reasoning_part`, `message_item`, `text_part`, `call_item`, `usage_object`,
    `response_object`). Where the subclass does not override them, events are numbered and
    named as OpenAI's are: `event_payload` puts ``sequence_number`` after ``type``, and the
    class attributes below name the events the reasoning text travels in.
    """

    ping: ClassVar[bytes] = b": ping\n\n"
    #: The events that carry the reasoning text (``.delta``, ``.done``).
    reasoning_text_event: ClassVar[str] = "response.reasoning_summary_text"
    #: The events of the part around the reasoning text (``.added``, ``.done``); ``None``
    #: when there is no part.
    reasoning_part_event: ClassVar[str | None] = "response.reasoning_summary_part"
    #: The key that numbers the reasoning part in those events.
    reasoning_part_index: ClassVar[str] = "summary_index"

    def __init__(self, facts: ChatFacts) -> None:
        super().__init__(facts)
        self.request = facts.request
        self.created = int(time.time())
        self.response_id = self.new_item_id("resp")
        self.message_id = self.new_item_id("msg")
        self.reasoning_id = self.new_item_id("rs")

    # -- identity -------------------------------------------------------------------------
    def new_item_id(self, prefix: str) -> str:
        """A new id: ``prefix`` (``resp``, ``msg``, ``rs``, ``fc``), ``_``, a random part."""
        raise NotImplementedError

    def new_call_item_id(self) -> str:
        """The id of a function call item."""
        return self.new_item_id("fc")

    # -- framing --------------------------------------------------------------------------
    def event_payload(self, event: JSON, sequence: int) -> JSON:
        """The event as the server writes it (OpenAI: ``sequence_number`` after ``type``)."""
        return {"type": event["type"], "sequence_number": sequence} | event

    def dumps_event(self, payload: JSON) -> bytes:
        return self.dumps(payload)

    def event_frame(self, event: JSON, sequence: int) -> bytes:
        payload = self.dumps_event(self.event_payload(event, sequence))
        return b"event: " + str(event["type"]).encode() + b"\ndata: " + payload + b"\n\n"

    def stream_frames(self, content: Content, fragments: int) -> list[bytes]:
        events = self.stream_events(content, fragments)
        return [self.event_frame(event, number) for number, event in enumerate(events)]

    # -- status ---------------------------------------------------------------------------
    def incomplete_reason(self, content: Content) -> str | None:
        """Why the answer is incomplete (``None``: it is complete, or the server never says)."""
        return "max_output_tokens" if content.finish == "length" else None

    def final_status(self, content: Content) -> str:
        """The status the answer ends at: ``"incomplete"`` when the server says so."""
        return "incomplete" if self.incomplete_reason(content) else "completed"

    def item_status(self, content: Content, index: int) -> str:
        """The status of output item ``index``: the answer's for the last item (the one a
        length cut stops), ``"completed"`` for the others."""
        count = bool(content.reasoning) + bool(content.text) + len(content.calls)
        return self.final_status(content) if index == count - 1 else "completed"

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        """The events in OpenAI's order: each item added, filled and done before the next."""
        events = self.opening_events()
        index = 0
        if content.reasoning:
            events += self.reasoning_events(index, content)
            index += 1
        if content.text:
            events += self.message_events(index, content)
            index += 1
        for number, call in enumerate(content.calls, start=index):
            events += self.call_events(number, content, call, fragments)
        if content.finish is not None:
            events.append(self.terminal_event(content, self.done_items(events)))
        return events

    def opening_events(self) -> list[JSON]:
        """``response.created`` and ``response.in_progress``, with the response as it starts."""
        started = self.started_response()
        return [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]

    def started_response(self) -> JSON:
        """The response that ``response.created`` and ``response.in_progress`` carry."""
        return self.response_object("in_progress", [], None)

    def terminal_event(self, content: Content, output: list[JSON]) -> JSON:
        """The event that ends the stream, named after the final status (``completed``,
        ``incomplete``), with the response and its ``output``."""
        status = self.final_status(content)
        response = self.response_object(status, output, content)
        return {"type": f"response.{status}", "response": response}

    @staticmethod
    def done_items(events: list[JSON]) -> list[JSON]:
        """The items of the ``output_item.done`` events, in order: the answer's output."""
        return [event["item"] for event in events if event["type"] == "response.output_item.done"]

    @staticmethod
    def output_item(stage: str, index: int, item: JSON) -> JSON:
        """``response.output_item.added`` or ``.done`` (``stage``) for ``item``."""
        return {"type": f"response.output_item.{stage}", "output_index": index, "item": item}

    def reasoning_events(self, index: int, content: Content) -> list[JSON]:
        """The reasoning item: added, its text in deltas and done (inside a part where the
        server has one), done."""
        rs, text = self.reasoning_id, content.reasoning
        where = {"item_id": rs, "output_index": index, self.reasoning_part_index: 0}
        kind, part = self.reasoning_text_event, self.reasoning_part_event
        filled = [
            *({"type": f"{kind}.delta", **where, "delta": p} for p in content.reasoning_pieces),
            {"type": f"{kind}.done", **where, "text": text},
        ]
        if part is not None:
            added = {"type": f"{part}.added", **where, "part": self.reasoning_part("")}
            done = {"type": f"{part}.done", **where, "part": self.reasoning_part(text)}
            filled = [added, *filled, done]
        status = self.item_status(content, index)
        return [
            self.output_item("added", index, self.reasoning_item(rs, None, "in_progress")),
            *filled,
            self.output_item("done", index, self.reasoning_item(rs, text, status)),
        ]

    def message_events(self, index: int, content: Content) -> list[JSON]:
        """The message item: opened, filled and closed."""
        return self.message_opening(index, content) + self.message_closing(index, content)

    def message_opening(self, index: int, content: Content) -> list[JSON]:
        """The message item added, its part added, its text deltas."""
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        return [
            self.output_item("added", index, self.message_item(self.message_id, "", "in_progress")),
            {"type": "response.content_part.added", **where, "part": self.added_text_part()},
            *(self.text_delta(index, piece) for piece in content.text_pieces),
        ]

    def message_closing(self, index: int, content: Content) -> list[JSON]:
        """The message's text, part and item done."""
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        text, status = content.text, self.item_status(content, index)
        return [
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": self.text_part(text)},
            self.output_item("done", index, self.message_item(self.message_id, text, status)),
        ]

    def call_events(self, index: int, content: Content, call: Call, fragments: int) -> list[JSON]:
        """A function call item: added, its arguments in deltas and done, done."""
        item_id = self.new_call_item_id()
        where = {"item_id": item_id, "output_index": index}
        status = self.item_status(content, index)
        return [
            self.output_item("added", index, self.call_item(item_id, call, "in_progress")),
            *(
                {"type": "response.function_call_arguments.delta", **where, "delta": piece}
                for piece in self.argument_pieces(call, fragments)
            ),
            self.arguments_done(where, call),
            self.output_item("done", index, self.call_item(item_id, call, status)),
        ]

    def argument_pieces(self, call: Call, fragments: int) -> list[str]:
        """The pieces the arguments stream in, one delta each."""
        return call.pieces(fragments)

    def arguments_done(self, where: JSON, call: Call) -> JSON:
        """``response.function_call_arguments.done``, which names the function."""
        return {
            "type": "response.function_call_arguments.done",
            **where,
            "name": call.name,
            "arguments": call.arguments,
        }

    def text_delta(self, output_index: int, piece: str) -> JSON:
        return {
            "type": "response.output_text.delta",
            "item_id": self.message_id,
            "output_index": output_index,
            "content_index": 0,
            "delta": piece,
            "logprobs": [],
        }

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        """The whole answer: the output items as they are done, in the response at its final
        status."""
        output: list[JSON] = []
        if content.reasoning:
            output.append(self.reasoning_item(self.reasoning_id, content.reasoning, None))
        if content.text:
            status = self.item_status(content, len(output))
            output.append(self.message_item(self.message_id, content.text, status))
        for call in content.calls:
            status = self.item_status(content, len(output))
            output.append(self.call_item(self.new_call_item_id(), call, status))
        return self.response_object(self.final_status(content), output, content)

    def usage(self, content: Content) -> JSON | None:
        """The usage object, or ``None`` when the reply has no usage; a reasoning piece counts
        as one reasoning token."""
        if content.usage is None:
            return None
        prompt, completion = content.usage
        return self.usage_object(prompt, completion, min(len(content.reasoning_pieces), completion))

    # -- the server's objects -------------------------------------------------------------
    def reasoning_item(self, item_id: str, text: str | None, status: str | None) -> JSON:
        """The reasoning item; ``text`` is ``None`` while it is in progress, ``status`` is
        ``None`` in a whole answer."""
        raise NotImplementedError

    def reasoning_part(self, text: str) -> JSON:
        """The part that holds the reasoning text."""
        raise NotImplementedError

    def message_item(self, item_id: str, text: str, status: str) -> JSON:
        raise NotImplementedError

    def text_part(self, text: str) -> JSON:
        """The ``output_text`` part that holds the message text."""
        raise NotImplementedError

    def added_text_part(self) -> JSON:
        """The empty part that ``response.content_part.added`` carries."""
        return self.text_part("")

    def call_item(self, item_id: str, call: Call, status: str) -> JSON:
        raise NotImplementedError

    def usage_object(self, prompt: int, completion: int, reasoning: int) -> JSON:
        """The usage object for these token counts (``reasoning`` of the ``completion``)."""
        raise NotImplementedError

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        """The response object at ``status``; ``content`` gives the usage (none while in
        progress)."""
        raise NotImplementedError

    # -- faults ---------------------------------------------------------------------------
    def error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": "server_error", "param": None, "code": None}

    def data_error(self, message: str, code: int | None) -> bytes:
        """The error alone on a ``data:`` line, with no ``event:`` line (llama-server's way)."""
        return b"data: " + self.dumps({"error": self.error_object(message, code)}) + b"\n\n"

    def failure_frames(self, message: str, sequence: int) -> bytes:
        """OpenAI's way: an ``error`` event, then ``response.failed`` with the error."""
        failed = self.response_object("failed", [], None)
        failed["error"] = {"code": "server_error", "message": message}
        error = {"type": "error", "code": "server_error", "message": message, "param": None}
        return self.event_frame(error, sequence) + self.event_frame(
            {"type": "response.failed", "response": failed}, sequence + 1
        )

    def default_stream_error(self, message: str, code: int | None, sequence: int) -> bytes:
        return self.failure_frames(message, sequence)

    def stream_error(
        self, message: str, code: int | None, style: StreamErrorStyle | None, *, sequence: int = 0
    ) -> bytes:
        if style == "data":
            return self.data_error(message, code)
        if style == "event":
            return self.failure_frames(message, sequence)
        if style == "legacy_line":
            legacy = {
                "code": 500 if code is None else code,
                "message": message,
                "type": "server_error",
            }
            return b"error: " + self.dumps(legacy) + b"\n\ndata: [DONE]\n\n"
        return self.default_stream_error(message, code, sequence)

    def malformed(self) -> bytes:
        return (
            b"event: response.output_text.delta\n"
            b'data: {"type": "response.output_text.delta", "delta": "oops"\n\n'
        )

    def invalid_utf8(self, *, sequence: int = 0) -> bytes:
        frame = self.event_frame(self.text_delta(0, BAD_UTF8_MARK), sequence)
        return frame.replace(BAD_UTF8_MARK.encode(), b"\xff\xfe")

    def oversized(self, size: int) -> bytes:
        return b"data: " + b"x" * size + b"\n\n"
