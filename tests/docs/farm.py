"""Loopback stand-ins for the servers the docs name: ``http://localhost:11434`` is an Ollama,
``:8080`` a llama.cpp ``llama-server``, ``:8000`` a vLLM, ``:1234`` (LM Studio) and
``api.openai.com`` an OpenAI; any other host (``gpu1:11434``, ``gpu-box:8000``) is a server of
its own, of the kind its port names. Other ports (``localhost:9999``) are left alone: the
docs name them where nothing answers. Each is an ``llmtap.testing.TestServer`` on a free port,
running on an event loop of its own thread, so that an example runs as written, with its own
``asyncio.run``, in the test's thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from llmtap.testing import TestServer

T = TypeVar("T")

#: The URLs the docs use for servers: scheme, host and port (a path after them is kept).
DOC_URL = re.compile(
    r"https?://(?:(?:localhost|127\.0\.0\.1|gpu[\w-]*|[\w-]+-box)(?::(?:11434|8080|8000|1234))?"
    r"|api\.openai\.com)(?![\w:])"
)
DEFAULT = "http://localhost:11434"
_KIND_BY_PORT = {"11434": "ollama", "8080": "llamacpp", "8000": "vllm", "1234": "openai"}
_MODELS = {
    "ollama": ["qwen3:latest", "llama3.2:latest"],
    "llamacpp": ["tiny"],
    "vllm": ["Qwen/Qwen3-8B"],
    "openai": ["gpt-4o-mini", "qwen3"],
}


def kind_of(url: str) -> str:
    """The kind of server a docs URL names, by its port (or host)."""
    if "api.openai.com" in url:
        return "openai"
    port = url.rsplit(":", 1)[-1] if url.count(":") == 2 else "11434"
    return _KIND_BY_PORT.get(port, "ollama")


class Farm:
    """The servers of one example or transcript, started as its text names them."""

    def __init__(self, ollama_models: list[str] | None = None) -> None:
        #: The models an Ollama stand-in has (transcripts: one, as ``serve-test``'s).
        self.ollama_models = ollama_models or _MODELS["ollama"]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="docs-servers", daemon=True
        )
        self._thread.start()
        #: Docs URL (scheme, host, port) → its stand-in.
        self.servers: dict[str, TestServer] = {}

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the servers' loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def server(self, url: str = DEFAULT, kind: str | None = None, **options: Any) -> TestServer:
        """The stand-in for the server at ``url`` (started on first use, of the ``kind`` its
        port names unless given, with ``options``)."""
        match = DOC_URL.match(url)
        key = match.group(0) if match else url
        found = self.servers.get(key)
        if found is None:
            kind = kind or kind_of(key)
            models = self.ollama_models if kind == "ollama" else _MODELS[kind]
            options.setdefault("models", models)

            async def start() -> TestServer:
                server = TestServer(dialect=kind, **options)  # type: ignore[arg-type]
                await server.start()
                return server

            found = self.servers[key] = self.call(start())
        return found

    def rewrite(self, text: str) -> str:
        """``text`` with each server URL the docs name pointed at its stand-in."""
        return DOC_URL.sub(lambda match: self.server(match.group(0)).url, text)

    def unrewrite(self, text: str) -> str:
        """``text`` with each stand-in's URL named as the docs name it."""
        for key, server in self.servers.items():
            text = text.replace(server.url, key)
        return text

    @property
    def requests(self) -> int:
        """How many requests the stand-ins received in all."""
        return sum(len(server.requests) for server in self.servers.values())

    def close(self) -> None:
        """Stop every server and the loop."""

        async def stop() -> None:
            for server in self.servers.values():
                await server.stop()

        self.call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Farm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
