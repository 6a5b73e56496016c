"""The Responses API shapes (``POST /v1/responses``): OpenAI, Ollama, llama-server, vLLM.

Each server answers a Responses request in its own way; the facts are in
``WIRE-responses.md`` (Ollama v0.33, vLLM 0.34, llama-server at 0c1e57098, OpenAI as recorded
and as openai-python types it). A stream is a list of typed events, each framed as
``event: <type>`` then ``data: <json>``, with no ``[DONE]``; every event is one "chunk" for the
faults that fire after N chunks. What differs:

==================  ==============  ===============  ================  ===================
                    OpenAI          Ollama           llama-server      vLLM
==================  ==============  ===============  ================  ===================
sequence_number     from 0          from 0           absent            from 0
keys                as recorded     sorted (Go map)  as inserted       alphabetical events
reasoning events    summary part    summary text     reasoning_text    reasoning_text with
                    and text                         deltas, no .done  content parts
arguments           fragments       one delta        fragments         fragments
``.done`` events    after each      after each item  all at the end    after each item
                    item            (none for the
                                    message when
                                    tools follow)
cut by length       incomplete      completed        completed         incomplete
error after 200     ``error`` then  stream stops     ``data:`` error,  connection cut
                    ``failed``                       no ``event:``
==================  ==============  ===============  ================  ===================

Pure code, no I/O.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, ClassVar

from llmtap.testing._reply import StreamErrorStyle
from llmtap.testing._sse_shapes import llamacpp_timings
from llmtap.testing._wire import (
    ALNUM,
    BAD_UTF8_MARK,
    JSON,
    LOWER_ALNUM,
    Call,
    ChatFacts,
    Content,
    Flavor,
    Shape,
    encode,
    llamacpp_error_type,
    random_id,
    vllm_error_type,
)

__all__ = [
    "LlamaCppResponsesShape",
    "OllamaResponsesShape",
    "OpenAIResponsesShape",
    "ResponsesShape",
    "VllmResponsesShape",
]


class ResponsesShape(Shape):
    """What every Responses shape shares: the event framing, the ids, the error tails.

    A subclass builds its events as dicts whose ``type`` comes first (`stream_events`) and
    its whole answer (`completion`); `event_payload` puts ``sequence_number`` where its
    server does.
    """

    has_reasoning: ClassVar[bool] = True
    terminator: ClassVar[bytes] = b""
    ping: ClassVar[bytes] = b": ping\n\n"

    def __init__(self, facts: ChatFacts) -> None:
        super().__init__(facts)
        self.request = facts.request
        self.created = int(time.time())
        self.response_id = self.new_response_id()
        self.message_id = self.new_item_id("msg")
        self.reasoning_id = self.new_item_id("rs")

    # -- identity -------------------------------------------------------------------------
    def new_response_id(self) -> str:
        raise NotImplementedError

    def new_item_id(self, prefix: str) -> str:
        raise NotImplementedError

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

    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        raise NotImplementedError

    # -- what the answers share -----------------------------------------------------------
    def incomplete_reason(self, content: Content) -> str | None:
        """Why the answer is incomplete (``None``: it is complete, or the server never says)."""
        return "max_output_tokens" if content.finish == "length" else None

    def terminal_type(self, content: Content) -> str:
        return "response.incomplete" if self.incomplete_reason(content) else "response.completed"

    def last_status(self, content: Content) -> str:
        """The status of the last output item (the one a length cut stops)."""
        return "incomplete" if self.incomplete_reason(content) else "completed"

    @staticmethod
    def reasoning_tokens(content: Content) -> int:
        completion = content.usage[1] if content.usage is not None else 0
        return min(len(content.reasoning_pieces), completion)

    @staticmethod
    def kinds(content: Content) -> list[str]:
        """The output items in order: ``"reasoning"``, ``"message"``, then one per call."""
        kinds = ["reasoning"] if content.reasoning else []
        kinds += ["message"] if content.text else []
        return kinds + ["function_call"] * len(content.calls)

    # -- faults ---------------------------------------------------------------------------
    def error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": "server_error", "param": None, "code": None}

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
            return b"data: " + self.dumps({"error": self.error_object(message, code)}) + b"\n\n"
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

    # -- per server -----------------------------------------------------------------------
    def text_delta(self, output_index: int, piece: str) -> JSON:
        raise NotImplementedError

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        """The response object at ``status``; ``content`` gives the usage (none while in
        progress)."""
        raise NotImplementedError


class OpenAIResponsesShape(ResponsesShape):
    """OpenAI's own stream, as recorded in June 2025 and typed by openai-python 3.x."""

    flavor: ClassVar[Flavor] = "openai"
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    json_content_type: ClassVar[str] = "application/json"

    def new_response_id(self) -> str:
        return "resp_" + secrets.token_hex(24)

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_" + secrets.token_hex(24)

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(ALNUM, 24)

    def incomplete_reason(self, content: Content) -> str | None:
        if content.finish == "content_filter":
            return "content_filter"
        return super().incomplete_reason(content)

    # -- items ----------------------------------------------------------------------------
    @staticmethod
    def text_part(text: str) -> JSON:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def message_item(self, text: str, status: str) -> JSON:
        content = [] if status == "in_progress" else [self.text_part(text)]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    def reasoning_item(self, text: str | None) -> JSON:
        summary = [] if text is None else [{"type": "summary_text", "text": text}]
        return {"id": self.reasoning_id, "type": "reasoning", "summary": summary}

    def call_item(self, item_id: str, call: Call, status: str) -> JSON:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": "" if status == "in_progress" else call.arguments,
            "call_id": call.id,
            "name": call.name,
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

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        started = self.response_object("in_progress", [], None)
        events: list[JSON] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]
        output: list[JSON] = []
        last = len(self.kinds(content)) - 1
        if content.reasoning:
            events += self.reasoning_events(len(output), content)
            output.append(self.reasoning_item(content.reasoning))
        if content.text:
            status = self.last_status(content) if len(output) == last else "completed"
            events += self.message_events(len(output), content, status)
            output.append(self.message_item(content.text, status))
        for call in content.calls:
            status = self.last_status(content) if len(output) == last else "completed"
            item_id = self.new_item_id("fc")
            events += self.call_events(len(output), item_id, call, fragments, status)
            output.append(self.call_item(item_id, call, status))
        if content.finish is not None:
            status = "incomplete" if self.incomplete_reason(content) else "completed"
            response = self.response_object(status, output, content)
            events.append({"type": self.terminal_type(content), "response": response})
        return events

    def reasoning_events(self, index: int, content: Content) -> list[JSON]:
        where = {"item_id": self.reasoning_id, "output_index": index, "summary_index": 0}
        text = content.reasoning
        return [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": self.reasoning_item(None),
            },
            {
                "type": "response.reasoning_summary_part.added",
                **where,
                "part": {"type": "summary_text", "text": ""},
            },
            *(
                {"type": "response.reasoning_summary_text.delta", **where, "delta": piece}
                for piece in content.reasoning_pieces
            ),
            {"type": "response.reasoning_summary_text.done", **where, "text": text},
            {
                "type": "response.reasoning_summary_part.done",
                **where,
                "part": {"type": "summary_text", "text": text},
            },
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": self.reasoning_item(text),
            },
        ]

    def message_events(self, index: int, content: Content, status: str) -> list[JSON]:
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        text = content.text
        return [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": self.message_item("", "in_progress"),
            },
            {"type": "response.content_part.added", **where, "part": self.text_part("")},
            *(self.text_delta(index, piece) for piece in content.text_pieces),
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": self.text_part(text)},
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": self.message_item(text, status),
            },
        ]

    def call_events(
        self, index: int, item_id: str, call: Call, fragments: int, status: str
    ) -> list[JSON]:
        where = {"item_id": item_id, "output_index": index}
        return [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": self.call_item(item_id, call, "in_progress"),
            },
            *(
                {"type": "response.function_call_arguments.delta", **where, "delta": piece}
                for piece in call.pieces(fragments)
            ),
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": call.name,
                "arguments": call.arguments,
            },
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": self.call_item(item_id, call, status),
            },
        ]

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        output: list[JSON] = []
        last = len(self.kinds(content)) - 1
        if content.reasoning:
            output.append(self.reasoning_item(content.reasoning))
        if content.text:
            status = self.last_status(content) if len(output) == last else "completed"
            output.append(self.message_item(content.text, status))
        for call in content.calls:
            status = self.last_status(content) if len(output) == last else "completed"
            output.append(self.call_item(self.new_item_id("fc"), call, status))
        status = "incomplete" if self.incomplete_reason(content) else "completed"
        return self.response_object(status, output, content)

    def usage(self, content: Content) -> JSON | None:
        if content.usage is None:
            return None
        prompt, completion = content.usage
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens(content)},
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

    def new_response_id(self) -> str:
        return f"resp_{secrets.randbelow(999999)}"

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.randbelow(999999)}"

    def new_tool_call_id(self) -> str:
        return "call_" + random_id(LOWER_ALNUM, 8)

    def incomplete_reason(self, content: Content) -> str | None:
        return None  # status is "completed" even when cut at max tokens

    def event_payload(self, event: JSON, sequence: int) -> JSON:
        return event | {"sequence_number": sequence}

    def dumps_event(self, payload: JSON) -> bytes:
        return encode(self.flavor, payload, sort_keys=True)

    # -- items ----------------------------------------------------------------------------
    @staticmethod
    def text_part(text: str) -> JSON:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def message_item(self, text: str, status: str) -> JSON:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if status == "in_progress" else [self.text_part(text)],
        }

    @staticmethod
    def reasoning_item(item_id: str, text: str) -> JSON:
        return {
            "id": item_id,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}],
            "encrypted_content": text,  # the thinking in plain text
        }

    @staticmethod
    def call_item(item_id: str, call: Call, status: str, *, whole: bool = False) -> JSON:
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

    def text_delta(self, output_index: int, piece: str) -> JSON:
        return {
            "type": "response.output_text.delta",
            "item_id": self.message_id,
            "output_index": output_index,
            "content_index": 0,
            "delta": piece,
            "logprobs": [],
        }

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        started = self.response_object("in_progress", [], None)
        events: list[JSON] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]
        done: list[JSON] = []  # items finished before the message, in output order
        index = 0
        if content.reasoning:
            events += self.reasoning_events(index, content)
            done.append(self.reasoning_item(self.reasoning_id, content.reasoning))
            index += 1
        if content.text:
            where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": self.message_item("", "in_progress"),
                },
                {"type": "response.content_part.added", **where, "part": self.text_part("")},
                *(self.text_delta(index, piece) for piece in content.text_pieces),
            ]
        # Each call comes whole in its own chunk, at the index the message was given.
        for call in content.calls:
            item_id = f"fc_{secrets.randbelow(999999)}_0"
            item = self.call_item(item_id, call, "completed")
            where = {"item_id": item_id, "output_index": index}
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": self.call_item(item_id, call, "in_progress"),
                },
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": call.arguments,
                },
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": call.arguments,
                },
                {"type": "response.output_item.done", "output_index": index, "item": item},
            ]
            done.append(item)
            index += 1
        if content.text and not content.calls:
            text = content.text
            where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
            events += [
                {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
                {"type": "response.content_part.done", **where, "part": self.text_part(text)},
                {
                    "type": "response.output_item.done",
                    "output_index": index,
                    "item": self.message_item(text, "completed"),
                },
            ]
        if content.finish is not None:
            output = done + ([self.message_item(content.text, "completed")] if content.text else [])
            response = self.response_object("completed", output, content)
            response["completed_at"] = int(time.time())
            events.append({"type": "response.completed", "response": response})
        return events

    def reasoning_events(self, index: int, content: Content) -> list[JSON]:
        where = {"item_id": self.reasoning_id, "output_index": index, "summary_index": 0}
        return [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {"id": self.reasoning_id, "type": "reasoning", "summary": []},
            },
            *(
                {"type": "response.reasoning_summary_text.delta", **where, "delta": piece}
                for piece in content.reasoning_pieces
            ),
            {"type": "response.reasoning_summary_text.done", **where, "text": content.reasoning},
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": self.reasoning_item(self.reasoning_id, content.reasoning),
            },
        ]

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        output: list[JSON] = []
        if content.reasoning:
            output.append(self.reasoning_item(f"rs_{self.response_id}", content.reasoning))
        if content.calls:  # the message is dropped when there are tool calls
            output += [
                self.call_item(f"fc_{self.response_id}_{n}", call, "completed", whole=True)
                for n, call in enumerate(content.calls)
            ]
        else:
            output.append(self.message_item(content.text, "completed"))
        response = self.response_object("completed", output, content)
        response["completed_at"] = int(time.time())
        return response

    def usage(self, content: Content) -> JSON | None:
        if content.usage is None:
            return None
        prompt, completion = content.usage
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
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
            "completed_at": None,
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

    def error_object(self, message: str, code: int | None) -> JSON:
        return {"message": message, "type": "api_error", "param": None, "code": None}

    def default_stream_error(self, message: str, code: int | None, sequence: int) -> bytes:
        # The chat handler's {"error": ...} line decodes as an empty chunk, which makes no
        # event: the stream just ends, with no terminal event.
        return b""


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

    def new_response_id(self) -> str:
        return "resp_" + random_id(ALNUM, 32)

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_" + random_id(ALNUM, 32)

    def new_tool_call_id(self) -> str:
        return random_id(ALNUM, 32)

    def incomplete_reason(self, content: Content) -> str | None:
        return None  # always "completed"

    def event_payload(self, event: JSON, sequence: int) -> JSON:
        return event

    # -- items ----------------------------------------------------------------------------
    @staticmethod
    def text_part(text: str) -> JSON:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    @staticmethod
    def call_item(call: Call) -> JSON:
        return {
            "id": "fc_" + call.id,
            "type": "function_call",
            "status": "completed",
            "arguments": call.arguments,
            "call_id": "call_" + call.id,
            "name": call.name,
        }

    def text_delta(self, output_index: int, piece: str) -> JSON:
        return {"type": "response.output_text.delta", "item_id": self.message_id, "delta": piece}

    def usage(self, content: Content) -> JSON | None:
        if content.usage is None:
            return None
        prompt, completion = content.usage
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
        }

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        started = {"id": self.response_id, "object": "response", "status": "in_progress"}
        events: list[JSON] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": dict(started)},
        ]
        if content.reasoning:
            item = {
                "id": self.reasoning_id,
                "summary": [],
                "type": "reasoning",
                "content": [],
                "encrypted_content": "",
                "status": "in_progress",
            }
            events.append({"type": "response.output_item.added", "item": item})
            events += [
                {"type": "response.reasoning_text.delta", "delta": p, "item_id": self.reasoning_id}
                for p in content.reasoning_pieces
            ]
        if content.text:
            item = {
                "content": [],
                "id": self.message_id,
                "role": "assistant",
                "status": "in_progress",
                "type": "message",
            }
            events += [
                {"type": "response.output_item.added", "item": item},
                {
                    "type": "response.content_part.added",
                    "item_id": self.message_id,
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
            events.append({"type": "response.output_item.added", "item": added})
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

    def final_events(self, content: Content) -> list[JSON]:
        """The final result: every item's ``.done`` events, then ``response.completed``."""
        events: list[JSON] = []
        output: list[JSON] = []
        if content.reasoning:
            item = {
                "id": self.reasoning_id,
                "summary": [],
                "type": "reasoning",
                "content": [{"text": content.reasoning, "type": "reasoning_text"}],
                "encrypted_content": "",
            }
            events.append({"type": "response.output_item.done", "item": item})
            output.append(item)
        if content.text:
            part = self.text_part(content.text)
            message = {
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
                {"type": "response.output_item.done", "item": message},
            ]
            output.append(message)
        for call in content.calls:
            item = self.call_item(call)
            events.append({"type": "response.output_item.done", "item": item})
            output.append(item)
        response = self.response_object("completed", output, content)
        completed = {"type": "response.completed", "response": response}
        completed["timings"] = llamacpp_timings(content)
        return [*events, completed]

    def response_object(self, status: str, output: list[JSON], content: Content | None) -> JSON:
        response: JSON = {
            "id": self.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": self.facts.model,
            "output": output,
        }
        usage = self.usage(content) if content is not None else None
        if usage is not None:
            response["usage"] = usage
        return response

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        output: list[JSON] = []
        if content.reasoning:
            output.append(
                {
                    "id": self.new_item_id("rs"),
                    "summary": [],
                    "type": "reasoning",
                    "content": [{"text": content.reasoning, "type": "reasoning_text"}],
                    "encrypted_content": "",
                    "status": "completed",
                }
            )
        if content.text:
            output.append(
                {
                    "content": [self.text_part(content.text)],
                    "id": self.new_item_id("msg"),
                    "role": "assistant",
                    "status": "completed",
                    "type": "message",
                }
            )
        output += [self.call_item(call) for call in content.calls]
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
        usage = self.usage(content)
        if usage is not None:
            response["usage"] = usage
        return response

    # -- faults ---------------------------------------------------------------------------
    def error_object(self, message: str, code: int | None) -> JSON:
        return {"code": code, "message": message, "type": llamacpp_error_type(code)}

    def default_stream_error(self, message: str, code: int | None, sequence: int) -> bytes:
        # format_oai_sse({"error": ...}): a data line with no event line, then the end.
        return b"data: " + self.dumps({"error": self.error_object(message, code)}) + b"\n\n"


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

    def new_response_id(self) -> str:
        return "resp_" + secrets.token_hex(8)

    def new_item_id(self, prefix: str) -> str:
        return f"{prefix}_" + secrets.token_hex(8)

    def new_tool_call_id(self) -> str:
        return "chatcmpl-tool-" + secrets.token_hex(8)

    def event_payload(self, event: JSON, sequence: int) -> JSON:
        return dict(sorted((event | {"sequence_number": sequence}).items()))

    # -- items ----------------------------------------------------------------------------
    @staticmethod
    def text_part(text: str, logprobs: list[Any] | None) -> JSON:
        return {"annotations": [], "text": text, "type": "output_text", "logprobs": logprobs}

    def message_item(self, item_id: str, text: str, status: str) -> JSON:
        return {
            "id": item_id,
            "content": [self.text_part(text, None)] if text else [],
            "role": "assistant",
            "status": status,
            "type": "message",
        }

    @staticmethod
    def reasoning_item(item_id: str, text: str | None, status: str | None) -> JSON:
        return {
            "id": item_id,
            "summary": [],
            "type": "reasoning",
            "content": None if text is None else [{"text": text, "type": "reasoning_text"}],
            "encrypted_content": None,
            "status": status,
        }

    @staticmethod
    def call_item(item_id: str, call: Call, status: str) -> JSON:
        return {
            "arguments": "" if status == "in_progress" else call.arguments,
            "call_id": call.id,
            "name": call.name,
            "type": "function_call",
            "id": item_id,
            "namespace": None,
            "status": status,
        }

    def text_delta(self, output_index: int, piece: str) -> JSON:
        return {
            "type": "response.output_text.delta",
            "content_index": 0,
            "delta": piece,
            "item_id": self.message_id,
            "logprobs": [],
            "output_index": output_index,
        }

    # -- the stream -----------------------------------------------------------------------
    def stream_events(self, content: Content, fragments: int) -> list[JSON]:
        started = self.response_object("in_progress", [], None)
        events: list[JSON] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]
        output: list[JSON] = []
        last = len(self.kinds(content)) - 1
        if content.reasoning:
            index, rs = len(output), self.reasoning_id
            status = self.last_status(content) if index == last else "completed"
            where = {"content_index": 0, "item_id": rs, "output_index": index}
            text = content.reasoning
            item = self.reasoning_item(rs, text, status)
            events += [
                {
                    "type": "response.output_item.added",
                    "item": self.reasoning_item(rs, None, "in_progress"),
                    "output_index": index,
                },
                {
                    "type": "response.content_part.added",
                    **where,
                    "part": {"text": "", "type": "reasoning_text"},
                },
                *(
                    {"type": "response.reasoning_text.delta", **where, "delta": piece}
                    for piece in content.reasoning_pieces
                ),
                {"type": "response.reasoning_text.done", **where, "text": text},
                {
                    "type": "response.content_part.done",
                    **where,
                    "part": {"text": text, "type": "reasoning_text"},
                },
                {"type": "response.output_item.done", "item": item, "output_index": index},
            ]
            output.append(item)
        if content.text:
            index, msg = len(output), self.message_id
            status = self.last_status(content) if index == last else "completed"
            where = {"content_index": 0, "item_id": msg, "output_index": index}
            text = content.text
            item = self.message_item(msg, text, status)
            events += [
                {
                    "type": "response.output_item.added",
                    "item": self.message_item(msg, "", "in_progress"),
                    "output_index": index,
                },
                {"type": "response.content_part.added", **where, "part": self.text_part("", [])},
                *(self.text_delta(index, piece) for piece in content.text_pieces),
                {"type": "response.output_text.done", **where, "logprobs": [], "text": text},
                {"type": "response.content_part.done", **where, "part": self.text_part(text, None)},
                {"type": "response.output_item.done", "item": item, "output_index": index},
            ]
            output.append(item)
        for call in content.calls:
            index, fc = len(output), self.new_item_id("fc")
            status = self.last_status(content) if index == last else "completed"
            where = {"item_id": fc, "output_index": index}
            item = self.call_item(fc, call, status)
            events += [
                {
                    "type": "response.output_item.added",
                    "item": self.call_item(fc, call, "in_progress"),
                    "output_index": index,
                },
                *(
                    {"type": "response.function_call_arguments.delta", **where, "delta": piece}
                    for piece in call.pieces(fragments)
                ),
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": call.arguments,
                    "name": call.name,
                },
                {"type": "response.output_item.done", "item": item, "output_index": index},
            ]
            output.append(item)
        if content.finish is not None:
            status = "incomplete" if self.incomplete_reason(content) else "completed"
            response = self.response_object(status, output, content)
            events.append({"type": self.terminal_type(content), "response": response})
        return events

    # -- the whole answer -----------------------------------------------------------------
    def completion(self, content: Content) -> JSON:
        output: list[JSON] = []
        last = self.last_status(content)
        if content.reasoning:
            output.append(self.reasoning_item(self.new_item_id("rs"), content.reasoning, None))
        if content.text:
            status = "completed" if content.calls else last
            output.append(self.message_item(self.new_item_id("msg"), content.text, status))
        for number, call in enumerate(content.calls):
            status = last if number == len(content.calls) - 1 else "completed"
            output.append(self.call_item(self.new_item_id("fc"), call, status))
        status = "incomplete" if self.incomplete_reason(content) else "completed"
        return self.response_object(status, output, content)

    def usage(self, content: Content) -> JSON | None:
        if content.usage is None:
            return None
        prompt, completion = content.usage
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
                "reasoning_tokens": self.reasoning_tokens(content),
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
