"""llmtap.testing's imitation of llama-server against the real one, field by field.

The same requests go to the real ``llama-server`` (build 11434, serving the tiny model) and
to ``TestServer(dialect="llamacpp")``, scripted to give the answer the real server gave (the
same text pieces, tool-call fragments, finish reason, token counts and error). Every body,
streamed or whole, must then match: the status, the ``Content-Type``, the SSE framing, and
in every JSON object the same keys in the same order, values of the same type, and the same
values, except where a value belongs to one request or one server process rather than to the
wire format (:data:`NOT_VALUES`): ids (compared by their shape), timestamps, timing figures,
the prompt cache, and the facts of the model file and command line.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.realserver.conftest import LLAMA_SERVER_BUILD, no_eos
from tests.realserver.llamacpp_server import LlamaCppServer
from tests.realserver.serverprocess import MODEL_ALIAS
from tests.realserver.test_both_servers import WEATHER_TOOL
from tests.realserver.tinymodel import N_CTX, TinyModel

pytestmark = pytest.mark.realserver

QUESTION = [{"role": "user", "content": "Tell me about the water."}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in the city?"}]

#: Where a value is not the wire format's, and how it is compared instead: by its type, or
#: by its shape (every letter and digit as ``x``: an id's prefix and length). Path patterns
#: join the keys with ``/`` (``*`` for any key or list index).
NOT_VALUES: dict[str, tuple[str, str]] = {
    "id": ("shape", "a completion's id: random per request"),
    "choices/*/delta/tool_calls/*/id": ("shape", "a tool call's id: random per call"),
    "choices/*/message/tool_calls/*/id": ("shape", "a tool call's id: random per call"),
    "created": ("type", "a timestamp"),
    "data/*/created": ("type", "a timestamp"),
    "timings/*": ("type", "timing figures, and the prompt cache's counts"),
    "usage/prompt_tokens_details/cached_tokens": ("type", "what the prompt cache held"),
    "data/*/meta/n_vocab": ("type", "a fact of the model file"),
    "data/*/meta/n_params": ("type", "a fact of the model file"),
    "data/*/meta/size": ("type", "a fact of the model file"),
    "model_path": ("type", "where the model file is"),
    "media_marker": ("shape", "random per server process"),
    "endpoint_metrics": ("type", "the tier starts llama-server with --metrics"),
}


def _shape(text: str) -> str:
    return re.sub(r"[A-Za-z0-9]", "x", text)


def _rule(path: tuple[str, ...]) -> str:
    joined = "/".join(path)
    for pattern, (how, _why) in NOT_VALUES.items():
        if fnmatch.fnmatchcase(joined, pattern):
            return how
    return "value"


def differences(real: Any, fake: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Every way ``fake`` differs from ``real``: keys and their order, value types, and
    values (as :data:`NOT_VALUES` says), as ``where: real != fake`` lines."""
    where = "/".join(path) or "(top)"
    if type(real) is not type(fake):
        return [f"{where}: {type(real).__name__} {real!r} != {type(fake).__name__} {fake!r}"]
    if isinstance(real, dict):
        if list(real) != list(fake):
            return [f"{where}: keys {list(real)} != {list(fake)}"]
        return [d for key in real for d in differences(real[key], fake[key], (*path, key))]
    if isinstance(real, list):
        if len(real) != len(fake):
            return [f"{where}: {len(real)} items != {len(fake)}"]
        return [
            d
            for i, (r, f) in enumerate(zip(real, fake, strict=True))
            for d in differences(r, f, (*path, str(i)))
        ]
    how = _rule(path)
    if how == "type":
        return []
    if how == "shape":
        return [] if _shape(real) == _shape(fake) else [f"{where}: shape {real!r} != {fake!r}"]
    return [] if real == fake else [f"{where}: {real!r} != {fake!r}"]


