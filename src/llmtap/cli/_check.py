"""``llmtap check``: the preflight as a doctor, one step at a time, with the fix for each
failure and an exit code that names the step that failed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson
from rich.console import Console

from llmtap._client import LLMClient, upstream_of
from llmtap._config import LLMConfig
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMResponseError,
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
    consoles,
)

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


@dataclass
class Step:
    """The outcome of one step: ``ok`` is ``None`` when it was skipped."""

    step: str
    ok: bool | None
    detail: str
    fix: str | None = None


class _Doctor:
    def __init__(self, config: LLMConfig, report: Callable[[Step], None]) -> None:
        self.config = config
        self.report = report
        self.steps: list[Step] = []

    def add(self, step: str, ok: bool | None, detail: str, fix: str | None = None) -> bool:
        entry = Step(step, ok, detail, fix)
        self.steps.append(entry)
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
        config = self.config
        endpoint = config.endpoint
        started = time.monotonic()
        probe = upstream_of(client).probe()
        try:
            async with asyncio.timeout(config.preflight_timeout):
                status, body, _ = await probe.get("/api/version")
        except (LLMConnectionError, TimeoutError) as exc:
            return self.add(
                "reachable",
                False,
                f"nothing answers at {endpoint} ({_reason(exc, config)})",
                "start the server (Ollama: `ollama serve`), or pass --endpoint with the right "
                "host and port (Ollama 11434, llama.cpp 8080, vLLM 8000)",
            )
        took = (time.monotonic() - started) * 1000
        self.add("reachable", True, f"{endpoint} answers ({took:.0f} ms)")
        if not await self._server(client, status, body):
            return False
        try:
            report = await client.preflight_check()
        except (LLMResponseError, LLMUsageError) as exc:
            return self._preflight_failed(exc)
        key = config.api_key is not None
        self.add("auth", True, "key accepted" if key else "no key needed")
        self.add("model", True, f"{report.model} is on the server")
        return await self._answer(client, report)

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
            kind, _, _ = read_model_listing(listing)
        except ValueError as exc:
            return self.add(
                "server",
                False,
                f"no LLM API at {config.endpoint} ({exc})",
                "check the port and path: Ollama listens on 11434, llama.cpp on 8080, vLLM on "
                "8000; an OpenAI-style endpoint may need a /v1 suffix",
            )
        version = None
        if kind == "vllm":
            _, answer, _ = await upstream_of(client).probe().get(config.root_url + "/version")
            if isinstance(answer, dict) and isinstance(answer.get("version"), str):
                version = answer["version"]
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

    def _preflight_failed(self, exc: LLMResponseError | LLMUsageError) -> bool:
        if isinstance(exc, LLMUsageError):  # several models and none chosen
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
            fix = (
                f"ollama pull {model}   (or: llmtap pull {model})"
                if ollama
                else "start the server with that model, or pick one that is listed (llmtap models)"
            )
            return self.add("model", False, exc.message.split(";")[0], fix)
        return self.add("server", False, exc.message, "see the server's log")

    async def _answer(self, client: LLMClient, report: PreflightReport) -> bool:
        try:
            async with client.stream([Message.user("Say OK.")], max_tokens=1) as stream:
                result = await stream.result()
        except LLMError as exc:
            if isinstance(exc, LLMTimeoutError) and exc.deadline == "first_token":
                fix = (
                    "a cold load can take minutes: raise first_token_timeout "
                    "(LLMTAP_FIRST_TOKEN_TIMEOUT=600)"
                )
            else:
                fix = (
                    "see the server's log; running out of memory is the usual cause (try a "
                    "smaller model or quantization)"
                )
            return self.add("answer", False, f"{report.model} did not answer: {exc.message}", fix)
        timings = result.timings
        self.add("answer", True, f"{report.model} loaded and answered (max_tokens=1)")
        first = timings.time_to_first_token if timings else None
        if first is None:
            return self.add("first_token", True, "not measured (the answer had no token)")
        load = timings.load_duration if timings else None
        extra = f" (model load {load:.2f} s)" if load else ""
        return self.add("first_token", True, f"{first:.3f} s{extra}")


def _reason(exc: BaseException, config: LLMConfig) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, LLMTimeoutError):
        return f"no answer within {exc.deadline}_timeout, {exc.timeout:g} s"
    if not isinstance(exc, LLMError):
        return f"no answer within preflight_timeout, {config.preflight_timeout:g} s"
    os_error = getattr(exc.__cause__, "os_error", None)
    if isinstance(os_error, OSError) and os_error.errno:
        return os.strerror(os_error.errno).lower()
    return exc.message


def _show(out: Console) -> Callable[[Step], None]:
    def show(step: Step) -> None:
        title = f"{_TITLES[step.step]:<15}"
        if step.ok is None:
            out.print(f"- {title}skipped", style="dim", markup=False)
            return
        mark, style = ("✓", "green") if step.ok else ("✗", "red")
        out.print(
            f"{mark} {title}{step.detail}", style=style if not step.ok else None, markup=False
        )
        if step.fix:
            out.print(f"  fix: {step.fix}", style="yellow", markup=False)

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
            "endpoint": config.endpoint,
            "steps": [asdict(step) for step in doctor.steps],
        }
        out.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return code
