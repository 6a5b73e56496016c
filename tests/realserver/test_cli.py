"""The ``llmtap`` command against both real servers (llama-cpp-python's and llama.cpp's own
llama-server), run as a user runs it: a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llmtap import ChatResult, Message
from llmtap._wire.chunks import CUT_BY_NEWER_REQUEST
from tests.realserver.conftest import Served, require
from tests.realserver.llamacpp_server import LlamaCppServer
from tests.realserver.llamaserver import MODEL_ALIAS, LlamaServer, ServerStartError
from tests.realserver.oracle import Oracle
from tests.realserver.serverprocess import ServerProcess

if TYPE_CHECKING:
    from tests.realserver.tinymodel import TinyModel

pytestmark = pytest.mark.realserver

PROMPT = "Tell me about the water."


async def run_llmtap(
    home: Path, *args: str, env: dict[str, str] | None = None, give_up_after: float = 300.0
) -> tuple[int, str, str]:
    """Run ``llmtap ARGS`` with no configuration from the environment or a config file (but
    ``env``), its home (config, log, cache) in ``home``; return its exit code, stdout and
    stderr. A run still going after
    ``give_up_after`` seconds is killed and fails the test."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMTAP_", "OPENAI_", "OLLAMA_", "XDG_"))
    }
    environment.update({"HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from llmtap.cli import main; main()",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), give_up_after)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"llmtap {' '.join(args)} still ran after {give_up_after:g} s"
        ) from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def greedy_answer(served: Served, max_tokens: int) -> str:
    """The library's answer to PROMPT at temperature 0 (greedy, so the same every time),
    read by openai-python too."""
    async with Oracle.around(served.url) as oracle:
        result = await oracle.answer(
            [Message.user(PROMPT)], stream=True, temperature=0.0, max_tokens=max_tokens
        )
    return result.text


async def test_chat_prints_the_answer_the_library_gets(served: Served, tmp_path: Path) -> None:
    """``llmtap chat PROMPT`` with stdout not a terminal prints the answer's text, then a
    newline: the same text the library gets for the same greedy request. The answer is cut at
    --max-tokens, and stderr says so."""
    code, out, err = await run_llmtap(
        tmp_path, "chat", PROMPT, "-e", served.url, "--temperature", "0", "--max-tokens", "12"
    )
    assert (code, out, err) == (
        0,
        await greedy_answer(served, 12) + "\n",
        "[answer cut short: --max-tokens 12 reached]\n",
    )


async def test_chat_json_prints_the_whole_result(served: Served, tmp_path: Path) -> None:
    """``llmtap chat --json`` prints the ChatResult: the text, finish "length" at
    --max-tokens, the model and the kind of server preflight found; and what it prints is
    what openai-python reads from the same answer."""
    async with Oracle.around(served.url) as oracle:
        code, out, _ = await run_llmtap(
            tmp_path,
            "chat",
            PROMPT,
            "--json",
            "-e",
            oracle.tee.url,
            "--temperature",
            "0",
            "--max-tokens",
            "12",
        )
        printed = ChatResult.model_validate_json(out)
        await oracle.agree(printed)
    found = (code, printed.text, printed.finish_reason, printed.model, printed.server)
    expected_text = await greedy_answer(served, 12)
    assert found == (0, expected_text, "length", MODEL_ALIAS, served.kind)


async def test_models_lists_tiny_owned_by_me(llama_server: LlamaServer, tmp_path: Path) -> None:
    """``llmtap models --json`` against llama-cpp-python lists the one model, with the owner
    it gives ("me") and none of the details only Ollama and llama.cpp tell."""
    code, out, _ = await run_llmtap(tmp_path, "models", "--json", "-e", llama_server.url)
    listing = json.loads(out)
    assert code == 0
    assert [(entry["name"], entry["owned_by"], entry["size"]) for entry in listing] == [
        (MODEL_ALIAS, "me", None)
    ]


async def test_models_lists_tiny_with_what_llama_server_tells(
    llamacpp_server: LlamaCppServer, tmp_path: Path
) -> None:
    """``llmtap models`` against llama-server: the one model with what its listing's meta
    tells (the tiny model's size and parameter count, its weights' type as the quantization,
    the context the server runs), owned by "llamacpp", loaded; as JSON, and as the table."""
    code, out, _ = await run_llmtap(tmp_path, "models", "--json", "-e", llamacpp_server.url)
    fields = ("name", "size", "parameter_size", "quantization", "format", "context_length")
    [entry] = json.loads(out)
    assert (code, *(entry[field] for field in fields), entry["owned_by"], entry["loaded"]) == (
        0,
        MODEL_ALIAS,
        1_140_480,
        "285.1K",
        "all F32",
        "gguf",
        512,
        "llamacpp",
        True,
    )
    code, out, _ = await run_llmtap(tmp_path, "models", "-e", llamacpp_server.url)
    assert (code, [line.split() for line in out.splitlines()]) == (
        0,
        [
            ["NAME", "SIZE", "PARAMS", "QUANT", "CONTEXT", "OWNER", "LOADED"],
            ["─" * 62],
            ["tiny", "1.1", "MB", "285.1K", "all", "F32", "512", "llamacpp", "yes"],
        ],
    )


