"""Soak: many streams, at high concurrency, against servers that break at random.

``python benchmarks/soak.py [--streams 10000] [--concurrency 200] [--fault-rate 0.1]
[--seed 1] [--json FILE]`` starts five loopback ``TestServer``s (OpenAI, Ollama ``/v1``,
Ollama native, llama.cpp, vLLM), each in a worker process of its own, and runs the streams
through one ``LLMClient`` per server, spread over every call path (``stream_chat``,
``stream_chat_with_retry``, ``stream``, ``stream(resume=True)``, ``chat()``,
``chat(stream=False)``). Each request meets a fault with probability ``--fault-rate``: a reset
before the headers or mid-body, a 429/500/503, a stall, a truncated or malformed body, an
in-stream error, invalid UTF-8. The servers continue a partial answer sent back as an
assistant prefill, as real servers do, so resumed streams can be checked too.

It prints a table — completed (of which retried, of which resumed), interrupted, failed by
error type, duplicated tokens, lost tokens, leaked connections, leaked tasks, peak RSS — and
exits with status 1 if any token was duplicated or lost, a connection or task leaked, or an
error that is not an ``LLMError`` escaped.

Why worker processes: the client's loop then has the machine's second core to itself and
does not share its event loop with five aiohttp servers, so concurrency is real; peak RSS
and the leaked-task count are the client's alone; and a server's bookkeeping cannot hide a
client leak. ``--in-process`` runs the servers in the client's loop instead (one process,
for debugging).

Every answer is known in advance: stream ``N``'s answer is the words ``sNw0 sNw1 ...`` (5 to
24 of them), each word unique, so a repeated word is a duplicated token and a delivered text
that is not a prefix of the answer is a lost (or corrupted) one. Faults are drawn from a
seeded RNG keyed by (seed, server, stream, attempt), so a run meets the same faults again.
Peak RSS is the client process's ``ru_maxrss`` (imports included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import random
import resource
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script (``python benchmarks/soak.py``): the repository's ``src`` comes first when
# llmtap is not installed.
_SCRIPT = str(Path(__file__).resolve())
_SRC = Path(__file__).resolve().parent.parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from llmtap import (  # noqa: E402
    LLMClient,
    LLMConfig,
    LLMError,
    LLMStreamInterrupted,
    Message,
    TextDelta,
)
from llmtap.testing import RecordedRequest, Reply, TestServer  # noqa: E402

__all__ = ["Tally", "main"]

#: (name, TestServer dialect, client api) of each server.
SERVERS = [
    ("openai", "openai", "openai"),
    ("ollama_v1", "ollama", "openai"),
    ("ollama_native", "ollama", "ollama"),
    ("llamacpp", "llamacpp", "openai"),
    ("vllm", "vllm", "openai"),
]
PATHS = ["stream_chat", "stream_chat_with_retry", "stream", "stream_resume", "chat", "chat_whole"]
#: Streams that deliver output before they end, so that a break after it is an interruption.
EXPOSED = frozenset({"stream_chat", "stream_chat_with_retry", "stream", "stream_resume"})

STALL = 1.5
FIRST_TOKEN = 0.5
IDLE = 0.5


# --- the servers' side ----------------------------------------------------------------------


def answer_words(stream: int) -> list[str]:
    """The words of stream ``stream``'s answer, each with its leading space but the first."""
    count = 5 + stream % 20
    return [("" if j == 0 else " ") + f"s{stream}w{j}" for j in range(count)]


def _request_facts(request: RecordedRequest) -> tuple[int, str]:
    """The stream number the request is for, and the partial answer it asks to continue."""
    body = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages") or []
    stream, partial = -1, ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str):
            stream = int(content.split()[-1])
        elif message.get("role") == "assistant" and isinstance(content, str):
            partial = content
    return stream, partial


def fault_fields(rng: random.Random, chunks: int) -> dict[str, Any]:
    """One fault, as ``Reply`` fields; ``chunks`` is how many data chunks the answer has."""
    at = rng.randint(0, chunks)
    kind = rng.choice(
        [
            "reset_before_headers", "status_503", "status_429", "status_500", "reset_after",
            "cut_mid_chunk_after", "truncate_after", "malformed_after", "error_after",
            "stall_before_headers", "stall_after", "invalid_utf8_after",
        ]
    )  # fmt: skip
    if kind == "reset_before_headers":
        return {"reset_before_headers": True}
    if kind.startswith("status_"):
        status = int(kind.removeprefix("status_"))
        return {"status": status, "headers": {"Retry-After": "0"} if status == 429 else {}}
    if kind == "stall_before_headers":
        return {"delay_before_headers": STALL}
    if kind == "stall_after":
        return {"stall_after": (at, STALL)}
    if kind == "error_after":
        return {"error_after": at, "stream_error_code": 503}
    return {kind: at}


