"""Every Python example of the README and the docs site runs, as written, against
``llmtap.testing`` servers standing in for the ones it names (``tests/docs/farm.py``), and
prints what its scenario expects (``tests/docs/scenarios.py``).

A page's examples run in order in one namespace (a later one may use what an earlier one
defined), each with servers of its own, in a fresh working directory that is also ``$HOME``.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from tests.docs.farm import Farm
from tests.docs.markdown import ROOT, Block, blocks, documents
from tests.docs.scenarios import SCENARIOS, Run

PAGES = [path for path in documents() if blocks(path, "python")]


def test_the_docs_have_python_examples() -> None:
    """The test below has something to run: the README's example and the guides'."""
    assert sum(len(blocks(path, "python")) for path in PAGES) >= 15
    assert blocks(ROOT / "README.md", "python")


def test_every_example_names_a_known_scenario() -> None:
    """A misspelt scenario is caught here, not as a confusing failure of its example."""
    for path in documents():
        for block in blocks(path):
            assert block.scenario in SCENARIOS, f"{block.where}: no scenario {block.scenario!r}"


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """The environment of a reader with no llmtap settings, whose home is ``home``."""
    for name in list(os.environ):
        if name.startswith(("LLMTAP_", "OPENAI_", "OLLAMA_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(home)


def run_example(block: Block, namespace: dict[str, object], home: Path) -> None:
    """Run one example in its scenario and check what it printed."""
    with pytest.MonkeyPatch.context() as monkeypatch, Farm() as farm:
        monkeypatch.setenv("LLMTAP_ENDPOINT", farm.server().url)
        run = Run(farm, home, block.body, namespace, monkeypatch)
        with contextlib.contextmanager(SCENARIOS[block.scenario])(run) as check:
            code = compile(farm.rewrite(run.code), block.where, "exec")
            out = io.StringIO()
            if run.execute:
                with contextlib.redirect_stdout(out):
                    exec(code, namespace)
            check(farm.unrewrite(out.getvalue()))


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_python_example_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example of the page runs without an error and prints what it should."""
    isolate(monkeypatch, tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks(page, "python"):
        try:
            run_example(block, namespace, tmp_path)
        except BaseException as exc:  # name the example whatever went wrong
            raise AssertionError(f"the example at {block.where} failed: {exc!r}") from exc
