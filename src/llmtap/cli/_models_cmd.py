"""``llmtap models``: what the server has, as a table or JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from rich import box
from rich.measure import Measurement
from rich.table import Table

from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._results import ModelInfo
from llmtap.cli._common import EXIT_OK, consoles, shown_endpoint
from llmtap.cli._terminal import strip_controls

__all__ = ["human_bytes", "models_command", "models_table"]


def human_bytes(size: float) -> str:
    """Bytes in decimal units, as Ollama shows them: ``2.0 GB``, ``806.9 KB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def _when(value: datetime | None) -> str | None:
    return value.astimezone().strftime("%Y-%m-%d") if value is not None else None


_COLUMNS: list[tuple[str, Callable[[ModelInfo], str | None], str]] = [
    ("NAME", lambda m: m.name, "left"),
    ("SIZE", lambda m: human_bytes(m.size) if m.size else None, "right"),
    ("PARAMS", lambda m: m.parameter_size, "right"),
    ("QUANT", lambda m: m.quantization, "left"),
    ("CONTEXT", lambda m: str(m.context_length) if m.context_length else None, "right"),
    ("MODIFIED", lambda m: _when(m.modified_at), "left"),
    ("OWNER", lambda m: m.owned_by, "left"),
    ("LOADED", lambda m: None if m.loaded is None else ("yes" if m.loaded else "-"), "left"),
]


def models_table(models: Sequence[ModelInfo]) -> Table:
    """A table of ``models`` with the columns the server filled in for at least one model.

    Only NAME may wrap: when the table is wider than the terminal, a long name folds onto
    more lines, and every figure stays whole.
    """
    cells = [
        [strip_controls(value) if (value := get(model)) else None for _, get, _ in _COLUMNS]
        for model in models
    ]
    keep = [i for i in range(len(_COLUMNS)) if i == 0 or any(row[i] for row in cells)]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i in keep:
        title, _, justify = _COLUMNS[i]
        if i == 0:
            table.add_column(title, overflow="fold", min_width=len(title))
            continue
        widest = max([len(title), *(len(row[i] or "") for row in cells)])
        table.add_column(title, justify=justify, no_wrap=True, min_width=widest)  # type: ignore[arg-type]
    for model, row in zip(models, cells, strict=True):
        style = "bold" if model.loaded else None
        table.add_row(*[row[i] or "" for i in keep], style=style)
    return table


async def models_command(config: LLMConfig, *, as_json: bool) -> int:
    """List the server's models."""
    out, err = consoles()
    async with LLMClient(config) as client:
        models = await client.list_models()
    if as_json:
        data: list[dict[str, Any]] = [model.model_dump(mode="json") for model in models]
        out.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    if not models:
        err.print(
            f"{shown_endpoint(config)} has no models. With Ollama: llmtap pull llama3.2",
            markup=False,
        )
        return EXIT_OK
    table = models_table(models)
    if not out.is_terminal:
        # A file or a pipe gets the table as wide as it needs: one line per model, for grep.
        out.width = Measurement.get(out, out.options.update(width=100_000), table).maximum
    out.print(table)
    return EXIT_OK
