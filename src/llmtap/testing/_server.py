"""`TestServer`: a real HTTP server on loopback that imitates one LLM server's dialect.

It routes every request itself (one catch-all aiohttp route), so unknown paths, wrong
methods, missing API keys and the llama.cpp loading state answer in the imitated server's
own shapes. Chat requests (chat completions, Ollama's ``/api/chat`` and the Responses API)
take the next scripted `Reply`; the dialects (`_dialects`) turn it into body pieces and the
writer (`_writer`) sends them with the reply's pacing and faults.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from aiohttp import web

from llmtap.testing import _catalog as catalog
from llmtap.testing._dialects import build_chat_plan, build_responses_plan
from llmtap.testing._reply import RecordedRequest, Reply
from llmtap.testing._wire import ChatFacts, Flavor, encode, error_envelope, llamacpp_http_error
from llmtap.testing._writer import abort_connection, send_plan

__all__ = ["Dialect", "TestServer", "echo_reply"]

#: The servers `TestServer` can imitate.
Dialect = Literal["openai", "ollama", "llamacpp", "vllm"]

_Handler = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]

_DEFAULT_MODELS: dict[str, str] = {
    "ollama": "llama3.2:latest",
    "llamacpp": "tiny",
    "vllm": "facebook/opt-125m",
    "openai": "gpt-4o-mini",
}
_DEFAULT_VERSIONS: dict[str, str] = {
    "ollama": "0.33.0",
    "vllm": "0.12.0",
    "llamacpp": catalog.LLAMACPP_BUILD,
}
#: The first versions that serve ``/v1/responses`` (Ollama 0.13.3, vLLM 0.10); earlier ones
#: answer it as an unknown route.
_RESPONSES_SINCE: dict[str, tuple[int, ...]] = {"ollama": (0, 13, 3), "vllm": (0, 10)}


def _has_responses_api(dialect: str, version: str) -> bool:
    """Whether the imitated server, at ``version``, serves the Responses API (a version
    that is not dotted numbers is taken as a recent one)."""
    since = _RESPONSES_SINCE.get(dialect)
    if since is None:
        return True
    try:
        numbers = tuple(int(part) for part in version.split("."))
    except ValueError:
        return True
    return numbers >= since


_RESPONSES_PATHS: dict[str, frozenset[str]] = {
    "ollama": frozenset({"/v1/responses"}),
    "llamacpp": frozenset({"/v1/responses", "/responses"}),
    "vllm": frozenset({"/v1/responses"}),
    "openai": frozenset({"/v1/responses"}),
}
#: The paths whose requests take a scripted reply: chat completions and the Responses API.
_CHAT_PATHS: dict[str, frozenset[str]] = {
    "ollama": frozenset({"/v1/chat/completions", "/api/chat"}) | _RESPONSES_PATHS["ollama"],
    "llamacpp": frozenset({"/v1/chat/completions", "/chat/completions"})
    | _RESPONSES_PATHS["llamacpp"],
    "vllm": frozenset({"/v1/chat/completions"}) | _RESPONSES_PATHS["vllm"],
    "openai": frozenset({"/v1/chat/completions"}) | _RESPONSES_PATHS["openai"],
}
#: Paths the real server answers without an API key (vLLM: everything outside ``/v1``).
_OPEN_PATHS: dict[str, frozenset[str]] = {
    "ollama": frozenset({"/", "/api/version"}),
    "llamacpp": frozenset({"/health", "/v1/health", "/models", "/v1/models"}),
    "openai": frozenset(),
}
_LOADING_BODY = llamacpp_http_error(503, "Loading model", "unavailable_error")
_MAX_BODY = 64 * 1024 * 1024


def _last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (string content, or the text parts of a list).

    A chat request has ``messages``, whose text parts are ``text``; a Responses API request
    has ``input``: a string (one user message) or items, whose text parts are
    ``input_text``.
    """
    if "messages" not in body and "input" in body:
        items, part_type = body["input"], "input_text"
        if isinstance(items, str):
            return items
    else:
        items, part_type = body.get("messages"), "text"
    if not isinstance(items, list):
        return ""
    for message in reversed(items):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        if message.get("type", "message") != "message":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                part["text"]
                for part in content
                if isinstance(part, dict)
                and part.get("type") == part_type
                and isinstance(part.get("text"), str)
            )
        return ""
    return ""


