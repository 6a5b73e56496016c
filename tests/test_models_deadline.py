"""Deadlines of the model-management calls: listing, probing and ``show`` end at
``preflight_timeout``, ``pull``'s wait for its first answer at ``first_token_timeout``, against
servers on loopback that accept the connection and then never answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from llmtap import LLMTimeoutError
from tests.conftest import SilentServer, make_client

#: What a client waits for at most in these tests (the deadlines under test are far shorter).
_GUARD = 20.0


class OllamaVersionOnly:
    """A loopback HTTP server that answers ``GET /api/version`` as Ollama does and holds every
    other request unanswered (as a server busy loading a model can)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []
        self.paths: list[str] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b" ", 2)
            self.paths.append(f"{method.decode()} {path.decode()}")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if path != b"/api/version":
                self._held.append(writer)
                return
            body = b'{"version":"0.33.0"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()

    async def __aenter__(self) -> OllamaVersionOnly:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def version_only() -> AsyncIterator[OllamaVersionOnly]:
    async with OllamaVersionOnly() as server:
        yield server


async def test_list_models_ends_at_preflight_timeout(silent_server: SilentServer) -> None:
    """list_models() on a server that never answers raises LLMTimeoutError("preflight") once
    preflight_timeout has passed, naming the deadline and its value."""
    async with make_client(silent_server.url, preflight_timeout=0.3) as client:
        began = time.monotonic()
        with pytest.raises(LLMTimeoutError) as caught:
            await asyncio.wait_for(client.list_models(), _GUARD)
        took = time.monotonic() - began
    assert (caught.value.deadline, caught.value.timeout) == ("preflight", 0.3)
    assert "preflight_timeout (0.3 s)" in caught.value.message
    assert 0.3 <= took < 5.0


async def test_loaded_models_ends_at_preflight_timeout(silent_server: SilentServer) -> None:
    """loaded_models(): its server probe is bounded by preflight_timeout."""
    async with make_client(silent_server.url, preflight_timeout=0.3) as client:
        with pytest.raises(LLMTimeoutError) as caught:
            await asyncio.wait_for(client.loaded_models(), _GUARD)
    assert (caught.value.deadline, caught.value.timeout) == ("preflight", 0.3)


async def test_loaded_models_ends_at_preflight_timeout_when_ps_hangs(
    version_only: OllamaVersionOnly,
) -> None:
    """loaded_models(): /api/ps hanging after the probe answered ends at preflight_timeout."""
    async with make_client(version_only.url, preflight_timeout=0.3) as client:
        with pytest.raises(LLMTimeoutError) as caught:
            await asyncio.wait_for(client.loaded_models(), _GUARD)
    assert caught.value.deadline == "preflight"
    assert version_only.paths == ["GET /api/version", "GET /api/ps"]


async def test_show_ends_at_preflight_timeout(version_only: OllamaVersionOnly) -> None:
    """show(): POST /api/show hanging ends at preflight_timeout, not first_token_timeout."""
    async with make_client(version_only.url, preflight_timeout=0.3) as client:
        with pytest.raises(LLMTimeoutError) as caught:
            await asyncio.wait_for(client.show("llama3.2"), _GUARD)
    assert (caught.value.deadline, caught.value.timeout) == ("preflight", 0.3)
    assert version_only.paths == ["GET /api/version", "POST /api/show"]


async def test_pull_probe_ends_at_preflight_timeout(silent_server: SilentServer) -> None:
    """pull(): the probe for the kind of server ends at preflight_timeout."""
    async with make_client(silent_server.url, preflight_timeout=0.3) as client:
        with pytest.raises(LLMTimeoutError) as caught:
            await asyncio.wait_for(anext(aiter(client.pull("qwen3"))), _GUARD)
    assert (caught.value.deadline, caught.value.timeout) == ("preflight", 0.3)


async def test_pull_waits_for_its_first_answer_until_first_token_timeout(
    version_only: OllamaVersionOnly,
) -> None:
    """pull(): once the server is known to be Ollama, the wait for /api/pull's headers ends at
    first_token_timeout."""
    async with make_client(
        version_only.url, preflight_timeout=5.0, first_token_timeout=0.3
    ) as client:
        with pytest.raises(LLMTimeoutError) as caught:
            await asyncio.wait_for(anext(aiter(client.pull("qwen3"))), _GUARD)
    assert (caught.value.deadline, caught.value.timeout) == ("first_token", 0.3)
    assert version_only.paths == ["GET /api/version", "POST /api/pull"]
