"""``llmtap chat``: one question (argument or stdin), or an interactive session."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._errors import LLMError, LLMUsageError
from llmtap._messages import Message
from llmtap._results import ChatResult
from llmtap._toolloop import as_tools
from llmtap._wire.dialects import MessageLike
from llmtap.cli._common import (
    EXIT_OK,
    CLIError,
    command_line_text,
    consoles,
    plural,
    preflight,
    terminated,
)
from llmtap.cli._terminal import for_console
from llmtap.cli._view import AnswerView

__all__ = ["ChatOptions", "interactive", "load_tools", "one_shot", "read_prompt"]

#: Most model rounds in one answer when tools are in use.
MAX_TOOL_ROUNDS = 8

HELP = """\
/model NAME    use another model (without NAME: show the current one)
/system TEXT   set the system prompt (without TEXT: show it; /system - clears it)
/reset         forget the conversation (the system prompt stays)
/save FILE     save the conversation (JSON for .json, Markdown otherwise); never
               overwrites a file: /save! FILE does
/exit          leave (also /quit, /bye or Ctrl-D)
Ctrl-C stops the answer being written; the session goes on."""


@dataclass
class ChatOptions:
    """What the ``chat`` command line asked for."""

    system: str | None = None
    tools: list[Any] = field(default_factory=list)
    as_json: bool = False
    markdown: bool = True
    reasoning: bool = True
    #: A logged conversation continued (``-c``, ``--cid``): its id, and what is sent before
    #: the new message (as it was sent the first time, then its answer).
    conversation: str | None = None
    history: list[MessageLike] = field(default_factory=list)

    def messages(self) -> list[MessageLike]:
        """What goes before the first user message: the history continued, else the system
        prompt (a conversation continued has its own)."""
        if self.history:
            return list(self.history)
        return [Message.system(self.system)] if self.system else []


# --- tools ---------------------------------------------------------------------------------


def _is_tool(obj: Any) -> bool:
    if isinstance(obj, type) or not callable(getattr(obj, "to_schema", None)):
        return False
    return callable(getattr(obj, "call", None)) or callable(obj)


def _import(spec: str) -> Any:
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise CLIError(f"--tools: there is no file {spec}")
        module_spec = importlib.util.spec_from_file_location(f"_llmtap_tools_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise CLIError(f"--tools: {spec} cannot be imported as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module  # as an import would (pydantic looks it up)
        module_spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules next to the user
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise CLIError(
                f"--tools: no module named {spec!r}; give an importable module or a .py file"
            ) from None
        raise


def load_tools(specs: Sequence[str]) -> list[Any]:
    """The tools of the modules or ``.py`` files named: every module-level object with a
    ``to_schema()`` method that can be called (such as ``@llmtap.tool`` functions).

    Raises:
        CLIError: A module cannot be imported, has no tools, or two tools share a name.
    """
    tools: list[Any] = []
    for spec in specs:
        try:
            module = _import(spec)
        except CLIError:
            raise
        except Exception as exc:
            raise CLIError(
                f"--tools: importing {spec} failed: {type(exc).__name__}: {exc}"
            ) from exc
        found = [
            obj for name, obj in vars(module).items() if not name.startswith("_") and _is_tool(obj)
        ]
        if not found:
            raise CLIError(
                f"--tools: {spec} has no tools (module-level objects with to_schema(), such as "
                "functions decorated with @llmtap.tool)"
            )
        tools += found
    if tools:
        try:
            as_tools(tools)  # the tool loop's own checks: names, duplicates
        except LLMUsageError as exc:
            raise CLIError(f"--tools: {exc}") from None
    return tools


# --- one answer ----------------------------------------------------------------------------


async def answer(
    client: LLMClient,
    messages: list[MessageLike],
    view: AnswerView | None,
    *,
    tools: Sequence[Any] = (),
    model: str | None = None,
) -> ChatResult:
    """Stream the answer to ``messages`` into ``view``; with tools, through the library's
    tool loop (``run_tools``), which runs the calls the model makes. ``messages`` grows by
    the assistant's (and tools') messages."""
    params: dict[str, Any] = {"model": model} if model else {}
    if tools:
        return await _run_tools(client, messages, view, tools, params)
    async with client.stream(messages, **params) as stream:
        if view is not None:
            async for event in stream:
                view.feed(event)
        result = await stream.result()
    if view is not None:
        view.end_round()
    messages.append(result.message)
    return result


async def _run_tools(
    client: LLMClient,
    messages: list[MessageLike],
    view: AnswerView | None,
    tools: Sequence[Any],
    params: dict[str, Any],
) -> ChatResult:
    """The tool loop of the library, its events shown in ``view``."""

    def on_event(event: Any) -> None:
        if view is None:
            return
        kind = getattr(event, "type", None)
        if kind == "text":
            view.feed(event)
        elif kind == "tool_call_started":
            view.end_round()
            view.tool_call(event.call.name, event.call.arguments)
        elif kind == "tool_call_finished":
            view.tool_result(event.call.name, event.output, failed=event.error is not None)

    run = await client.run_tools(
        list(messages),
        list(tools),
        max_rounds=MAX_TOOL_ROUNDS,
        on_event=on_event,
        stream=view is not None,
        **params,
    )
    if view is not None:
        view.end_round()
    messages[:] = list(run.messages)
    result: ChatResult = run.result
    return result


def note_if_cut(result: ChatResult, config: LLMConfig, err: Console) -> None:
    """An answer the token limit cut short ends with a note on stderr, so that it is not
    taken for the whole answer (stdout keeps the answer alone)."""
    if result.finish_reason != "length":
        return
    limit = config.max_tokens
    why = f"--max-tokens {limit} reached" if limit is not None else "the server's token limit"
    err.print(f"[answer cut short: {why}]", style="yellow", markup=False)


async def one_shot(config: LLMConfig, prompt: str, options: ChatOptions) -> int:
    """Answer one prompt and exit."""
    out, err = consoles()
    messages = [*options.messages(), Message.user(prompt)]
    async with LLMClient(config) as client:
        await preflight(client)
        if options.as_json:
            result = await answer(client, messages, None, tools=options.tools)
            out.file.write(result.model_dump_json(indent=2) + "\n")
            return EXIT_OK
        view = AnswerView(out, err, markdown=options.markdown, reasoning=options.reasoning)
        try:
            result = await answer(client, messages, view, tools=options.tools)
        except BaseException:
            view.end_round()
            raise
    note_if_cut(result, config, err)
    return EXIT_OK


# --- the interactive session -----------------------------------------------------------------


@dataclass
class Session:
    """The state of an interactive session."""

    model: str
    system: str | None
    history: list[MessageLike] = field(default_factory=list)

    def messages(self) -> list[MessageLike]:
        """The conversation as sent: the system prompt, then the history."""
        head: list[MessageLike] = [Message.system(self.system)] if self.system else []
        return head + self.history

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the conversation as JSON (``.json``) or Markdown.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
        """
        mode = "wb" if overwrite else "xb"
        if path.suffix.lower() == ".json":
            data = {
                "model": self.model,
                "messages": [
                    m.to_api_dict() if isinstance(m, Message) else dict(m) for m in self.messages()
                ],
            }
            with path.open(mode) as file:
                file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
            return
        parts = [f"# Conversation with {self.model}\n"]
        for item in self.messages():
            data = item.to_api_dict() if isinstance(item, Message) else dict(item)
            role, content = data.get("role"), data.get("content")
            if role == "tool":
                parts.append(f"**tool {data.get('name') or ''}:** {content or ''}\n")
            elif isinstance(content, str) and content:
                parts.append(f"**{role}:** {content}\n")
        with path.open(mode) as file:
            file.write("\n".join(parts).encode())


