"""The HTTP side of one endpoint: a pool of connections, requests with their deadline for the
headers, the resend of a request that met a connection the server had already closed, and the
small JSON GETs that probes and listings make.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from llmtap._config import LLMConfig
from llmtap._errors import LLMResponseError, LLMTimeoutError, LLMUsageError, redact_url
from llmtap._http import internals
from llmtap._http.exchange import Exchange
from llmtap._http.status import timeout_error, transport_error, transport_errors
from llmtap._log import get_logger
from llmtap._version import __version__

__all__ = ["Session"]

_log = get_logger()

_USER_AGENT = f"llmtap/{__version__}"


class _Expiry:
    """A deadline for the current task: at ``when`` it cancels the task, and :meth:`took`
    then tells that cancellation apart from any other (as ``asyncio.timeout_at`` does, with
    several times the bookkeeping, paid on every request)."""

    __slots__ = ("_cancelling", "_handle", "_task", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise LLMUsageError("llmtap must be used from inside an asyncio task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def took(self, exc: asyncio.CancelledError) -> bool:
        """Whether ``exc`` is this deadline's own cancellation (and no one else's); if so, the
        task's cancellation request is withdrawn."""
        return self.expired and self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        self._handle.cancel()


async def _close_with_the_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """An async generator left suspended at its ``yield``: a loop that shuts down closes the
    generators it holds (``loop.shutdown_asyncgens()``, which ``asyncio.run()`` and
    ``asyncio.Runner`` call), and this one then closes ``session`` while the loop can still
    run it, instead of leaving its sockets to be collected after the loop has gone."""
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