class FaultyAnswers:
    """The ``fallback`` of a soak ``TestServer``: each stream's known answer (or what follows
    the partial answer it is asked to continue), with a fault at ``rate``."""

    def __init__(self, seed: int, server: str, rate: float) -> None:
        self.seed = seed
        self.server = server
        self.rate = rate
        self.attempts: Counter[int] = Counter()

    def __call__(self, request: RecordedRequest) -> Reply:
        stream, partial = _request_facts(request)
        attempt = self.attempts[stream]
        self.attempts[stream] += 1
        words = answer_words(stream)
        text = "".join(words)
        pieces = words
        if partial and text.startswith(partial):  # a resume: continue the prefill
            pieces = _split(text[len(partial) :])
        rng = random.Random(f"{self.seed}:{self.server}:{stream}:{attempt}")
        fields: dict[str, Any] = {}
        if rng.random() < self.rate:
            fields = fault_fields(rng, len(pieces) + 2)
        return Reply(chunks=pieces, **fields)


def _split(rest: str) -> list[str]:
    """``rest`` as word pieces carrying their leading space."""
    pieces = [" " + word for word in rest.split(" ") if word]
    if pieces and not rest.startswith(" "):
        pieces[0] = pieces[0][1:]
    return pieces


async def serve(dialect: str, name: str, seed: int, rate: float) -> None:
    """Worker process: one soak server until standard input closes."""
    answers = FaultyAnswers(seed, name, rate)
    async with TestServer(dialect=dialect, fallback=answers) as server:  # type: ignore[arg-type]
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class WorkerServer:
    """A soak server in a worker process; its URL once started."""

    def __init__(self, dialect: str, name: str, seed: int, rate: float) -> None:
        self.args = ["--serve", dialect, "--name", name, "--seed", str(seed)]
        self.args += ["--fault-rate", str(rate)]
        self.url = ""
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> WorkerServer:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            _SCRIPT,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        self.url = line.decode().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"a soak server did not start: {line!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class InProcessServer:
    """A soak server in this process (``--in-process``)."""

    def __init__(self, dialect: str, name: str, seed: int, rate: float) -> None:
        self.server = TestServer(dialect=dialect, fallback=FaultyAnswers(seed, name, rate))  # type: ignore[arg-type]
        self.url = ""

    async def __aenter__(self) -> InProcessServer:
        await self.server.start()
        self.url = self.server.url
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


# --- the client's side ----------------------------------------------------------------------

#: The stream a retry or resume log event belongs to (each stream runs in its own context).
_CURRENT: contextvars.ContextVar[int] = contextvars.ContextVar("soak_stream", default=-1)


