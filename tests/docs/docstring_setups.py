"""What the docstrings' examples assume beyond their module's names and ``llmtap.__all__``
(``tests/docs/test_docstrings.py`` runs them).

Every docstring gets :func:`default`: ``client`` and ``router`` opened on the stand-ins. A
docstring that needs more has a setup in :data:`SETUPS` under its dotted name: a generator
that prepares what its examples use (replies, files, variables, patched functions), yields
while they run, and undoes what they changed; and maybe :data:`MARKS` and :data:`FIXTURES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmtap import LLMClient, Router
from llmtap.testing import Reply, ToolCallSpec
from tests import test_ray
from tests.docs.farm import DEFAULT, Farm

#: The two Ollama boxes of the examples (``router``, batches, ``LLMTAP_ENDPOINTS``).
BOXES = ("http://gpu1:11434", "http://gpu2:11434")


@dataclass
class Context:
    """One docstring about to run.

    Attributes:
        farm: Its servers (the default Ollama stand-in already at ``LLMTAP_ENDPOINT``).
        home: A fresh directory: the working directory and ``$HOME``.
        globs: The namespace its examples run in.
        monkeypatch: For the environment and patched functions.
        run: Runs a coroutine to its end on the examples' event loop.
        opened: Clients and routers a setup opened, which the test closes afterwards (as it
            closes those the examples leave in ``globs``).
    """

    farm: Farm
    home: Path
    globs: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch
    run: Callable[[Coroutine[Any, Any, Any]], Any]
    opened: list[LLMClient | Router] = field(default_factory=list)

    def boxes(self) -> list[str]:
        """The stand-ins' URLs for :data:`BOXES`."""
        return [self.farm.server(url).url for url in BOXES]


Setup = Callable[[Context], Iterator[None]]
SETUPS: dict[str, Setup] = {}
#: Marks of a docstring's test (the warnings a library it uses gives), by its dotted name.
MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "llmtap.ray.ChatProcessor": [
        *test_ray.pytestmark,
        # its one row is one block, which leaves the pool's second actor idle: Ray says so
        pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning"),
    ]
}
#: Fixtures a docstring's test asks for before it moves ``$HOME``, by its dotted name.
FIXTURES: dict[str, list[str]] = {
    # tests/test_ray.py's local Ray (Ray keeps in $HOME the token that a later ray.init in
    # this process must find)
    "llmtap.ray.ChatProcessor": ["ray"],
}


def setup(*names: str) -> Callable[[Setup], Setup]:
    """Register the decorated setup for the docstrings ``names``."""

    def register(function: Setup) -> Setup:
        for name in names:
            SETUPS[name] = function
        return function

    return register


def replies(*replies: Reply, urls: tuple[str, ...] = (DEFAULT,)) -> Setup:
    """A setup that scripts ``replies`` on the stand-in of each of ``urls``."""

    def script(ctx: Context) -> Iterator[None]:
        for url in urls:
            ctx.farm.server(url).script(*replies)
        yield

    return script


def default(ctx: Context) -> Iterator[None]:
    """``client`` (``LLMClient(model="qwen3")`` at ``LLMTAP_ENDPOINT``) and ``router`` (a
    ``Router`` of the two boxes, model ``qwen3``)."""

    async def open_both() -> tuple[LLMClient, Router]:
        return LLMClient(model="qwen3"), Router(ctx.boxes(), model="qwen3")

    client, router = ctx.run(open_both())
    ctx.opened += [client, router]
    ctx.globs.update(client=client, router=router)
    yield


SETUPS.update(
    {
        "llmtap._client.LLMClient": replies(Reply(text="Hello!", usage=(9, 3))),
        "llmtap._client.LLMClient.parse": replies(
            Reply(text='{"name": "Paris", "population": 2102650}')
        ),
        "llmtap._client.LLMClient.run_tools": replies(
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"})]),
            Reply(text="It is sunny in Paris."),
        ),
        "llmtap._router.router.Router": replies(
            Reply(text="Hello!"), urls=(*BOXES, "http://gpu3:11434")
        ),
        "llmtap._stream.ChatStream": replies(Reply(text="Hello! How can I help?", usage=(9, 6))),
        "llmtap._sync.SyncClient": replies(Reply(text="Hello!"), Reply(text="1, 2, 3, 4, 5")),
        "llmtap.ray.ChatProcessor": replies(  # and Ray runs: see FIXTURES
            Reply(text="Rayleigh scattering: blue light scatters the most."), urls=BOXES[:1]
        ),
    }
)


@setup("llmtap._batch.runner.run", "llmtap.batch")
def batch(ctx: Context) -> Iterator[None]:
    """``in.jsonl``: three prompts."""
    lines = [json.dumps({"custom_id": f"q{n}", "prompt": f"question {n}"}) for n in (1, 2, 3)]
    (ctx.home / "in.jsonl").write_text("\n".join(lines) + "\n")
    yield


@setup("llmtap._router.router.Router.from_env")
def from_env(ctx: Context) -> Iterator[None]:
    """``LLMTAP_ENDPOINTS``: the two boxes."""
    ctx.monkeypatch.setenv("LLMTAP_ENDPOINTS", ",".join(ctx.boxes()))
    yield


@setup("llmtap.otel.instrument")
def otel(ctx: Context) -> Iterator[None]:
    """``llmtap.otel.uninstrument()`` afterwards (``instrument()`` changes every client of
    the process)."""
    import llmtap.otel

    try:
        yield
    finally:
        llmtap.otel.uninstrument()


@setup("llmtap.prometheus.hooks")
def prometheus(ctx: Context) -> Iterator[None]:
    """A fresh registry in place of prometheus_client's default one (which other tests use),
    served by ``start_http_server`` on a free loopback port rather than 9100: afterwards its
    page must show both boxes up."""
    import urllib.request

    import prometheus_client

    import llmtap.prometheus

    registry = prometheus_client.CollectorRegistry()
    serve = prometheus_client.start_http_server
    served: list[Any] = []

    def start_http_server(port: int, *args: Any, **kwargs: Any) -> Any:
        served.append(serve(0, "127.0.0.1", registry))  # 0: a free port
        return served[-1]

    ctx.monkeypatch.setattr(llmtap.prometheus, "REGISTRY", registry)
    ctx.monkeypatch.setattr(prometheus_client, "start_http_server", start_http_server)
    try:
        yield
        url = f"http://127.0.0.1:{served[0][0].server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = ctx.farm.unrewrite(answer.read().decode())
        for box in BOXES:
            assert f'llmtap_endpoint_up{{endpoint="{box}"}} 1.0' in text, text
    finally:
        for server, thread in served:
            server.shutdown()
            server.server_close()
            thread.join(10)
