"""aiohttp's connector, with a protocol that skips aiohttp's empty re-parse after each read.

Imported on first use (it imports aiohttp), not with ``llmtap``.

Each time a reader takes bytes from a response body, aiohttp's ``StreamReader`` calls
``resume_reading()`` on the connection's protocol, paused or not, and the protocol answers by
feeding the HTTP parser an empty string (to finish what a pause left half-parsed) and asking
the transport to resume. When nothing paused the connection there is nothing to finish or
resume, yet that round trip cost 1 to 1.7 microseconds per read when measured: with 200
streams of one token per read, 3 to 7 per cent of all the CPU a stream takes. Here it is
skipped unless reading really is paused.

Reading is paused (``_reading_paused``) whenever the parser may hold input back: aiohttp's
parser only stops mid-body after the protocol's ``pause_reading()``, which sets that flag, and
the flag stays set until ``resume_reading()`` runs in full. ``_buffer_paused`` (newer aiohttp)
holds the transport for bytes that arrive before an upgrade's parser is set. Either flag sends
the call on to aiohttp unchanged. The protocol's read timeout (``sock_read``, which some
aiohttp versions re-arm here) is not used by llmtap, whose own deadlines are per exchange.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

__all__ = ["Connector"]

#: Newer aiohttp (3.14 here) has ``resume_reading(resume_parser)``; 3.10 takes no argument.
_TAKES_RESUME_PARSER = (
    "resume_parser" in inspect.signature(ResponseHandler.resume_reading).parameters
)
#: Newer aiohttp also holds the transport for a buffer of its own (``_buffer_paused``).
_HAS_BUFFER_PAUSED = hasattr(ResponseHandler, "_buffer_paused")


class _ResponseHandler(ResponseHandler):
    """aiohttp's client protocol, resuming only what is paused."""

    __slots__ = ()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused or (_HAS_BUFFER_PAUSED and self._buffer_paused):
            if _TAKES_RESUME_PARSER:
                super().resume_reading(resume_parser)
            else:
                super().resume_reading()


class Connector(aiohttp.TCPConnector):
    """:class:`aiohttp.TCPConnector` whose connections use :class:`_ResponseHandler`.

    Takes :class:`aiohttp.TCPConnector`'s arguments.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        factory = functools.partial(_ResponseHandler, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", factory)
