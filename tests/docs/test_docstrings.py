"""Every docstring example of the package (the ``>>>`` lines the API reference shows) runs
as doctest runs it, against ``llmtap.testing`` stand-ins for the servers it names
(``tests/docs/farm.py``), and prints what it shows.

Unlike plain doctest: top-level ``await``, ``async with`` and ``async for`` work, on one event
loop per docstring; the names of ``llmtap.__all__`` are there besides the module's own; and
``tests/docs/docstring_setups.py`` gives what an example assumes beyond those (``client``,
``router``, scripted replies, files, variables). Each docstring runs in a fresh working
directory that is also ``$HOME``, with servers of its own.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import importlib
import inspect
import io
import pkgutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import llmtap
from llmtap import LLMClient, Router, SyncClient
from tests.docs.conftest import skip_or_fail
from tests.docs.docstring_setups import FIXTURES, MARKS, SETUPS, Context, default
from tests.docs.farm import Farm
from tests.docs.test_examples import isolate
from tests.test_ray import ray  # noqa: F401 -- the fixture: a local Ray, for llmtap.ray's example

#: doctest's options for every example (an example's own directives add to them).
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: The fewest examples the package has (84 when this test was written).
MIN_EXAMPLES = 60


#: The modules that cannot be imported here (an extra not installed), with the error.
UNIMPORTABLE: dict[str, str] = {}


def modules() -> Iterator[ModuleType]:
    """The package and every module in it that imports (but ``__main__``s, which run the
    CLI)."""
    yield llmtap
    for info in pkgutil.walk_packages(llmtap.__path__, "llmtap."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError as exc:  # llmtap.ray without Ray, ...
            UNIMPORTABLE[info.name] = str(exc)


def find() -> list[doctest.DocTest]:
    """Every docstring with examples, as doctest finds them."""
    finder = doctest.DocTestFinder()
    return [
        test
        for module in modules()
        for test in finder.find(module, module.__name__)
        if test.examples
    ]


DOCSTRINGS = find()


def options(example: doctest.Example) -> int:
    """:data:`FLAGS` with the example's own ``# doctest:`` directives."""
    flags = FLAGS
    for flag, on in example.options.items():
        flags = flags | flag if on else flags & ~flag
    return flags


def runnable(test: doctest.DocTest) -> list[doctest.Example]:
    """The examples doctest would run (not the ``+SKIP`` ones)."""
    return [example for example in test.examples if not options(example) & doctest.SKIP]


def test_the_docstrings_have_examples() -> None:
    """The test below has something to run: every docstring is found, with its examples."""
    assert sum(len(runnable(test)) for test in DOCSTRINGS) >= MIN_EXAMPLES
    names = {test.name for test in DOCSTRINGS}
    assert {"llmtap._client.LLMClient.parse", "llmtap.batch"} <= names
    assert {*SETUPS, *MARKS, *FIXTURES} <= names, "set up for a docstring with no examples"


def test_every_module_is_read() -> None:
    """No module's examples are left out for want of an extra: skipped outside CI, failed in
    CI."""
    if UNIMPORTABLE:
        missing = "; ".join(f"{name}: {error}" for name, error in UNIMPORTABLE.items())
        skip_or_fail(f"modules left out ({missing}): pip install -e '.[dev]'")


def display(value: object) -> None:
    """``sys.displayhook`` for an example: the value's repr (``_`` is left alone)."""
    if value is not None:
        sys.stdout.write(f"{value!r}\n")


def indent(text: str) -> str:
    """``text`` indented, for a failure's message."""
    return "".join(f"    {line}\n" for line in text.splitlines()) or "    (nothing)\n"


def run_example(
    test: doctest.DocTest,
    example: doctest.Example,
    number: int,
    globs: dict[str, Any],
    runner: asyncio.Runner,
    farm: Farm,
) -> None:
    """Run one example in ``globs`` (a coroutine on ``runner``'s loop) and check what it
    showed, or the exception it raised, against what it expects."""
    flags = options(example)
    out = io.StringIO()
    error: BaseException | None = None
    with contextlib.redirect_stdout(out):
        try:
            code = compile(
                farm.rewrite(example.source),
                f"<docstring {test.name}[{number}]>",
                "single",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            result = eval(code, globs)
            if inspect.iscoroutine(result):
                runner.run(result)
        except Exception as exc:
            error = exc
    got = farm.unrewrite(out.getvalue())
    if got and not got.endswith("\n"):  # as doctest: what was written ends a line
        got += "\n"
    checker = doctest.OutputChecker()
    if error is None:
        if example.exc_msg is None and checker.check_output(example.want, got, flags):
            return
        came = got
    else:
        raised = farm.unrewrite(traceback.format_exception_only(error)[-1])
        if example.exc_msg is not None and checker.check_output(example.exc_msg, raised, flags):
            return
        came = got + "".join(traceback.format_exception(error))
    want = example.want if example.exc_msg is None else f"(a traceback)\n{example.exc_msg}"
    where = f"{test.filename}:{(test.lineno or 0) + example.lineno + 1}"
    pytest.fail(
        f"{test.name}: the example at {where}\n{indent(example.source)}"
        f"expected:\n{indent(want)}got:\n{indent(came)}",
        pytrace=False,
    )


def close_opened(context: Context, before: set[int]) -> None:
    """Close each client and router the setups opened, or the examples left in the
    namespace (not those that were there before)."""
    values = [*context.opened, *context.globs.values()]
    for value in {id(value): value for value in values if id(value) not in before}.values():
        if isinstance(value, LLMClient | Router):
            context.run(value.close())
        elif isinstance(value, SyncClient):
            value.close()


@pytest.mark.parametrize(
    "test",
    [pytest.param(test, id=test.name, marks=MARKS.get(test.name, ())) for test in DOCSTRINGS],
)
def test_docstring_examples_run(
    test: doctest.DocTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The docstring's examples run in order, in one namespace and on one event loop, and
    each shows what it expects."""
    for fixture in FIXTURES.get(test.name, ()):
        request.getfixturevalue(fixture)
    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(sys, "displayhook", display)
    exported = {name: getattr(llmtap, name) for name in llmtap.__all__}
    globs: dict[str, Any] = {**exported, **test.globs}
    before = {id(value) for value in globs.values()}
    with contextlib.ExitStack() as stack:
        farm = stack.enter_context(Farm())
        monkeypatch.setenv("LLMTAP_ENDPOINT", farm.server().url)
        runner = stack.enter_context(asyncio.Runner())
        context = Context(farm, tmp_path, globs, monkeypatch, runner.run)
        stack.callback(close_opened, context, before)
        stack.enter_context(contextlib.contextmanager(default)(context))
        setup = SETUPS.get(test.name)
        if setup is not None:
            stack.enter_context(contextlib.contextmanager(setup)(context))
        for number, example in enumerate(test.examples):
            if not options(example) & doctest.SKIP:
                run_example(test, example, number, globs, runner, farm)
