"""Memory under hostile servers: an endless line, or an endless stream of tiny chunks, never
makes the client hold more than ``max_line_bytes`` plus a constant.

Peak memory is measured with ``tracemalloc`` (every Python allocation of the process, the raw
server's included, so the figure bounds the client's from above). The hostile server stops
after ``SENT`` bytes or ``TIME_LIMIT`` seconds, whichever comes first; a client that buffered
what it was sent would peak near ``SENT``, far above the bound.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from llmtap import LLMClient, LLMConfig, LLMError, LLMStreamError, LLMStreamInterrupted, Message
from tests.reliability.hostile import RawRequest, RawServer, response_head

MiB = 1024 * 1024
#: The client's line limit in these tests.
LIMIT = 1 * MiB
#: Most bytes the hostile server sends.
SENT = 64 * MiB
#: Longest the hostile server keeps sending, in seconds (an endless stream of tiny chunks
#: runs this long; memory is flat after the first few thousand).
TIME_LIMIT = 1.0
#: What the client may hold beyond the line limit: aiohttp's read buffer (64 KiB, paused
#: above its high-water mark), the line buffer's over-allocation, one read being split, the
#: raw server's own write buffer, and the interpreter's small change.
CONSTANT = 3 * MiB
HELLO = [Message.user("hello")]


def endless(content_type: str, first: bytes, piece: bytes, limit: int = SENT) -> Any:
    """An answer that sends ``first``, then ``piece`` again and again, until ``limit`` bytes
    or ``TIME_LIMIT`` seconds (then it closes: a close-delimited body)."""

    async def answer(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(response_head(200, content_type) + first)
        sent = len(first)
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + TIME_LIMIT
        while sent < limit and loop.time() < stop_at:
            writer.write(piece)
            sent += len(piece)
            await writer.drain()

    return answer


X = b"x" * (64 * 1024)
CASES = {
    # One line with no end, in the stream formats and in a whole JSON body.
    "sse_endless_line": ("text/event-stream", b"data: ", X),
    "ndjson_endless_line": ("application/x-ndjson", b'{"message": {"content": "', X),
    "json_endless_body": ("application/json", b'{"choices": [{"message": {"content": "', X),
    # Endless tiny chunks that carry no text: keep-alive comments and empty deltas.
    "sse_endless_comments": ("text/event-stream", b"", b":\n\n" * 4096),
    "sse_endless_empty_deltas": (
        "text/event-stream",
        b"",
        b'data: {"choices": [{"index": 0, "delta": {}}]}\n\n' * 512,
    ),
    "ndjson_endless_blank_lines": ("application/x-ndjson", b"", b"\n" * 16384),
}


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


async def _call(client: LLMClient, path: str) -> None:
    if path == "stream_chat":
        async for _chunk in client.stream_chat(HELLO):
            pass
    elif path == "stream":
        async with client.stream(HELLO) as stream:
            async for _event in stream:
                pass
    elif path == "chat_whole":
        await client.chat(HELLO, stream=False)
    else:
        await client.chat(HELLO)


def _paths(case: str) -> list[str]:
    if case.startswith("json"):
        return ["chat_whole"]
    if "line" in case:
        return ["stream_chat", "stream", "chat_stream"]
    return ["stream_chat", "chat_stream"]  # raw chunks, and chunks through the accumulator


@pytest.mark.parametrize(
    ("case", "path"),
    [pytest.param(case, path, id=f"{case}-{path}") for case in CASES for path in _paths(case)],
)
async def test_hostile_body_memory_is_bounded(case: str, path: str, traced: None) -> None:
    """The client's peak memory stays under max_line_bytes plus a constant, and the call
    ends with a typed error (the line is too long, or the body ends without an answer)."""
    content_type, first, piece = CASES[case]
    async with RawServer(endless(content_type, first, piece)) as server:
        api = "ollama" if "ndjson" in case else "openai"
        config = LLMConfig(
            endpoint=server.url, model="m", api=api, max_retries=0, max_line_bytes=LIMIT
        )
        async with LLMClient(config) as client:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with pytest.raises(LLMError) as info:
                async with asyncio.timeout(TIME_LIMIT + 10):
                    await _call(client, path)
            peak = tracemalloc.get_traced_memory()[1] - base
            assert client.connections_in_use == 0
    assert type(info.value) in (LLMStreamError, LLMStreamInterrupted)
    assert peak < LIMIT + CONSTANT, f"peak {peak / MiB:.1f} MiB"


async def test_preflight_memory_is_bounded(traced: None) -> None:
    """An endless body to preflight's GET is not read past max_line_bytes (plus a constant)."""
    # 8 MiB is enough to cross the bound twice over (a run that read it all peaked at over
    # 100 MiB: aiohttp keeps the pieces and joins them).
    answer = endless("application/json", b'{"models": [{"name": "', X, limit=8 * MiB)
    async with RawServer(answer) as server:
        config = LLMConfig(
            endpoint=server.url, model="m", max_line_bytes=LIMIT, preflight_timeout=TIME_LIMIT + 5
        )
        async with LLMClient(config) as client:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with pytest.raises(LLMError):
                await client.preflight_check()
            peak = tracemalloc.get_traced_memory()[1] - base
    assert peak < LIMIT + CONSTANT, f"peak {peak / MiB:.1f} MiB"
