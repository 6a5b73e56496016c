"""A raw HTTP server on loopback for faults the TestServer cannot give: any answer to any
request (preflight's GETs included), endless bodies, and TLS. Plain asyncio streams, so a test
controls every byte and when the connection ends."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import orjson


@dataclass
class RawRequest:
    """One request as it arrived: its request line, lower-cased headers and body."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


#: Answers one request by writing to the connection; the connection is closed afterwards.
Answer = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    """The next request on the connection, or ``None`` if the peer closed it first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    length = int(headers.get("content-length", "0") or 0)
    if length:
        body = await reader.readexactly(length)
    return RawRequest(method, path, headers, body)


def response_head(status: int, content_type: str, **headers: str | int) -> bytes:
    """A status line and headers, with ``Connection: close`` (one request per connection)."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def whole(
    status: int, body: bytes, content_type: str = "application/json", **headers: str
) -> Answer:
    """An answer with a whole body and its ``Content-Length``."""

    async def answer(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            response_head(status, content_type, Content_Length=len(body), **headers) + body
        )
        await writer.drain()

    return answer


def error_status(status: int, retry_after: bool = False) -> Answer:
    """An OpenAI-shaped error body with ``status`` (and ``Retry-After: 1`` if asked)."""
    body = orjson.dumps({"error": {"message": f"status {status}", "type": "x", "code": status}})
    return whole(status, body, **({"Retry_After": "1"} if retry_after else {}))


async def reset(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    """Drop the connection without a byte of answer."""
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    transport.abort()


async def stall(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    """Never answer (until the server closes)."""
    await asyncio.Event().wait()


async def truncated(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    """Announce 200 bytes of JSON, send 20, close."""
    writer.write(
        response_head(200, "application/json", Content_Length=200) + b'{"object": "list", '
    )
    await writer.drain()


async def cut_chunk(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    """A chunked body whose first chunk announces 0x64 bytes and gets 20, then close."""
    writer.write(response_head(200, "application/json", Transfer_Encoding="chunked"))
    writer.write(b"64\r\n" + b'{"object": "list", ')
    await writer.drain()


class RawServer:
    """A loopback server answering every request with ``answer`` (one per connection).

    Args:
        answer: Writes the response.
        ssl_context: Serve TLS with this context.

    Attributes:
        requests: Every request that arrived, in order.
        url: ``http://127.0.0.1:PORT`` (``https://`` with TLS), once started.
    """

    def __init__(self, answer: Answer, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests: list[RawRequest] = []
        self.handshake_failures = 0
        self.url = ""
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await read_request(reader)
            if request is not None:
                self.requests.append(request)
                await self.answer(request, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._server.wait_closed()


#: Preflight fault name → how the raw server answers every GET.
PREFLIGHT_ANSWERS: dict[str, Answer] = {
    "reset_before_headers": reset,
    "stall_before_headers": stall,
    "truncated_before": truncated,
    "cut_before": cut_chunk,
    "malformed_before": whole(200, b'{"object": "list", "data": ['),
    "html_200": whole(200, b"<html><body>It works!</body></html>", "text/html"),
}
