"""How each example and transcript of the docs runs: the servers it needs, the files it
reads, the replies it gets, and what it must print.

A page names a scenario in a comment above the block (``<!-- example: tools -->``); a block
without one runs in ``"ollama"``: an Ollama stand-in at the default endpoint that echoes, and
the check that the example reached it. Each scenario is a generator: it sets things up, yields
the check of the example's printed output (docs URLs, not the stand-ins'), and cleans up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmtap.testing import Reply, ToolCallSpec
from tests.docs.farm import Farm

Check = Callable[[str], None]


@dataclass
class Run:
    """One example or transcript about to run.

    Attributes:
        farm: Its servers (the default Ollama stand-in already started).
        home: A fresh directory: the working directory and ``$HOME``.
        code: The example's code (or a transcript's text), which a scenario may adapt where
            the docs say how (a port, a cluster address).
        namespace: The page's namespace, shared by its examples in order.
        monkeypatch: For the environment.
        loose: Compare a transcript's figures loosely (every number is a measurement).
        execute: Run the example here (``False``: another test runs it, and the scenario
            checks that it does).
    """

    farm: Farm
    home: Path
    code: str
    namespace: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch
    loose: bool = False
    execute: bool = True
    cleanups: list[Callable[[], None]] = field(default_factory=list)


Scenario = Callable[[Run], Iterator[Check]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(function: Scenario) -> Scenario:
    """Register ``function`` under its name, ``_`` read as ``-``."""
    SCENARIOS[function.__name__.replace("_", "-")] = function
    return function


def reached(run: Run) -> Check:
    """The check that the example talked to a server."""

    def check(out: str) -> None:
        assert run.farm.requests > 0, "the example sent no request"

    return check


# -- the default, and examples that need nothing more ----------------------------------------


@scenario
def ollama(run: Run) -> Iterator[Check]:
    """An Ollama stand-in at the default endpoint, answering ``echo: <question>``."""
    yield reached(run)


@scenario
def offline(run: Run) -> Iterator[Check]:
    """No server is needed (building a config, defining a tool)."""
    yield lambda out: None


@scenario
def library(run: Run) -> Iterator[Check]:
    """The first example: it streams the echo and catches nothing."""

    def check(out: str) -> None:
        assert "echo: Why is the sky blue?" in out
        assert "cannot reach" not in out
        assert "server error" not in out

    yield check


@scenario
def first_chat(run: Run) -> Iterator[Check]:
    """Getting started: one answer printed, from whichever server the example names."""

    def check(out: str) -> None:
        assert "echo: " in out, out
        assert run.farm.requests > 0

    yield check


@scenario
def openai(run: Run) -> Iterator[Check]:
    """An OpenAI-compatible API that wants a key: ``OPENAI_API_KEY`` is set."""
    run.monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-example")
    run.farm.server("https://api.openai.com", api_key="sk-docs-example")
    yield from first_chat(run)


@scenario
def stream_events(run: Run) -> Iterator[Check]:
    """Reasoning, then text: the example dims the one and prints the other, then the figures."""
    run.farm.server().script(Reply(reasoning="Hmm.", text="Cwnd doubles each RTT.", usage=(9, 6)))

    def check(out: str) -> None:
        assert "\x1b[2mHmm.\x1b[0m" in out
        assert "Cwnd doubles each RTT." in out
        assert "stop: 6 tokens" in out

    yield check


@scenario
def responses(run: Run) -> Iterator[Check]:
    """The Responses API: the request goes to ``/v1/responses``."""

    def check(out: str) -> None:
        assert [request.path for request in run.farm.server().chat_requests] == ["/v1/responses"]
        assert "echo: " in out

    yield check


@scenario
def tools(run: Run) -> Iterator[Check]:
    """A model that calls both tools, answers, then names a city as JSON."""
    run.farm.server().script(
        Reply(
            tool_calls=[
                ToolCallSpec("get_weather", {"city": "Paris"}),
                ToolCallSpec("get_time", {"timezone": "Europe/Paris"}),
            ]
        ),
        Reply(text="Sunny and 14:05."),
        Reply(text='{"name": "Paris", "country": "France", "population": 2102650}'),
    )

    def check(out: str) -> None:
        lines = out.splitlines()
        assert sorted(lines[:2]) == [  # the calls run concurrently: either may finish first
            "get_time({'timezone': 'Europe/Paris'}) -> 14:05",
            "get_weather({'city': 'Paris'}) -> sunny, 21 °C in Paris",
        ]
        assert lines[2:] == ["Sunny and 14:05.", "Paris 2102650"]

    yield check


@scenario
def router(run: Run) -> Iterator[Check]:
    """Three Ollama boxes: one of them answers."""

    def check(out: str) -> None:
        assert "echo: Why is the sky blue?" in out
        assert "[answered by http://gpu" in out
        answered = sum(len(server.chat_requests) for server in run.farm.servers.values())
        assert answered == 1

    yield check


@scenario
def hooks(run: Run) -> Iterator[Check]:
    """A call that fails once (a 503), then is answered: the hook prints both."""
    run.farm.server().script(Reply(status=503), Reply(text="Hello!", usage=(5, 2)))
    from llmtap.testing import no_retry_waits

    with no_retry_waits():

        def check(out: str) -> None:
            lines = out.splitlines()
            assert lines[0].startswith("attempt 1 failed (")
            assert lines[0].endswith("next: retry")
            assert lines[1].startswith("http://localhost:11434: ")
            assert "completion_tokens=2" in lines[1]

        yield check


@scenario
def history(run: Run) -> Iterator[Check]:
    """``log_db="~/notes/llm.db"``: two rows in that file, one conversation."""

    def check(out: str) -> None:
        connection = sqlite3.connect(run.home / "notes" / "llm.db")
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute("SELECT * FROM calls ORDER BY id").fetchall()
        finally:
            connection.close()
        assert [row["prompt"] for row in rows] == ["Name a llama fact.", "And another?"]
        assert rows[0]["conversation_id"] == rows[1]["conversation_id"]

    yield check


@scenario
def cache(run: Run) -> Iterator[Check]:
    """The same deterministic question twice: one request, and the printed flags."""

    def check(out: str) -> None:
        assert out == "False True True\n"
        assert len(run.farm.server().chat_requests) == 1
        assert (run.home / ".cache" / "llmtap" / "cache.db").is_file()

    yield check


@scenario
def batch_python(run: Run) -> Iterator[Check]:
    """``tickets.jsonl`` of 20 prompts, over two Ollama boxes."""
    lines = [json.dumps({"prompt": f"ticket {n}"}) for n in range(20)]
    (run.home / "tickets.jsonl").write_text("\n".join(lines) + "\n")

    def check(out: str) -> None:
        answers = (run.home / "answers.jsonl").read_text().splitlines()
        assert len(answers) == 20
        assert "20 answered, 0 failed" in out

    yield check


@scenario
def ray(run: Run) -> Iterator[Check]:
    """Ray's example runs in ``tests/test_ray.py`` (``test_docs_ray_example_runs``), beside the
    module's own Ray instance (starting a second one here would cost 10 s and leave Ray's
    processes to that module's clean-up): here, only that the test is there and runs this
    very block (it finds it by ``ChatProcessor``)."""
    run.execute = False
    source = (Path(__file__).resolve().parents[1] / "test_ray.py").read_text()

    def check(out: str) -> None:
        assert "def test_docs_ray_example_runs(" in source
        assert "ChatProcessor" in run.code

    yield check


@scenario
def structlog_recipe(run: Run) -> Iterator[Check]:
    """The recipe's handler writes to stderr (captured here); an llmtap event then renders as
    JSON with its fields as keys. The handler and level are taken off afterwards."""
    from llmtap._log import get_logger

    logger = logging.getLogger("llmtap")
    handlers, level = list(logger.handlers), logger.level
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):

        def check(out: str) -> None:
            get_logger().warning("llm_retry", attempt=1, url="http://x")
            assert json.loads(stderr.getvalue()) == {
                "event": "llm_retry",
                "level": "warning",
                "attempt": 1,
                "url": "http://x",
            }

        try:
            yield check
        finally:
            logger.handlers[:] = handlers
            logger.setLevel(level)


@scenario
def otel_line(run: Run) -> Iterator[Check]:
    """``llmtap.otel.instrument()``: every call's hooks now include llmtap.otel's (undone
    afterwards)."""
    import llmtap.otel
    from llmtap._hooks import installed

    def check(out: str) -> None:
        assert installed() is not None

    try:
        yield check
    finally:
        llmtap.otel.uninstrument()
    assert installed() is None


@scenario
def prometheus(run: Run) -> Iterator[Check]:
    """The metrics are served (here on a free port rather than 9100, which may be taken)
    with the router's endpoints up; the client and the router are closed afterwards."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run.code = run.code.replace("start_http_server(9100)", f"start_http_server({port})")

    def check(out: str) -> None:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = run.farm.unrewrite(answer.read().decode())
        assert 'llmtap_endpoint_up{endpoint="http://gpu1:11434"} 1.0' in text
        assert 'llmtap_endpoint_up{endpoint="http://gpu2:11434"} 1.0' in text

    try:
        yield check
    finally:

        async def close() -> None:
            await run.namespace["client"].close()
            await run.namespace["router"].close()

        asyncio.run(close())


