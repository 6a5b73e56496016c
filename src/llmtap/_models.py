"""Model management: what a server has (``list_models``), what is loaded now
(``loaded_models``), details of one model (``show``), and downloads (``pull``).

Functions here take the client and go through its HTTP helpers (``_get_json``, ``_send``,
``_post_json``); the client exposes them as thin methods. Listings are read tolerantly: a field
a server does not send is ``None``, never a guess.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from llmtap._dialects import ServerKind, parse_error_object
from llmtap._errors import (
    LLMResponseError,
    LLMStreamError,
    LLMTimeoutError,
    LLMUsageError,
    redact_url,
)
from llmtap._ndjson import NDJSONDecoder
from llmtap._preflight import canonical_ollama_name, read_model_listing
from llmtap._transport import excerpt, timeout_error, transport_error, transport_errors

if TYPE_CHECKING:
    from llmtap._client import LLMClient

__all__ = [
    "ModelDetails",
    "ModelInfo",
    "PullProgress",
    "list_models",
    "loaded_models",
    "pull",
    "show",
]


class ModelInfo(BaseModel):
    """One model a server offers. Anything the server does not report is ``None``.

    Ollama reports the most (``/api/tags`` and ``/api/ps``); llama.cpp reports size,
    parameter count and context; vLLM the context length; OpenAI-style servers little more
    than the name.

    Attributes:
        name: The name to pass as ``model`` (Ollama: ``name:tag``).
        size: Bytes on disk.
        parameter_size: The parameter count as the server writes it (``"3.2B"``).
        quantization: The quantization level (``"Q4_K_M"``).
        family: The model family (``"llama"``).
        format: The file format (``"gguf"``).
        digest: The model's content digest.
        modified_at: When the model was last pulled or changed.
        loaded: Whether it is in memory now; ``None`` when the server does not say. Ollama
            says through ``/api/ps``; llama.cpp and vLLM only list the models they serve,
            which are loaded.
        context_length: The context length (Ollama: the one it runs with, when loaded).
        size_vram: Bytes of the loaded model held in GPU memory (Ollama).
        expires_at: When Ollama will unload it (Ollama, loaded models).
        owned_by: The ``owned_by`` of an OpenAI-style listing.

    Example:
        >>> ModelInfo(name="qwen3:latest", size=5_200_000_000, loaded=True).loaded
        True
    """

    model_config = ConfigDict(frozen=True)

    name: str
    size: int | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    family: str | None = None
    format: str | None = None
    digest: str | None = None
    modified_at: datetime | None = None
    loaded: bool | None = None
    context_length: int | None = None
    size_vram: int | None = None
    expires_at: datetime | None = None
    owned_by: str | None = None


class ModelDetails(BaseModel):
    """Details of one Ollama model, from ``POST /api/show``.

    Attributes:
        name: The model asked about.
        family: The model family.
        parameter_size: The parameter count as Ollama writes it (``"3.2B"``).
        quantization: The quantization level.
        format: The file format.
        context_length: The context length the model was trained for
            (``model_info["<arch>.context_length"]``).
        capabilities: What it can do (``"completion"``, ``"tools"``, ``"thinking"``, ...).
        modified_at: When it was last pulled or changed.
        raw: The whole answer, for anything not above (``template``, ``parameters``,
            ``model_info``, ``license``...).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    format: str | None = None
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()
    modified_at: datetime | None = None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One progress line of an Ollama pull.

    Lines without a ``digest`` are stages (``"pulling manifest"``, ``"verifying sha256
    digest"``, ``"writing manifest"``, ``"success"``); lines with one report the download of
    that layer: ``completed`` of ``total`` bytes. A resumed pull starts a layer at the bytes
    Ollama already has.

    Example:
        >>> PullProgress("pulling 6a0746a1ec1a", "sha256:6a07...", 100, 40).fraction
        0.4
    """

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    @property
    def done(self) -> bool:
        """Whether this is the last line of a successful pull."""
        return self.status == "success"

    @property
    def fraction(self) -> float | None:
        """How much of the layer is downloaded (0 to 1), when the line says."""
        if not self.total or self.completed is None:
            return None
        return min(1.0, self.completed / self.total)


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)
_T = TypeVar("_T")


async def _within_preflight_timeout(
    client: LLMClient, call: Awaitable[_T], what: str, method: str, path: str
) -> _T:
    """``call`` (a listing, a probe or ``show``), ended at ``preflight_timeout``: a server that
    accepts the connection and never answers must not hold the caller forever.

    Raises:
        LLMTimeoutError: ``deadline="preflight"``, when the time is up.
    """
    config = client.config
    try:
        async with asyncio.timeout(config.preflight_timeout) as deadline:
            return await call
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        url = config.url_for(path)
        raise LLMTimeoutError(
            f"No complete answer from {redact_url(config.endpoint)} to {what} within "
            f"preflight_timeout ({config.preflight_timeout:g} s); the server may be hung or "
            "overloaded, or the address may be wrong",
            deadline="preflight",
            timeout=config.preflight_timeout,
            method=method,
            url=url,
        ) from exc


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    """An RFC 3339 time (Go's, with nanoseconds), or ``None``; Go's zero time is ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = _DATETIME.validate_python(value)
    except ValidationError:
        return None
    return None if parsed.year <= 1 else parsed


def _count(n: int) -> str:
    """A parameter count the way Ollama writes it: ``8.0B``, ``201.7K``."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def read_ollama_entry(entry: Mapping[str, Any]) -> ModelInfo | None:
    """A ``ModelInfo`` from one entry of Ollama's ``/api/tags`` or ``/api/ps``."""
    name = _text(entry.get("name")) or _text(entry.get("model"))
    if name is None:
        return None
    details = entry.get("details")
    details = details if isinstance(details, dict) else {}
    return ModelInfo(
        name=name,
        size=_int(entry.get("size")),
        parameter_size=_text(details.get("parameter_size")),
        quantization=_text(details.get("quantization_level")),
        family=_text(details.get("family")),
        format=_text(details.get("format")),
        digest=_text(entry.get("digest")),
        modified_at=_time(entry.get("modified_at")),
        context_length=_int(entry.get("context_length")) or _int(details.get("context_length")),
        size_vram=_int(entry.get("size_vram")),
        expires_at=_time(entry.get("expires_at")),
    )


def read_openai_listing(body: Any) -> tuple[ServerKind, list[ModelInfo]]:
    """Server kind and models from ``GET /v1/models`` (llama.cpp, vLLM, OpenAI, ...).

    Raises:
        ValueError: The body is not a model listing.
    """
    kind, _, _ = read_model_listing(body)
    loaded = True if kind in ("llama.cpp", "vllm") else None
    models: list[ModelInfo] = []
    for entry in body.get("data") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        meta = entry.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        params = _int(meta.get("n_params"))
        models.append(
            ModelInfo(
                name=entry["id"],
                size=_int(meta.get("size")),
                parameter_size=_count(params) if params else None,
                format="gguf" if kind == "llama.cpp" else None,
                modified_at=_time(entry.get("modified_at")),
                loaded=loaded,
                context_length=_int(meta.get("n_ctx")) or _int(entry.get("max_model_len")),
                owned_by=_text(entry.get("owned_by")),
            )
        )
    return kind, models


def _listing_error(status: int, body: Any, url: str, endpoint: str) -> LLMResponseError:
    """The error for a listing route that did not answer 200 with a listing."""
    info = parse_error_object(body) if body is not None else None
    server_message = info.message if info else None
    said = f": {server_message}" if server_message else ""
    if status in (401, 403):
        message = (
            f"The server refused the credentials ({status}{said}). Set LLMTAP_API_KEY "
            "(or api_key=, or --api-key) to a valid key"
        )
    elif status == 404:
        message = (
            f"No LLM API at {endpoint}: {url} answered 404. Check the port and path (Ollama "
            "listens on 11434, llama.cpp on 8080, vLLM on 8000)"
        )
    elif status == 503:
        message = f"The server at {endpoint} is unavailable (503{said}); try again shortly"
    elif status == 200:
        message = f"{url} answered with something that is not a model listing; is this an LLM API?"
    else:
        message = f"The server answered {status} to {url}{said}"
    return LLMResponseError(message, status, server_message=server_message, method="GET", url=url)


async def list_models(client: LLMClient) -> list[ModelInfo]:
    """The models the server has, within ``preflight_timeout``. See
    :meth:`LLMClient.list_models`."""
    return await _within_preflight_timeout(
        client, _list_models(client), "the model listing", "GET", "/api/tags"
    )


async def _list_models(client: LLMClient) -> list[ModelInfo]:
    config = client.config
    tags_url = config.url_for("/api/tags")
    status, body, _ = await client._get_json(tags_url)
    if status == 200 and isinstance(body, dict) and isinstance(body.get("models"), list):
        models = [m for e in body["models"] if isinstance(e, dict) and (m := read_ollama_entry(e))]
        try:
            running = {canonical_ollama_name(m.name): m for m in await _ollama_ps(client)}
        except LLMResponseError:
            running = None
        result = []
        for model in models:
            if running is None:
                result.append(model)
                continue
            live = running.get(canonical_ollama_name(model.name))
            update: dict[str, Any] = {"loaded": live is not None}
            if live is not None:
                update |= {
                    "context_length": live.context_length or model.context_length,
                    "size_vram": live.size_vram,
                    "expires_at": live.expires_at,
                }
            result.append(model.model_copy(update=update))
        return result
    if status in (401, 403):
        raise _listing_error(status, body, tags_url, config.endpoint)
    models_url = config.url_for("/v1/models")
    status, body, _ = await client._get_json(models_url)
    if status != 200:
        raise _listing_error(status, body, models_url, config.endpoint)
    try:
        _, listed = read_openai_listing(body)
    except ValueError:
        raise _listing_error(200, body, models_url, config.endpoint) from None
    return listed


async def _ollama_ps(client: LLMClient) -> list[ModelInfo]:
    url = client.config.url_for("/api/ps")
    status, body, _ = await client._get_json(url)
    if status != 200 or not isinstance(body, dict):
        raise _listing_error(status, body, url, client.config.endpoint)
    entries = body.get("models") or ()
    found = [read_ollama_entry(e) for e in entries if isinstance(e, dict)]
    return [m.model_copy(update={"loaded": True}) for m in found if m is not None]


async def server_kind(client: LLMClient) -> ServerKind:
    """The kind of server at the client's endpoint: the preflight's answer, or a probe
    (within ``preflight_timeout``).

    Raises:
        LLMConnectionError: Nothing answers (``LLMTimeoutError`` after ``preflight_timeout``).
        LLMResponseError: The server refused the credentials or is not an LLM API.
    """
    if client.server is not None:
        return client.server
    return await _within_preflight_timeout(
        client, _probe(client), "the probe for the kind of server", "GET", "/api/version"
    )


async def _probe(client: LLMClient) -> ServerKind:
    config = client.config
    status, body, _ = await client._get_json(config.url_for("/api/version"))
    if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
        return "ollama"
    models_url = config.url_for("/v1/models")
    status, body, _ = await client._get_json(models_url)
    if status != 200:
        raise _listing_error(status, body, models_url, config.endpoint)
    try:
        kind, _, _ = read_model_listing(body)
    except ValueError:
        raise _listing_error(200, body, models_url, config.endpoint) from None
    return kind


_ELSEWHERE: dict[str, str] = {
    "llama.cpp": "llama-server loads one GGUF file: download it and start llama-server with "
    "-m FILE (or -hf REPO)",
    "vllm": "vLLM downloads a model when it starts: `vllm serve MODEL`",
    "openai-compatible": "add models with the server's own tools",
}


_KIND_NAMES: dict[str, str] = {
    "llama.cpp": "a llama.cpp server",
    "vllm": "a vLLM server",
    "openai-compatible": "an OpenAI-compatible server",
}


async def _require_ollama(client: LLMClient, what: str) -> None:
    kind = await server_kind(client)
    if kind != "ollama":
        raise LLMUsageError(
            f"{what} works with Ollama only, and {redact_url(client.config.endpoint)} is "
            f"{_KIND_NAMES[kind]}; {_ELSEWHERE[kind]}"
        )


async def loaded_models(client: LLMClient) -> list[ModelInfo]:
    """The models Ollama holds in memory now (the probe and the listing each within
    ``preflight_timeout``). See :meth:`LLMClient.loaded_models`."""
    await _require_ollama(client, "Listing loaded models")
    return await _within_preflight_timeout(
        client, _ollama_ps(client), "GET /api/ps", "GET", "/api/ps"
    )


async def show(client: LLMClient, model: str) -> ModelDetails:
    """Details of one Ollama model (the probe and the answer each within
    ``preflight_timeout``). See :meth:`LLMClient.show`."""
    if not model:
        raise LLMUsageError("show() needs a model name")
    await _require_ollama(client, "show()")
    url = client.config.url_for("/api/show")
    try:
        body = await _within_preflight_timeout(
            client,
            client._post_json(url, orjson.dumps({"model": model}), chat=False),
            "POST /api/show",
            "POST",
            "/api/show",
        )
    except LLMResponseError as exc:
        if exc.status_code != 404:
            raise
        raise LLMResponseError(
            f"Model {model!r} is not on the server; run `ollama pull {model}`",
            404,
            server_message=exc.server_message,
            method="POST",
            url=url,
        ) from exc
    details = body.get("details")
    details = details if isinstance(details, dict) else {}
    info = body.get("model_info")
    info = info if isinstance(info, dict) else {}
    context = next(
        (_int(v) for k, v in info.items() if k.endswith(".context_length") and _int(v)), None
    )
    capabilities = body.get("capabilities")
    return ModelDetails(
        name=model,
        family=_text(details.get("family")),
        parameter_size=_text(details.get("parameter_size")),
        quantization=_text(details.get("quantization_level")),
        format=_text(details.get("format")),
        context_length=context,
        capabilities=tuple(c for c in capabilities or () if isinstance(c, str)),
        modified_at=_time(body.get("modified_at")),
        raw=body,
    )


def _pull_error(model: str, message: str, url: str) -> LLMResponseError:
    lowered = message.lower()
    if "file does not exist" in lowered or "not found" in lowered:
        return LLMResponseError(
            f"Model {model!r} is not in the Ollama library ({message}); check the name and "
            "tag at https://ollama.com/library",
            404,
            server_message=message,
            method="POST",
            url=url,
        )
    return LLMResponseError(
        f"Ollama could not pull {model!r}: {message}. Run the same pull again to resume",
        None,
        server_message=message,
        method="POST",
        url=url,
    )


async def pull(
    client: LLMClient, model: str, *, insecure: bool = False
) -> AsyncIterator[PullProgress]:
    """Download a model into Ollama, yielding its progress. See :meth:`LLMClient.pull`.

    The probe for the kind of server ends at ``preflight_timeout``; the wait for the pull's
    first answer at ``first_token_timeout``; a silence between progress lines at
    ``idle_timeout``.
    """
    if not model:
        raise LLMUsageError("pull() needs a model name, such as 'llama3.2' or 'qwen3:8b'")
    await _require_ollama(client, "Pulling models")
    config = client.config
    url = config.url_for("/api/pull")
    payload: dict[str, Any] = {"model": model, "stream": True}
    if insecure:
        payload["insecure"] = True
    exchange = await client._send("POST", url, orjson.dumps(payload))
    decoder = NDJSONDecoder(config.max_line_bytes)
    content = exchange.response.content
    try:
        while True:
            try:
                async with asyncio.timeout(config.idle_timeout):
                    data = await content.readany()
            except TimeoutError as exc:
                raise timeout_error(
                    "idle", config.idle_timeout, "POST", url, "run the same pull again to resume"
                ) from exc
            except transport_errors() as exc:
                raise transport_error(exc, config, "POST", url, reading=True) from exc
            for line in decoder.feed(data) if data else decoder.close():
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise LLMStreamError(
                        f"Ollama sent a progress line that is not JSON: {excerpt(line)}",
                        method="POST",
                        url=url,
                    ) from None
                if not isinstance(obj, dict):
                    continue
                error = obj.get("error")
                if error:
                    raise _pull_error(model, str(error), url)
                event = PullProgress(
                    status=str(obj.get("status") or ""),
                    digest=_text(obj.get("digest")),
                    total=_int(obj.get("total")),
                    completed=_int(obj.get("completed")),
                )
                yield event
                if event.done:
                    return
            if not data:
                raise LLMStreamError(
                    f"The pull of {model!r} ended before Ollama said success; run it again to "
                    "resume (Ollama keeps the layers it has)",
                    method="POST",
                    url=url,
                )
    finally:
        exchange.close()
