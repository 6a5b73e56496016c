"""Every use llmtap makes of aiohttp's private internals, checked once at import, each with a
public fallback.

Three things are done below aiohttp's public surface, because each was measured to matter:

* **Reads** (:func:`next_bytes`): ``StreamReader.readany()`` waits through two more coroutine
  frames, a timer context and a connection check, which at one token per read come to a few
  per cent of a stream's CPU. The fast read keeps only its waiting, on ``StreamReader``'s
  ``_buffer``, ``_eof``, ``_exception`` and ``_waiter`` (assigned: ``feed_data()``,
  ``feed_eof()`` and ``set_exception()`` complete that future), and takes the bytes with the
  public ``read_nowait()``, which does the bookkeeping. Fallback: ``readany()``.
* **The connection's protocol** (:func:`make_connector`): after each read aiohttp's
  ``StreamReader`` calls the protocol's ``resume_reading()``, paused or not, and the protocol
  answers by feeding its HTTP parser an empty string and asking the transport to resume: 1 to
  1.7 microseconds per read when measured (3 to 7 per cent of a paced stream's CPU). The
  protocol here passes the call on only when reading really is paused (``_reading_paused``,
  or newer aiohttp's ``_buffer_paused``): aiohttp's parser holds input back only after
  ``pause_reading()``, which sets that flag until a full resume. It is installed by replacing
  ``TCPConnector._factory``. The same protocol marks when it has served a request, which is
  how a request on a kept-alive connection is told from one on a fresh connection.
  Fallback: aiohttp's own ``TCPConnector`` and protocol, and a ``TraceConfig`` that hears of
  reused connections (about 30 microseconds more per request).
* **Connections in use** (:func:`connections_in_use`): the connector's ``_acquired`` set.
  Fallback: the responses llmtap holds that still have a connection.

Each check runs on live objects (a reader and a protocol at import, the first connector when
it is made), so that it holds whether aiohttp uses slots or not. When one fails, llmtap uses
the public way for that thing and logs ``aiohttp_internals_unavailable`` once; nothing fails
silently.
``LLMTAP_AIOHTTP_PUBLIC=1`` forces the public way for all three (CI runs the whole suite so).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.streams import StreamReader

from llmtap._log import get_logger

__all__ = [
    "FAST_PROTOCOL",
    "FAST_READS",
    "PUBLIC",
    "REUSED",
    "FastConnector",
    "FastProtocol",
    "connections_in_use",
    "fast_next_bytes",
    "make_connector",
    "next_bytes",
    "public_next_bytes",
    "trace_configs",
]

_log = get_logger()

#: ``LLMTAP_AIOHTTP_PUBLIC=1``: use aiohttp's public API only.
PUBLIC = os.environ.get("LLMTAP_AIOHTTP_PUBLIC", "").strip().lower() in ("1", "true", "yes")

#: Set in the task that sends a request, once its connection is known: whether that
#: connection had served a request before (kept alive in the pool).
REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("llmtap_reused", default=False)

#: Newer aiohttp (3.14 here) has ``resume_reading(resume_parser)``; 3.10 takes no argument.
_TAKES_RESUME_PARSER = (
    "resume_parser" in inspect.signature(ResponseHandler.resume_reading).parameters
)
#: Newer aiohttp also holds the transport for a buffer of its own (``_buffer_paused``).
_HAS_BUFFER_PAUSED = hasattr(ResponseHandler, "_buffer_paused")


class FastProtocol(ResponseHandler):
    """aiohttp's client protocol, resuming only what is paused, and knowing whether it has
    served a request before."""

    used = False

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused or (_HAS_BUFFER_PAUSED and self._buffer_paused):
            if _TAKES_RESUME_PARSER:
                super().resume_reading(resume_parser)
            else:
                super().resume_reading()


class FastConnector(aiohttp.TCPConnector):
    """:class:`aiohttp.TCPConnector` whose connections use :class:`FastProtocol`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        factory = functools.partial(FastProtocol, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", factory)

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109  (aiohttp's signature)
    ) -> Any:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if isinstance(protocol, FastProtocol):
            REUSED.set(protocol.used)
            protocol.used = True
        return connection


def _check_reads() -> str | None:
    loop = asyncio.new_event_loop()
    try:
        reader = StreamReader(ResponseHandler(loop=loop), 2**16, loop=loop)
        if not hasattr(reader._buffer, "__len__") or reader._eof is not False:
            return "StreamReader._buffer/_eof changed"
        if reader._exception is not None or reader._waiter is not None:
            return "StreamReader._exception/_waiter changed"
        if reader.read_nowait() != b"":
            return "StreamReader.read_nowait changed"
        reader.feed_data(b"x")
        if len(reader._buffer) != 1:
            return "StreamReader._buffer no longer holds what was fed"
        return None
    except (AttributeError, TypeError) as exc:
        return f"StreamReader: {exc}"
    finally:
        loop.close()


def _check_protocol() -> str | None:
    loop = asyncio.new_event_loop()  # made, never run: the protocol only keeps it
    try:
        protocol = FastProtocol(loop=loop)
        if protocol._reading_paused is not False:
            return "ResponseHandler._reading_paused changed"
        if _HAS_BUFFER_PAUSED and protocol._buffer_paused is not False:
            return "ResponseHandler._buffer_paused changed"
        return None
    except (AttributeError, TypeError) as exc:
        return f"ResponseHandler: {exc}"
    finally:
        loop.close()


def _check_connector(connector: aiohttp.TCPConnector) -> str | None:
    """The connector-level internals, on a live (new, empty) connector."""
    try:
        if type(connector._factory()) is not FastProtocol:
            return "TCPConnector._factory is no longer how connections get their protocol"
        acquired = connector._acquired
        if not isinstance(acquired, set) or acquired:
            return "TCPConnector._acquired is no longer a set"
    except (AttributeError, TypeError) as exc:
        return f"TCPConnector: {exc}"
    return None


def _settle(check: Callable[[], str | None], what: str) -> bool:
    """Whether the fast way may be used for ``what``: not forced public, and the check holds
    (when it does not, say so once)."""
    if PUBLIC:
        return False
    problem = check()
    if problem is None:
        return True
    _unavailable(what, problem)
    return False


def _unavailable(what: str, problem: str) -> None:
    _log.warning(
        "aiohttp_internals_unavailable",
        what=what,
        problem=problem,
        aiohttp=aiohttp.__version__,
        hint="llmtap uses aiohttp's public API for it instead (correct, a little slower)",
    )


#: Whether reads take bytes from ``StreamReader`` directly (else ``readany()``).
FAST_READS = _settle(_check_reads, "reads")
#: Whether connections use llmtap's protocol (else aiohttp's, and a ``TraceConfig``), and the
#: connector's own set tells the connections in use. The protocol is checked here; the
#: connector needs a running loop, so it is checked on the first one made (and this turns
#: false, once and for all, if that check fails).
FAST_PROTOCOL = _settle(_check_protocol, "the connection protocol")
_connector_checked = False


async def fast_next_bytes(content: StreamReader, loop: asyncio.AbstractEventLoop) -> bytes:
    """``content.readany()``, waiting on the reader's own future (see the module docstring)."""
    buffer = content._buffer
    while not buffer and not content._eof and content._exception is None:
        waiter = content._waiter = loop.create_future()
        try:
            await waiter
        finally:
            content._waiter = None
    return content.read_nowait()


async def public_next_bytes(content: StreamReader, loop: asyncio.AbstractEventLoop) -> bytes:
    """``content.readany()``: the public way."""
    return await content.readany()


#: What ``content.readany()`` gives (the bytes buffered, once there are some; ``b""`` at the
#: end; the stream's error, if it has one), at less CPU per read where the internals allow.
next_bytes: Callable[[StreamReader, asyncio.AbstractEventLoop], Awaitable[bytes]] = (
    fast_next_bytes if FAST_READS else public_next_bytes
)


def make_connector(**kwargs: Any) -> aiohttp.TCPConnector:
    """A connector for llmtap's sessions (takes :class:`aiohttp.TCPConnector`'s arguments)."""
    global FAST_PROTOCOL, _connector_checked
    if FAST_PROTOCOL:
        connector = FastConnector(**kwargs)
        if _connector_checked:
            return connector
        _connector_checked = True
        problem = _check_connector(connector)
        if problem is None:
            return connector
        FAST_PROTOCOL = False  # the new connector is empty: dropping it needs no closing
        _unavailable("the connection protocol", problem)
    return aiohttp.TCPConnector(**kwargs)


async def _reused(*_: object) -> None:
    REUSED.set(True)


def trace_configs() -> list[aiohttp.TraceConfig]:
    """What a session needs traced: nothing with llmtap's protocol; else the reuse of a
    kept-alive connection (:data:`REUSED`)."""
    if FAST_PROTOCOL:
        return []
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_reused)
    return [trace]


def connections_in_use(
    connector: aiohttp.BaseConnector | None, responses: Iterable[aiohttp.ClientResponse]
) -> int:
    """Connections checked out of the pool right now: the connector's own count, or (the
    public way) the responses llmtap holds that still have their connection."""
    if connector is None:
        return 0
    if isinstance(connector, FastConnector):
        return len(connector._acquired)
    return sum(1 for response in responses if response.connection is not None)