@dataclass(frozen=True)
class Response:
    """One HTTP answer: status, ``Content-Type``, and its JSON (a whole body) or the
    payloads of its ``data:`` events (a stream, ``[DONE]`` as the string)."""

    status: int
    content_type: str
    body: Any

    @classmethod
    def read(cls, status: int, content_type: str, raw: bytes) -> Response:
        if not content_type.startswith("text/event-stream"):
            return cls(status, content_type, json.loads(raw))
        text = raw.decode()
        assert text.endswith("\n\n"), text[-80:]
        events = text[:-2].split("\n\n")
        assert all(event.startswith("data: ") for event in events), events
        payloads = [event[6:] for event in events]
        body = [p if p == "[DONE]" else json.loads(p) for p in payloads]
        return cls(status, content_type, body)


def compare(real: Response, fake: Response) -> list[str]:
    """The differences of two answers, status and ``Content-Type`` included; a stream's
    chunks one by one (each at the top of :data:`NOT_VALUES`' paths)."""
    found = []
    if isinstance(real.body, list) and isinstance(fake.body, list):
        if len(real.body) != len(fake.body):
            found.append(f"{len(real.body)} events != {len(fake.body)}")
        for number, (one, other) in enumerate(zip(real.body, fake.body, strict=False)):
            found += [f"event {number}: {d}" for d in differences(one, other)]
        real, fake = (
            Response(real.status, real.content_type, None),
            Response(fake.status, fake.content_type, None),
        )
    if (real.status, real.content_type) != (fake.status, fake.content_type):
        found.append(
            f"status, type: {real.status, real.content_type} != {fake.status, fake.content_type}"
        )
    return found + differences(real.body, fake.body)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client: the bodies as the servers send them."""
    # A connection per request: llama-server closes some after an answer, unannounced.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@pytest.fixture
async def imitation() -> AsyncIterator[TestServer]:
    """llmtap.testing's llama.cpp dialect, set up as the tier's llama-server: model tiny, a
    512-token context, the build the registry's source package reports."""
    async with TestServer(
        "llamacpp", models=[MODEL_ALIAS], context_length=N_CTX, version=LLAMA_SERVER_BUILD
    ) as server:
        yield server


async def call(
    http: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any] | None = None
) -> Response:
    """``POST path`` with ``body`` (``GET`` without one), read whole."""
    method = "POST" if body is not None else "GET"
    async with http.request(method, url + path, json=body) as response:
        raw = await response.read()
        return Response.read(response.status, response.headers["Content-Type"], raw)


def chat_body(
    messages: list[dict[str, Any]], *, stream: bool, usage: bool = True, **params: Any
) -> dict[str, Any]:
    """A chat request as llmtap sends it (streams ask for usage unless ``usage`` is false)."""
    body: dict[str, Any] = {"model": MODEL_ALIAS, "messages": messages, "stream": stream, **params}
    if stream and usage:
        body["stream_options"] = {"include_usage": True}
    return body