@scenario
def pytest_example(run: Run) -> Iterator[Check]:
    """A test of the reader's own: each ``test_*`` coroutine function it defines is run, and
    must pass."""

    def check(out: str) -> None:
        tests = [value for name, value in run.namespace.items() if name.startswith("test_")]
        assert tests, "the example defines no test"
        for test in tests:
            asyncio.run(test())

    yield check


# -- transcripts -----------------------------------------------------------------------------


@scenario
def loose(run: Run) -> Iterator[Check]:
    """A transcript of measurements (``llmtap bench``): its figures are compared loosely."""
    run.loose = True
    yield lambda out: None


@scenario
def chat_tools(run: Run) -> Iterator[Check]:
    """``--tools weather_tools.py``: the module, and a model that calls its tool once."""
    (run.home / "weather_tools.py").write_text(
        "import llmtap\n\n\n@llmtap.tool\n"
        "def get_weather(city: str) -> str:\n"
        '    """The weather in a city."""\n'
        '    return f"sunny in {city}"\n'
    )
    run.farm.server().script(
        Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"})]),
        Reply(text="It is sunny in Paris."),
    )
    yield lambda out: None


@scenario
def models_table(run: Run) -> Iterator[Check]:
    """An Ollama with two models, one of them loaded."""
    server = run.farm.server()
    server.models = ["llama3.2:latest", "qwen3:8b"]
    server.loaded_models = ["llama3.2:latest"]
    yield lambda out: None


