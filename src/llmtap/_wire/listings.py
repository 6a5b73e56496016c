"""What model listings say: Ollama's ``/api/tags`` and ``/api/ps``, ``GET /v1/models`` from
llama.cpp, vLLM, LM Studio and OpenAI, and how model names match. Read tolerantly: a field a
server does not send is ``None``, never a guess. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from llmtap._results import ModelDetails, ModelInfo, ServerKind

__all__ = [
    "canonical_ollama_name",
    "int_or_none",
    "match_model",
    "ollama_match",
    "read_model_listing",
    "read_ollama_entry",
    "read_ollama_tags",
    "read_openai_listing",
    "read_show",
    "text_or_none",
    "time_or_none",
]

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


def ollama_match(wanted: str, models: list[str]) -> str | None:
    """The listed Ollama model ``wanted`` names (``qwen3`` is ``qwen3:latest``), else ``None``."""
    canonical = canonical_ollama_name(wanted)
    for name in models:
        if canonical_ollama_name(name) == canonical:
            return name
    return None


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def text_or_none(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def int_or_none(value: Any) -> int | None:
    """``value`` if it is an integer (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def time_or_none(value: Any) -> datetime | None:
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
    name = text_or_none(entry.get("name")) or text_or_none(entry.get("model"))
    if name is None:
        return None
    details = entry.get("details")
    details = details if isinstance(details, dict) else {}
    return ModelInfo(
        name=name,
        size=int_or_none(entry.get("size")),
        parameter_size=text_or_none(details.get("parameter_size")),
        quantization=text_or_none(details.get("quantization_level")),
        family=text_or_none(details.get("family")),
        format=text_or_none(details.get("format")),
        digest=text_or_none(entry.get("digest")),
        modified_at=time_or_none(entry.get("modified_at")),
        context_length=int_or_none(entry.get("context_length"))
        or int_or_none(details.get("context_length")),
        size_vram=int_or_none(entry.get("size_vram")),
        expires_at=time_or_none(entry.get("expires_at")),
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
        params = int_or_none(meta.get("n_params"))
        models.append(
            ModelInfo(
                name=entry["id"],
                size=int_or_none(meta.get("size")),
                parameter_size=_count(params) if params else None,
                # llama.cpp names the weights' type (``Q4_K - Medium``, ``all F32``)
                quantization=text_or_none(meta.get("ftype")),
                format="gguf" if kind == "llama.cpp" else None,
                modified_at=time_or_none(entry.get("modified_at")),
                loaded=loaded,
                context_length=int_or_none(meta.get("n_ctx"))
                or int_or_none(entry.get("max_model_len")),
                owned_by=text_or_none(entry.get("owned_by")),
            )
        )
    return kind, models


def read_show(model: str, body: dict[str, Any]) -> ModelDetails:
    """A ``ModelDetails`` from Ollama's ``POST /api/show`` answer for ``model``."""
    details = body.get("details")
    details = details if isinstance(details, dict) else {}
    info = body.get("model_info")
    info = info if isinstance(info, dict) else {}
    context = next(
        (
            int_or_none(value)
            for key, value in info.items()
            if key.endswith(".context_length") and int_or_none(value)
        ),
        None,
    )
    capabilities = body.get("capabilities")
    return ModelDetails(
        name=model,
        family=text_or_none(details.get("family")),
        parameter_size=text_or_none(details.get("parameter_size")),
        quantization=text_or_none(details.get("quantization_level")),
        format=text_or_none(details.get("format")),
        context_length=context,
        capabilities=tuple(c for c in capabilities or () if isinstance(c, str)),
        modified_at=time_or_none(body.get("modified_at")),
        raw=body,
    )
