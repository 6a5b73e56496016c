"""openai-python as the differential oracle of the real-server tier.

A test asks through an :class:`Oracle`: llmtap sends the request to the real server through
a :class:`Tee`, a loopback HTTP proxy that passes the answer on as it arrives and keeps a
copy. Then openai-python's ``AsyncOpenAI`` sends the same request, built the way its users
build one (the tee checks that its body is the same JSON as llmtap's), and the tee answers
it with the copy. Both clients read exactly the same bytes, ids included, so what they make
of them must agree: text, finish reason, usage (prompt, completion, total), tool calls (id,
name, decoded arguments), or the error (status, message, type). A second generation is
never needed, so nothing is left to the server's determinism.

openai-python reads streams with its own accumulator, ``ChatCompletionStreamState``, and
streams ask for usage (``stream_options.include_usage``) as llmtap's requests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from llmtap import ChatResult, LLMClient, LLMError, LLMResponseError, LLMStreamError, Message

__all__ = ["Answer", "Exchange", "Oracle", "Tee"]

#: Request headers the tee passes on (the rest are the client's own business).
_FORWARDED = frozenset({"content-type", "authorization", "accept"})


@dataclass(frozen=True)
class Exchange:
    """One request the tee passed on, and the server's answer to it, byte for byte.

    Attributes:
        method: The request's method.
        path: Its path and query.
        request: Its body.
        status: The answer's status.
        content_type: The answer's ``Content-Type``.
        body: The answer's body (a stream's every byte).
    """

    method: str
    path: str
    request: bytes
    status: int
    content_type: str
    body: bytes

    @property
    def json(self) -> Any:
        """A whole answer's body, parsed."""
        return json.loads(self.body)

    @property
    def data_lines(self) -> list[Any]:
        """A streamed answer's ``data:`` payloads, parsed (``[DONE]`` as the string)."""
        lines = [line[6:] for line in self.body.decode().split("\n\n") if line.startswith("data: ")]
        return [line if line == "[DONE]" else json.loads(line) for line in lines]


