"""``llmtap models`` run as a subprocess, as a table and as JSON, on Ollama and elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable

import pexpect
import pytest

from llmtap.testing import TestServer
from tests.cli.conftest import ANSI, CLIResult, Runner, assert_clean_error
from tests.conftest import SilentServer


def _table(result: CLIResult) -> list[str]:
    """The table's lines without trailing blanks; the rule under the header is checked."""
    lines = [line.rstrip() for line in result.out.splitlines()]
    assert set(lines[1]) == {"─"}
    return [lines[0], *lines[2:]]


async def test_ollama_table_has_sizes_parameters_and_loaded(cli: Runner) -> None:
    """On Ollama: name, size, parameters, quantization, context (loaded ones), modified, and
    whether each model is loaded now (/api/ps)."""
    async with TestServer(
        dialect="ollama", models=["llama3.2:latest", "qwen3:8b"], loaded_models=["llama3.2:latest"]
    ) as server:
        result = await cli("models", "--endpoint", server.url)
    assert result.code == 0
    assert _table(result) == [
        "NAME                SIZE   PARAMS   QUANT    CONTEXT   MODIFIED     LOADED",
        "llama3.2:latest   1.4 GB     3.2B   Q4_K_M      4096   2025-06-01   yes",
        "qwen3:8b          3.1 GB     3.2B   Q4_K_M             2025-06-01   -",
    ]


async def test_ollama_json_lists_objects(cli: Runner) -> None:
    """--json prints a list of objects with name, size, loaded and the rest."""
    async with TestServer(
        dialect="ollama", models=["llama3.2:latest", "qwen3:8b"], loaded_models=["qwen3:8b"]
    ) as server:
        result = await cli("models", "--endpoint", server.url, "--json")
    assert result.code == 0
    models = json.loads(result.out)
    assert [(m["name"], m["loaded"], m["context_length"]) for m in models] == [
        ("llama3.2:latest", False, None),
        ("qwen3:8b", True, 4096),
    ]
    first = models[0]
    assert (first["size"], first["parameter_size"], first["quantization"]) == (
        1_387_414_370,
        "3.2B",
        "Q4_K_M",
    )
    assert (first["family"], first["format"], first["modified_at"]) == (
        "llama",
        "gguf",
        "2025-06-01T12:00:00.123456Z",
    )


async def test_vllm_table_has_fewer_columns(cli: Runner) -> None:
    """On vLLM (/v1/models): name, context length, owner; served models are loaded."""
    async with TestServer(dialect="vllm") as server:
        result = await cli("models", "--endpoint", server.url)
    assert result.code == 0
    assert _table(result) == [
        "NAME                CONTEXT   OWNER   LOADED",
        "facebook/opt-125m      4096   vllm    yes",
    ]


async def test_openai_json_says_loaded_is_unknown(cli: Runner) -> None:
    """On an OpenAI-style API nothing says what is loaded: ``loaded`` is null."""
    async with TestServer(dialect="openai", models=["gpt-4o-mini", "gpt-4o"]) as server:
        result = await cli("models", "--endpoint", server.url, "--json")
    assert result.code == 0
    models = json.loads(result.out)
    assert [(m["name"], m["owned_by"], m["loaded"], m["size"]) for m in models] == [
        ("gpt-4o-mini", "openai", None, None),
        ("gpt-4o", "openai", None, None),
    ]


async def test_llamacpp_json_reads_its_meta(cli: Runner) -> None:
    """On llama.cpp the listing's meta gives size, parameter count, context and the weights'
    type (its ``ftype``, as the quantization)."""
    async with TestServer(dialect="llamacpp") as server:
        result = await cli("models", "--endpoint", server.url, "--json")
    [model] = json.loads(result.out)
    assert (model["name"], model["size"], model["parameter_size"], model["context_length"]) == (
        "tiny",
        806_912,
        "201.7K",
        4096,
    )
    assert (model["format"], model["loaded"], model["quantization"]) == ("gguf", True, "all F32")


