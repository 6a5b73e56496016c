"""llmtap's reads below aiohttp's public surface: the connector's protocol and ``next_bytes``.

Both lean on a few aiohttp internals, all in ``llmtap._http.internals``; the first test fails
loudly if an aiohttp upgrade moves them. The others check, over a real loopback server, that
flow control still pauses and resumes and that ``next_bytes`` reads exactly what ``readany``
reads.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

from llmtap._http.internals import FastConnector as Connector
from llmtap._http.internals import FastProtocol as _ResponseHandler
from llmtap._http.internals import fast_next_bytes as next_bytes
from llmtap.testing import Reply, TestServer

# ~1.2 MB: more than aiohttp buffers (twice read_bufsize, 512 KiB by default) before pausing.
_BIG = [f"{i:04d}" + "x" * 4000 for i in range(300)]


def _request(stream: bool = True) -> bytes:
    return orjson.dumps(
        {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )


async def test_the_aiohttp_internals_llmtap_reads_are_there() -> None:
    """StreamReader's waiting state, the protocol's pause flag, the connector's factory
    (looked up on live objects, so the test holds whether or not aiohttp uses slots)."""
    loop = asyncio.get_running_loop()
    protocol = _ResponseHandler(loop=loop)
    reader = StreamReader(protocol, 2**16, loop=loop)
    assert not reader._buffer
    assert (reader._eof, reader._exception, reader._waiter) == (False, None, None)
    assert reader.read_nowait() == b""
    assert protocol._reading_paused is False
    assert isinstance(protocol, BaseProtocol)
    connector = Connector()
    try:
        assert type(connector._factory()) is _ResponseHandler
    finally:
        await connector.close()


async def test_connections_use_llmtaps_protocol_and_go_back_to_the_pool() -> None:
    opened = 0

    async def count(*_: object) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(count)
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b"], delay_between=0.01), Reply(text="two"))
        connector = Connector()
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
            for _ in range(2):
                async with session.post(f"{server.url}/v1/chat/completions", data=_request()) as r:
                    while await next_bytes(r.content, asyncio.get_running_loop()):
                        pass
            idle = [protocol for held in connector._conns.values() for protocol, _ in held]
    assert opened == 1  # kept alive and reused
    assert [type(protocol) for protocol in idle] == [_ResponseHandler]


async def test_a_paused_connection_resumes_and_delivers_every_byte() -> None:
    """A reader that falls behind pauses the socket; reading on must resume it, or this hangs."""
    loop = asyncio.get_running_loop()
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=_BIG))
        async with aiohttp.ClientSession(connector=Connector()) as session:
            url = f"{server.url}/v1/chat/completions"
            async with session.post(url, data=_request()) as response:
                assert response.connection is not None
                protocol = response.connection.protocol
                assert protocol is not None
                got = [await next_bytes(response.content, loop)]
                for _ in range(100):  # let the server fill the buffers until reading pauses
                    if protocol._reading_paused:
                        break
                    await asyncio.sleep(0.02)
                assert protocol._reading_paused
                while piece := await asyncio.wait_for(next_bytes(response.content, loop), 5.0):
                    got.append(piece)
    assert _texts(b"".join(got)) == ["", *_BIG, ""]


def _texts(body: bytes) -> list[str]:
    """The content of each SSE event in ``body`` (ids and timestamps differ per answer)."""
    texts = []
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: {"):
            choices = orjson.loads(event[6:])["choices"]
            texts.append(choices[0]["delta"].get("content") or "" if choices else "")
    return texts


async def test_next_bytes_reads_what_readany_reads_and_raises_what_it_raises() -> None:
    loop = asyncio.get_running_loop()
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(chunks=["a", "b", "c"], delay_between=0.01),
            Reply(chunks=["a", "b", "c"], delay_between=0.01),
            Reply(chunks=["a", "b", "c"], reset_after=2),
            Reply(chunks=["a", "b", "c"], reset_after=2),
        )
        url = f"{server.url}/v1/chat/completions"
        async with aiohttp.ClientSession(connector=Connector()) as session:
            bodies = []
            errors = []
            for read in (lambda c: next_bytes(c, loop), StreamReader.readany) * 2:
                got = b""
                async with session.post(url, data=_request()) as response:
                    try:
                        while piece := await read(response.content):
                            got += piece
                    except aiohttp.ClientPayloadError as exc:
                        errors.append(type(exc))
                bodies.append(got)
    assert _texts(bodies[0]) == _texts(bodies[1]) == ["", "a", "b", "c", ""]
    assert bodies[0].endswith(b"data: [DONE]\n\n")
    assert _texts(bodies[2]) == _texts(bodies[3])
    assert errors == [aiohttp.ClientPayloadError] * 2


def _internals_in_a_fresh_process(public: bool) -> dict[str, bool]:
    """What ``llmtap._http.internals`` settles on at import, with or without the switch."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LLMTAP_AIOHTTP_PUBLIC"}
    if public:
        env["LLMTAP_AIOHTTP_PUBLIC"] = "1"
    code = (
        "import json; from llmtap._http import internals as i; "
        "print(json.dumps({'reads': i.FAST_READS, 'protocol': i.FAST_PROTOCOL, "
        "'next_bytes': i.next_bytes.__name__}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    found: dict[str, bool] = json.loads(out.stdout)
    return found


def test_the_internals_checks_pass_on_this_aiohttp() -> None:
    """On the aiohttp installed, every check of its internals holds, so the fast way is used
    (a failing check here means an aiohttp upgrade moved something: see internals.py)."""
    assert _internals_in_a_fresh_process(public=False) == {
        "reads": True,
        "protocol": True,
        "next_bytes": "fast_next_bytes",
    }


def test_the_public_switch_turns_every_internal_off() -> None:
    """LLMTAP_AIOHTTP_PUBLIC=1 makes llmtap use aiohttp's public API for all of it."""
    assert _internals_in_a_fresh_process(public=True) == {
        "reads": False,
        "protocol": False,
        "next_bytes": "public_next_bytes",
    }


def test_a_failing_check_falls_back_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that fails makes that piece use the public way, with one warning naming it;
    a check that holds uses the fast way, silently."""
    from llmtap._http import internals

    monkeypatch.setattr(internals, "PUBLIC", False)
    with caplog.at_level("WARNING", logger="llmtap"):
        broken = internals._settle(lambda: "StreamReader._waiter changed", "reads")
        sound = internals._settle(lambda: None, "reads")
    assert (broken, sound) == (False, True)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("aiohttp_internals_unavailable ")
    assert "StreamReader._waiter changed" in messages[0]
