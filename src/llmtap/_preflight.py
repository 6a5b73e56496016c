"""Reading what a server says about itself: which kind it is, which models it has. No I/O here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "PreflightReport",
    "ServerKind",
    "canonical_ollama_name",
    "match_model",
    "read_model_listing",
    "read_ollama_tags",
]

ServerKind = Literal["ollama", "llama.cpp", "vllm", "openai-compatible"]


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