async def test_check_passes_every_step(served: Served, tmp_path: Path) -> None:
    """``llmtap check --json`` passes every step against the real server and exits 0; its
    server step names it (llama-server with its build)."""
    code, out, _ = await run_llmtap(tmp_path, "check", "--json", "-e", served.url)
    report = json.loads(out)
    steps = [(step["step"], step["ok"]) for step in report["steps"]]
    assert (code, report["ok"], report["exit_code"]) == (0, True, 0)
    assert steps == [
        ("reachable", True),
        ("server", True),
        ("auth", True),
        ("model", True),
        ("answer", True),
        ("first_token", True),
    ]
    named = {"llama-cpp-python": "OpenAI-compatible", "llama-server": "llama.cpp b0-unknown"}
    assert report["steps"][1]["detail"] == named[served.name]


def _bench_args(server: ServerProcess, max_tokens: int) -> list[str]:
    return [
        "bench",
        "--json",
        "-e",
        server.url,
        "--concurrency",
        "1,2",
        "--requests",
        "2",
        "--max-tokens",
        str(max_tokens),
    ]


async def test_bench_measures_a_queueing_server_without_errors(
    queueing_server: LlamaServer, tmp_path: Path
) -> None:
    """``llmtap bench`` against llama-cpp-python with --interrupt_requests False: every
    request of every concurrency level is answered, within max_tokens."""
    code, out, _ = await run_llmtap(tmp_path, *_bench_args(queueing_server, 16))
    report = json.loads(out)
    levels: list[dict[str, Any]] = report["levels"]
    assert (code, report["server"], report["model"], report["errors"]) == (
        0,
        "openai-compatible",
        MODEL_ALIAS,
        [],
    )
    assert [(level["concurrency"], level["requests"], level["errors"]) for level in levels] == [
        (1, 2, 0),
        (2, 4, 0),
    ]
    for level in levels:
        assert 0 < level["tokens"] <= level["requests"] * 16


async def test_bench_measures_llama_server_without_errors(
    llamacpp_server: LlamaCppServer, tmp_path: Path
) -> None:
    """``llmtap bench`` against llama-server (four slots: requests run side by side): every
    request of every concurrency level is answered, within max_tokens, and the report names
    the server and the model."""
    code, out, _ = await run_llmtap(tmp_path, *_bench_args(llamacpp_server, 16))
    report = json.loads(out)
    levels: list[dict[str, Any]] = report["levels"]
    assert (code, report["server"], report["model"], report["errors"]) == (
        0,
        "llama.cpp",
        MODEL_ALIAS,
        [],
    )
    assert [(level["concurrency"], level["requests"], level["errors"]) for level in levels] == [
        (1, 2, 0),
        (2, 4, 0),
    ]
    for level in levels:
        assert 0 < level["tokens"] <= level["requests"] * 16