def usage_of(response: Response) -> tuple[int, int]:
    """The prompt and completion tokens an answer reported."""
    body = response.body
    usage = body["usage"] if isinstance(body, dict) else body[-2]["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def deltas(response: Response) -> list[dict[str, Any]]:
    """A stream's deltas, one per chunk that has a choice."""
    return [line["choices"][0]["delta"] for line in response.body[:-1] if line["choices"]]


def finish_of(response: Response) -> str:
    body = response.body
    if isinstance(body, dict):
        return str(body["choices"][0]["finish_reason"])
    return next(
        str(line["choices"][0]["finish_reason"])
        for line in body[:-1]
        if line["choices"] and line["choices"][0]["finish_reason"]
    )


# --- chat ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "usage"),
    [(True, True), (True, False), (False, True)],
    ids=["streamed-with-usage", "streamed-without-usage", "whole"],
)
@pytest.mark.parametrize("finish", ["stop", "length"])
async def test_a_text_answer_is_shaped_as_llama_server_shapes_it(
    http: aiohttp.ClientSession,
    llamacpp_server: LlamaCppServer,
    imitation: TestServer,
    tiny_model: TinyModel,
    stream: bool,
    usage: bool,
    finish: str,
) -> None:
    """A text answer, streamed (with the usage chunk llmtap asks for, and without) or whole,
    ending by itself ("stop") or at max_tokens ("length"): the imitation, scripted with the
    real answer's pieces, finish reason and token counts, sends the same bodies field by
    field (the role chunk with content null, one chunk per piece, the finish chunk, the
    usage chunk, timings on the last)."""
    params: dict[str, Any] = {"seed": 1, "max_tokens": 200}
    if finish == "length":
        params |= {"max_tokens": 9, **no_eos(tiny_model)}
    body = chat_body(QUESTION, stream=stream, usage=usage, **params)
    real = await call(http, llamacpp_server.url, "/v1/chat/completions", body)
    whole = (
        real
        if not stream
        else await call(
            http,
            llamacpp_server.url,
            "/v1/chat/completions",
            chat_body(QUESTION, stream=False, **params),
        )
    )
    pieces = [d["content"] for d in deltas(real) if d.get("content")] if stream else None
    text = whole.body["choices"][0]["message"]["content"]
    imitation.script(
        Reply(text=text, chunks=pieces, finish_reason=finish_of(real), usage=usage_of(whole))
    )
    fake = await call(http, imitation.url, "/v1/chat/completions", body)
    assert finish_of(real) == finish
    assert compare(real, fake) == []


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_tool_call_is_shaped_as_llama_server_shapes_it(
    http: aiohttp.ClientSession,
    llamacpp_tool_server: LlamaCppServer,
    imitation: TestServer,
    stream: bool,
) -> None:
    """A tool call (the tool-call model, tool_choice "required"), streamed or whole: the
    imitation, scripted with the real call's id, argument fragments and token counts, sends
    the same bodies field by field (the call's first delta with id, type, name and the first
    fragment; then the fragments alone; a whole answer's content "" and the call as type,
    function, id)."""
    params: dict[str, Any] = {
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "seed": 2,
        "max_tokens": 200,
    }
    body = chat_body(WEATHER_QUESTION, stream=stream, **params)
    real = await call(http, llamacpp_tool_server.url, "/v1/chat/completions", body)
    if stream:
        fragments = [call for d in deltas(real) for call in d.get("tool_calls", ())]
        call_id = fragments[0]["id"]
        pieces = [f["function"]["arguments"] for f in fragments]
    else:
        [whole_call] = real.body["choices"][0]["message"]["tool_calls"]
        call_id, pieces = whole_call["id"], [whole_call["function"]["arguments"]]
    imitation.script(
        Reply(
            tool_calls=[ToolCallSpec("get_weather", chunks=pieces, id=call_id)],
            usage=usage_of(real),
        )
    )
    fake = await call(http, imitation.url, "/v1/chat/completions", body)
    assert finish_of(real) == "tool_calls"
    assert compare(real, fake) == []


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_an_over_long_prompt_is_refused_as_llama_server_refuses_it(
    http: aiohttp.ClientSession,
    llamacpp_server: LlamaCppServer,
    imitation: TestServer,
    stream: bool,
) -> None:
    """A prompt over the context, streamed or not: a 400 ``exceed_context_size_error`` whose
    error object has the code, message and type, then the prompt's token count and the
    context size; the imitation scripted with them sends the same body."""
    body = chat_body([{"role": "user", "content": "water " * 600}], stream=stream)
    real = await call(http, llamacpp_server.url, "/v1/chat/completions", body)
    error = real.body["error"]
    imitation.script(
        Reply(
            status=400,
            error_message=error["message"],
            error_type="exceed_context_size_error",
            error_fields={"n_prompt_tokens": error["n_prompt_tokens"], "n_ctx": error["n_ctx"]},
        )
    )
    fake = await call(http, imitation.url, "/v1/chat/completions", body)
    assert (real.status, error["type"]) == (400, "exceed_context_size_error")
    assert compare(real, fake) == []


# --- what it says of itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/models", "/models", "/props", "/health", "/v1/health", "/no/such/route"]
)
async def test_listing_props_health_and_unknown_routes_match(
    http: aiohttp.ClientSession, llamacpp_server: LlamaCppServer, imitation: TestServer, path: str
) -> None:
    """The model listing (its Ollama-style and OpenAI-style parts), ``/props`` (every field,
    the default sampling parameters included), ``/health``, and an unknown route's 404 come
    from the imitation field by field as from llama-server."""
    real = await call(http, llamacpp_server.url, path)
    fake = await call(http, imitation.url, path)
    assert compare(real, fake) == []
