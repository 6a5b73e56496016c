"""Model management: what a server has (``list_models``), what is loaded now
(``loaded_models``), details of one model (``show``), and downloads (``pull``).

Each asks through the endpoint's :class:`~llmtap._probe.Probe` (bounded by
``preflight_timeout``); a pull streams Ollama's progress lines through the one read loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from llmtap._errors import LLMUsageError
from llmtap._results import ModelDetails, ModelInfo, PullProgress
from llmtap._upstream import Upstream
from llmtap._wire.chunks import PullLines

__all__ = ["list_models", "loaded_models", "pull", "show"]


async def list_models(upstream: Upstream) -> list[ModelInfo]:
    """The models the server has. See :meth:`LLMClient.list_models`."""
    listing = await upstream.probe().listing(upstream.server)
    return list(listing.models)


async def loaded_models(upstream: Upstream) -> list[ModelInfo]:
    """The models Ollama holds in memory now. See :meth:`LLMClient.loaded_models`."""
    probe = upstream.probe()
    await probe.require_ollama("Listing loaded models", upstream.server)
    return await probe.running()


async def show(upstream: Upstream, model: str) -> ModelDetails:
    """Details of one Ollama model. See :meth:`LLMClient.show`."""
    if not model:
        raise LLMUsageError("show() needs a model name")
    probe = upstream.probe()
    await probe.require_ollama("show()", upstream.server)
    return await probe.show(model)


async def pull(
    upstream: Upstream, model: str, *, insecure: bool = False
) -> AsyncIterator[PullProgress]:
    """Download a model into Ollama, yielding its progress. See :meth:`LLMClient.pull`."""
    if not model:
        raise LLMUsageError("pull() needs a model name, such as 'llama3.2' or 'qwen3:8b'")
    await upstream.probe().require_ollama("Pulling models", upstream.server)
    config = upstream.config
    url = config.url_for("/api/pull")
    payload: dict[str, object] = {"model": model, "stream": True}
    if insecure:
        payload["insecure"] = True
    exchange = await upstream.session.send("POST", url, orjson.dumps(payload))
    lines = exchange.read(PullLines(config.max_line_bytes, "POST", url, model=model))
    try:
        async for event in lines:
            yield event
    finally:
        await lines.aclose()
