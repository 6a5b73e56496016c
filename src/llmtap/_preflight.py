"""Preflight: which kind of server this is, which models it has, which one to use.

The reading of listings is pure; :func:`run_preflight` asks the server through the ``GET``
function the client hands it, so all HTTP stays in the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from llmtap import _retry
from llmtap._config import LLMConfig
from llmtap._dialects import ServerKind, parse_error_object
from llmtap._errors import (
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUsageError,
    scrub,
)
from llmtap._transport import request_id_of

__all__ = [
    "PreflightReport",
    "ServerKind",
    "canonical_ollama_name",
    "match_model",
    "read_model_listing",
    "read_ollama_tags",
    "run_preflight",
]

#: ``GET url`` → (status, parsed JSON or ``None``, headers).
GetJson = Callable[[str], Awaitable[tuple[int, Any, Mapping[str, str]]]]


class PreflightReport(BaseModel):
    """What :meth:`LLMClient.preflight_check` found.

    Attributes:
        server: ``"ollama"``, ``"llama.cpp"``, ``"vllm"`` or ``"openai-compatible"``.
        version: The server's version, where it tells.
        models: The models the server offers, as it names them.
        model: The model requests will use: the configured one, resolved as the server resolves
            it (``qwen3`` on Ollama is ``qwen3:latest``), or the server's only model.
        latency: Seconds the checks took.
        warnings: Things that work but may surprise (a name a single-model server ignores).
        endpoint: The endpoint checked.
    """

    model_config = ConfigDict(frozen=True)

    server: ServerKind
    version: str | None
    models: tuple[str, ...]
    model: str
    latency: float
    warnings: tuple[str, ...] = ()
    endpoint: str


_OLLAMA_REGISTRY = "registry.ollama.ai/"
_OLLAMA_NAMESPACE = "library/"


def canonical_ollama_name(name: str) -> str:
    """A model name as Ollama shows it: default host and namespace dropped, ``:latest`` added.

    >>> canonical_ollama_name("qwen3")
    'qwen3:latest'
    >>> canonical_ollama_name("registry.ollama.ai/library/qwen3:8b")
    'qwen3:8b'
    """
    name = name.strip().removeprefix(_OLLAMA_REGISTRY).removeprefix(_OLLAMA_NAMESPACE)
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def read_ollama_tags(body: Any) -> list[str]:
    """Model names from Ollama's ``GET /api/tags``."""
    models = body.get("models") if isinstance(body, dict) else None
    names: list[str] = []
    for entry in models or ():
        if isinstance(entry, dict):
            name = entry.get("name") or entry.get("model")
            if isinstance(name, str) and name:
                names.append(name)
    return names


def read_model_listing(body: Any) -> tuple[ServerKind, list[str], dict[str, str]]:
    """Server kind, model ids and aliases (alias → id) from ``GET /v1/models``.

    llama.cpp adds a top-level ``models`` list and says ``owned_by: "llamacpp"``; vLLM says
    ``owned_by: "vllm"``; Ollama's ``/v1/models`` may say ``"data": null``.
    """
    if not isinstance(body, dict):
        raise ValueError("the model listing is not a JSON object")
    data = body.get("data")
    if data is not None and not isinstance(data, list):
        raise ValueError("the model listing's 'data' is not a list")
    ids: list[str] = []
    aliases: dict[str, str] = {}
    owners: set[str] = set()
    for entry in data or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        ids.append(entry["id"])
        if isinstance(entry.get("owned_by"), str):
            owners.add(entry["owned_by"])
        for alias in entry.get("aliases") or ():
            if isinstance(alias, str):
                aliases[alias] = entry["id"]
    kind: ServerKind = "openai-compatible"
    if "llamacpp" in owners or isinstance(body.get("models"), list):
        kind = "llama.cpp"
    elif "vllm" in owners:
        kind = "vllm"
    return kind, ids, aliases


def match_model(
    requested: str, available: list[str], aliases: dict[str, str] | None = None
) -> str | None:
    """The listed model ``requested`` names exactly (or through an alias), else ``None``."""
    if requested in available:
        return requested
    if aliases and requested in aliases:
        return aliases[requested]
    return None


def _ollama_match(wanted: str, models: list[str]) -> str | None:
    canonical = canonical_ollama_name(wanted)
    for name in models:
        if canonical_ollama_name(name) == canonical:
            return name
    return None


async def run_preflight(config: LLMConfig, model: str, get_json: GetJson) -> PreflightReport:
    """Check the server at ``config.endpoint`` for ``model`` (empty: its only model).

    Ollama answers ``/api/version``; everything else is asked ``/v1/models``. The whole check
    is bounded by ``config.preflight_timeout``.
    """
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.preflight_timeout):
            check = _Preflight(config, model, get_json)
            server, version, models, resolved, warnings = await check.run()
    except TimeoutError as exc:
        raise LLMTimeoutError(
            f"Preflight got no complete answer from {config.endpoint} within "
            f"preflight_timeout ({config.preflight_timeout:g} s); the server may be "
            "overloaded or the address may be wrong",
            deadline="preflight",
            timeout=config.preflight_timeout,
            method="GET",
            url=config.endpoint,
        ) from exc
    return PreflightReport(
        server=server,
        version=version,
        models=tuple(models),
        model=resolved,
        latency=time.monotonic() - started,
        warnings=tuple(warnings),
        endpoint=scrub(config.endpoint),
    )


_Found = tuple[ServerKind, str | None, list[str], str, list[str]]


