"""The floor: the least a Python client can do per chunk on asyncio.

A bare :class:`asyncio.Protocol` per connection that parses the status line, de-chunks HTTP/1.1
chunked transfer encoding, splits SSE events on blank lines and hands each ``data:`` payload to
``orjson.loads``; a list of idle connections is the keep-alive pool. No timeouts, no error
handling beyond the connection dropping, no retries: a reference, not a client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

__all__ = ["FloorClient"]


class _Exchange(asyncio.Protocol):
    """One keep-alive connection and the response being read on it."""

    def __init__(self, client: FloorClient) -> None:
        self._client = client
        self._loop = client.loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._events = bytearray()
        self._in_body = False
        self._done: asyncio.Future[tuple[int, int, float]] | None = None
        self._count = 0
        self._chars = 0
        self._first_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._client.forget(self)
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, int, float]]:
        """Send a request; the future gives (content chunks, characters, first chunk time)."""
        assert self.transport is not None
        self._done = self._loop.create_future()
        self._count = self._chars = 0
        self._in_body = False
        self.transport.write(request)
        return self._done

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        if not self._in_body:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if buffer[9:12] != b"200":
                self._fail(f"status {bytes(buffer[9:12]).decode()}")
                return
            self._in_body = True
            pos = end + 4
        events = self._events
        size = len(buffer)
        finished = False
        while True:  # de-chunk
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                break
            length = int(buffer[pos:line_end], 16)
            start = line_end + 2
            if size < start + length + 2:
                break
            if length == 0:
                pos = start + 2
                finished = True
                break
            events += buffer[start : start + length]
            pos = start + length + 2
        del buffer[:pos]
        self._split(events)
        if finished:
            self._finish()

    def _split(self, events: bytearray) -> None:
        loads = orjson.loads
        pos = 0
        while (end := events.find(b"\n\n", pos)) >= 0:
            if events.startswith(b"data: ", pos):
                data = events[pos + 6 : end]
                if data != b"[DONE]":
                    choices = loads(data)["choices"]
                    if choices:
                        content = choices[0]["delta"].get("content")
                        if content:
                            if not self._count:
                                self._first_at = time.perf_counter()
                            self._count += 1
                            self._chars += len(content)
            pos = end + 2
        del events[:pos]

    def _finish(self) -> None:
        done, self._done = self._done, None
        self._in_body = False
        if done is not None and not done.done():
            done.set_result((self._count, self._chars, self._first_at))
        self._client.give_back(self)

    def _fail(self, reason: str) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()


class FloorClient:
    """A pool of :class:`_Exchange` connections to one ``host:port``, POSTing one path.

    Args:
        host: The server's address.
        port: The server's port.
        path: The path to POST to.
    """

    def __init__(self, host: str, port: int, path: str = "/v1/chat/completions") -> None:
        self.loop = asyncio.get_running_loop()
        self._host = host
        self._port = port
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._idle: list[_Exchange] = []
        self._all: set[_Exchange] = set()

    def give_back(self, exchange: _Exchange) -> None:
        """Return a connection whose response is complete to the pool."""
        self._idle.append(exchange)

    def forget(self, exchange: _Exchange) -> None:
        """Drop a closed connection."""
        self._all.discard(exchange)
        if exchange in self._idle:
            self._idle.remove(exchange)

    async def post(self, payload: dict[str, Any]) -> tuple[int, int, float]:
        """POST ``payload``; (content chunks, characters, ``perf_counter`` at the first chunk)."""
        body = orjson.dumps(payload)
        request = self._head + b"%d\r\n\r\n%s" % (len(body), body)
        exchange = self._idle.pop() if self._idle else None
        if exchange is None:
            _, exchange = await self.loop.create_connection(
                lambda: _Exchange(self), self._host, self._port
            )
            self._all.add(exchange)
        return await exchange.send(request)

    async def close(self) -> None:
        """Close every connection."""
        for exchange in list(self._all):
            if exchange.transport is not None:
                exchange.transport.close()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)
