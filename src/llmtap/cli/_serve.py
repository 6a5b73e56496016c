"""``llmtap serve-test``: the ``llmtap.testing`` server on a port, for trying llmtap (or any
client) with no LLM at hand: echo answers, optional thinking, and faults on demand."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import random
import shlex
import signal
from collections.abc import Callable

from llmtap.cli._common import EXIT_OK, EXIT_USAGE, CLIError, consoles, plural
from llmtap.testing import Dialect, RecordedRequest, Reply, TestServer, echo_reply

__all__ = ["DEFAULT_PORTS", "Faults", "serve_command"]

#: Where each imitated server listens by default (as the real one does).
DEFAULT_PORTS: dict[str, int] = {"ollama": 11434, "llamacpp": 8080, "vllm": 8000, "openai": 8000}


@dataclasses.dataclass(frozen=True)
class Faults:
    """What goes wrong, applied to every answer.

    Attributes:
        fail_rate: The fraction of chat requests answered with a 503 (0 to 1).
        reset_after: Drop the connection after this many chunks of each answer.
        delay: Seconds between two chunks.
        think: Send a line of reasoning before each answer.
        seed: Seed for ``fail_rate``'s random draws (repeatable runs).
    """

    fail_rate: float = 0.0
    reset_after: int | None = None
    delay: float = 0.0
    think: bool = False
    seed: int | None = None


def make_fallback(faults: Faults) -> Callable[[RecordedRequest], Reply]:
    """The reply builder for every chat request: the echo, with the faults applied."""
    draws = random.Random(faults.seed)

    def fallback(request: RecordedRequest) -> Reply:
        if faults.fail_rate and draws.random() < faults.fail_rate:
            return Reply(status=503, error_message="scripted failure (serve-test --fail-rate)")
        reply = echo_reply(request)
        reasoning = f"The user said: {reply.text.removeprefix('echo: ')}" if faults.think else ""
        return dataclasses.replace(
            reply,
            reasoning=reasoning,
            delay_between=faults.delay,
            reset_after=faults.reset_after,
        )

    return fallback


async def serve_command(
    dialect: Dialect,
    *,
    host: str,
    port: int | None,
    models: list[str],
    api_key: str | None,
    faults: Faults,
) -> int:
    """Serve until Ctrl-C or SIGTERM."""
    out, _ = consoles()
    fallback = make_fallback(faults)
    server = TestServer(
        dialect,
        host=host,
        port=DEFAULT_PORTS[dialect] if port is None else port,
        models=models or None,
        api_key=api_key,
        fallback=fallback,
    )
    if dialect == "ollama":
        server.loaded_models = server.models[:1]  # as if the first one had just answered
    try:
        await server.start()
    except OSError as exc:
        where = f"{host}:{port if port is not None else DEFAULT_PORTS[dialect]}"
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else str(exc)
        raise CLIError(
            f"Cannot listen on {where}: {reason}. Pass --port 0 for a free port", EXIT_USAGE
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        out.print(f"llmtap test server ({dialect}) listening on {server.url}", markup=False)
        out.print(f"models: {', '.join(server.models)}", markup=False)
        key = f" --api-key {shlex.quote(api_key)}" if api_key is not None else ""
        out.print(
            f'try: llmtap chat --endpoint {server.url}{key} "hello"   (Ctrl-C stops the server)',
            style="dim",
            markup=False,
        )
        out.file.flush()
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.stop()
    out.print(f"stopped after {plural(len(server.chat_requests), 'chat request')}", markup=False)
    return EXIT_OK