class _Preflight:
    """The steps of one preflight check."""

    def __init__(self, config: LLMConfig, model: str, get_json: GetJson) -> None:
        self.config = config
        self.model = model
        self.get_json = get_json

    async def run(self) -> _Found:
        version_url = self.config.url_for("/api/version")
        status, body, headers = await self.get_json(version_url)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
            return await self._ollama(body["version"])
        self._raise_for_refusal(status, body, headers, version_url)
        return await self._openai()

    def _raise_for_refusal(
        self, status: int, body: Any, headers: Mapping[str, str], url: str
    ) -> None:
        """Auth refusals, rate limits, redirects and llama.cpp's loading answer end preflight
        on any route; so does an error object in a 200."""
        error_in_200 = status == 200 and isinstance(body, dict) and body.get("error") is not None
        if status not in (401, 403, 429, 503) and not 300 <= status < 400 and not error_in_200:
            return
        info = parse_error_object(body) if body is not None else None
        server_message = info.message if info else None
        cls = LLMRateLimitError if status == 429 else LLMResponseError
        if error_in_200:
            message = f"The server answered with an error: {server_message}"
        elif 300 <= status < 400:
            message = (
                f"The server redirected to {headers.get('Location', '(no Location header)')}; "
                "llmtap does not follow redirects (they could carry the API key to another "
                "host). Set endpoint to the new URL"
            )
        elif status == 429:
            message = f"The server is rate-limiting requests (429): {server_message}"
        elif status == 503:
            loading = server_message is not None and "loading" in server_message.lower()
            endpoint = self.config.endpoint
            message = (
                f"The server at {endpoint} is loading its model; it is not down. "
                "Try again in a few seconds"
                if loading
                else f"The server at {endpoint} is unavailable (503); try again"
            )
        else:
            message = (
                f"The server refused the credentials ({status}"
                f"{': ' + server_message if server_message else ''}). "
                "Set LLMTAP_API_KEY (or api_key=) to a valid key"
            )
        raise cls(
            message,
            status,
            server_message=server_message,
            retry_after=_retry.parse_retry_after(headers),
            method="GET",
            url=url,
            request_id=request_id_of(headers),
        )

    async def _ollama(self, version: str) -> _Found:
        tags_url = self.config.url_for("/api/tags")
        status, body, headers = await self.get_json(tags_url)
        if status != 200 or body is None:
            self._raise_for_refusal(status, body, headers, tags_url)
            raise LLMResponseError(
                f"Ollama answered {status} to /api/tags with "
                f"{'a body that is not JSON' if body is None else 'an unexpected body'}",
                status,
                method="GET",
                url=tags_url,
            )
        models = read_ollama_tags(body)
        model = self._pick(
            models,
            lambda wanted: _ollama_match(wanted, models),
            how_to_get="run `ollama pull {}`",
        )
        return "ollama", version, models, model, []

    async def _openai(self) -> _Found:
        config = self.config
        models_url = config.url_for("/v1/models")
        status, body, headers = await self.get_json(models_url)
        self._raise_for_refusal(status, body, headers, models_url)
        if status == 404:
            raise LLMResponseError(
                f"No LLM API at {config.endpoint}: {models_url} answered 404. Check the port "
                "and path (Ollama listens on 11434, llama.cpp on 8080, vLLM on 8000; an "
                "OpenAI-style endpoint may need a /v1 suffix)",
                404,
                method="GET",
                url=models_url,
            )
        try:
            if status != 200 or body is None:
                raise ValueError(
                    f"status {status} and {'a body that is not JSON' if body is None else 'a body'}"
                )
            server, models, aliases = read_model_listing(body)
        except ValueError as exc:
            raise LLMResponseError(
                f"{models_url} answered with {exc}; is this an LLM API?",
                status,
                method="GET",
                url=models_url,
            ) from exc
        version: str | None = None
        if server == "vllm":
            _, version_body, _ = await self.get_json(config.root_url + "/version")
            if isinstance(version_body, dict) and isinstance(version_body.get("version"), str):
                version = version_body["version"]
        single = server == "llama.cpp" and len(models) == 1
        if single and self.model and match_model(self.model, models, aliases) is None:
            warning = (
                f"Model {self.model!r} is not listed; this llama.cpp server serves only "
                f"{models[0]!r} and answers with it whatever name is asked"
            )
            return server, version, models, self.model, [warning]
        model = self._pick(
            models,
            lambda wanted: match_model(wanted, models, aliases),
            how_to_get="start the server with that model, or pick one that is listed",
        )
        return server, version, models, model, []

    def _pick(
        self, models: list[str], find: Callable[[str], str | None], *, how_to_get: str
    ) -> str:
        """The model to use: the configured one as the server names it, or the only one."""
        endpoint = self.config.endpoint
        listing = ", ".join(models) if models else "(none)"
        if not self.model:
            if len(models) == 1:
                return models[0]
            if not models:
                raise LLMResponseError(
                    f"The server at {endpoint} has no models. With Ollama, "
                    "`ollama pull <model>` first",
                    404,
                    method="GET",
                    url=endpoint,
                )
            raise LLMUsageError(
                f"No model is set and the server has several: {listing}. Set "
                "LLMConfig(model=...) or LLMTAP_MODEL to one of them"
            )
        found = find(self.model)
        if found is None:
            raise LLMResponseError(
                f"Model {self.model!r} is not on the server; {how_to_get.format(self.model)}. "
                f"Available: {listing}",
                404,
                method="GET",
                url=endpoint,
            )
        return found