@scenario
def batch_cli(run: Run) -> Iterator[Check]:
    """``tickets.jsonl`` of three prompts."""
    lines = [json.dumps({"custom_id": f"t{n}", "prompt": f"ticket {n}"}) for n in range(1, 4)]
    (run.home / "tickets.jsonl").write_text("\n".join(lines) + "\n")
    yield lambda out: None


@scenario
def truncation(run: Run) -> Iterator[Check]:
    """An Ollama running qwen3 with a 4096-token context: the first prompt fills it (4096
    tokens), the second, with ``num_ctx=16384``, does not."""
    server = run.farm.server()
    server.loaded_models = ["qwen3:latest"]
    server.context_length = 4096
    server.script(Reply(text="The contract says...", usage=(4096, 5)))
    server.script(Reply(text="The contract says...", usage=(5210, 5)))

    def check(out: str) -> None:
        assert out.splitlines() == [
            "warning: The prompt filled the whole context (4096 of 4096 tokens): Ollama "
            "dropped the oldest messages to fit. Pass num_ctx=<larger> to keep them",
            "()",
        ]
        assert server.chat_requests[1].json["options"] == {"num_ctx": 16384}

    yield check


@scenario
def tls(run: Run) -> Iterator[Check]:
    """The files the example names, in the working directory (building the config and the
    client reads no certificate: the first request does)."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (run.home / name).write_text("-----BEGIN CERTIFICATE-----\n")
    yield lambda out: None


@scenario
def llama_cpp_python(run: Run) -> Iterator[Check]:
    """llama-cpp-python's server on its port, 8000 (a llama.cpp stand-in: one model, any
    name accepted): every question answered, one at a time."""
    server = run.farm.server("http://localhost:8000", kind="llamacpp")

    def check(out: str) -> None:
        assert len(server.chat_requests) == 3
        assert out.count("stop echo: Summarise chapter") == 3

    yield check


@scenario
def thinking(run: Run) -> Iterator[Check]:
    """A model that thinks aloud before it answers (as ``llmtap serve-test --think``): one
    line of reasoning, then the echo."""
    from llmtap.testing import RecordedRequest, echo_reply

    def think(request: RecordedRequest) -> Reply:
        reply = echo_reply(request)
        return dataclasses.replace(
            reply, reasoning=f"The user said: {reply.text.removeprefix('echo: ')}"
        )

    run.farm.server().fallback = think
    yield lambda out: None


@scenario
def logs(run: Run) -> Iterator[Check]:
    """An empty home: the log starts with the transcript's first call."""
    yield lambda out: None
