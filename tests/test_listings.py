"""Reading server listings (pure): kinds, model names, Ollama's name rules."""

from __future__ import annotations

import pytest

from llmtap._wire.listings import (
    canonical_ollama_name,
    match_model,
    read_model_listing,
    read_ollama_tags,
)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("qwen3", "qwen3:latest"),
        ("qwen3:8b", "qwen3:8b"),
        ("library/qwen3", "qwen3:latest"),
        ("registry.ollama.ai/library/qwen3:8b", "qwen3:8b"),
        ("hf.co/org/model", "hf.co/org/model:latest"),
        ("host:5000/ns/model", "host:5000/ns/model:latest"),
    ],
)
def test_ollama_names_resolve_like_ollama(name: str, canonical: str) -> None:
    """A bare name means :latest; the default registry and namespace are dropped."""
    assert canonical_ollama_name(name) == canonical


def test_ollama_v1_models_with_null_data() -> None:
    """Ollama's /v1/models says "data": null when no model is pulled."""
    assert read_model_listing({"object": "list", "data": None}) == ("openai-compatible", [], {})


def test_llamacpp_listing_is_recognised_with_aliases() -> None:
    """llama.cpp's combined listing (models + data, owned_by llamacpp) and its aliases."""
    body = {
        "models": [{"name": "tiny.gguf", "model": "tiny.gguf"}],
        "object": "list",
        "data": [{"id": "tiny.gguf", "aliases": ["tiny"], "owned_by": "llamacpp"}],
    }
    kind, ids, aliases = read_model_listing(body)
    assert (kind, ids, aliases) == ("llama.cpp", ["tiny.gguf"], {"tiny": "tiny.gguf"})
    assert match_model("tiny", ids, aliases) == "tiny.gguf"
    assert match_model("other", ids, aliases) is None


def test_vllm_listing_is_recognised() -> None:
    """owned_by vllm marks a vLLM server."""
    body = {"object": "list", "data": [{"id": "Qwen/Qwen3-8B", "owned_by": "vllm"}]}
    assert read_model_listing(body)[0] == "vllm"


def test_listing_that_is_not_a_listing_raises_value_error() -> None:
    """A body without a list is not taken for an empty server."""
    with pytest.raises(ValueError, match="not a list"):
        read_model_listing({"data": "nope"})
    with pytest.raises(ValueError, match="not a JSON object"):
        read_model_listing(["a"])


def test_ollama_tags_names() -> None:
    """/api/tags entries give their names; odd entries are skipped."""
    body = {"models": [{"name": "a:latest"}, {"model": "b:1b"}, "junk", {"size": 1}]}
    assert read_ollama_tags(body) == ["a:latest", "b:1b"]
    assert read_ollama_tags({"models": None}) == []
