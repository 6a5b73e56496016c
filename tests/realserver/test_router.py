"""A Router over real servers: a request the server refuses for what it asks (issue 21 item 1)
is raised after one attempt and takes no server out of the fleet.

Each fleet is one server process listed twice, under two names: two endpoints of the same
server kind, as a fleet of identical servers would be.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from llmtap import LLMResponseError, Message, Router
from tests.realserver.conftest import HasURL, no_eos, realserver_settings
from tests.realserver.oracle import Oracle

if TYPE_CHECKING:  # importing them needs gguf or the servers, which the tier may lack
    from tests.realserver.llamacpp_server import LlamaCppServer
    from tests.realserver.llamaserver import LlamaServer
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver

QUESTION = [Message.user("Tell me about the water.")]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


#: A real PNG image: one red pixel.
TINY_PNG = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    + _png_chunk(b"IEND", b"")
)


@asynccontextmanager
async def fleet(server: HasURL) -> AsyncIterator[Router]:
    """A router over ``server`` listed twice ("first" and "second"), failing over in that
    order, with the router's default two retries across endpoints."""
    endpoints = [{"name": name, **realserver_settings(server)} for name in ("first", "second")]
    async with Router(endpoints, strategy="failover") as router:
        yield router


def outcome(router: Router, caplog: pytest.LogCaptureFixture) -> Any:
    """Per endpoint: name, state, attempts sent, attempts failed; and the endpoints logged
    as taken down."""
    down = [r for r in caplog.records if r.getMessage().startswith("router_endpoint_down")]
    stats = [(s.name, s.state, s.requests, s.failed) for s in router.stats()]
    return stats, len(down)


#: One failed attempt on the first endpoint, both still healthy, nothing logged as down.
ONE_ATTEMPT_NO_SERVER_DOWN = ([("first", "healthy", 1, 1), ("second", "healthy", 0, 0)], 0)


@pytest.mark.parametrize("stream", [True, False])
async def test_an_image_llama_server_cannot_take_fails_once_and_takes_no_server_out(
    llamacpp_server: LlamaCppServer,
    tiny_model: TinyModel,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    """llama-server answers an image sent to a text-only model with 500 "image input is not
    supported": the router raises LLMResponseError after that one attempt (not again on the
    other endpoint), takes neither endpoint out, and answers the next request (the error and
    the answer as openai-python reads them too)."""
    caplog.set_level(logging.INFO, logger="llmtap")
    async with Oracle.around(llamacpp_server.url) as oracle, fleet(oracle.tee) as router:
        with pytest.raises(LLMResponseError) as info:
            await router.chat([Message.user("hi", images=[TINY_PNG])], stream=stream)
        await oracle.agree(info.value)
        after_error = outcome(router, caplog)
        answer = await router.chat(
            QUESTION, seed=1, max_tokens=8, stream=stream, **no_eos(tiny_model)
        )
        await oracle.agree(answer)
    assert (info.value.status_code, info.value.server_message) == (
        500,
        "image input is not supported - hint: if this is unexpected, you may need to provide "
        "the mmproj",
    )
    assert after_error == ONE_ATTEMPT_NO_SERVER_DOWN
    assert answer.finish_reason == "length"


@pytest.mark.parametrize("stream", [True, False])
async def test_a_field_of_the_wrong_type_fails_once_on_llama_cpp_python_and_takes_no_server_out(
    llama_server: LlamaServer,
    tiny_model: TinyModel,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    """llama-cpp-python takes images silently, but answers a field of the wrong type
    (``temperature="hot"``) with a 500 whose message is a validation error naming the field:
    the router raises it after that one attempt, takes neither endpoint out, and answers the
    next request."""
    caplog.set_level(logging.INFO, logger="llmtap")
    async with fleet(llama_server) as router:
        with pytest.raises(LLMResponseError) as info:
            await router.chat(QUESTION, temperature="hot", stream=stream)
        after_error = outcome(router, caplog)
        answer = await router.chat(
            QUESTION, seed=1, max_tokens=8, stream=stream, **no_eos(tiny_model)
        )
    assert info.value.status_code == 500
    assert (info.value.server_message or "").startswith(
        "1 validation error:\n  {'type': 'float_parsing', 'loc': ('body', 'temperature'), "
        "'msg': 'Input should be a valid number, unable to parse string as a number', "
        "'input': 'hot'}"
    )
    assert after_error == ONE_ATTEMPT_NO_SERVER_DOWN
    assert answer.finish_reason == "length"
