"""The command line's conversation log: whether a command logs (``llmtap chat`` does by
default), the conversation ``chat -c`` / ``--cid`` continues, and ``llmtap logs``.

Whether a command logs, first rule that applies: ``--log`` / ``--no-log``; ``LLMTAP_LOG``
(``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``); the marker file
``logs-off`` that ``llmtap logs off`` leaves next to the default log file (as simonw/llm
does), which turns it off; then the command's default: on for ``chat``, off for ``batch``
unless the settings name a ``log_db``. Where: the settings' ``log_db`` (``LLMTAP_LOG_DB`` or
the config file), else ``$XDG_DATA_HOME/llmtap/logs.db``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.cells import cell_len
from rich.console import JustifyMethod
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from llmtap._config import LLMConfig, default_log_path
from llmtap._errors import StoreError
from llmtap._store import LoggedCall, continuation, latest_conversation, open_log, search
from llmtap._wire.dialects import MessageLike
from llmtap.cli._common import EXIT_OK, CLIError, consoles
from llmtap.cli._terminal import strip_controls

__all__ = [
    "Continued",
    "LogQuery",
    "continued",
    "log_file",
    "logs_command",
    "logs_switch_command",
    "off_marker",
    "with_log",
]

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def off_marker() -> Path:
    """The file whose presence means ``llmtap logs off``: next to the default log file."""
    return default_log_path().parent / "logs-off"


def log_file(config: LLMConfig) -> Path:
    """The log file of these settings: their ``log_db``, else the default one."""
    return config.log_path or default_log_path()


def _variable() -> bool | None:
    """``LLMTAP_LOG`` as a switch (``None``: not set).

    Raises:
        CLIError: It is set to something else.
    """
    value = os.environ.get("LLMTAP_LOG")
    if value is None or not value.strip():
        return None
    word = value.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    raise CLIError(
        f"LLMTAP_LOG must be 1 (or true, yes, on) or 0 (or false, no, off), not {value!r}"
    )


def with_log(config: LLMConfig, flag: bool | None, *, default: bool) -> LLMConfig:
    """``config`` with ``log_db`` set as the command line decides (see the module's
    docstring). The default file, when it cannot be used, is a warning and no log: a chat
    does not fail for its log (a ``log_db`` the user named is an error, from the client).

    Args:
        config: The settings (their ``log_db`` names the file).
        flag: ``--log`` (``True``), ``--no-log`` (``False``) or neither (``None``).
        default: Whether the command logs when nothing says: ``True`` for ``chat``.

    Raises:
        CLIError: ``LLMTAP_LOG`` is not a switch.
    """
    wanted = flag if flag is not None else _variable()
    if wanted is None:
        wanted = not off_marker().exists() and (default or config.log_path is not None)
    if not wanted:
        return config.model_copy(update={"log_db": None})
    path = log_file(config)
    if config.log_path is None:
        try:
            open_log(path).close()
        except StoreError as exc:
            _, err = consoles()
            err.print(
                f"warning: {strip_controls(str(exc))}; so this run is not logged (--no-log, "
                "LLMTAP_LOG=0 or `llmtap logs off` stop this warning)",
                style="yellow",
                markup=False,
            )
            return config
    return config.model_copy(update={"log_db": path})


# --- continuing a conversation -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Continued:
    """A logged conversation to go on with."""

    conversation: str
    #: What was sent last time, then its answer: sent again before the new message.
    messages: list[MessageLike]
    #: The model it was sent to.
    model: str | None


def continued(config: LLMConfig, conversation: str | None) -> Continued:
    """The conversation ``conversation`` of the log (the latest one when ``None``), read
    whether or not this command logs.

    Raises:
        CLIError: There is no log file, the log is empty, there is no such conversation, or
            it has no answered call.
    """
    path = log_file(config)
    if not path.is_file():
        raise CLIError(
            f"There is no conversation log at {path}, so there is nothing to continue; "
            "chats are logged there unless --no-log, LLMTAP_LOG=0 or `llmtap logs off`"
        )
    connection = open_log(path)
    try:
        cid = conversation if conversation is not None else latest_conversation(connection)
        if cid is None:
            raise CLIError(f"The conversation log at {path} is empty: nothing to continue")
        found = continuation(connection, cid)
        if found is None:
            if not search(connection, limit=1, conversation=cid):
                raise CLIError(
                    f"There is no conversation {cid!r} in the log at {path}; `llmtap logs` "
                    "lists them (the CONVERSATION column)"
                )
            raise CLIError(
                f"Conversation {cid!r} has no answer to continue from (its calls failed); "
                "`llmtap logs --cid ID` shows its calls, `llmtap logs` the others"
            )
    finally:
        connection.close()
    messages, model = found
    return Continued(cid, messages, model)


# --- llmtap logs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What ``llmtap logs`` was asked for."""

    count: int = 10
    query: str | None = None
    model: str | None = None
    conversation: str | None = None
    as_json: bool = False


