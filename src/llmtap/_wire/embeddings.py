"""Embeddings requests and answers: Ollama's ``/api/embed`` and OpenAI's ``/v1/embeddings``.
No I/O here."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from llmtap._errors import LLMResponseError

__all__ = ["EmbeddingsRequest"]


class EmbeddingsRequest:
    """One embeddings request for a batch of texts, and how its answer is read.

    Args:
        url: Where it goes (``/api/embed`` for Ollama's native API, else
            ``/v1/embeddings``).
        native: Whether it is Ollama's native API.
        model: The embedding model.
        texts: The batch.
        params: Passed through into the body (``dimensions``, ``truncate``, ...).
    """

    __slots__ = ("body", "count", "model", "native", "stream", "url")

    def __init__(
        self, url: str, *, native: bool, model: str, texts: Sequence[str], params: Mapping[str, Any]
    ) -> None:
        self.url = url
        self.native = native
        self.model = model
        self.count = len(texts)
        self.stream = False
        self.body = orjson.dumps({"model": model, "input": list(texts), **params})

    def vectors(self, body: dict[str, Any]) -> list[list[float]]:
        """The vectors of the answer, one per text, in order.

        Raises:
            LLMResponseError: The answer does not hold one vector per text.
        """
        if self.native:
            vectors = body.get("embeddings")
        else:
            data = body.get("data")
            vectors = None
            if isinstance(data, list):
                ordered = sorted(data, key=lambda item: item.get("index", 0))
                vectors = [_vector(item.get("embedding"), self.url) for item in ordered]
        if not isinstance(vectors, list) or len(vectors) != self.count:
            got = len(vectors) if isinstance(vectors, list) else "no"
            raise LLMResponseError(
                f"The embeddings answer has {got} vectors for {self.count} texts; is the "
                "model an embedding model?",
                200,
                method="POST",
                url=self.url,
            )
        return [_vector(vector, self.url) for vector in vectors]


def _vector(value: Any, url: str) -> list[float]:
    if isinstance(value, str):  # encoding_format="base64": little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list):
        return [float(x) for x in value]
    raise LLMResponseError(
        f"An embedding is neither a list nor base64: {type(value).__name__}",
        200,
        method="POST",
        url=url,
    )