def echo_reply(request: RecordedRequest) -> Reply:
    """The reply `TestServer` sends when no scripted reply is left: ``"echo: "`` plus the
    text of the last user message of the request (a chat request's ``messages``, or a
    Responses API request's ``input``)."""
    body = request.json
    return Reply(text="echo: " + (_last_user_text(body) if isinstance(body, dict) else ""))


def _llamacpp_item_known(item: dict[str, Any]) -> bool:
    """Whether llama-server can tell what a Responses input item is (``server-chat.cpp``):
    a user, system or developer message, an assistant message *with* ``"type": "message"``,
    a function call, a function call's output or a reasoning item."""
    role, kind, content = item.get("role"), item.get("type"), item.get("content")
    if role in ("user", "system", "developer") and isinstance(content, (str, list)):
        return True
    if role == "assistant" and kind == "message":
        return True
    if kind == "function_call":
        return isinstance(item.get("arguments"), str)
    if kind == "function_call_output":
        return isinstance(item.get("call_id"), str)
    return kind == "reasoning" and isinstance(item.get("summary"), list)


def _embedding_inputs(value: Any) -> list[str] | None:
    """The texts to embed, or ``None`` when ``input`` has no usable shape."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, int) for item in value):  # one prompt as token ids
            return [" ".join(str(item) for item in value)]
        if all(isinstance(item, list) for item in value):  # several prompts as token ids
            return [" ".join(str(token) for token in item) for item in value]
    return None


class TestServer:
    """A scripted LLM server on a loopback port, speaking one server's dialect.

    It is real HTTP (aiohttp on ``127.0.0.1``, on a free port unless ``port`` is given), so
    a client under test goes through its whole network stack. Chat requests
    (``POST /v1/chat/completions``, ``POST /api/chat`` for Ollama, and the Responses API's
    ``POST /v1/responses`` on every dialect, with llama.cpp's ``/responses`` alias) take the
    scripted replies in order; with none left, the server echoes ``"echo: "`` plus the text
    of the last user message (or user input item). Listing, health and embedding routes
    answer as the real server does.

    The Responses API answers in the dialect's own shape (``WIRE-responses.md``): typed
    ``event:``/``data:`` events with no ``[DONE]``, or one response object without
    ``stream``. See `Reply` for how each part of a reply comes out per dialect. Before it
    answers, llama.cpp refuses ``previous_response_id``, a request without ``input`` and an
    input item it cannot type (such as an assistant message without ``"type": "message"``)
    with its 400, and vLLM answers ``previous_response_id`` with 404 (its response store is
    off); Ollama and OpenAI ignore it. These refusals use up no scripted reply.

    Checks the real server makes before it answers come first and do not use up a scripted
    reply: the llama.cpp loading state (503 on every route), the API key (401), an
    unparseable body (400), an unknown model (404 for Ollama, vLLM and OpenAI, unless
    ``accept_any_model``; llama.cpp answers with its own model whatever was asked), a missing
    model (400 for Ollama and OpenAI) and, for chat completions only, ``reject_stream_options``
    (400) and vLLM's 400 for ``stream_options`` without ``stream: true``.

    Every attribute set by the constructor can be changed while the server runs; it is read
    at each request.

    With ``keep_alive`` set, the server closes a kept-alive connection once it has been idle
    for that many seconds after an answer, without saying so beforehand (no ``Connection:
    close``), as real servers do (llama.cpp's ``llama-server``: 5 s). A client that sends its
    next request on such a connection just as the server closes it gets no answer there: the
    close and the request cross on the wire. The shorter the time, the more often that race
    is run; ``keep_alive=0`` closes every connection right after its answer, which
    llama-cpp-python does after an empty 200.

    Args:
        dialect: The server to imitate: ``"openai"``, ``"ollama"``, ``"llamacpp"`` or
            ``"vllm"``.
        host: The address to listen on.
        port: The port; ``0`` lets the OS choose a free one (kept across `stop` and
            `start`).
        models: The models the server has. Defaults: ``llama3.2:latest`` (Ollama), ``tiny``
            (llama.cpp), ``facebook/opt-125m`` (vLLM), ``gpt-4o-mini`` (OpenAI).
        api_key: When set, requests need ``Authorization: Bearer <api_key>``, except on the
            routes the real server leaves open (llama.cpp ``/health`` and the model lists,
            vLLM everything outside ``/v1``, Ollama ``/`` and ``/api/version``).
        loading: llama.cpp only: answer every route with 503 ``Loading model``.
        version: What Ollama's ``/api/version`` and vLLM's ``/version`` report, and
            llama.cpp's build (``build_info`` in ``/props``, and every answer's
            ``system_fingerprint``; default ``b6500-1a2b3c4d``). An Ollama before 0.13.3 and
            a vLLM before 0.10 have no ``/v1/responses`` (it answers 404, as an unknown
            route).
        loaded_models: The models Ollama's ``/api/ps`` lists (default: none).
        pull_registry: Ollama only: the models ``POST /api/pull`` can download (names as
            given to pull; ``qwen3`` means ``qwen3:latest``). ``None`` (the default): any name.
            A name not in it fails as Ollama does, with ``pull model manifest: file does not
            exist`` after the 200. A pull that succeeds adds the model to ``models``.
        pull_delay: Seconds between two progress lines of a pull.
        pull_reset_after: Drop the connection after this many progress lines of a pull. The
            bytes sent so far are kept, so the next pull of the same model resumes, as
            Ollama resumes partial layers.
        fallback: Builds the reply for a chat request when no scripted reply is left, from
            the `RecordedRequest` (default: `echo_reply`).
        keep_alive: Close a kept-alive connection once it has been idle this many seconds
            after an answer (``None``, the default: keep it open until the client closes it).
            A new connection is never closed before its first request. (aiohttp's own
            ``keepalive_timeout`` also closes a new connection whose first request is slower
            than the timeout, which would fail fresh connections at short timeouts.)
        context_length: The context length the listings report.
        reject_stream_options: Answer a chat request whose body has ``stream_options``
            with an OpenAI-shaped 400, as some strict OpenAI-compatible proxies do.
        accept_any_model: Answer chat and embedding requests for any model name instead
            of the dialect's 404 for a model not in ``models``. The default is ``True`` when
            ``models`` is not given (so a test need not match the default model's name) and
            ``False`` when it is. Listing routes (``/api/show``, ``/v1/models/{id}``) always
            go by ``models``.

    Attributes:
        requests: Every request received, on any path, in order of arrival, as
            `RecordedRequest` objects (a plain list: clear it to start over).
        idle_closes: How many kept-alive connections ``keep_alive`` has closed so far.
        dropped_requests: Requests that arrived on a connection ``keep_alive`` had just
            closed (the close and the request crossed): never answered, and not in
            ``requests``.

    Example:
        ::

            async with TestServer(dialect="vllm") as server:
                server.script(Reply(text="Hi there", delay_between=0.01))
                ...  # point the client at server.url
                assert server.chat_requests[0].json["model"] == "facebook/opt-125m"
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        dialect: Dialect = "openai",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: list[str] | None = None,
        api_key: str | None = None,
        loading: bool = False,
        version: str | None = None,
        loaded_models: list[str] | None = None,
        context_length: int = 4096,
        reject_stream_options: bool = False,
        accept_any_model: bool | None = None,
        pull_registry: list[str] | None = None,
        pull_delay: float = 0.0,
        pull_reset_after: int | None = None,
        fallback: Callable[[RecordedRequest], Reply] | None = None,
        keep_alive: float | None = None,
    ) -> None:
        if dialect not in _DEFAULT_MODELS:
            raise ValueError(f"dialect must be one of {sorted(_DEFAULT_MODELS)}, not {dialect!r}")
        self.dialect: Dialect = dialect
        self.host = host
        self.models: list[str] = list(models) if models is not None else [_DEFAULT_MODELS[dialect]]
        self.api_key = api_key
        self.loading = loading
        self.version = version if version is not None else _DEFAULT_VERSIONS.get(dialect, "1.0.0")
        self.loaded_models: list[str] = list(loaded_models or [])
        self.context_length = context_length
        self.reject_stream_options = reject_stream_options
        self.accept_any_model = models is None if accept_any_model is None else accept_any_model
        self.pull_registry: list[str] | None = (
            list(pull_registry) if pull_registry is not None else None
        )
        self.pull_delay = pull_delay
        self.pull_reset_after = pull_reset_after
        self.fallback = fallback
        if keep_alive is not None and keep_alive < 0:
            raise ValueError(f"keep_alive must be >= 0 seconds or None, not {keep_alive!r}")
        self.keep_alive = keep_alive
        self.idle_closes = 0
        self.dropped_requests: list[RecordedRequest] = []
        #: The pending idle close of each kept-alive connection, by transport.
        self._idle_timers: weakref.WeakKeyDictionary[Any, asyncio.TimerHandle] = (
            weakref.WeakKeyDictionary()
        )
        #: Bytes of each layer digest "downloaded" by pulls so far (what a resume starts at).
        self._pulled: dict[str, int] = {}
        #: Every request received, on any path, in order of arrival.
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._port = port
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._transports: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        #: The number of each connection a request came on, by transport.
        self._connections: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._connections_seen = 0
        self._routes = self._route_table()

    # -- public API -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (known once it has started)."""
        if self._port == 0:
            raise RuntimeError("the server has not started yet, so it has no port")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:43117`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded requests that take a scripted reply: ``POST`` to a chat path of this
        dialect (chat completions, Ollama's ``/api/chat``) or to the Responses API
        (``/v1/responses``, and llama.cpp's ``/responses``), in order of arrival."""
        paths = _CHAT_PATHS[self.dialect]
        return [r for r in self.requests if r.method == "POST" and r.path in paths]

    @property
    def responses_requests(self) -> list[RecordedRequest]:
        """The recorded Responses API requests (``POST /v1/responses``, and llama.cpp's
        ``/responses``): the part of `chat_requests` that went there."""
        paths = _RESPONSES_PATHS[self.dialect]
        return [r for r in self.requests if r.method == "POST" and r.path in paths]

    @property
    def connections(self) -> int:
        """How many connections requests have come on so far."""
        return self._connections_seen

    @property
    def open_connections(self) -> int:
        """How many of those are still open, as the server sees them (a client that closed
        one is seen to have done so after the event loop has run)."""
        return sum(1 for transport in self._transports if not transport.is_closing())

    def _connection_number(self, request: web.Request) -> int:
        transport = request.transport
        if transport is None:
            return 0
        number = self._connections.get(transport)
        if number is None:
            self._connections_seen += 1
            number = self._connections[transport] = self._connections_seen
        return number

    @property
    def pending_replies(self) -> int:
        """How many scripted replies have not been used yet."""
        return len(self._replies)

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests, one reply per request, in order."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"script() takes Reply objects, not {type(reply).__name__}")
        self._replies.extend(replies)

    async def start(self) -> None:
        """Start listening (again on the same port after `stop`)."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_response_prepare.append(self._on_response_prepare)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop: close the listener, end the answers in progress, drop every connection.

        Afterwards clients get "connection refused". Answers still sleeping in a delay or a
        stall are cancelled. Calling it when the server is not running does nothing.
        """
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        for idle_timer in self._idle_timers.values():
            idle_timer.cancel()
        self._idle_timers.clear()
        for site in list(runner.sites):
            await site.stop()
        current = asyncio.current_task()
        busy = [task for task in self._handlers if task is not current and not task.done()]
        for task in busy:
            task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=2.0)
        for transport in list(self._transports):
            if not transport.is_closing():
                transport.abort()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._runner is not None else "stopped"
        return f"<TestServer dialect={self.dialect!r} {state}>"

    # -- plumbing ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
            idle_timer = self._idle_timers.pop(transport, None)
            if idle_timer is not None:
                idle_timer.cancel()
        try:
            body = await request.read()
            headers: dict[str, str] = {}
            for name, value in request.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            record = RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query.items()),
                headers=headers,
                body=body,
                connection=self._connection_number(request),
            )
            if transport is not None and transport.is_closing():
                # keep_alive closed this connection as the request came in: no answer.
                self.dropped_requests.append(record)
                return web.Response()
            self.requests.append(record)
            response = await self._dispatch(request, record)
            if self.keep_alive is not None and transport is not None:
                await self._close_when_idle(request, response, transport, self.keep_alive)
            return response
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _close_when_idle(
        self,
        request: web.Request,
        response: web.StreamResponse,
        transport: asyncio.BaseTransport,
        keep_alive: float,
    ) -> None:
        """Finish ``response`` now (aiohttp would right after the handler), so that the idle
        time starts after the whole answer, then close the connection ``keep_alive`` seconds
        later unless another request has come on it by then."""
        if transport.is_closing():  # a fault dropped it
            return
        if not response.prepared:
            await response.prepare(request)
        await response.write_eof()
        if not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._idle_timers[transport] = loop.call_later(keep_alive, self._close_idle, transport)

    def _close_idle(self, transport: asyncio.BaseTransport) -> None:
        self._idle_timers.pop(transport, None)
        if not transport.is_closing():
            self.idle_closes += 1
            transport.close()

    async def _on_response_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        if self.dialect == "openai" and "x-request-id" not in response.headers:
            response.headers["x-request-id"] = "req_" + secrets.token_hex(16)

    async def _dispatch(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        if self.dialect == "llamacpp" and self.loading:
            return self._json(503, _LOADING_BODY)
        if not self._authorized(record):
            return self._unauthorized(record)
        method = "GET" if record.method == "HEAD" else record.method
        handler = self._routes.get((method, record.path))
        if handler is None and method == "GET" and self.dialect in ("ollama", "openai"):
            prefix = "/v1/models/"
            if record.path.startswith(prefix) and len(record.path) > len(prefix):
                return self._model_by_id(record.path[len(prefix) :])
        if handler is None:
            return self._not_found(record)
        return await handler(request, record)

    def _route_table(self) -> dict[tuple[str, str], _Handler]:
        def chat(flavor: Flavor) -> _Handler:
            return lambda request, record: self._chat(request, record, flavor)

        def static(make: Callable[[], web.StreamResponse]) -> _Handler:
            async def handler(request: web.Request, record: RecordedRequest) -> web.StreamResponse:
                return make()

            return handler

        flavor: Flavor = self.dialect  # Ollama's /v1 layer is the "ollama" flavor
        routes: dict[tuple[str, str], _Handler] = {
            ("POST", "/v1/chat/completions"): chat(flavor),
            ("POST", "/v1/embeddings"): self._openai_embeddings,
            ("GET", "/v1/models"): static(self._list_models),
        }
        if _has_responses_api(self.dialect, self.version):
            routes[("POST", "/v1/responses")] = self._responses
        if self.dialect == "ollama":
            routes |= {
                ("GET", "/"): static(lambda: web.Response(text="Ollama is running")),
                ("GET", "/api/version"): static(lambda: self._json(200, {"version": self.version})),
                ("GET", "/api/tags"): static(
                    lambda: self._json(200, catalog.ollama_tags(self.models))
                ),
                ("GET", "/api/ps"): static(
                    lambda: self._json(
                        200, catalog.ollama_ps(self.loaded_models, self.context_length)
                    )
                ),
                ("POST", "/api/show"): self._ollama_show,
                ("POST", "/api/pull"): self._ollama_pull,
                ("POST", "/api/chat"): chat("ollama_native"),
                ("POST", "/api/embed"): self._ollama_embed,
                ("POST", "/api/embeddings"): self._ollama_embed,
            }
        elif self.dialect == "llamacpp":
            health = static(lambda: self._json(200, {"status": "ok"}))
            routes |= {
                ("GET", "/health"): health,
                ("GET", "/v1/health"): health,
                ("GET", "/models"): static(self._list_models),
                ("GET", "/props"): static(
                    lambda: self._json(
                        200,
                        catalog.llamacpp_props(self.models, self.context_length, self.version),
                    )
                ),
                ("POST", "/chat/completions"): chat("llamacpp"),
                ("POST", "/responses"): self._responses,
                ("POST", "/embeddings"): self._openai_embeddings,
            }
        elif self.dialect == "vllm":
            routes |= {
                ("GET", "/health"): static(lambda: web.Response(status=200)),
                ("GET", "/version"): static(lambda: self._json(200, {"version": self.version})),
            }
        return routes

    # -- responses --------------------------------------------------------------------------

    def _flavor_for(self, path: str) -> Flavor:
        if self.dialect == "ollama":
            return "ollama_native" if path.startswith("/api/") else "ollama"
        return self.dialect

    def _json(self, status: int, obj: Any, flavor: Flavor | None = None) -> web.Response:
        flavor = flavor or self._flavor_for("/")
        content_type = "application/json"
        if flavor in ("ollama", "ollama_native", "llamacpp"):
            content_type = "application/json; charset=utf-8"
        body = encode(flavor, obj) if flavor != "llamacpp" else orjson.dumps(obj)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    def _error(
        self, flavor: Flavor, status: int, message: str, *, code: str | None = None
    ) -> web.Response:
        envelope = error_envelope(flavor, status, message, code=code)
        return self._json(status, envelope, flavor)

    def _authorized(self, record: RecordedRequest) -> bool:
        if self.api_key is None:
            return True
        if self.dialect == "vllm":
            if not record.path.startswith("/v1"):
                return True
        elif record.path in _OPEN_PATHS[self.dialect]:
            return True
        scheme, _, token = record.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def _unauthorized(self, record: RecordedRequest) -> web.Response:
        if self.dialect == "vllm":
            return self._json(401, {"error": "Unauthorized"})
        if self.dialect == "llamacpp":
            refusal = llamacpp_http_error(401, "Invalid API Key", "authentication_error")
            return self._json(401, refusal)
        if self.dialect == "openai":
            message = (
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return self._error("openai", 401, message, code="invalid_api_key")
        return self._error(self._flavor_for(record.path), 401, "unauthorized")

    def _not_found(self, record: RecordedRequest) -> web.Response:
        if self.dialect == "ollama":
            return web.Response(status=404, text="404 page not found")
        if self.dialect == "llamacpp":
            return self._json(404, llamacpp_http_error(404, "File Not Found", "not_found_error"))
        if self.dialect == "vllm":
            if any(path == record.path for _, path in self._routes):
                return self._json(405, {"detail": "Method Not Allowed"})
            return self._json(404, {"detail": "Not Found"})
        return self._error("openai", 404, f"Invalid URL ({record.method} {record.path})")

    def _list_models(self) -> web.Response:
        if self.dialect == "ollama":
            return self._json(200, catalog.ollama_openai_models(self.models), "ollama")
        if self.dialect == "llamacpp":
            return self._json(200, catalog.llamacpp_models(self.models, self.context_length))
        if self.dialect == "vllm":
            return self._json(200, catalog.vllm_models(self.models, self.context_length))
        return self._json(200, catalog.openai_models(self.models))

    def _model_by_id(self, name: str) -> web.Response:
        known = self._known_model(name)
        if self.dialect == "ollama":
            if known is None:
                return self._error("ollama", 404, f"model '{name}' not found")
            return self._json(200, catalog.ollama_openai_model(known), "ollama")
        if known is None:
            message = f"The model '{name}' does not exist"
            return self._error("openai", 404, message, code="model_not_found")
        return self._json(200, catalog.openai_model(known))

    def _known_model(self, name: str) -> str | None:
        """The listed model ``name`` refers to (Ollama adds ``:latest``), or ``None``."""
        if name in self.models:
            return name
        if self.dialect == "ollama" and ":" not in name.rsplit("/", 1)[-1]:
            tagged = f"{name}:latest"
            if tagged in self.models:
                return tagged
        return None

    def _check_model(self, flavor: Flavor, requested: Any) -> tuple[str, web.Response | None]:
        """Return the model to report, or the error the real server gives for ``requested``."""
        name = requested if isinstance(requested, str) else ""
        if self.dialect == "llamacpp":  # single-model mode ignores the request's model
            return (self.models[0] if self.models else name), None
        if not name:
            if self.dialect == "vllm" and self.models:
                return self.models[0], None
            if self.dialect == "ollama":
                return "", self._error(flavor, 400, "model is required")
            return "", self._error(flavor, 400, "you must provide a model parameter")
        if self.accept_any_model or self._known_model(name) is not None:
            return name, None
        if self.dialect == "ollama":
            message = f'model "{name}" not found, try pulling it first'
            return name, self._error(flavor, 404, message)
        if self.dialect == "vllm":
            return name, self._error(flavor, 404, f"The model `{name}` does not exist.")
        message = f"The model `{name}` does not exist or you do not have access to it."
        return name, self._error(flavor, 404, message, code="model_not_found")

    # -- chat -------------------------------------------------------------------------------

    async def _chat(
        self, request: web.Request, record: RecordedRequest, flavor: Flavor
    ) -> web.StreamResponse:
        body = record.json
        if not isinstance(body, dict):
            return self._error(flavor, 400, "the request body is not a JSON object")
        if self.reject_stream_options and "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            return self._error("openai", 400, message)
        model, refusal = self._check_model(flavor, body.get("model"))
        if refusal is not None:
            return refusal
        if flavor == "ollama_native":
            stream = body.get("stream") is None or bool(body.get("stream"))
        else:
            stream = bool(body.get("stream"))
        options = body.get("stream_options")
        if self.dialect == "vllm" and options is not None and not stream:
            message = "Stream options can only be defined when `stream=True`."
            return self._error(flavor, 400, message)
        options = options if isinstance(options, dict) and flavor != "ollama_native" else {}
        reply = self._next_reply(record)
        facts = ChatFacts(
            model=reply.model if reply.model is not None else model,
            stream=stream,
            include_usage=stream and options.get("include_usage") is True,
            include_obfuscation=options.get("include_obfuscation") is not False,
            build=self.version if self.dialect == "llamacpp" else "",
        )
        return await send_plan(request, build_chat_plan(flavor, reply, facts), reply)

    def _next_reply(self, record: RecordedRequest) -> Reply:
        """The next scripted reply, or the fallback's answer to ``record``."""
        if self._replies:
            return self._replies.popleft()
        return (self.fallback or echo_reply)(record)

    # -- the Responses API ------------------------------------------------------------------

    async def _responses(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        """``POST /v1/responses``: the next reply, in this dialect's Responses shape."""
        flavor = self.dialect
        body = record.json
        if not isinstance(body, dict):
            return self._error(flavor, 400, "the request body is not a JSON object")
        if flavor == "llamacpp":  # server_chat_convert_responses_to_chatcmpl, before all else
            refusal = self._llamacpp_responses_refusal(body)
            if refusal is not None:
                return refusal
        model, refusal = self._check_model(flavor, body.get("model"))
        if refusal is not None:
            return refusal
        previous = body.get("previous_response_id")
        if flavor == "vllm" and previous is not None:
            # Looked up in vLLM's response store, which is off unless
            # VLLM_ENABLE_RESPONSES_API_STORE=1: never found.
            envelope = error_envelope(
                "vllm",
                404,
                f"Response with id '{previous}' not found.",
                error_type="invalid_request_error",
                fields={"param": "response_id"},
            )
            return self._json(404, envelope)
        reply = self._next_reply(record)
        facts = ChatFacts(
            model=reply.model if reply.model is not None else model,
            stream=bool(body.get("stream")),
            build=self.version if flavor == "llamacpp" else "",
            request=body,
        )
        return await send_plan(request, build_responses_plan(flavor, reply, facts), reply)

    def _llamacpp_responses_refusal(self, body: dict[str, Any]) -> web.Response | None:
        """The 400 llama-server answers a Responses request it cannot convert to a chat
        request with, or ``None``."""
        message: str | None = None
        items = body.get("input")
        previous = body.get("previous_response_id")
        if "input" not in body:
            message = "'input' is required"
        elif isinstance(previous, str) and previous:
            message = "llama.cpp does not support 'previous_response_id'."
        elif isinstance(items, list):
            if not all(isinstance(item, dict) and _llamacpp_item_known(item) for item in items):
                message = "Cannot determine type of 'item'"
        elif not isinstance(items, str):
            message = "'input' must be a string or array of objects"
        if message is None:
            return None
        return self._error("llamacpp", 400, message)

    # -- embeddings and Ollama extras -------------------------------------------------------

    async def _openai_embeddings(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        flavor = self._flavor_for(record.path)
        body = record.json
        if not isinstance(body, dict):
            return self._error(flavor, 400, "the request body is not a JSON object")
        model, refusal = self._check_model(flavor, body.get("model"))
        if refusal is not None:
            return refusal
        texts = _embedding_inputs(body.get("input"))
        if texts is None:
            return self._error(flavor, 400, "'input' must be a string or a list of strings")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            message = f"invalid encoding_format {encoding!r}: must be 'float' or 'base64'"
            return self._error(flavor, 400, message)
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and dimensions > 0 else 8
        data: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            vector = catalog.embedding_vector(text, size)
            embedding: Any = catalog.embedding_base64(vector) if encoding == "base64" else vector
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        tokens = sum(catalog.token_count(text) for text in texts)
        result: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        if self.dialect == "vllm":
            result = {"id": "embd-" + secrets.token_hex(16), "created": int(time.time()), **result}
        return self._json(200, result, flavor)

    async def _ollama_embed(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        body = record.json
        if not isinstance(body, dict):
            return self._error("ollama_native", 400, "the request body is not a JSON object")
        model, refusal = self._check_model("ollama_native", body.get("model"))
        if refusal is not None:
            return refusal
        if record.path == "/api/embeddings":  # the legacy route: one prompt, one vector
            prompt = body.get("prompt")
            text = prompt if isinstance(prompt, str) else ""
            return self._json(200, {"embedding": catalog.embedding_vector(text)})
        texts = _embedding_inputs(body.get("input"))
        if texts is None:
            return self._error("ollama_native", 400, "invalid input type")
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and dimensions > 0 else 8
        tokens = sum(catalog.token_count(text) for text in texts)
        return self._json(
            200,
            {
                "model": model,
                "embeddings": [catalog.embedding_vector(text, size) for text in texts],
                "total_duration": 5_000_000 + 100_000 * tokens,
                "load_duration": 1_000_000,
                "prompt_eval_count": tokens,
            },
        )

    async def _ollama_show(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        body = record.json
        requested = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        name = requested if isinstance(requested, str) else ""
        known = self._known_model(name) if name else None
        if known is None:
            return self._error("ollama_native", 404, f"model '{name}' not found")
        return self._json(200, catalog.ollama_show(known, self.context_length))

    async def _ollama_pull(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        body = record.json
        if not isinstance(body, dict):
            return self._error("ollama_native", 400, "the request body is not a JSON object")
        requested = body.get("model") or body.get("name")
        if not isinstance(requested, str) or not requested.strip():
            return self._error("ollama_native", 400, "invalid model name")
        name = requested.strip()
        if ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        lines = self._pull_lines(name)
        stream = body.get("stream") is None or bool(body.get("stream"))
        if not stream:
            last = lines[-1]
            if "error" in last:
                return self._json(500, last)
            self._finish_pull(name, lines)
            return self._json(200, last)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for index, line in enumerate(lines):
            if self.pull_reset_after is not None and index >= self.pull_reset_after:
                await abort_connection(request)
                return response
            if index and self.pull_delay:
                await asyncio.sleep(self.pull_delay)
            await response.write(orjson.dumps(line) + b"\n")
            digest, completed = line.get("digest"), line.get("completed")
            if isinstance(digest, str) and isinstance(completed, int):
                self._pulled[digest] = completed
        self._finish_pull(name, lines)
        await response.write_eof()
        return response

    def _pull_lines(self, name: str) -> list[dict[str, Any]]:
        """The progress lines a pull of ``name`` sends, from the bytes already held."""
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        registry = self.pull_registry
        if registry is not None and name not in {
            n if ":" in n.rsplit("/", 1)[-1] else f"{n}:latest" for n in registry
        }:
            lines.append({"error": "pull model manifest: file does not exist"})
            return lines
        for digest, total in catalog.ollama_pull_layers(name):
            status = f"pulling {digest[7:19]}"
            have = min(self._pulled.get(digest, 0), total)
            steps = [have] if have >= total else [have, *catalog.pull_steps(have, total)]
            for completed in steps:
                lines.append(
                    {"status": status, "digest": digest, "total": total, "completed": completed}
                )
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        return lines

    def _finish_pull(self, name: str, lines: list[dict[str, Any]]) -> None:
        if lines[-1].get("status") == "success" and name not in self.models:
            self.models.append(name)
