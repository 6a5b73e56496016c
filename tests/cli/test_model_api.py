"""The library calls behind the commands: list_models, loaded_models, show, pull; and the
test server's /api/pull and reply fallback that the command tests rely on."""

from __future__ import annotations

import aiohttp
import pytest

from llmtap import LLMResponseError, LLMUsageError, Message
from llmtap._errors import LLMConnectionError
from llmtap._results import ModelInfo, PullProgress
from llmtap.testing import RecordedRequest, Reply, TestServer, echo_reply
from tests.conftest import make_client


async def test_list_models_joins_tags_and_ps() -> None:
    """On Ollama, /api/tags gives the models and /api/ps which are loaded (and their context)."""
    async with TestServer(
        dialect="ollama", models=["a:latest", "b:7b"], loaded_models=["b:7b"], context_length=8192
    ) as server:
        async with make_client(server.url) as client:
            models = await client.list_models()
    assert [(m.name, m.loaded, m.context_length) for m in models] == [
        ("a:latest", False, None),
        ("b:7b", True, 8192),
    ]
    assert models[1].size_vram == models[1].size
    assert models[1].expires_at is not None
    assert [r.path for r in server.requests] == ["/api/tags", "/api/ps"]


async def test_list_models_on_an_openai_server() -> None:
    """Elsewhere /v1/models gives names and owners; nothing says what is loaded."""
    async with TestServer(dialect="openai", models=["gpt-4o"]) as server:
        async with make_client(server.url) as client:
            models = await client.list_models()
    assert models == [ModelInfo(name="gpt-4o", owned_by="openai")]


async def test_list_models_unreachable_raises_connection_error(closed_port_url: str) -> None:
    """Nothing listening: LLMConnectionError."""
    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMConnectionError):
            await client.list_models()


async def test_loaded_models_on_ollama() -> None:
    """loaded_models() lists /api/ps."""
    async with TestServer(dialect="ollama", loaded_models=["llama3.2:latest"]) as server:
        async with make_client(server.url) as client:
            loaded = await client.loaded_models()
    assert [(m.name, m.loaded, m.context_length) for m in loaded] == [
        ("llama3.2:latest", True, 4096)
    ]


async def test_loaded_models_elsewhere_is_a_usage_error() -> None:
    """loaded_models() on llama.cpp says it is Ollama's, and what to do instead."""
    async with TestServer(dialect="llamacpp") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMUsageError) as info:
                await client.loaded_models()
    assert str(info.value) == (
        f"Listing loaded models works with Ollama only, and {server.url} is a llama.cpp "
        "server; llama-server loads one GGUF file: download it and start llama-server with "
        "-m FILE (or -hf REPO)"
    )


async def test_show_reads_details() -> None:
    """show() gives family, parameters, quantization, context length and capabilities."""
    async with TestServer(dialect="ollama", context_length=8192) as server:
        async with make_client(server.url) as client:
            details = await client.show("llama3.2")
    assert (details.name, details.family, details.parameter_size, details.quantization) == (
        "llama3.2",
        "llama",
        "3.2B",
        "Q4_K_M",
    )
    assert (details.context_length, details.capabilities) == (8192, ("completion", "tools"))
    assert details.raw["license"] == "scripted test model"


async def test_show_missing_model_says_pull() -> None:
    """show() of a model the server lacks: a 404 that says `ollama pull`."""
    async with TestServer(dialect="ollama") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await client.show("qwen3")
    assert (info.value.status_code, info.value.message) == (
        404,
        "Model 'qwen3' is not on the server; run `ollama pull qwen3`",
    )


async def test_pull_yields_every_progress_line() -> None:
    """pull() yields the stages and the per-layer progress, ending with success."""
    async with TestServer(dialect="ollama") as server:
        async with make_client(server.url) as client:
            events = [event async for event in client.pull("qwen3")]
    assert events[0] == PullProgress("pulling manifest")
    assert events[-1] == PullProgress("success")
    assert events[-1].done
    layer = [e for e in events if e.digest == events[1].digest]
    total = layer[0].total
    assert total == 1_139_675_219
    assert [e.completed for e in layer] == [0, total // 4, total // 2, total * 3 // 4, total]
    assert (layer[0].fraction, layer[-1].fraction) == (0.0, 1.0)
    assert server.requests[-1].json == {"model": "qwen3", "stream": True}


async def test_pull_unknown_model_is_a_404() -> None:
    """Ollama's in-stream error for an unknown name becomes a 404 that says where to look."""
    async with TestServer(dialect="ollama", pull_registry=["llama3.2"]) as server:
        async with make_client(server.url) as client:
            seen: list[PullProgress] = []
            with pytest.raises(LLMResponseError) as info:
                async for event in client.pull("nosuch"):
                    seen.append(event)
    assert seen == [PullProgress("pulling manifest")]
    assert info.value.status_code == 404
    assert info.value.server_message == "pull model manifest: file does not exist"


async def test_pull_resumes_from_what_the_server_has() -> None:
    """After a broken pull, the next one starts the layer at the bytes already received."""
    async with TestServer(dialect="ollama", pull_reset_after=3) as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMConnectionError):
                async for _event in client.pull("qwen3"):
                    pass
            server.pull_reset_after = None
            events = [event async for event in client.pull("qwen3")]
    assert (events[1].completed, events[1].total) == (1_139_675_219 // 4, 1_139_675_219)
    assert events[-1].done


async def test_pull_on_vllm_is_a_usage_error() -> None:
    """pull() refuses on a server that cannot pull, before sending anything to pull."""
    async with TestServer(dialect="vllm") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMUsageError):
                async for _event in client.pull("qwen3"):
                    pass
    assert [r.path for r in server.requests] == ["/api/version", "/v1/models"]


async def test_pull_without_stream_answers_once() -> None:
    """The test server's /api/pull with stream false answers one success object."""
    async with TestServer(dialect="ollama") as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/api/version") as response:
                status, body = response.status, await response.json()
            async with session.post(
                server.url + "/api/pull", data=b'{"model": "x", "stream": false}'
            ) as response:
                answer = await response.json()
    assert (status, body) == (200, {"version": "0.33.0"})
    assert answer == {"status": "success"}
    assert "x:latest" in server.models


async def test_fallback_builds_unscripted_replies() -> None:
    """TestServer(fallback=...) answers when no scripted reply is left; echo_reply is the
    default."""

    def shout(request: RecordedRequest) -> Reply:
        reply = echo_reply(request)
        return Reply(text=reply.text.upper())

    async with TestServer(dialect="ollama", fallback=shout) as server:
        server.script(Reply(text="scripted"))
        async with make_client(server.url) as client:
            first = await client.chat([Message.user("hi")])
            second = await client.chat([Message.user("hi")])
    assert (first.text, second.text) == ("scripted", "ECHO: HI")
