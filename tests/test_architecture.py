"""The package's shape, checked from its source: layers that import only downward (imports
under ``TYPE_CHECKING`` and inside functions included), no import cycle, aiohttp only in the
HTTP layer, a sans-IO wire layer, no module reaching into another's private members, and one
function deciding what follows a failed attempt."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "llmtap"

#: The layers, lowest first. A module may import from its own layer or a lower one; the
#: packages ``_wire``, ``_http`` and ``_router`` are one layer each.
LAYERS: list[set[str]] = [
    {"llmtap._version", "llmtap._errors"},
    {"llmtap._config", "llmtap._messages", "llmtap._docstrings"},
    {"llmtap._log", "llmtap._results", "llmtap._tools", "llmtap._telemetry"},
    {"llmtap._wire"},
    {"llmtap._retry", "llmtap._hooks"},
    {"llmtap._store"},
    {"llmtap._http"},
    {"llmtap._probe"},
    {"llmtap._preflight", "llmtap._upstream"},
    {"llmtap._models", "llmtap._call"},
    {"llmtap._stream"},
    {"llmtap._api", "llmtap._toolloop", "llmtap._parse"},
    {"llmtap._client"},
    {"llmtap._router"},
    {"llmtap._sync", "llmtap._batch"},
    {"llmtap.batch"},
    {"llmtap"},
    {"llmtap.otel", "llmtap.prometheus", "llmtap.ray"},
    {"llmtap.cli", "llmtap.testing"},
]
#: Packages whose modules count as one unit in the layers.
UNITS = (
    "llmtap._wire",
    "llmtap._http",
    "llmtap._router",
    "llmtap._batch",
    "llmtap._store",
    "llmtap.cli",
    "llmtap.testing",
)
#: The one module that may touch aiohttp's private members (checked there at import).
INTERNALS = "llmtap._http.internals"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return found


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> Iterator[str]:
    """Every module ``tree`` imports, at any depth (functions, ``TYPE_CHECKING`` blocks)."""
    package = name if (PACKAGE / "/".join(name.split(".")[1:]) / "__init__.py").exists() else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (package or name.rpartition(".")[0]).split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            submodules = [
                f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES
            ]
            yield from submodules  # `from llmtap import _retry` imports llmtap._retry only
            if len(submodules) < len(node.names):
                yield module


def _unit(module: str) -> str:
    for unit in UNITS:
        if module == unit or module.startswith(unit + "."):
            return unit
    return module


def _layer(module: str) -> int:
    unit = _unit(module)
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target in _imports(name, tree) if target in MODULES and target != name}
        for name, tree in MODULES.items()
    }


def test_every_module_is_in_a_layer() -> None:
    """The layer table covers the whole package (a new module must be placed)."""
    for name in MODULES:
        _layer(name)


def test_imports_point_down_the_layers() -> None:
    """No module imports one from a higher layer (TYPE_CHECKING and function-level imports
    included)."""
    upward = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        for target in sorted(targets)
        if _layer(target) > _layer(name)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    """No module can reach itself through imports (of any kind, at any depth)."""
    graph = _graph()
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if target == start:
                    cycles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert cycles == []


def _imported_roots(tree: ast.Module) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_http_layer_imports_aiohttp() -> None:
    """aiohttp is imported by ``llmtap._http`` alone (and by ``llmtap.testing``, which is a
    server built on aiohttp.web, not part of the client)."""
    importers = sorted(
        name
        for name, tree in MODULES.items()
        if "aiohttp" in _imported_roots(tree)
        and _unit(name) not in ("llmtap._http", "llmtap.testing")
    )
    assert importers == []


def test_the_wire_layer_does_no_io() -> None:
    """``llmtap._wire`` imports neither asyncio nor aiohttp (nor anything above it)."""
    for name, tree in MODULES.items():
        if _unit(name) == "llmtap._wire":
            assert _imported_roots(tree) & {"asyncio", "aiohttp"} == set(), name


def _defined_names(tree: ast.Module) -> set[str]:
    """The names a module defines: classes, functions, module variables, class attributes,
    and attributes its methods assign on ``self``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return names


#: Named tuples' methods: public API, named with an underscore so as not to clash with fields.
_NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def _private(attr: str) -> bool:
    if attr in _NAMEDTUPLE_API:
        return False
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def test_no_module_reaches_into_another_modules_private_members() -> None:
    """A private member (``_name``) is used only by the module that defines it: never read
    on an object of another module's class, never imported from another module. (aiohttp's
    own privates are read only in ``llmtap._http.internals``.)"""
    offences = []
    for name, tree in MODULES.items():
        own = _defined_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                offences += [
                    f"{name}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if _private(alias.name)
                    and node.module
                    and node.module.startswith("llmtap")
                    and f"{node.module}.{alias.name}" not in MODULES  # a module is no member
                ]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                receiver = node.value
                if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                    continue
                if node.attr in own or name == INTERNALS:
                    continue
                offences.append(f"{name}:{node.lineno}: .{node.attr}")
    assert offences == []


def _calls(function: str) -> list[str]:
    """The modules that call ``function`` by name."""
    return sorted(
        name
        for name, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == function)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == function)
        )
    )


@pytest.mark.parametrize("function", ["is_retryable", "backoff", "parse_retry_after"])
def test_the_retry_policy_is_asked_only_through_decide(function: str) -> None:
    """What makes a failure retryable, and how long to wait, is read in ``_retry`` alone:
    every other module asks ``decide()``."""
    assert set(_calls(function)) <= {"llmtap._retry", "llmtap._http.status"}


def test_one_function_decides_what_follows_a_failed_attempt() -> None:
    """``decide()`` is called from one place: the attempt loop."""
    assert _calls("decide") == ["llmtap._call"]
