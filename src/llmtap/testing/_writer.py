"""Send a `BodyPlan` over a real connection, applying the reply's pacing and faults.

Every dialect goes through `send_plan`, so a fault behaves the same whichever server shape
carries it. Faults that end a body early do it at the transport level: a reset closes the
socket with the chunked body unfinished, a cut writes half of an HTTP chunk first.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from multidict import CIMultiDict

from llmtap.testing._dialects import BodyPlan
from llmtap.testing._reply import Reply

__all__ = ["abort_connection", "send_plan"]

#: How long a reset waits for already-written bytes to leave the process.
_FLUSH_TIMEOUT = 2.0
_FLUSH_POLL = 0.005


async def abort_connection(request: web.BaseRequest) -> None:
    """Close the request's connection at once, after what was written so far has gone out.

    The client sees the connection end in the middle of the response (or before it), with
    no chunked terminator: aiohttp reports ``ClientPayloadError`` or
    ``ServerDisconnectedError``.
    """
    transport = request.transport
    if transport is None:
        return
    # Polling is crude, but the transport offers no "write buffer empty" event.
    for _ in range(int(_FLUSH_TIMEOUT / _FLUSH_POLL)):
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(_FLUSH_POLL)
    transport.abort()


class _Sender:
    """Writes one plan's chunks in order, checking before each one which faults are due."""

    def __init__(
        self, request: web.BaseRequest, response: web.StreamResponse, plan: BodyPlan, reply: Reply
    ) -> None:
        self.request = request
        self.response = response
        self.plan = plan
        self.reply = reply
        self.written = 0  # data chunks written (what "after N chunks" counts)
        self.frames = 0  # data chunks and terminator written (for delay_between)
        self.stalled = False

    async def run(self) -> None:
        plan, reply = self.plan, self.reply
        if plan.streamed and reply.oversized_line is not None:
            await self.put(plan.oversized)
            await self.response.write_eof()
            return
        for chunk in plan.chunks:
            if await self.fault(chunk, at_end=False):
                return
            await self.frame(chunk)
            self.written += 1
        terminator = b"" if reply.omit_done else plan.terminator
        if await self.fault(terminator, at_end=True):
            return
        if terminator:
            await self.frame(terminator)
        await self.response.write_eof()

    def due(self, after: int | None, at_end: bool) -> bool:
        return after is not None and (at_end or self.written >= after)

    async def fault(self, upcoming: bytes, *, at_end: bool) -> bool:
        """Apply the faults due before ``upcoming``; return whether the body has ended."""
        reply, plan = self.reply, self.plan
        stall = reply.stall_after
        if stall is not None and not self.stalled and self.due(stall[0], at_end):
            self.stalled = True
            await asyncio.sleep(stall[1])
        if self.due(reply.reset_after, at_end):
            await self.abort()
            return True
        if self.due(reply.cut_mid_chunk_after, at_end):
            await self.cut(upcoming)
            return True
        if not plan.streamed:
            return False
        endings = (
            (reply.truncate_after, b"", False),
            (reply.malformed_after, plan.malformed, False),
            (reply.error_after, plan.error_tail, plan.error_resets),
            (reply.invalid_utf8_after, plan.invalid_utf8, False),
        )
        for after, tail, resets in endings:
            if self.due(after, at_end):
                if tail:
                    await self.frame(tail)
                if resets:
                    await self.abort()
                else:
                    await self.response.write_eof()
                return True
        return False

    async def frame(self, data: bytes) -> None:
        if self.frames and self.reply.delay_between > 0:
            await asyncio.sleep(self.reply.delay_between)
        if self.plan.streamed and self.plan.ping and self.reply.pings:
            await self.put(self.plan.ping * self.reply.pings)
        await self.put(data)
        self.frames += 1

    async def put(self, data: bytes) -> None:
        size = self.reply.split_writes
        if size is None:
            await self.response.write(data)
            return
        for start in range(0, len(data), size):
            await self.response.write(data[start : start + size])
            await asyncio.sleep(0)

    async def abort(self) -> None:
        self.response.force_close()
        await abort_connection(self.request)

    async def cut(self, upcoming: bytes) -> None:
        """Send half of ``upcoming``, inside an HTTP chunk that announces all of it, and drop."""
        transport = self.request.transport
        if upcoming and transport is not None and not transport.is_closing():
            half = upcoming[: max(1, len(upcoming) // 2)]
            if self.plan.streamed:
                transport.write(f"{len(upcoming):x}\r\n".encode("ascii") + half)
            else:
                transport.write(half)
        await self.abort()


async def send_plan(request: web.BaseRequest, plan: BodyPlan, reply: Reply) -> web.StreamResponse:
    """Write ``plan`` as the response to ``request``, with ``reply``'s pacing and faults.

    Returns:
        The response, already written (aiohttp finishes it, or notices the closed
        connection, when the handler returns it).
    """
    if reply.reset_before_headers:
        await abort_connection(request)
        return web.Response()
    if reply.delay_before_headers > 0:
        await asyncio.sleep(reply.delay_before_headers)
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": plan.content_type})
    if plan.streamed:
        headers["Cache-Control"] = "no-cache"
    for name, value in plan.headers.items():
        headers[name] = value
    response = web.StreamResponse(status=plan.status, headers=headers)
    if not plan.streamed:
        response.content_length = sum(len(chunk) for chunk in plan.chunks)
    try:
        await response.prepare(request)
        await _Sender(request, response, plan, reply).run()
    except ConnectionError:
        pass  # the client went away; aiohttp notices the closed connection as well
    return response