class RetryCounter(logging.Handler):
    """Counts llmtap's ``llm_retry`` and ``llm_resume`` events per stream."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: Counter[int] = Counter()
        self.resumes: Counter[int] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        event = record.getMessage().split(" ", 1)[0]
        if event == "llm_retry":
            self.retries[_CURRENT.get()] += 1
        elif event == "llm_resume":
            self.resumes[_CURRENT.get()] += 1


@dataclass
class Tally:
    """What the soak saw."""

    streams: int = 0
    completed: int = 0
    retried: int = 0
    resumed: int = 0
    interrupted: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    duplicated: int = 0
    lost: int = 0
    leaked_connections: int = 0
    leaked_tasks: int = 0
    peak_rss_mib: float = 0.0
    elapsed: float = 0.0
    by_path: dict[str, Counter[str]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def crashed(self) -> int:
        """Errors that are not ``LLMError``s (a bug whatever the server did)."""
        return sum(n for name, n in self.failed.items() if name.startswith("!"))

    @property
    def ok(self) -> bool:
        return not (
            self.duplicated
            or self.lost
            or self.leaked_connections
            or self.leaked_tasks
            or self.crashed
        )


async def _consume(client: LLMClient, path: str, stream: int, got: list[str]) -> str:
    """One call; what reaches the caller goes to ``got``. The final text."""
    messages = [Message.user(f"soak {stream}")]
    if path in ("stream_chat", "stream_chat_with_retry"):
        method = client.stream_chat if path == "stream_chat" else client.stream_chat_with_retry
        async for chunk in method(messages):
            choices = chunk.get("choices")
            if choices:
                content = (choices[0].get("delta") or {}).get("content")
            else:
                content = (chunk.get("message") or {}).get("content")
            if content:
                got.append(content)
        return "".join(got)
    if path in ("stream", "stream_resume"):
        async with client.stream(messages, resume=path == "stream_resume") as answer:
            async for event in answer:
                if type(event) is TextDelta:
                    got.append(event.text)
            result = await answer.result()
        return result.text
    result = await client.chat(messages, stream=path == "chat")
    return result.text


def _check_tokens(tally: Tally, stream: int, delivered: str, complete: bool, note: str) -> None:
    answer = "".join(answer_words(stream))
    words = delivered.split()
    if len(words) != len(set(words)):
        tally.duplicated += 1
        tally.examples.append(f"duplicated: stream {stream} {note}: {delivered!r}")
    if (complete and delivered != answer) or not answer.startswith(delivered):
        tally.lost += 1
        tally.examples.append(f"lost: stream {stream} {note}: {delivered!r} vs {answer!r}")


async def _one(tally: Tally, counter: RetryCounter, client: LLMClient, path: str, n: int) -> None:
    _CURRENT.set(n)
    got: list[str] = []
    outcome = "completed"
    try:
        text = await _consume(client, path, n, got)
    except LLMStreamInterrupted as error:
        outcome = "interrupted"
        if path in EXPOSED:
            tally.interrupted += 1
        else:  # chat() delivers nothing before it returns: it can never be interrupted
            outcome = "!LLMStreamInterrupted"
            tally.failed[outcome] += 1
            tally.examples.append(f"interrupted on {path}: stream {n}: {error.message}")
        _check_tokens(tally, n, "".join(got), False, path)
        if error.partial_text != "".join(got):
            tally.lost += 1
            tally.examples.append(f"partial_text: stream {n} {path}: {error.partial_text!r}")
    except LLMError as error:
        outcome = type(error).__name__
        tally.failed[outcome] += 1
        _check_tokens(tally, n, "".join(got), False, path)
    except Exception as error:  # a bug, whatever the server did
        outcome = "!" + type(error).__name__
        tally.failed[outcome] += 1
        tally.examples.append(f"crash: stream {n} {path}: {error!r}")
    else:
        tally.completed += 1
        tally.retried += counter.retries[n] > 0
        tally.resumed += counter.resumes[n] > 0
        _check_tokens(tally, n, text, True, path)
        if path in EXPOSED and "".join(got) != text:
            tally.lost += 1
            tally.examples.append(f"events vs result: stream {n} {path}")
    tally.by_path.setdefault(path, Counter())[outcome] += 1


async def soak(args: argparse.Namespace) -> Tally:
    """Run the soak and count what happened."""
    counter = RetryCounter()
    logger = logging.getLogger("llmtap")
    logger.addHandler(counter)
    tally = Tally(streams=args.streams)
    rng = random.Random(args.seed)
    plan = [(rng.randrange(len(SERVERS)), rng.choice(PATHS)) for _ in range(args.streams)]
    server_class: type[WorkerServer | InProcessServer] = (
        InProcessServer if args.in_process else WorkerServer
    )
    tasks_before = asyncio.all_tasks()
    started = time.monotonic()
    try:
        async with AsyncExitStack() as stack:
            servers: list[WorkerServer | InProcessServer] = [
                await stack.enter_async_context(
                    server_class(dialect, name, args.seed, args.fault_rate)
                )
                for name, dialect, _ in SERVERS
            ]
            clients = [
                await stack.enter_async_context(
                    LLMClient(
                        LLMConfig(
                            endpoint=server.url,
                            model="llama3.2",
                            api=api,
                            max_retries=3,
                            retry_backoff_base=0.01,
                            retry_backoff_max=0.05,
                            first_token_timeout=FIRST_TOKEN,
                            idle_timeout=IDLE,
                            connect_timeout=5.0,
                        )
                    )
                )
                for server, (_, _, api) in zip(servers, SERVERS, strict=True)
            ]
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(args.streams):
                queue.put_nowait(n)

            async def worker() -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    server, path = plan[n]
                    await _one(tally, counter, clients[server], path, n)
                    if args.progress and (n + 1) % 1000 == 0:
                        print(f"  … {n + 1} streams started", file=sys.stderr, flush=True)

            async with asyncio.TaskGroup() as group:
                for _ in range(min(args.concurrency, args.streams)):
                    group.create_task(worker())  # each task has a context of its own
            tally.leaked_connections = sum(client.connections_in_use for client in clients)
    finally:
        logger.removeHandler(counter)
    tally.elapsed = time.monotonic() - started
    await asyncio.sleep(0)  # let closed transports finish their callbacks
    tally.leaked_tasks = len(asyncio.all_tasks() - tasks_before)
    tally.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return tally


def render(tally: Tally, args: argparse.Namespace) -> str:
    """The table."""
    where = "in this process" if args.in_process else "worker processes"
    rows: list[tuple[str, str]] = [
        ("completed", f"{tally.completed}"),
        ("  of which retried", f"{tally.retried}"),
        ("  of which resumed", f"{tally.resumed}"),
        ("interrupted", f"{tally.interrupted}"),
    ]
    rows += [(f"failed: {name}", f"{n}") for name, n in sorted(tally.failed.items())]
    rows += [
        ("duplicated tokens", f"{tally.duplicated}"),
        ("lost tokens", f"{tally.lost}"),
        ("leaked connections", f"{tally.leaked_connections}"),
        ("leaked tasks", f"{tally.leaked_tasks}"),
        ("peak RSS", f"{tally.peak_rss_mib:.1f} MiB"),
    ]
    lines = [
        f"llmtap soak: {tally.streams} streams, concurrency {args.concurrency}, "
        f"{len(SERVERS)} servers ({where}), fault rate {args.fault_rate:g}, seed {args.seed}",
        f"elapsed {tally.elapsed:.1f} s ({tally.streams / max(tally.elapsed, 1e-9):.0f} streams/s)",
        "",
        f"{'outcome':<28}{'streams':>12}",
    ]
    lines += [f"{label:<28}{value:>12}" for label, value in rows]
    seen = {o for counts in tally.by_path.values() for o in counts}
    outcomes: list[str] = [o for o in ("completed", "interrupted") if o in seen]
    outcomes += sorted(seen - {"completed", "interrupted"})
    widths = [max(len(o.removeprefix("LLM")), 7) + 2 for o in outcomes]
    header = "".join(f"{o.removeprefix('LLM'):>{w}}" for o, w in zip(outcomes, widths, strict=True))
    lines += ["", f"{'by call path':<24}{header}"]
    for path in PATHS:
        counts = tally.by_path.get(path, Counter())
        cells = "".join(f"{counts[o]:>{w}}" for o, w in zip(outcomes, widths, strict=True))
        lines.append(f"{path:<24}{cells}")
    lines += ["", "result: " + ("OK" if tally.ok else "FAILED")]
    lines += [f"  {example}" for example in tally.examples[:20]]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/soak.py", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=10_000, help="streams to run (10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="streams at once (200)")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="per request (0.1)")
    parser.add_argument("--seed", type=int, default=1, help="for every random choice (1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the counts here")
    parser.add_argument("--in-process", action="store_true", help="servers in this process")
    parser.add_argument("--progress", action="store_true", help="report every 1000 streams")
    parser.add_argument("--serve", metavar="DIALECT", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.streams < 1 or args.concurrency < 1 or not 0.0 <= args.fault_rate <= 1.0:
        parser.error("--streams and --concurrency must be >= 1, --fault-rate in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak (or, with ``--serve``, one worker server); the exit status."""
    args = _parse(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.name, args.seed, args.fault_rate))
        return 0
    tally = asyncio.run(soak(args))
    print(render(tally, args))
    if args.json:
        counts = {
            "streams": tally.streams,
            "completed": tally.completed,
            "retried": tally.retried,
            "resumed": tally.resumed,
            "interrupted": tally.interrupted,
            "failed": dict(tally.failed),
            "duplicated": tally.duplicated,
            "lost": tally.lost,
            "leaked_connections": tally.leaked_connections,
            "leaked_tasks": tally.leaked_tasks,
            "crashed": tally.crashed,
            "peak_rss_mib": round(tally.peak_rss_mib, 1),
            "elapsed": round(tally.elapsed, 2),
            "by_path": {path: dict(counts) for path, counts in tally.by_path.items()},
            "ok": tally.ok,
        }
        args.json.write_text(json.dumps(counts, indent=2) + "\n")
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