async def test_bench_counts_streams_the_server_cut_as_errors(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    """Against llama-cpp-python's default (a new request cuts the running stream), bench
    counts the cut streams as errors, with the reason, instead of as short answers."""
    code, out, _ = await run_llmtap(tmp_path, *_bench_args(llama_server, 64))
    report = json.loads(out)
    one, two = report["levels"]
    assert (code, one["errors"]) == (0, 0)
    assert two["errors"] >= 1
    causes = {error.rpartition("Cause: ")[2] for error in report["errors"]}
    assert causes == {
        "The stream ended before the answer was complete ([DONE] came before any "
        f"finish_reason; {CUT_BY_NEWER_REQUEST})"
    }


async def test_check_warns_that_llama_server_ignores_a_model_name(
    llamacpp_server: LlamaCppServer, tmp_path: Path
) -> None:
    """``check --model foo`` against llama-server, which serves only ``tiny`` whatever name
    is asked: preflight knows that of llama.cpp, so the model step is a warning with the name
    to pass, the rest passes (the answer comes from tiny), and the exit code is 0 (where
    llama-cpp-python, not known for it, gets exit 4: below)."""
    code, out, _ = await run_llmtap(tmp_path, "check", "-e", llamacpp_server.url, "--model", "foo")
    assert code == 0
    assert out.splitlines()[3:6] == [
        f"! model          Model 'foo' is not listed; this llama.cpp server serves only "
        f"{MODEL_ALIAS!r} and answers with it whatever name is asked",
        f"  fix: pass --model {MODEL_ALIAS} (or leave --model out) to name the model that answers",
        f"✓ model answers  {MODEL_ALIAS} answered a request for foo (max_tokens=1)",
    ]


async def test_check_says_the_server_ignores_a_model_name(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    """``check --model foo`` against llama-cpp-python, which lists only ``tiny`` and answers
    with it whatever name is asked: the model step says so and how to name the model that
    answers; exit 4, as ``chat --model foo`` is refused."""
    code, out, _ = await run_llmtap(tmp_path, "check", "-e", llama_server.url, "--model", "foo")
    assert code == 4
    assert out.splitlines()[3:5] == [
        "✗ model          'foo' is not listed, but the server answered a request for it: it "
        f"serves only {MODEL_ALIAS!r} and answers with it whatever name is asked",
        f"  fix: pass --model {MODEL_ALIAS} (or leave --model out): llmtap asks only for a model "
        "the server lists",
    ]


class _FreezableServer(LlamaServer):
    """A llama-cpp-python server that can be frozen (SIGSTOP) and thawed (SIGCONT). Frozen, it
    is what a hung or swapping server is: the kernel still accepts connections on its port,
    and nothing ever answers."""

    def _signal(self, signum: int) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signum)

    def freeze(self) -> None:
        """Stop the process where it is."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let it run again."""
        self._signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def frozen_server(
    tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_FreezableServer]:
    """A server of its own (the shared ones stay untouched), started, then frozen."""
    require("llama_cpp", "gguf")
    server = _FreezableServer(tiny_model.path, tmp_path_factory.mktemp("frozen") / "server.log")
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.freeze()
    try:
        yield server
    finally:
        server.thaw()
        server.stop()


async def test_models_gives_up_on_a_frozen_server(
    frozen_server: _FreezableServer, tmp_path: Path
) -> None:
    """``llmtap models`` against a frozen llama.cpp server ends at preflight_timeout with exit
    3 instead of hanging."""
    code, out, err = await run_llmtap(
        tmp_path,
        "models",
        "-e",
        frozen_server.url,
        env={"LLMTAP_PREFLIGHT_TIMEOUT": "1"},
        give_up_after=60,
    )
    assert (code, out, err) == (
        3,
        "",
        f"error: No complete answer from {frozen_server.url} to GET /api/tags within "
        "preflight_timeout (1 s; LLMTAP_PREFLIGHT_TIMEOUT); the server may be hung or "
        "overloaded, or the address may be wrong\n",
    )


async def test_pull_gives_up_on_a_frozen_server(
    frozen_server: _FreezableServer, tmp_path: Path
) -> None:
    """``llmtap pull`` against a frozen llama.cpp server ends at preflight_timeout (its probe
    for the kind of server) with exit 3 instead of hanging."""
    code, out, err = await run_llmtap(
        tmp_path,
        "pull",
        "qwen3",
        "-e",
        frozen_server.url,
        env={"LLMTAP_PREFLIGHT_TIMEOUT": "1"},
        give_up_after=60,
    )
    assert (code, out, err) == (
        3,
        "",
        f"error: No complete answer from {frozen_server.url} to GET /api/version "
        "within preflight_timeout (1 s; LLMTAP_PREFLIGHT_TIMEOUT); the server may be "
        "hung or overloaded, or the address may be wrong\n",
    )


async def test_chat_over_the_responses_api_prints_the_same_answer(
    llamacpp_server: LlamaCppServer, tmp_path: Path
) -> None:
    """``llmtap chat --api responses`` against llama-server (which serves /v1/responses)
    prints the answer chat completions give for the same greedy request; `--json` says
    the tokens it was cut at, and the log keeps the request as sent (its ``input``)."""
    common = ("-e", llamacpp_server.url, "--temperature", "0", "--max-tokens", "12")
    code, out, _ = await run_llmtap(tmp_path, "chat", PROMPT, *common)
    code_r, out_r, _ = await run_llmtap(tmp_path, "chat", PROMPT, "--api", "responses", *common)
    assert (code_r, out_r) == (code, out) == (0, out)
    assert out.strip()
    code_j, printed, _ = await run_llmtap(
        tmp_path, "chat", PROMPT, "--api", "responses", "--json", *common
    )
    result = ChatResult.model_validate_json(printed)
    assert (code_j, result.text + "\n", result.usage.completion_tokens) == (0, out, 12)
    code_l, logged, _ = await run_llmtap(tmp_path, "logs", "--json", "-n", "1")
    request = json.loads(logged)[0]["request"]
    assert (code_l, request["input"][0]["content"], request["max_output_tokens"]) == (
        0, PROMPT, 12,
    )  # fmt: skip