@dataclass
class Tee:
    """A loopback HTTP proxy in front of ``upstream``: every request is passed on and its
    answer passed back as it arrives (a stream chunk by chunk) and recorded in
    :attr:`exchanges`; after :meth:`replay`, the next request is answered from a record
    instead, and its body kept in :attr:`replayed`.

    Args:
        upstream: The real server's base URL.
    """

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    replayed: list[bytes] = field(default_factory=list)
    _replay: Exchange | None = field(default=None, repr=False)
    _busy: int = field(default=0, repr=False)
    _quiet: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    _port: int = field(default=0, repr=False)

    @property
    def url(self) -> str:
        """The tee's base URL."""
        return f"http://127.0.0.1:{self._port}"

    def replay(self, exchange: Exchange) -> None:
        """Answer the next request with ``exchange``'s answer, without passing it on."""
        self._replay = exchange

    async def settled(self) -> None:
        """Wait until no request is being handled: every answer passed on is recorded
        (a client may have its answer, say at ``[DONE]``, before the tee has read the end
        of the body). Bounded: a request still busy after 30 s fails the test."""
        async with asyncio.timeout(30), self._quiet:
            await self._quiet.wait_for(lambda: self._busy == 0)

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def stop(self) -> None:
        """Stop listening and close the connections to the server."""
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._busy += 1
        try:
            return await self._answer(request)
        finally:
            async with self._quiet:
                self._busy -= 1
                self._quiet.notify_all()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self._replay is not None:
            exchange, self._replay = self._replay, None
            self.replayed.append(body)
            return web.Response(
                status=exchange.status,
                body=exchange.body,
                headers={"Content-Type": exchange.content_type},
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as upstream:
            content_type = upstream.headers.get("Content-Type", "")
            if upstream.headers.get("Transfer-Encoding", "").lower() == "chunked":
                response = web.StreamResponse(
                    status=upstream.status, headers={"Content-Type": content_type}
                )
                await response.prepare(request)
                parts = []
                client_left = False  # a client that raised mid-stream closes its end
                async for data in upstream.content.iter_any():
                    parts.append(data)
                    if not client_left:
                        try:
                            await response.write(data)
                        except ConnectionError:
                            client_left = True
                if not client_left:
                    with contextlib.suppress(ConnectionError):
                        await response.write_eof()
                answer = b"".join(parts)
            else:
                answer = await upstream.read()
                response = web.Response(
                    status=upstream.status, body=answer, headers={"Content-Type": content_type}
                )
        self.exchanges.append(
            Exchange(request.method, request.path_qs, body, upstream.status, content_type, answer)
        )
        return response


@dataclass(frozen=True)
class Answer:
    """What a client made of one answer, in terms both clients have.

    Attributes:
        text: The text (``""`` when none).
        finish_reason: The finish reason.
        usage: Prompt, completion and total tokens as the server reported them; ``None`` when
            it reported none.
        tool_calls: Per call: id, name, and the arguments decoded from JSON (the text itself
            when it does not decode).
    """

    text: str
    finish_reason: str | None
    usage: tuple[int | None, int | None, int | None] | None
    tool_calls: tuple[tuple[str | None, str | None, Any], ...]


def llmtap_answer(result: ChatResult) -> Answer:
    """What llmtap made of an answer (usage it counted itself, rather than was told, is
    ``None``: openai-python has no such figure)."""
    usage = result.usage
    counts = None
    if usage.source == "server":
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    calls = tuple((call.id, call.name, call.arguments) for call in result.tool_calls)
    return Answer(result.text, result.finish_reason, counts, calls)


def _decoded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def openai_answer(completion: Any) -> Answer:
    """What openai-python made of an answer: its ``ChatCompletion``, or the snapshot its
    stream accumulator built."""
    choice = completion.choices[0]
    message = choice.message
    usage = completion.usage
    counts = None
    if usage is not None:
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    calls = tuple(
        (call.id, call.function.name, _decoded(call.function.arguments))
        for call in message.tool_calls or ()
    )
    return Answer(message.content or "", choice.finish_reason, counts, calls)


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """The message and type of an OpenAI-shaped error body."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    return error.get("message"), error.get("type")


def assert_agree(ours: ChatResult | LLMError, theirs: Answer | Exception | None) -> None:
    """Fail unless llmtap's outcome and openai-python's, for the same bytes, agree.

    * Two answers: equal :class:`Answer` records.
    * A refusal with a status: the same status, message and type.
    * An error object in a stream after the 200: the same message.
    * llmtap's :class:`LLMStreamError` for a tool call whose arguments are not JSON: openai-
      python, which does not decode arguments, has that call with the same text undecoded.
    * llmtap's :class:`LLMStreamError` for a stream with no answer in it: openai-python read
      no chunk at all (``None``), and raised nothing.
    """
    import openai

    if isinstance(ours, ChatResult):
        assert isinstance(theirs, Answer), f"llmtap got an answer, openai-python {theirs!r}"
        assert llmtap_answer(ours) == theirs
        return
    if isinstance(theirs, openai.APIStatusError):
        assert isinstance(ours, LLMResponseError), f"{ours!r} against {theirs!r}"
        message, kind = _error_fields(theirs.body)
        assert (ours.status_code, ours.server_message, ours.error_type) == (
            theirs.status_code,
            message,
            kind,
        )
        return
    if isinstance(theirs, openai.APIError):
        assert isinstance(ours, LLMError), f"{ours!r} against {theirs!r}"
        assert getattr(ours, "server_message", None) == theirs.message
        return
    assert type(ours) is LLMStreamError, f"llmtap raised {ours!r}, openai-python got {theirs!r}"
    if theirs is None:
        assert ours.message.startswith("The server closed the stream without an answer")
        return
    assert isinstance(theirs, Answer), f"{ours!r} against {theirs!r}"
    broken = [(name, args) for _, name, args in theirs.tool_calls if isinstance(args, str)]
    assert len(broken) == 1, theirs
    name, arguments = broken[0]
    assert ours.message.startswith(
        f"Tool call {name!r} has arguments that are not valid JSON: {arguments!r}"
    )
    assert f"finish_reason={theirs.finish_reason!r}" in ours.message


class Oracle:
    """llmtap and openai-python side by side on one real server, through a :class:`Tee`.

    Args:
        tee: The tee in front of the server (started).
        client: llmtap's client, pointed at the tee.
        peer: openai-python's ``AsyncOpenAI``, pointed at the tee.
    """

    def __init__(self, tee: Tee, client: LLMClient, peer: Any) -> None:
        self.tee = tee
        self.client = client
        self.peer = peer

    @classmethod
    @asynccontextmanager
    async def around(cls, url: str, **settings: Any) -> AsyncIterator[Oracle]:
        """An oracle for the server at ``url`` (``settings`` go to llmtap's client)."""
        from openai import AsyncOpenAI

        from tests.realserver.conftest import realserver_client

        tee = Tee(url)
        await tee.start()
        try:
            async with (
                realserver_client(tee, **settings) as client,
                AsyncOpenAI(base_url=f"{tee.url}/v1", api_key="not-needed", max_retries=0) as peer,
            ):
                yield cls(tee, client, peer)
        finally:
            await tee.stop()

    async def last(self) -> Exchange:
        """The last chat request passed on to the server, and its answer (once recorded)."""
        await self.tee.settled()
        return next(e for e in reversed(self.tee.exchanges) if e.path == "/v1/chat/completions")

    async def ask(
        self,
        messages: Sequence[Message],
        *,
        stream: bool,
        tools: Sequence[dict[str, Any]] | None = None,
        **params: Any,
    ) -> ChatResult | LLMError:
        """``chat(messages, stream=stream, tools=tools, **params)`` through llmtap, then the
        same request through openai-python, built as its users build it; fail unless the two
        requests are the same JSON and the two outcomes agree (:func:`assert_agree`).
        Returns llmtap's outcome: its result, or the error it raised."""
        before = len(self.tee.exchanges)
        ours: ChatResult | LLMError
        try:
            ours = await self.client.chat(list(messages), stream=stream, tools=tools, **params)
        except LLMError as exc:
            ours = exc
        await self.tee.settled()
        sent = [e for e in self.tee.exchanges[before:] if e.path == "/v1/chat/completions"]
        assert len(sent) == 1, f"llmtap made {len(sent)} chat requests, not one"
        request: dict[str, Any] = {
            "model": self.client.model,
            "messages": [message.to_api_dict() for message in messages],
            "stream": stream,
            **params,
        }
        if tools:
            request["tools"] = list(tools)
        if stream:
            request["stream_options"] = {"include_usage": True}
        await self._compare(ours, sent[0], request)
        return ours

    async def agree(self, ours: ChatResult | LLMError) -> None:
        """Fail unless openai-python, sent the last chat request the tee passed on (its body
        as keyword arguments) and answered with the same bytes, agrees with ``ours``: for a
        result llmtap gave by another way than :meth:`ask` (``stream()``, ``parse()``, the
        command line, a Router)."""
        exchange = await self.last()
        await self._compare(ours, exchange, json.loads(exchange.request))

    async def _compare(
        self, ours: ChatResult | LLMError, sent: Exchange, request: dict[str, Any]
    ) -> None:
        self.tee.replay(sent)
        theirs = await self._peer_outcome(request)
        assert orjson.loads(self.tee.replayed[-1]) == orjson.loads(sent.request)
        assert_agree(ours, theirs)

    async def answer(
        self,
        messages: Sequence[Message],
        *,
        stream: bool,
        tools: Sequence[dict[str, Any]] | None = None,
        **params: Any,
    ) -> ChatResult:
        """:meth:`ask`, for a request that must be answered: llmtap's result."""
        outcome = await self.ask(messages, stream=stream, tools=tools, **params)
        if isinstance(outcome, LLMError):
            raise AssertionError(f"llmtap raised {outcome!r}") from outcome
        return outcome

    async def _peer_outcome(self, request: dict[str, Any]) -> Answer | Exception | None:
        """openai-python's outcome for ``request`` (``create``'s keyword arguments): an
        :class:`Answer`, the error it raised, or ``None`` for a stream it read no chunk
        from."""
        import openai
        from openai.lib.streaming.chat import ChatCompletionStreamState

        try:
            if not request.get("stream"):
                return openai_answer(await self.peer.chat.completions.create(**request))
            state = ChatCompletionStreamState()
            chunks = 0
            async for chunk in await self.peer.chat.completions.create(**request):
                state.handle_chunk(chunk)
                chunks += 1
            return openai_answer(state.current_completion_snapshot) if chunks else None
        except openai.APIError as exc:
            return exc
