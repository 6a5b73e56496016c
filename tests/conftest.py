"""Shared fixtures: loopback servers and clients. No mocked transports anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from llmtap import LLMClient, LLMConfig
from llmtap.testing import no_retry_waits


@pytest.fixture
def no_waits() -> Iterator[None]:
    """Retries happen at once (the public switch, not a patched function)."""
    with no_retry_waits():
        yield


def make_client(url: str, **overrides: object) -> LLMClient:
    """A client for a test server: short deadlines, a model name that every dialect accepts."""
    settings: dict[str, object] = {
        "endpoint": url,
        "model": "llama3.2",
        "connect_timeout": 2.0,
        "first_token_timeout": 5.0,
        "idle_timeout": 5.0,
        "preflight_timeout": 5.0,
    }
    settings.update(overrides)
    return LLMClient(LLMConfig(**settings))  # type: ignore[arg-type]


class SilentServer:
    """A TCP server on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def __aenter__(self) -> SilentServer:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def full_backlog_url() -> Iterator[str]:
    """A loopback port whose accept queue is full: connecting hangs until the client's
    connect_timeout (the kernel drops the SYNs), with no traffic leaving the machine."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()