async def test_api_key_is_sent_and_refusal_exits_5(cli: Runner) -> None:
    """--api-key is sent; without it a protected server's refusal exits with code 5."""
    async with TestServer(dialect="openai", api_key="sk-test") as server:
        refused = await cli("models", "--endpoint", server.url)
        accepted = await cli("models", "--endpoint", server.url, "--api-key", "sk-test")
    assert refused.code == 5
    assert refused.err == (
        "error: The server refused the credentials (401: Incorrect API key provided. You can "
        "find your API key at https://platform.openai.com/account/api-keys.). Pass a valid "
        "key with --api-key KEY (or set LLMTAP_API_KEY)\n"
    )
    assert accepted.code == 0
    assert accepted.out.splitlines()[2].rstrip() == "gpt-4o-mini   openai"


async def test_loading_server_exits_1(cli: Runner) -> None:
    """A llama.cpp server still loading its model: exit 1 and "try again"."""
    async with TestServer(dialect="llamacpp", loading=True) as server:
        result = await cli("models", "--endpoint", server.url)
    assert result.code == 1
    assert result.err == (
        f"error: The server at {server.url} is loading its model; it is not down. Try again "
        "in a few seconds\n"
    )
    assert_clean_error(result)


async def test_server_that_never_answers_ends_at_preflight_timeout(
    cli: Runner, silent_server: SilentServer
) -> None:
    """A server that accepts the connection and never answers: `models` gives up after
    preflight_timeout with exit 3, instead of hanging."""
    result = await cli(
        "models", "-e", silent_server.url, env={"LLMTAP_PREFLIGHT_TIMEOUT": "0.5"}, give_up_after=30
    )
    assert result.code == 3
    assert result.err == (
        f"error: No complete answer from {silent_server.url} to GET /api/tags within "
        "preflight_timeout (0.5 s; LLMTAP_PREFLIGHT_TIMEOUT); the server may be hung or "
        "overloaded, or the address may be wrong\n"
    )
    assert_clean_error(result)


_LONG = "hf.co/bartowski/Qwen2.5-Coder-32B-Instruct-GGUF:Q4_K_M"


async def test_long_name_in_a_pipe_keeps_every_column_whole(cli: Runner) -> None:
    """Through a pipe the table is as wide as it needs: a long name and every figure whole,
    one line per model."""
    async with TestServer(
        dialect="ollama", models=[_LONG, "llama3.2:latest"], loaded_models=[_LONG]
    ) as server:
        result = await cli("models", "--endpoint", server.url)
    assert result.code == 0
    assert _table(result) == [
        f"{'NAME':<{len(_LONG)}}     SIZE   PARAMS   QUANT    CONTEXT   MODIFIED     LOADED",
        f"{_LONG}   2.7 GB     3.2B   Q4_K_M      4096   2025-06-01   yes",
        f"{'llama3.2:latest':<{len(_LONG)}}   1.4 GB     3.2B   Q4_K_M             2025-06-01   -",
    ]


@pytest.mark.parametrize("columns", ["100", "120"])
async def test_long_name_on_a_terminal_folds_and_figures_stay_whole(
    terminal: Callable[..., pexpect.spawn], columns: str
) -> None:
    """On a terminal narrower than the table, the NAME column folds the long name onto a
    second line; no figure is cut to "…"."""
    async with TestServer(
        dialect="ollama", models=[_LONG, "llama3.2:latest"], loaded_models=[_LONG]
    ) as server:
        child = terminal("models", "--endpoint", server.url, env={"COLUMNS": columns})
        await child.expect(pexpect.EOF, async_=True)
        child.close()
    lines = [line.rstrip() for line in ANSI.sub("", child.before).splitlines()]
    rows = [line.split() for line in lines if "2025-06-01" in line]
    assert child.exitstatus == 0
    assert "…" not in child.before
    assert [row[1:] for row in rows] == [
        ["2.7", "GB", "3.2B", "Q4_K_M", "4096", "2025-06-01", "yes"],
        ["1.4", "GB", "3.2B", "Q4_K_M", "2025-06-01", "-"],
    ]
    first = next(i for i, line in enumerate(lines) if "2.7 GB" in line)
    second = next(i for i, line in enumerate(lines) if "1.4 GB" in line)
    assert "".join(line.split()[0] for line in lines[first:second]) == _LONG
    assert max(len(line) for line in lines) <= int(columns)
