"""A client across event loops: used again from a second ``asyncio.run()`` (as a client made at
module level is, under pytest-asyncio's per-test loops), its connections close with the loop
that made them and it works in the next one; used from two running loops at once, it refuses.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Iterator

import pytest

from llmtap import LLMClient, LLMUsageError, Message
from llmtap.testing import TestServer

HELLO = [Message.user("hi")]


class ServerThread:
    """A TestServer running in an event loop of its own, on a thread, so that the test's
    ``asyncio.run()`` calls can come and go."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = TestServer(dialect="openai")
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def open_connections(self) -> int:
        async def count() -> int:
            for _ in range(100):
                if not self.server.open_connections:
                    break
                await asyncio.sleep(0.01)
            return self.server.open_connections

        found = self.run(count())
        assert isinstance(found, int)
        return found


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


def test_a_client_works_again_from_a_second_asyncio_run(server: ServerThread) -> None:
    """Two asyncio.run() calls with one client: both answer, the first loop's connection is
    closed when that loop shuts down (not left to the garbage collector), and nothing warns
    (no "Event loop is closed", no "Unclosed client session", no unclosed transport)."""
    client = LLMClient(endpoint=server.server.url, model="m")

    async def ask() -> str:
        return (await client.chat(HELLO)).text

    gc.collect()  # what earlier tests left behind is theirs, not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = asyncio.run(ask())
        open_after_first = server.open_connections()
        second = asyncio.run(ask())
        asyncio.run(client.close())
        gc.collect()
    assert (first, second) == ("echo: hi", "echo: hi")
    assert open_after_first == 0
    # (An event loop some other code left unclosed may be collected meanwhile: pytest-asyncio
    # before 1.5 leaves one behind after an async test. It is not this client's.)
    assert [str(w.message) for w in caught if "unclosed event loop" not in str(w.message)] == []
    assert server.open_connections() == 0


def test_a_client_in_use_by_a_running_loop_refuses_a_second_one(server: ServerThread) -> None:
    """Two event loops running at once (two threads) cannot share one client's connections:
    the second gets LLMUsageError saying to use one client per loop."""
    client = LLMClient(endpoint=server.server.url, model="m")
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(client.chat(HELLO), other).result(10)

        async def from_here() -> None:
            await client.chat(HELLO)

        with pytest.raises(LLMUsageError) as info:
            asyncio.run(from_here())
        assert "one client per event loop" in str(info.value)
        asyncio.run_coroutine_threadsafe(client.close(), other).result(10)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()
