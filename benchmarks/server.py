"""The benchmark streaming server: raw asyncio, pre-rendered chunks, run in its own process.

``python -m benchmarks.server [--port N] [--stdin-stops]`` prints
``listening on http://127.0.0.1:PORT`` and serves until SIGTERM or Ctrl-C (or, with
``--stdin-stops``, until its standard input closes, so that it never outlives the harness).

Routes:

* ``POST /v1/chat/completions``: OpenAI-style SSE, ``data: {chat.completion.chunk}`` events (a
  role chunk, the content chunks, a finish chunk, a usage chunk when the request asks for
  ``stream_options.include_usage``, then ``data: [DONE]``);
* ``POST /api/chat``: Ollama's native NDJSON (content lines, then a ``done`` line);
* ``GET /stats``: connections accepted and open, requests served, held groups released by
  timeout (a client that could not open that many connections at once), and this process's
  CPU seconds.

Every response is HTTP/1.1 with chunked transfer encoding, one HTTP chunk per event, and keeps
the connection alive. The server never parses or renders JSON per event: answers are rendered
once per (route, chunks, usage) and cached, so that it is never the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import signal
import sys
import time
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import orjson

from benchmarks._wire import MODEL, WORDS, Spec, parse_spec

__all__ = ["BenchServer", "main"]

_HOLD_TIMEOUT = 3.0
_CREATED = 1732860000
_CHUNK_ID = "chatcmpl-bench5f1c0d3e9a7b2c4d6e8f0a1b"


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_LAST_CHUNK = b"0\r\n\r\n"


def _head(status: str, content_type: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


def _sse(obj: Any) -> bytes:
    return _http_chunk(b"data: " + orjson.dumps(obj) + b"\n\n")


def _openai_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": _CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _event(obj: dict[str, Any]) -> bytes:
    """One Responses API event, framed as the servers frame it (``event:`` then ``data:``)."""
    framed = b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
    return _http_chunk(framed)


def _responses_answer(chunks: int) -> Answer:
    """A Responses API stream as OpenAI sends it: the response created, a message item with
    one text part, a text delta per chunk, the part and item done, the response completed
    with its usage."""
    response = {"id": "resp_bench", "object": "response", "model": MODEL, "status": "in_progress"}
    item = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    head = _head("200 OK", "text/event-stream; charset=utf-8")
    head += _event({"type": "response.created", "sequence_number": 0, "response": response})
    head += _event({"type": "response.in_progress", "sequence_number": 1, "response": response})
    head += _event(
        {
            "type": "response.output_item.added",
            "sequence_number": 2,
            "output_index": 0,
            "item": item,
        }
    )
    head += _event(
        {"type": "response.content_part.added", "sequence_number": 3, **where, "part": part}
    )
    events = tuple(
        _event(
            {
                "type": "response.output_text.delta",
                "sequence_number": 4 + number,
                **where,
                "delta": word,
                "logprobs": [],
            }
        )
        for number, word in enumerate(WORDS)
    )
    text = "".join(WORDS[number % len(WORDS)] for number in range(chunks))
    done = {**part, "text": text}
    whole = {**item, "status": "completed", "content": [done]}
    tail = _event(
        {
            "type": "response.output_text.done",
            "sequence_number": 4 + chunks,
            **where,
            "text": text,
            "logprobs": [],
        }
    )
    tail += _event(
        {"type": "response.content_part.done", "sequence_number": 5 + chunks, **where, "part": done}
    )
    tail += _event(
        {
            "type": "response.output_item.done",
            "sequence_number": 6 + chunks,
            "output_index": 0,
            "item": whole,
        }
    )
    completed = {
        **response,
        "status": "completed",
        "output": [whole],
        "usage": {"input_tokens": 9, "output_tokens": chunks, "total_tokens": 9 + chunks},
    }
    tail += _event(
        {"type": "response.completed", "sequence_number": 7 + chunks, "response": completed}
    )
    return Answer(head, events, tail + _LAST_CHUNK)


def _ndjson(obj: Any) -> bytes:
    return _http_chunk(orjson.dumps(obj) + b"\n")


def _ollama_line(content: str, done: bool = False, chunks: int = 0) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": MODEL,
        "created_at": "2024-11-29T06:00:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line |= {
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1000,
            "prompt_eval_count": 9,
            "prompt_eval_duration": 1000,
            "eval_count": chunks,
            "eval_duration": 1_000_000,
        }
    return line


class Answer:
    """One pre-rendered answer: the head, the content events, and the closing bytes."""

    __slots__ = ("events", "head", "tail")

    def __init__(self, head: bytes, events: tuple[bytes, ...], tail: bytes) -> None:
        self.head = head
        self.events = events  # content events, cycling: event i is events[i % len(events)]
        self.tail = tail

    def event(self, index: int) -> bytes:
        """The framed content event number ``index``."""
        return self.events[index % len(self.events)]


@lru_cache(maxsize=64)
def _answer(route: str, chunks: int, usage: bool) -> Answer:
    if route == "responses":
        return _responses_answer(chunks)
    if route == "ollama":
        head = _head("200 OK", "application/x-ndjson")
        events = tuple(_ndjson(_ollama_line(word)) for word in WORDS)
        tail = _ndjson(_ollama_line("", done=True, chunks=chunks)) + _LAST_CHUNK
        return Answer(head, events, tail)
    head = _head("200 OK", "text/event-stream; charset=utf-8")
    head += _sse(_openai_chunk({"role": "assistant", "content": ""}))
    events = tuple(_sse(_openai_chunk({"content": word})) for word in WORDS)
    tail = _sse(_openai_chunk({}, "stop"))
    if usage:
        usage_chunk = _openai_chunk({})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = {
            "prompt_tokens": 9,
            "completion_tokens": chunks,
            "total_tokens": 9 + chunks,
        }
        tail += _sse(usage_chunk)
    tail += _http_chunk(b"data: [DONE]\n\n") + _LAST_CHUNK
    return Answer(head, events, tail)


@lru_cache(maxsize=16)
def _burst(route: str, chunks: int, usage: bool) -> bytes:
    answer = _answer(route, chunks, usage)
    return b"".join((answer.head, *(answer.event(i) for i in range(chunks)), answer.tail))


def _plain(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body


class _PacedStream:
    __slots__ = ("answer", "chunks", "conn", "sent")

    def __init__(self, conn: _Connection, answer: Answer, chunks: int) -> None:
        self.conn = conn
        self.answer = answer
        self.chunks = chunks
        self.sent = 0


class _Clock:
    """All streams paced at one interval, written to on one shared tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._interval = interval
        self._streams: list[_PacedStream] = []
        self._next = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def add(self, stream: _PacedStream) -> None:
        self._streams.append(stream)
        if self._handle is None:
            self._next = self._loop.time() + self._interval
            self._handle = self._loop.call_at(self._next, self._tick)

    def _tick(self) -> None:
        live: list[_PacedStream] = []
        for stream in self._streams:
            conn = stream.conn
            if conn.transport is None:
                continue
            answer = stream.answer
            if stream.sent + 1 >= stream.chunks:
                conn.transport.write(answer.event(stream.sent) + answer.tail)
                conn.response_done()
                continue
            conn.transport.write(answer.event(stream.sent))
            stream.sent += 1
            live.append(stream)
        self._streams = live
        if not live:
            self._handle = None
            return
        now = self._loop.time()
        self._next = max(self._next + self._interval, now)
        self._handle = self._loop.call_at(self._next, self._tick)