class Session:
    """Connections to one endpoint, and requests over them.

    The aiohttp session behind it is made on first use, in the running event loop, and closed
    with that loop: when the loop shuts down (the end of ``asyncio.run()``, of an
    ``asyncio.Runner``, of a pytest-asyncio test), its connections are closed cleanly. Used
    from another loop after that one has closed (a second ``asyncio.run()``, a client made at
    module level under pytest-asyncio), it starts over with a new pool there. Used from a
    second loop while the first still runs (two threads), it raises :class:`LLMUsageError`.

    Args:
        config: The endpoint and its settings.
    """

    def __init__(self, config: LLMConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Closes the session when its loop shuts down (see :func:`_close_with_the_loop`).
        self._guard: AsyncGenerator[None, None] | None = None
        self._closed = False
        #: The responses handed out, for :attr:`connections_in_use` the public way.
        self._responses: weakref.WeakSet[aiohttp.ClientResponse] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def connections_in_use(self) -> int:
        """Connections checked out of the pool right now (0 when every stream has ended)."""
        session = self._session
        if session is None or session.closed:
            return 0
        return internals.connections_in_use(session.connector, self._responses)

    def _ssl(self) -> ssl.SSLContext | bool:
        config = self._config
        if config.verify is False:
            _log.warning(
                "tls_verification_disabled",
                endpoint=config.endpoint,
                hint="certificates are not checked; use verify=<CA bundle> instead",
            )
            return False
        if config.verify is True and config.client_cert is None:
            return True
        context = ssl.create_default_context(
            cafile=config.verify if isinstance(config.verify, str) else None
        )
        if isinstance(config.client_cert, str):
            context.load_cert_chain(config.client_cert)
        elif config.client_cert is not None:
            context.load_cert_chain(*config.client_cert)
        return context

    def client(self) -> aiohttp.ClientSession:
        """The aiohttp session for the running loop (made on first use)."""
        if self._closed:
            raise LLMUsageError("this LLMClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None:
            if self._loop is loop:
                return session
            assert self._loop is not None
            if not self._loop.is_closed():
                raise LLMUsageError(
                    "this LLMClient is in use in another event loop that is still running; "
                    "use one client per event loop (or per thread)"
                )
            if not session.closed:  # a loop closed without shutting down its generators
                session.detach()  # its connections died with it; nothing left to await
            _log.debug("llm_session_renewed", endpoint=self._config.endpoint)
        config = self._config
        headers = {"User-Agent": _USER_AGENT, **config.headers}
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=internals.make_connector(
                limit=config.max_connections, limit_per_host=0, ssl=self._ssl()
            ),
            headers=headers,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=config.connect_timeout
            ),
            trace_configs=internals.trace_configs(),
        )
        self._loop = loop
        self._guard = _close_with_the_loop(self._session)
        # Run it to its yield now: from then on the loop holds it, until it shuts down.
        with contextlib.suppress(StopIteration):
            self._guard.__anext__().send(None)
        return self._session

    async def close(self) -> None:
        """Close the connections. The session cannot be used afterwards."""
        self._closed = True
        session, self._session = self._session, None
        guard, self._guard = self._guard, None
        if session is None:
            return
        if self._loop is not None and self._loop.is_closed():
            if not session.closed:
                session.detach()
            return
        await session.close()
        if guard is not None:
            await guard.aclose()

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        *,
        total_at: float = math.inf,
        headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        """Send a request and wait for its headers; a status of 300 or more raises.

        The headers must arrive by ``first_token_timeout`` (or ``total_at``, if sooner).
        ``headers`` are sent besides the session's own (a hook's ``traceparent``).

        Raises:
            LLMConnectionError: The server could not be reached or closed the connection
                (``LLMTimeoutError`` when a deadline passed).
            LLMResponseError: The server answered with a status of 300 or more.
        """
        config = self._config
        session = self.client()
        loop = asyncio.get_running_loop()
        first_token_at = loop.time() + config.first_token_timeout
        deadline = min(first_token_at, total_at)
        sent = {"Content-Type": "application/json"} if body is not None else None
        if headers:
            sent = {**sent, **headers} if sent is not None else dict(headers)
        expiry = _Expiry(loop, deadline)
        try:
            response = await self._request(session, method, url, body, sent)
        except asyncio.CancelledError as exc:
            if not expiry.took(exc):
                raise
            if total_at < first_token_at:
                raise timeout_error("total", config.total_timeout or 0.0, method, url) from None
            raise timeout_error("first_token", config.first_token_timeout, method, url) from None
        except transport_errors(TimeoutError) as exc:  # aiohttp's connect timeouts included
            raise transport_error(exc, config, method, url, reading=False) from exc
        finally:
            expiry.cancel()
        exchange = Exchange(config, response, method, url, first_token_at, total_at)
        if response.status >= 300:
            raise await exchange.status_error()
        return exchange

    async def _request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """``session.request``, sent again on another connection when it met a kept-alive
        one that the server had already closed (llama-cpp-python closes one ~4 ms after an
        empty 200; llama-server closes idle ones after its keep-alive time). The request
        never reached a live server then, so this is not a retry. Whether the connection
        had served a request before is known exactly, per request
        (:data:`internals.REUSED`), also when many requests share the pool."""
        resends = 0
        while True:
            internals.REUSED.set(False)
            try:
                response = await session.request(
                    method, url, data=body, headers=headers, allow_redirects=False
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                stale = internals.REUSED.get() and not isinstance(exc, aiohttp.ClientConnectorError)
                if not stale or resends >= self._config.max_connections:
                    raise
                resends += 1
                _log.debug("llm_stale_connection", url=url, error=type(exc).__name__)
                continue
            if not internals.FAST_PROTOCOL:
                self._responses.add(response)
            return response

    async def get_json(
        self, url: str, *, deadline: float | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        """``GET url``: status, parsed JSON (``None`` if the body is not JSON), headers.

        Statuses are returned, not raised. The whole exchange must end by ``deadline`` (loop
        time; default: ``preflight_timeout`` from now). A body larger than
        ``max_line_bytes`` raises without being read whole.

        Raises:
            LLMConnectionError: The server could not be reached or the connection broke.
            LLMTimeoutError: The deadline passed (``deadline="preflight"``).
            LLMResponseError: The body is larger than ``max_line_bytes``.
        """
        config = self._config
        session = self.client()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + config.preflight_timeout
        limit = config.max_line_bytes
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._request(session, "GET", url, None, None)
                async with response:
                    raw = bytearray()
                    while piece := await response.content.readany():
                        raw += piece
                        if len(raw) > limit:
                            raise LLMResponseError(
                                f"{url} answered with more than max_line_bytes ({limit} "
                                "bytes); is this an LLM API?",
                                response.status,
                                method="GET",
                                url=url,
                            )
        except TimeoutError as exc:
            if loop.time() < deadline:  # aiohttp's own connect timeout
                raise transport_error(exc, config, "GET", url, reading=False) from exc
            raise LLMTimeoutError(
                f"No complete answer from {redact_url(config.endpoint)} to GET "
                f"{urlsplit(url).path} within preflight_timeout "
                f"({config.preflight_timeout:g} s); the server may be hung or overloaded, or "
                "the address may be wrong",
                deadline="preflight",
                timeout=config.preflight_timeout,
                method="GET",
                url=url,
            ) from exc
        except transport_errors() as exc:
            raise transport_error(exc, config, "GET", url, reading=False) from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        return response.status, body, response.headers
