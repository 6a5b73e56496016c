"""The tiny model generator: deterministic, and the metadata llama.cpp's loader needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.realserver.conftest import MODEL_SEED, require

if TYPE_CHECKING:
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver


def _write(path: Path, seed: int) -> bytes:
    require("gguf")
    from tests.realserver.tinymodel import write_tiny_model

    write_tiny_model(path, seed=seed)
    return path.read_bytes()


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    """Two files written from one seed are byte for byte the same."""
    first = _write(tmp_path / "a.gguf", MODEL_SEED)
    assert _write(tmp_path / "b.gguf", MODEL_SEED) == first


def test_another_seed_writes_other_weights_of_the_same_size(tmp_path: Path) -> None:
    """A different seed changes the weights but not the size (the vocabulary is fixed)."""
    first = _write(tmp_path / "a.gguf", MODEL_SEED)
    second = _write(tmp_path / "b.gguf", MODEL_SEED + 1)
    assert (len(second), second == first) == (len(first), False)


def test_the_file_declares_a_chatml_llama_model(tiny_model: TinyModel) -> None:
    """The metadata is what llama.cpp needs: llama architecture, 512-token context, a
    SentencePiece-style vocabulary with the 256 byte tokens, <|im_end|> as end token, no
    BOS/EOS added to prompts."""
    import gguf

    reader = gguf.GGUFReader(tiny_model.path)
    fields = {
        key: reader.fields[key].contents()
        for key in (
            "general.architecture",
            "llama.context_length",
            "llama.block_count",
            "tokenizer.ggml.model",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
        )
    }
    assert fields == {
        "general.architecture": "llama",
        "llama.context_length": 512,
        "llama.block_count": 2,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.eos_token_id": tiny_model.eos_token_id,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": False,
    }
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[tiny_model.eos_token_id] == "<|im_end|>"
    assert [token for token in tokens if token.startswith("<0x")] == [
        f"<0x{byte:02X}>" for byte in range(256)
    ]


def test_the_tool_call_variant_declares_its_template_and_its_markers(
    tiny_model: TinyModel, tiny_tool_model: TinyModel
) -> None:
    """The tool-call variant carries TOOL_CHAT_TEMPLATE and the characters of its call
    markers (``<function=NAME>``) as tokens; the plain model has neither."""
    import gguf

    from tests.realserver.tinymodel import CHAT_TEMPLATE, TOOL_CHAT_TEMPLATE

    found = []
    for model in (tiny_model, tiny_tool_model):
        reader = gguf.GGUFReader(model.path)
        tokens = set(reader.fields["tokenizer.ggml.tokens"].contents())
        template = reader.fields["tokenizer.chat_template"].contents()
        found.append((template, sorted(tokens & set("<>=/"))))
    assert found == [(CHAT_TEMPLATE, []), (TOOL_CHAT_TEMPLATE, ["/", "<", "=", ">"])]