#: Line breaks that end a prompt's or an answer's first line (CR, LF, CRLF only).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _first_line(text: str) -> str:
    """The first line of ``text`` that has something on it; ``…`` when more follows."""
    lines = [line for line in _LINE_BREAK.split(strip_controls(text).strip()) if line.strip()]
    if not lines:
        return ""
    return lines[0].strip() + (" …" if len(lines) > 1 else "")


def _local_time(iso: str) -> str:
    """A row's UTC time in the local time zone, to the second."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _tokens(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _answer_cell(call: LoggedCall) -> Text:
    if call.error_type is not None:
        return Text(f"error: {call.error_type}", style="red")
    if not call.text and call.tool_calls:
        names = ", ".join(str(c.get("name", "?")) for c in call.tool_calls if isinstance(c, dict))
        return Text(f"calls {strip_controls(names)}", style="dim")
    return Text(_first_line(call.text))


#: Widest MODEL column on a terminal (a longer name is cut with an ellipsis).
_MODEL_WIDTH = 28
#: Narrowest PROMPT and ANSWER columns on a terminal.
_TEXT_WIDTH = 8


def logs_table(calls: Sequence[LoggedCall], *, width: int | None) -> Table:
    """The calls, one row each: TIME (local), CONVERSATION, MODEL (``(cached)`` for an answer
    the cache gave), IN and OUT tokens, the first lines of PROMPT and ANSWER (or the error's
    type). With a ``width`` (a terminal's), PROMPT and ANSWER share what the other columns
    leave and are cut with an ellipsis; without one, nothing is cut."""
    rows = []
    for call in calls:
        model = strip_controls(call.model or "")
        rows.append(
            (
                _local_time(call.time),
                call.conversation_id,
                f"{model} (cached)" if call.cached else model,
                _tokens(call.prompt_tokens),
                _tokens(call.completion_tokens),
                _first_line(call.prompt),
                _answer_cell(call),
            )
        )
    titles = ("TIME", "CONVERSATION", "MODEL", "IN", "OUT", "PROMPT", "ANSWER")
    widths = [
        max([len(title), *(cell_len(str(row[i])) for row in rows)])
        for i, title in enumerate(titles)
    ]
    text_width = None
    if width is not None:
        widths[2] = min(widths[2], _MODEL_WIDTH)
        gaps = 3 * (len(titles) - 1)  # a divider and two spaces of padding
        text_width = max(_TEXT_WIDTH, (width - sum(widths[:5]) - gaps) // 2)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for index, title in enumerate(titles[:5]):
        justify: JustifyMethod = "right" if title in ("IN", "OUT") else "left"
        table.add_column(
            title,
            justify=justify,
            no_wrap=True,
            overflow="ellipsis",
            width=widths[index] if width is not None else None,
        )
    for title in titles[5:]:
        table.add_column(title, no_wrap=True, overflow="ellipsis", width=text_width)
    for row in rows:
        table.add_row(*row)
    return table


def logs_command(path: Path, query: LogQuery) -> int:
    """Show the ``count`` latest calls of the log at ``path`` that match, oldest first."""
    out, err = consoles()
    if not path.is_file():
        if query.as_json:
            out.file.write("[]\n")
        else:
            err.print(f"nothing is logged yet (there is no log at {path})", markup=False)
        return EXIT_OK
    connection = open_log(path)
    try:
        calls = search(
            connection,
            limit=query.count,
            query=query.query,
            model=query.model,
            conversation=query.conversation,
        )
    finally:
        connection.close()
    calls.reverse()  # the latest ones, read top to bottom as they happened
    if query.as_json:
        data: list[dict[str, Any]] = [call.as_json() for call in calls]
        out.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    if not calls:
        err.print(f"no logged call matches (log: {path})", markup=False)
        return EXIT_OK
    table = logs_table(calls, width=out.width if out.is_terminal else None)
    if not out.is_terminal:
        # A file or a pipe gets the table as wide as it needs: one line per call, for grep.
        out.width = Measurement.get(out, out.options.update(width=100_000), table).maximum
    out.print(table)
    return EXIT_OK


def logs_switch_command(path: Path, *, on: bool) -> int:
    """``llmtap logs on`` / ``off``: remove or leave the marker, and say what that means
    (``path``: the log file of the settings)."""
    out, err = consoles()
    marker = off_marker()
    try:
        if on:
            marker.unlink(missing_ok=True)
        else:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    except OSError as exc:
        verb = "remove" if on else "write"
        raise CLIError(f"Cannot {verb} {marker}: {exc.strerror}") from None
    if on:
        out.print(f"logging is on: llmtap chat logs to {path}", markup=False)
    else:
        out.print(
            "logging is off: llmtap chat logs nothing (--log logs one chat; "
            "`llmtap logs on` turns it back on)",
            markup=False,
        )
    variable = _variable()
    if variable is not None and variable != on:
        err.print(
            f"warning: LLMTAP_LOG={os.environ['LLMTAP_LOG']} is set, and it beats this: "
            f"logging stays {'off' if on else 'on'} while it is",
            style="yellow",
            markup=False,
        )
    return EXIT_OK
