"""A scripted LLM server on loopback, for testing code that talks to LLM servers.

`TestServer` is a real HTTP server (aiohttp on ``127.0.0.1``, on a free port) that speaks the
wire format of one real server: Ollama (native ``/api/chat`` NDJSON and its ``/v1`` layer),
llama.cpp's ``llama-server``, vLLM, or OpenAI. Each chat request, whether chat completions or
the Responses API (``POST /v1/responses``, answered in that server's own Responses shape),
takes the next scripted `Reply`, which describes the answer (text, reasoning, tool calls,
finish reason, usage) and, if wanted, what goes wrong: a status with ``Retry-After``, a stall
before the headers, a connection reset mid-stream, a stream that ends without ``[DONE]``, an
error after the 200, malformed JSON, invalid UTF-8, an absurdly long line, bytes split across
network reads. No GPU, model or mock transport is involved, so the client under test runs its
real network code.

This module is not imported by ``import llmtap``; import it in tests. ``no_retry_waits()`` is
a context manager in which llmtap retries at once instead of backing off, so tests of retry
behaviour take no time.

Example:
    ::

        import aiohttp
        from llmtap.testing import Reply, TestServer, ToolCallSpec

        async def test_stream_survives_a_reset() -> None:
            async with TestServer(dialect="llamacpp") as server:
                server.script(
                    Reply(text="Hello there", reset_after=2),
                    Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"})]),
                )
                async with aiohttp.ClientSession() as session:
                    async with session.post(
                        f"{server.url}/v1/chat/completions",
                        json={"model": "tiny", "stream": True, "messages": []},
                    ) as response:
                        ...  # the body breaks off after the role chunk and "Hello"
                assert len(server.chat_requests) == 1
"""

from llmtap._retry import waits_disabled as no_retry_waits
from llmtap.testing._reply import RecordedRequest, Reply, StreamErrorStyle, ToolCallSpec
from llmtap.testing._server import Dialect, TestServer, echo_reply

__all__ = [
    "Dialect",
    "RecordedRequest",
    "Reply",
    "StreamErrorStyle",
    "TestServer",
    "ToolCallSpec",
    "echo_reply",
    "no_retry_waits",
]
