"""What an endpoint is and what it serves, asked of it: the one place that tells server kinds
apart and reads listings.

Preflight, ``list_models()``, ``loaded_models()``, ``show()``, ``pull()``, the router's
listing refresh and ``llmtap check`` all ask through a :class:`Probe`, so that "is this
Ollama?" and "what does ``/api/ps`` say?" are answered the same way everywhere. Every question
is bounded: by the ``deadline`` passed in, else by ``preflight_timeout`` from its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from llmtap._config import LLMConfig
from llmtap._errors import LLMModelError, LLMResponseError, LLMUsageError, redact_url
from llmtap._results import ModelDetails, ModelInfo, ServerKind
from llmtap._wire.dialects import parse_error_object
from llmtap._wire.listings import (
    canonical_ollama_name,
    read_model_listing,
    read_ollama_entry,
    read_openai_listing,
    read_show,
)

if TYPE_CHECKING:
    from llmtap._http import Session

__all__ = ["ELSEWHERE", "KIND_NAMES", "Listing", "Probe", "ServerInfo"]

#: Each kind of server as a sentence names it.
KIND_NAMES: dict[str, str] = {
    "ollama": "an Ollama server",
    "llama.cpp": "a llama.cpp server",
    "vllm": "a vLLM server",
    "openai-compatible": "an OpenAI-compatible server",
}

#: Where each kind of server gets its models, for the error when a call needs Ollama.
ELSEWHERE: dict[str, str] = {
    "llama.cpp": "llama-server loads one GGUF file: download it and start llama-server with "
    "-m FILE (or -hf REPO)",
    "vllm": "vLLM downloads a model when it starts: `vllm serve MODEL`",
    "openai-compatible": "add models with the server's own tools",
}


@dataclass(frozen=True)
class ServerInfo:
    """Which server answers at an endpoint.

    Attributes:
        kind: The kind of server.
        version: Its version, where it tells (Ollama, vLLM, llama.cpp's build).
        listing: The ``/v1/models`` answer read on the way (not for Ollama), so that it need
            not be asked for again.
    """

    kind: ServerKind
    version: str | None = None
    listing: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Listing:
    """What an endpoint serves.

    Attributes:
        kind: The kind of server.
        models: The models, with what the server tells of each (Ollama: ``loaded`` from
            ``/api/ps``, when that could be read).
        aliases: Other names the server answers to, alias to model (vLLM, LM Studio).
    """

    kind: ServerKind
    models: tuple[ModelInfo, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The models' names, in the server's order."""
        return [model.name for model in self.models]

    @property
    def loaded(self) -> set[str]:
        """The canonical names of the models in memory (Ollama; others keep theirs loaded)."""
        return {canonical_ollama_name(m.name) for m in self.models if m.loaded}


class Probe:
    """Questions to one endpoint about itself.

    Args:
        session: The endpoint's HTTP session.
        config: The endpoint's settings.
    """

    def __init__(self, session: Session, config: LLMConfig) -> None:
        self._session = session
        self._config = config

    def _deadline(self, deadline: float | None) -> float:
        if deadline is not None:
            return deadline
        return asyncio.get_running_loop().time() + self._config.preflight_timeout

    async def get(
        self, path: str, *, deadline: float | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        """``GET`` a route of the endpoint: status, parsed JSON (``None`` if not JSON),
        headers. Statuses are returned, not raised.

        Raises:
            LLMConnectionError: Nothing answers (``LLMTimeoutError`` past the deadline).
        """
        url = self._config.url_for(path) if path.startswith("/") else path
        return await self._session.get_json(url, deadline=self._deadline(deadline))

    def _refused(self, status: int, body: Any, headers: Mapping[str, str], url: str) -> None:
        """Auth refusals, rate limits, redirects, a 503 (loading or down) and an error object
        in a 200 end a probe on any route."""
        from llmtap._http import response_error

        error_in_200 = status == 200 and isinstance(body, dict) and body.get("error") is not None
        if status not in (401, 403, 429, 503) and not 300 <= status < 400 and not error_in_200:
            return
        info = parse_error_object(body) if body is not None else None
        raise response_error(
            status,
            info,
            method="GET",
            url=url,
            endpoint=self._config.endpoint,
            route="listing",
            headers=headers,
        )

    def _failed(self, status: int, body: Any, url: str) -> LLMResponseError:
        """The error for a listing route that did not answer with a listing."""
        from llmtap._http import response_error

        info = parse_error_object(body) if isinstance(body, dict) else None
        if status == 200:
            return LLMResponseError(
                f"{url} answered with something that is not a model listing; is this an LLM API?",
                200,
                method="GET",
                url=url,
            )
        return response_error(
            status, info, method="GET", url=url, endpoint=self._config.endpoint, route="listing"
        )

    async def _get_ok(self, url: str, deadline: float) -> Any:
        """``GET url`` for a listing route: its parsed body, when it answered 200.

        Raises:
            LLMResponseError: It refused (see :meth:`_refused`) or answered another status.
        """
        status, body, headers = await self.get(url, deadline=deadline)
        self._refused(status, body, headers, url)
        if status != 200:
            raise self._failed(status, body, url)
        return body

    async def server(self, *, deadline: float | None = None, version: bool = True) -> ServerInfo:
        """Which server this is: Ollama answers ``/api/version``; every other is told by its
        ``/v1/models`` (llama.cpp marks it, vLLM says ``owned_by: "vllm"``); their version
        (:meth:`version`) is asked only when ``version``.

        Raises:
            LLMConnectionError: Nothing answers (``LLMTimeoutError`` past the deadline).
            LLMResponseError: The server refused (auth), is loading, or has no LLM API there.
        """
        deadline = self._deadline(deadline)
        config = self._config
        version_url = config.url_for("/api/version")
        status, body, headers = await self.get(version_url, deadline=deadline)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
            return ServerInfo("ollama", body["version"])
        self._refused(status, body, headers, version_url)
        models_url = config.url_for("/v1/models")
        body = await self._get_ok(models_url, deadline)
        try:
            kind, _, _ = read_model_listing(body)
        except ValueError:
            raise self._failed(200, body, models_url) from None
        found = await self.version(kind, deadline=deadline) if version else None
        return ServerInfo(kind, found, body)

    async def version(self, kind: ServerKind, *, deadline: float | None = None) -> str | None:
        """The version a server other than Ollama tells, where it tells one: vLLM's
        ``GET /version``, and llama.cpp's build (``build_info`` of ``GET /props``, such as
        ``b6500-1a2b3c4d``; ``b0-unknown`` when built without git metadata). ``None`` for any
        other kind, or when the answer has none (a server without the route answers 404).

        Raises:
            LLMConnectionError: Nothing answers (``LLMTimeoutError`` past the deadline).
        """
        if kind == "vllm":
            path, key = "/version", "version"
        elif kind == "llama.cpp":
            path, key = "/props", "build_info"
        else:
            return None
        _, answer, _ = await self.get(self._config.root_url + path, deadline=deadline)
        found = answer.get(key) if isinstance(answer, dict) else None
        return found if isinstance(found, str) and found else None

    async def listing(
        self, server: ServerKind | ServerInfo | None = None, *, deadline: float | None = None
    ) -> Listing:
        """What the endpoint serves. Ollama: ``/api/tags`` joined with ``/api/ps``
        (``loaded``, the context length it runs with); others: ``/v1/models``.

        Args:
            server: The kind of server, when known (else Ollama is told by its
                ``/api/tags``, which the others do not serve).
            deadline: Loop time by which all of it must be done.

        Raises:
            LLMConnectionError: Nothing answers (``LLMTimeoutError`` past the deadline).
            LLMResponseError: The server refused, or has no listing to give.
        """
        deadline = self._deadline(deadline)
        info = server if isinstance(server, ServerInfo) else None
        kind = info.kind if info is not None else server
        if kind == "ollama":
            return await self._ollama_listing(deadline)
        body = info.listing if info is not None else None
        if kind is None:  # Ollama answers /api/tags (llama-server, vLLM and others 404)
            tags_url = self._config.url_for("/api/tags")
            status, tags, headers = await self.get(tags_url, deadline=deadline)
            if status == 200 and isinstance(tags, dict) and isinstance(tags.get("models"), list):
                return await self._ollama_listing(deadline, tags)
            self._refused(status, tags, headers, tags_url)
        models_url = self._config.url_for("/v1/models")
        if body is None:
            body = await self._get_ok(models_url, deadline)
        try:
            found, models = read_openai_listing(body)
            _, _, aliases = read_model_listing(body)
        except ValueError:
            raise self._failed(200, body, models_url) from None
        return Listing(found, tuple(models), aliases)

    async def _ollama_listing(self, deadline: float, body: Any = None) -> Listing:
        """Ollama's ``/api/tags`` (``body``, when already read), joined with ``/api/ps``."""
        if body is None:
            tags_url = self._config.url_for("/api/tags")
            body = await self._get_ok(tags_url, deadline)
            if not isinstance(body, dict) or not isinstance(body.get("models"), list):
                raise self._failed(200, body, tags_url)
        models = [m for e in body["models"] if isinstance(e, dict) and (m := read_ollama_entry(e))]
        try:
            running = {canonical_ollama_name(m.name): m for m in await self.running(deadline)}
        except LLMResponseError:
            return Listing("ollama", tuple(models))
        joined = []
        for model in models:
            live = running.get(canonical_ollama_name(model.name))
            update: dict[str, Any] = {"loaded": live is not None}
            if live is not None:
                update |= {
                    "context_length": live.context_length or model.context_length,
                    "size_vram": live.size_vram,
                    "expires_at": live.expires_at,
                }
            joined.append(model.model_copy(update=update))
        return Listing("ollama", tuple(joined))

    async def running(self, deadline: float | None = None) -> list[ModelInfo]:
        """The models Ollama holds in memory now (``/api/ps``), each ``loaded``.

        Raises:
            LLMResponseError: ``/api/ps`` did not answer with a listing (not Ollama).
        """
        url = self._config.url_for("/api/ps")
        body = await self._get_ok(url, self._deadline(deadline))
        if not isinstance(body, dict):
            raise self._failed(200, body, url)
        entries = body.get("models") or ()
        found = [read_ollama_entry(e) for e in entries if isinstance(e, dict)]
        return [m.model_copy(update={"loaded": True}) for m in found if m is not None]

    async def require_ollama(self, what: str, known: ServerKind | None = None) -> None:
        """Raise unless the endpoint is Ollama.

        Raises:
            LLMUsageError: It is another kind of server; the message says how that kind gets
                its models.
        """
        kind = known or (await self.server(version=False)).kind
        if kind != "ollama":
            raise LLMUsageError(
                f"{what} works with Ollama only, and {redact_url(self._config.endpoint)} is "
                f"{KIND_NAMES[kind]}; {ELSEWHERE[kind]}"
            )

    async def show(self, model: str, *, deadline: float | None = None) -> ModelDetails:
        """Details of one Ollama model (``POST /api/show``).

        Raises:
            LLMModelError: The model is not on the server.
        """
        url = self._config.url_for("/api/show")
        deadline = self._deadline(deadline)
        try:
            async with asyncio.timeout_at(deadline):
                exchange = await self._session.send(
                    "POST", url, orjson.dumps({"model": model}), total_at=deadline
                )
                try:
                    body = await exchange.read_json(chat=False)
                finally:
                    exchange.close()
        except TimeoutError as exc:
            from llmtap._http import timeout_error

            raise timeout_error(
                "preflight", self._config.preflight_timeout, "POST", url, "is the server busy?"
            ) from exc
        except LLMResponseError as exc:
            if exc.status_code != 404:
                raise
            raise LLMModelError(
                f"Model {model!r} is not on the server; run `ollama pull {model}`",
                404,
                model=model,
                method="POST",
                url=url,
            ) from exc
        return read_show(model, body)
