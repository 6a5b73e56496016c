"""Preflight: which kind of server this is, which models it has, which one to use.

Asked through the endpoint's :class:`~llmtap._probe.Probe`, within one ``preflight_timeout``
for the whole check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from llmtap._config import LLMConfig
from llmtap._errors import LLMModelError, scrub
from llmtap._probe import Probe
from llmtap._results import PreflightReport
from llmtap._wire.listings import match_model, ollama_match

__all__ = ["run_preflight"]


async def run_preflight(probe: Probe, config: LLMConfig, model: str) -> PreflightReport:
    """Check the server at ``config.endpoint`` for ``model`` (empty: its only model).

    Raises:
        LLMConnectionError: Nothing answers (``LLMTimeoutError`` past ``preflight_timeout``).
        LLMResponseError: The server refused (auth), is loading, or has no LLM API there.
        LLMModelError: The model is not on the server, or none is set and it has several.
    """
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + config.preflight_timeout
    server = await probe.server(deadline=deadline)
    listing = await probe.listing(server, deadline=deadline)
    names = listing.names
    warnings: list[str] = []
    if server.kind == "ollama":
        resolved = _pick(
            config, model, names, lambda w: ollama_match(w, names), "run `ollama pull {}`"
        )
    elif (
        server.kind == "llama.cpp"
        and len(names) == 1
        and model
        and match_model(model, names, dict(listing.aliases)) is None
    ):
        warnings.append(
            f"Model {model!r} is not listed; this llama.cpp server serves only {names[0]!r} "
            "and answers with it whatever name is asked"
        )
        resolved = model
    else:
        resolved = _pick(
            config,
            model,
            names,
            lambda w: match_model(w, names, dict(listing.aliases)),
            "start the server with that model, or pick one that is listed",
        )
    return PreflightReport(
        server=server.kind,
        version=server.version,
        models=tuple(names),
        model=resolved,
        latency=time.monotonic() - started,
        warnings=tuple(warnings),
        endpoint=scrub(config.endpoint),
    )


def _pick(
    config: LLMConfig,
    model: str,
    models: list[str],
    find: Callable[[str], str | None],
    how_to_get: str,
) -> str:
    """The model to use: the configured one as the server names it, or the only one."""
    endpoint = config.endpoint
    listing = ", ".join(models) if models else "(none)"
    if not model:
        if len(models) == 1:
            return models[0]
        if not models:
            raise LLMModelError(
                f"The server at {endpoint} has no models. With Ollama, `ollama pull <model>` first",
                404,
                method="GET",
                url=endpoint,
            )
        raise LLMModelError(
            f"No model is set and the server has several: {listing}. Set "
            "LLMConfig(model=...) or LLMTAP_MODEL to one of them",
            None,
            available=models,
            method="GET",
            url=endpoint,
        )
    found = find(model)
    if found is None:
        raise LLMModelError(
            f"Model {model!r} is not on the server; {how_to_get.format(model)}. "
            f"Available: {listing}",
            404,
            model=model,
            available=models,
            method="GET",
            url=endpoint,
        )
    return found