class BenchServer:
    """The server's state: counters, the paced-stream clocks, and held request groups."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.hold_timeouts = 0
        self._clocks: dict[float, _Clock] = {}
        self._held: dict[str, list[Callable[[], None]]] = {}

    def stats(self) -> dict[str, Any]:
        """Counters and this process's CPU time, for ``GET /stats``."""
        return {
            "accepted": self.accepted,
            "open": self.open,
            "requests": self.requests,
            "hold_timeouts": self.hold_timeouts,
            "cpu": time.process_time(),
        }

    def handle(self, conn: _Connection, method: str, target: str, body: bytes) -> None:
        """Answer one request on ``conn`` (now, paced, or once its group is complete)."""
        self.requests += 1
        path, _, query = target.partition("?")
        if method == "GET" and path == "/stats":
            conn.send_whole(_plain("200 OK", orjson.dumps(self.stats())))
            return
        route = {
            "/v1/chat/completions": "openai",
            "/api/chat": "ollama",
            "/v1/responses": "responses",
        }.get(path)
        if method != "POST" or route is None:
            error = {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
            conn.send_whole(_plain("404 Not Found", orjson.dumps(error)))
            return
        try:
            payload = orjson.loads(body) if body else {}
            spec = parse_spec(payload, query)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            error = {"error": {"message": f"bad request: {exc}", "type": "invalid_request"}}
            conn.send_whole(_plain("400 Bad Request", orjson.dumps(error)))
            return
        options = payload.get("stream_options") if isinstance(payload, dict) else None
        usage = isinstance(options, dict) and options.get("include_usage") is True
        respond = partial(self._respond, conn, route, spec, usage)
        if spec.hold > 1:
            self._hold(spec, respond)
        else:
            respond()

    def _hold(self, spec: Spec, respond: Callable[[], None]) -> None:
        waiting = self._held.setdefault(spec.group, [])
        waiting.append(respond)
        if len(waiting) == 1:
            loop = asyncio.get_running_loop()
            loop.call_later(_HOLD_TIMEOUT, self._hold_expired, spec.group)
        if len(waiting) >= spec.hold:
            self._release(spec.group)

    def _hold_expired(self, group: str) -> None:
        if group in self._held:  # fewer than ``hold`` requests came: a limited pool
            self.hold_timeouts += 1
            self._release(group)

    def _release(self, group: str) -> None:
        for respond in self._held.pop(group, ()):
            respond()

    def _respond(self, conn: _Connection, route: str, spec: Spec, usage: bool) -> None:
        if conn.transport is None:
            return
        if not spec.pace_ms or spec.chunks == 0:
            conn.send_whole(_burst(route, spec.chunks, usage))
            return
        answer = _answer(route, spec.chunks, usage)
        conn.transport.write(answer.head)
        clock = self._clocks.get(spec.pace_ms)
        if clock is None:
            loop = asyncio.get_running_loop()
            clock = self._clocks[spec.pace_ms] = _Clock(loop, spec.pace_ms / 1000)
        clock.add(_PacedStream(conn, answer, spec.chunks))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: requests are read one at a time (no pipelining)."""

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy = False
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.accepted += 1
        self.server.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.open -= 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next_request()

    def send_whole(self, response: bytes) -> None:
        """Write a complete response and end the exchange."""
        if self.transport is not None:
            self.transport.write(response)
        self.response_done()

    def response_done(self) -> None:
        """The response is written: close if asked to, else read the next request."""
        self._busy = False
        if self._close_after and self.transport is not None:
            self.transport.close()
            return
        if self._buffer:
            self._next_request()

    def _next_request(self) -> None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        self._close_after = False
        try:
            method, target, _version = head[0].split(" ", 2)
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    self._close_after = True
        except ValueError:
            self._buffer.clear()
            self._close_after = True
            self.send_whole(_plain("400 Bad Request", b'{"error":"malformed request head"}'))
            return
        if len(buffer) < end + 4 + length:
            return
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        self._busy = True
        self.server.handle(self, method, target, body)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host: str, port: int, *, stdin_stops: bool = False) -> None:
    """Serve until SIGTERM or SIGINT arrives (or, with ``stdin_stops``, standard input ends)."""
    loop = asyncio.get_running_loop()
    state = BenchServer()
    server = await loop.create_server(lambda: _Connection(state), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    for route in ("openai", "ollama"):
        _burst(route, 100, True)
    gc.collect()
    gc.freeze()
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stdin_stops:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        watcher = asyncio.create_task(_stop_at_eof(reader, stop))
    async with server:
        await stop.wait()
    if stdin_stops:
        watcher.cancel()


async def _stop_at_eof(reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
    while await reader.read(4096):
        pass
    stop.set()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument(
        "--stdin-stops",
        action="store_true",
        help="exit when standard input closes (the harness uses this so that the server "
        "never outlives it)",
    )
    args = parser.parse_args(argv)
    _raise_fd_limit()
    asyncio.run(serve(args.host, args.port, stdin_stops=args.stdin_stops))


if __name__ == "__main__":
    main()
