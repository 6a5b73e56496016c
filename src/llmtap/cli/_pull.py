"""``llmtap pull``: download a model into Ollama, with a progress bar per layer."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap.cli._common import EXIT_OK, consoles
from llmtap.cli._models_cmd import human_bytes
from llmtap.cli._terminal import strip_controls

__all__ = ["pull_command"]


async def _pull_live(client: LLMClient, model: str, out: Console) -> None:
    """A terminal: a bar per layer (bytes, speed, time left) and the stages above them."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    tasks: dict[str, TaskID] = {}
    last_stage = ""
    with Progress(*columns, console=out, transient=False) as progress:
        async for event in client.pull(model):
            if event.digest is None:
                if tasks:
                    progress.stop()  # the layers are done: later stages print below them
                if event.status != last_stage:
                    progress.console.print(strip_controls(event.status), markup=False)
                    last_stage = event.status
                continue
            task = tasks.get(event.digest)
            if task is None:
                task = progress.add_task(strip_controls(event.status), total=event.total)
                tasks[event.digest] = task
            progress.update(task, completed=event.completed or 0, total=event.total)


async def _pull_plain(client: LLMClient, model: str, out: Console) -> None:
    """Not a terminal: one line per stage and per layer, no escape codes."""
    seen: set[str] = set()
    last_stage = ""
    for_line = out.file
    async for event in client.pull(model):
        if event.digest is None:
            if event.status != last_stage:
                for_line.write(event.status + "\n")
                last_stage = event.status
        elif event.digest not in seen:
            seen.add(event.digest)
            size = human_bytes(event.total) if event.total else "size unknown"
            have = event.completed or 0
            resumed = ""
            if event.total and 0 < have < event.total:
                resumed = f", resuming at {human_bytes(have)}"
            elif event.total and have >= event.total:
                resumed = ", already here"
            for_line.write(f"{event.status}: {size}{resumed}\n")
        for_line.flush()


async def pull_command(config: LLMConfig, model: str) -> int:
    """Pull ``model``; progress bars on a terminal, plain lines elsewhere."""
    out, _ = consoles()
    async with LLMClient(config) as client:
        if out.is_terminal:
            await _pull_live(client, model, out)
        else:
            await _pull_plain(client, model, out)
    return EXIT_OK