def _command(line: str, session: Session, out: Console, err: Console) -> bool:
    """Carry out a slash command; ``False`` when the session should end."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/help":
        out.print(HELP, markup=False)
    elif name == "/reset":
        session.history.clear()
        out.print("conversation cleared", style="dim")
    elif name == "/model":
        if argument:
            session.model = argument
            out.print(f"model: {argument}", style="dim", markup=False)
        else:
            out.print(f"model: {session.model}", markup=False)
    elif name == "/system":
        if argument == "-":
            session.system = None
            out.print("system prompt cleared", style="dim")
        elif argument:
            session.system = argument
            out.print("system prompt set", style="dim")
        else:
            out.print(f"system prompt: {session.system or '(none)'}", markup=False)
    elif name in ("/save", "/save!"):
        if not argument:
            err.print(f"usage: {name} FILE", style="red", markup=False)
        else:
            path = Path(argument).expanduser()
            try:
                session.save(path, overwrite=name == "/save!")
            except FileExistsError:
                err.print(
                    f"{path} exists; /save! {argument} overwrites it",
                    style="red",
                    markup=False,
                )
            except OSError as exc:
                err.print(f"cannot save to {path}: {exc.strerror}", style="red", markup=False)
            else:
                out.print(f"saved to {path}", style="dim", markup=False)
    else:
        err.print(f"unknown command {name}; /help lists them", style="red", markup=False)
    return True


def _enable_line_editing() -> None:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (input() gains editing and history)


def interactive(config: LLMConfig, options: ChatOptions) -> int:
    """Run an interactive session until /exit or end of input.

    Each answer runs in a persistent event loop; Ctrl-C while it streams cancels that answer
    (closing its connection) and returns to the prompt.
    """
    _enable_line_editing()
    out, err = consoles()
    with asyncio.Runner() as runner:
        client = LLMClient(config)
        try:
            report = runner.run(preflight(client))
            session = Session(
                model=report.model, system=options.system, history=list(options.history)
            )
            kind = f"{report.server} {report.version}" if report.version else report.server
            out.print(
                for_console(
                    f"llmtap chat: {kind} at {report.endpoint}, model {report.model}. "
                    "/help for commands, /exit or Ctrl-D to leave.",
                    out,
                ),
                style="dim",
                markup=False,
            )
            if options.conversation is not None:
                out.print(
                    f"continuing conversation {options.conversation}: "
                    f"{plural(len(options.history), 'earlier message')}",
                    style="dim",
                    markup=False,
                )
            _loop(runner, client, session, options, out, err)
        finally:
            runner.run(client.close())
    return EXIT_OK


def _loop(
    runner: asyncio.Runner,
    client: LLMClient,
    session: Session,
    options: ChatOptions,
    out: Console,
    err: Console,
) -> None:
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            out.print()
            return
        except KeyboardInterrupt:
            out.print()
            if terminated():
                raise  # SIGTERM ends the session; Ctrl-C only the line
            continue
        if not line:
            continue
        if line.startswith("/"):
            if not _command(line, session, out, err):
                return
            continue
        messages: list[MessageLike] = [*session.messages(), Message.user(line)]
        view = AnswerView(out, err, markdown=options.markdown, reasoning=options.reasoning)
        try:
            result = runner.run(
                answer(client, messages, view, tools=options.tools, model=session.model)
            )
        except KeyboardInterrupt:
            partial = view.interrupted()
            if terminated():
                raise
            if not partial:
                continue  # nothing was said: the question is dropped too
            messages.append(Message.assistant(partial))
        except (LLMError, LLMUsageError, CLIError) as exc:  # the session goes on
            view.end_round()
            text = exc.message if isinstance(exc, LLMError | CLIError) else str(exc)
            text = for_console(command_line_text(text), err)
            err.print(f"error: {text}", style="red", markup=False)
            continue
        else:
            note_if_cut(result, client.config, err)
        head = 1 if session.system else 0
        session.history = messages[head:]


def _as_utf8(data: bytes, what: str) -> str:
    """``data`` decoded as UTF-8; bytes that are not UTF-8 become U+FFFD, with a warning."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        _, err = consoles()
        err.print(
            f"warning: {what} is not valid UTF-8 (byte {exc.start}: 0x{data[exc.start]:02x}); "
            "the invalid bytes are sent as \ufffd",
            style="yellow",
            markup=False,
        )
        return text


def read_prompt(prompt: str | None, *, stdin_is_terminal: bool) -> str | None:
    """The user message: PROMPT, piped stdin, or both; ``None`` for an interactive session.

    With both, PROMPT comes first as the instruction, then a blank line and the piped text
    between ``<input>`` and ``</input>`` lines as its material. Text that is not UTF-8 (from
    stdin, or in the argument) is decoded with U+FFFD for the bad bytes, and a warning.

    Raises:
        CLIError: Neither a PROMPT nor any piped text.
    """
    if prompt is not None and any("\udc80" <= c <= "\udcff" for c in prompt):
        prompt = _as_utf8(os.fsencode(prompt), "the PROMPT argument")
    piped = None if stdin_is_terminal else _as_utf8(sys.stdin.buffer.read(), "stdin")
    material = piped.rstrip().lstrip("\r\n") if piped is not None else ""
    if prompt is not None:
        return f"{prompt}\n\n<input>\n{material}\n</input>" if material else prompt
    if piped is None:
        return None
    if not material:
        raise CLIError('Nothing to ask: stdin was empty. Give a prompt: llmtap chat "..."')
    return material.strip()
