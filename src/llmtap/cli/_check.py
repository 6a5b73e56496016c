"""``llmtap check``: the preflight as a doctor, one step at a time, with the fix for each
failure and an exit code that names the step that failed."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from rich.console import Console

# Imported here, before any step is timed: the first request would import it (and aiohttp)
# otherwise, and "reachable (N ms)" must be the request's time, not llmtap's start-up.
import llmtap._http  # noqa: F401
from llmtap._client import LLMClient, upstream_of
from llmtap._config import LLMConfig
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMModelError,
    LLMResponseError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMUsageError,
)
from llmtap._messages import Message
from llmtap._results import PreflightReport
from llmtap._wire.listings import read_model_listing
from llmtap.cli._common import (
    EXIT_AUTH,
    EXIT_CONNECT,
    EXIT_NO_ANSWER,
    EXIT_NO_MODEL,
    EXIT_OK,
    EXIT_SERVER,
    command_line_text,
    consoles,
    shown_endpoint,
)
from llmtap.cli._terminal import for_console

__all__ = ["STEP_EXIT_CODES", "Step", "check_command"]

#: The exit code of ``llmtap check`` when a step fails.
STEP_EXIT_CODES = {
    "reachable": EXIT_CONNECT,
    "server": EXIT_SERVER,
    "auth": EXIT_AUTH,
    "model": EXIT_NO_MODEL,
    "answer": EXIT_NO_ANSWER,
}
_TITLES = {
    "reachable": "reachable",
    "server": "server",
    "auth": "auth",
    "model": "model",
    "answer": "model answers",
    "first_token": "first token",
}
_START_THE_SERVER = (
    "start the server (Ollama: `ollama serve`), or pass --endpoint with the right host and port "
    "(Ollama 11434, llama.cpp 8080, vLLM 8000)"
)


@dataclass
class Step:
    """The outcome of one step: ``ok`` is ``None`` when it was skipped; ``warning`` marks a
    step that passed with something to know (a model name the server ignores)."""

    step: str
    ok: bool | None
    detail: str
    fix: str | None = None
    warning: bool = False


class _Doctor:
    def __init__(self, config: LLMConfig, report: Callable[[Step], None]) -> None:
        self.config = config
        self.endpoint = shown_endpoint(config)
        self.report = report
        self.steps: list[Step] = []
        self.listed: list[str] = []  # the models /v1/models listed, when it was asked

    def add(
        self,
        step: str,
        ok: bool | None,
        detail: str,
        fix: str | None = None,
        *,
        warning: bool = False,
    ) -> bool:
        """Record and show a step; a step seen again (a check that passed, then failed
        later) replaces the earlier entry."""
        entry = Step(step, ok, command_line_text(detail), fix, warning)
        self.steps = [s for s in self.steps if s.step != step] + [entry]
        self.report(entry)
        return ok is not False

    def skip_rest(self) -> None:
        done = {s.step for s in self.steps}
        for step in _TITLES:
            if step not in done:
                self.add(step, None, "skipped")

    async def run(self) -> None:
        async with LLMClient(self.config) as client:
            if await self._steps(client) is False:
                self.skip_rest()

    async def _steps(self, client: LLMClient) -> bool:
        probe = await self._reachable(client)
        if probe is None:
            return False
        if not await self._server(client, *probe):
            return False
        config = self.config
        try:
            report = await client.preflight_check()
        except (LLMResponseError, LLMUsageError) as exc:
            return await self._preflight_failed(client, exc)
        except LLMConnectionError as exc:
            return self.add(
                "server", False, f"the server stopped answering: {exc.message}", "see its log"
            )
        key = config.api_key is not None
        self.add("auth", True, "key accepted" if key else "no key needed")
        if report.warnings:
            only = report.models[0] if len(report.models) == 1 else None
            fix = (
                f"pass --model {only} (or leave --model out) to name the model that answers"
                if only
                else None
            )
            self.add("model", True, "; ".join(report.warnings), fix, warning=True)
        else:
            self.add("model", True, f"{report.model} is on the server")
        return await self._answer(client, report)

    async def _reachable(self, client: LLMClient) -> tuple[int, Any] | None:
        """Whether a connection opens (within ``connect_timeout``), then whether an HTTP
        request is answered (within ``preflight_timeout``, timed alone): the status and body
        of ``GET /api/version``, or ``None`` after a failed step."""
        config = self.config
        parts = urlsplit(config.endpoint)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            async with asyncio.timeout(config.connect_timeout):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            self.add(
                "reachable",
                False,
                f"no connection to {where} within connect_timeout ({config.connect_timeout:g} s)",
                "the host may be down or unreachable, or a firewall drops the connection: "
                "check the address",
            )
            return None
        except OSError as exc:
            self._unreachable(exc, host)
            return None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        started = time.monotonic()
        try:
            status, body, _ = await upstream_of(client).probe().get("/api/version")
        except LLMTimeoutError as exc:
            if exc.deadline != "preflight":
                raise
            self.add(
                "reachable",
                False,
                f"{self.endpoint} accepted the connection but sent no answer within "
                f"preflight_timeout ({config.preflight_timeout:g} s)",
                "the server may be hung, overloaded or still starting (see its log), or this "
                "port is not an HTTP server's",
            )
            return None
        except LLMConnectionError as exc:
            self.add(
                "reachable",
                False,
                f"{self.endpoint} accepted the connection, then: {exc.message}",
                "is an HTTP server listening there (or does it want https://)? See its log",
            )
            return None
        took = (time.monotonic() - started) * 1000
        self.add("reachable", True, f"{self.endpoint} answers ({took:.0f} ms)")
        return status, body

    def _unreachable(self, exc: OSError, host: str) -> None:
        """The connection could not be opened: refused, no such host, or another reason."""
        if isinstance(exc, socket.gaierror):
            self.add(
                "reachable",
                False,
                f"there is no host {host} ({exc.strerror})",
                "check the host name in --endpoint",
            )
        elif exc.errno == errno.ECONNREFUSED:
            self.add(
                "reachable",
                False,
                f"nothing answers at {self.endpoint} (connection refused)",
                _START_THE_SERVER,
            )
        else:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            self.add(
                "reachable",
                False,
                f"cannot connect to {self.endpoint} ({reason})",
                "check the address and the network",
            )

    async def _server(self, client: LLMClient, status: int, body: object) -> bool:
        """Which server this is (and its version)."""
        config = self.config
        if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
            return self.add("server", True, f"Ollama {body['version']}")
        models_url = config.url_for("/v1/models")
        status, listing, _ = await upstream_of(client).probe().get(models_url)
        if status in (401, 403):
            self.add("server", True, "an OpenAI-compatible API (details need a valid key)")
            return self._auth_failed(status)
        if status == 503:
            return self.add(
                "server",
                False,
                "the server is unavailable (503); llama.cpp answers so while it loads its model",
                "wait a few seconds and run `llmtap check` again",
            )
        try:
            if status != 200:
                raise ValueError(f"GET /v1/models answered {status}")
            kind, self.listed, _ = read_model_listing(listing)
        except ValueError as exc:
            return self.add(
                "server",
                False,
                f"no LLM API at {self.endpoint} ({exc})",
                "check the port and path: Ollama listens on 11434, llama.cpp on 8080, vLLM on "
                "8000; an OpenAI-style endpoint may need a /v1 suffix",
            )
        version = await upstream_of(client).probe().version(kind)
        names = {"llama.cpp": "llama.cpp", "vllm": "vLLM", "openai-compatible": "OpenAI-compatible"}
        return self.add("server", True, " ".join(filter(None, [names[kind], version])))

    def _auth_failed(self, status: int) -> bool:
        if self.config.api_key is None:
            detail = f"the server wants an API key ({status})"
            fix = "pass --api-key KEY, or set LLMTAP_API_KEY"
        else:
            detail = f"the server refused the API key ({status})"
            fix = "check the key (--api-key, LLMTAP_API_KEY, OPENAI_API_KEY or the config file)"
        return self.add("auth", False, detail, fix)

    async def _preflight_failed(
        self, client: LLMClient, exc: LLMResponseError | LLMUsageError
    ) -> bool:
        several = isinstance(exc, LLMModelError) and exc.status_code is None
        if several or isinstance(exc, LLMUsageError):  # several models and none chosen
            self.add("auth", True, "key accepted" if self.config.api_key else "no key needed")
            return self.add(
                "model", False, str(exc).split(". Set")[0], "pass --model NAME (or LLMTAP_MODEL)"
            )
        if exc.status_code in (401, 403):
            return self._auth_failed(exc.status_code)
        if exc.status_code == 404:
            self.add("auth", True, "key accepted" if self.config.api_key else "no key needed")
            model = self.config.model
            ollama = self.steps[1].detail.startswith("Ollama")
            if not model:
                fix = "pull one: llmtap pull llama3.2 (or `ollama pull llama3.2`)"
                return self.add("model", False, "the server has no models", fix if ollama else None)
            if not ollama and len(self.listed) == 1 and await self._answers_any_name(client):
                only = self.listed[0]
                return self.add(
                    "model",
                    False,
                    f"{model!r} is not listed, but the server answered a request for it: it "
                    f"serves only {only!r} and answers with it whatever name is asked",
                    f"pass --model {only} (or leave --model out): llmtap asks only for a model "
                    "the server lists",
                )
            fix = (
                f"ollama pull {model}   (or: llmtap pull {model})"
                if ollama
                else "start the server with that model, or pick one that is listed (llmtap models)"
            )
            return self.add("model", False, exc.message.split(";")[0], fix)
        return self.add("server", False, exc.message, "see the server's log")

    async def _answers_any_name(self, client: LLMClient) -> bool:
        """Whether the server answers a one-token request for the model it does not list
        (a single-model server that ignores the name)."""
        try:
            async with client.stream([Message.user("Say OK.")], max_tokens=1) as stream:
                await stream.result()
        except LLMError:
            return False
        return True

    async def _answer(self, client: LLMClient, report: PreflightReport) -> bool:
        try:
            async with client.stream([Message.user("Say OK.")], max_tokens=1) as stream:
                result = await stream.result()
        except LLMError as exc:
            return self.add(
                "answer", False, f"{report.model} did not answer: {exc.message}", _answer_fix(exc)
            )
        timings = result.timings
        if report.warnings and len(report.models) == 1:
            answered = f"{report.models[0]} answered a request for {report.model}"
        else:
            answered = f"{report.model} loaded and answered"
        self.add("answer", True, f"{answered} (max_tokens=1)")
        first = timings.time_to_first_token if timings else None
        if first is None:
            return self.add("first_token", True, "not measured (the answer had no token)")
        load = timings.load_duration if timings else None
        extra = f" (model load {load:.2f} s)" if load else ""
        return self.add("first_token", True, f"{first:.3f} s{extra}")


def _answer_fix(error: LLMError) -> str:
    """The fix for a model that did not answer, matched to how it failed."""
    cause = error.__cause__ if isinstance(error, LLMStreamInterrupted) else error
    if isinstance(cause, LLMTimeoutError):
        if cause.deadline == "first_token":
            return (
                "a cold load can take minutes: raise --first-token-timeout (or "
                "LLMTAP_FIRST_TOKEN_TIMEOUT), such as --first-token-timeout 600"
            )
        if cause.deadline == "idle":
            return (
                "the server stopped sending in the middle of the answer: it may be overloaded "
                "or stuck (see its log); or raise --idle-timeout (LLMTAP_IDLE_TIMEOUT)"
            )
        return "the server may be overloaded or stuck: see its log"
    if isinstance(cause, LLMResponseError):
        if cause.status_code == 503:
            return (
                "the server is busy or still loading the model: wait a little and run "
                "`llmtap check` again"
            )
        if cause.status_code == 500:
            return (
                "see the server's log; running out of memory is the usual cause (try a "
                "smaller model or quantization)"
            )
        if cause.status_code in (401, 403):
            return "check the key (--api-key, LLMTAP_API_KEY, OPENAI_API_KEY or the config file)"
        return "see the server's log"
    if isinstance(cause, LLMConnectionError):
        return (
            "the server dropped the connection while loading or answering; see its log (a "
            "crash while loading is often a lack of memory)"
        )
    return "see the server's log"


def _show(out: Console) -> Callable[[Step], None]:
    def show(step: Step) -> None:
        title = f"{_TITLES[step.step]:<15}"
        if step.ok is None:
            out.print(f"- {title}skipped", style="dim", markup=False)
            return
        style: str | None
        if step.warning:
            mark, style = "!", "yellow"
        else:
            mark, style = ("✓", None) if step.ok else ("✗", "red")
        out.print(for_console(f"{mark} {title}{step.detail}", out), style=style, markup=False)
        if step.fix:
            out.print(for_console(f"  fix: {step.fix}", out), style="yellow", markup=False)

    return show


async def check_command(config: LLMConfig, *, as_json: bool) -> int:
    """Run the checks; return the exit code of the first failed step (0 if none)."""
    out, _ = consoles()
    doctor = _Doctor(config, (lambda step: None) if as_json else _show(out))
    await doctor.run()
    failed = next((s for s in doctor.steps if s.ok is False), None)
    code = STEP_EXIT_CODES.get(failed.step, EXIT_SERVER) if failed else EXIT_OK
    if as_json:
        data = {
            "ok": failed is None,
            "exit_code": code,
            "endpoint": shown_endpoint(config),
            "steps": [asdict(step) for step in doctor.steps],
        }
        out.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return code
