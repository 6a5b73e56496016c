"""Redirects are never followed, so the API key never travels to the host a redirect names:
a 3xx raises ``LLMResponseError`` naming the ``Location``, and the other server gets nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmtap import LLMClient, LLMConfig, LLMResponseError, Message
from llmtap.testing import Reply, TestServer
from tests.reliability.hostile import RawServer, whole

KEY = "sk-llmtap-redirect-key"
HELLO = [Message.user("hello")]
STATUSES = [301, 302, 303, 307, 308]
PATHS = ["stream_chat_with_retry", "stream", "chat_stream", "chat_whole"]


@pytest.fixture
async def elsewhere() -> AsyncIterator[RawServer]:
    """Another loopback server, where the redirects point; it records what reaches it."""
    async with RawServer(whole(200, b'{"object": "list", "data": []}')) as server:
        yield server


async def _call(client: LLMClient, path: str) -> None:
    if path == "stream_chat_with_retry":
        async for _chunk in client.stream_chat_with_retry(HELLO):
            pass
    elif path == "stream":
        async with client.stream(HELLO) as stream:
            async for _event in stream:
                pass
    else:
        await client.chat(HELLO, stream=path == "chat_stream")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("status", STATUSES)
async def test_chat_redirect_is_raised_not_followed(
    status: int, path: str, elsewhere: RawServer
) -> None:
    """A redirected chat request raises LLMResponseError naming the Location, is not
    retried, and the other host receives no request (so no Authorization header)."""
    location = elsewhere.url.replace("127.0.0.1", "localhost") + "/v1/chat/completions"
    async with TestServer(dialect="openai", api_key=KEY) as server:
        server.script(Reply(status=status, headers={"Location": location}))
        config = LLMConfig(endpoint=server.url, model="m", api_key=KEY)
        async with LLMClient(config) as client:
            with pytest.raises(LLMResponseError) as info:
                await _call(client, path)
            assert client.connections_in_use == 0
        sent = [request.headers.get("authorization") for request in server.chat_requests]
    assert type(info.value) is LLMResponseError
    assert info.value.status_code == status
    assert location in info.value.message
    assert sent == [f"Bearer {KEY}"]
    assert elsewhere.requests == []


@pytest.mark.parametrize("status", STATUSES)
async def test_preflight_redirect_is_not_followed(status: int, elsewhere: RawServer) -> None:
    """Preflight's GETs are not redirected either: it fails, the other host gets nothing."""
    location = elsewhere.url.replace("127.0.0.1", "localhost") + "/v1/models"
    answer = whole(status, b"", Location=location)
    async with RawServer(answer) as redirector:
        config = LLMConfig(endpoint=redirector.url, model="m", api_key=KEY)
        async with LLMClient(config) as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
        seen = [request.headers.get("authorization") for request in redirector.requests]
    assert info.value.status_code == status
    assert len(seen) >= 1
    assert set(seen) == {f"Bearer {KEY}"}
    assert elsewhere.requests == []


async def test_preflight_redirect_names_the_location(elsewhere: RawServer) -> None:
    """Preflight's error for a redirect names where it pointed, as the chat calls' does."""
    location = elsewhere.url.replace("127.0.0.1", "localhost") + "/v1/models"
    async with RawServer(whole(307, b"", Location=location)) as redirector:
        async with LLMClient(LLMConfig(endpoint=redirector.url, model="m")) as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
    assert location in info.value.message
