"""What every command shares: connection options, settings with their precedence, consoles,
exit codes, and the one place where errors become a short message and an exit code."""

from __future__ import annotations

import difflib
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError
from rich.console import Console

from llmtap._config import LLMConfig, default_config_path, read_config_file
from llmtap._errors import (
    BatchFileError,
    ConfigFileError,
    LLMConnectionError,
    LLMError,
    LLMModelError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUsageError,
    StoreError,
    redact_url,
    scrub,
)
from llmtap.cli._otel import export_spans
from llmtap.cli._terminal import strip_controls

if TYPE_CHECKING:
    from llmtap._client import LLMClient
    from llmtap._results import PreflightReport

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_NO_ANSWER",
    "EXIT_NO_MODEL",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_SERVER",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "ApiKeyOption",
    "CLIError",
    "ConfigOption",
    "Connection",
    "DebugOption",
    "EndpointOption",
    "FirstTokenTimeoutOption",
    "IdleTimeoutOption",
    "ModelOption",
    "command_line_text",
    "consoles",
    "exit_code_for",
    "plural",
    "preflight",
    "run",
    "shown_endpoint",
    "terminated",
]

#: Exit codes of every command (``llmtap check`` adds ``EXIT_NO_ANSWER``).
EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_NO_MODEL = 4
EXIT_AUTH = 5
EXIT_NO_ANSWER = 6
#: Ctrl-C (SIGINT) and SIGTERM stop a command the same way (what was shown stays, connections
#: close); the code tells which signal it was, as a shell reports a process that a signal
#: ended: 128 + the signal's number.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
#: Stdout was closed before the output was written (``llmtap check | head -1``): the command
#: stops quietly with the code of a process that SIGPIPE ended, as ``cat`` and ``yes`` do.
EXIT_PIPE_CLOSED = 141

_CONNECTION_PANEL = "Connection"

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        "-e",
        metavar="URL|NAME",
        help="Server URL (such as http://localhost:8080), or the name of an [[endpoints]] "
        "entry in the config file, whose settings then count as flags. Default: "
        "LLMTAP_ENDPOINT, OPENAI_BASE_URL, OLLAMA_HOST, the config file, then Ollama at "
        "http://localhost:11434.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="Model name. Default: LLMTAP_MODEL, the config file, or the server's only model.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help="API key, sent as a Bearer token. Default: LLMTAP_API_KEY, OPENAI_API_KEY, "
        "or the config file.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Config file (TOML). Default: LLMTAP_CONFIG, else ~/.config/llmtap/config.toml "
        "if it exists.",
        show_default=False,
        dir_okay=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
IdleTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--idle-timeout",
        metavar="SECONDS",
        help="Longest silence between two chunks of an answer. Default: LLMTAP_IDLE_TIMEOUT, "
        "the config file, or 60.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
FirstTokenTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--first-token-timeout",
        metavar="SECONDS",
        help="Longest wait for the first chunk (a cold model load counts). Default: "
        "LLMTAP_FIRST_TOKEN_TIMEOUT, the config file, or 300.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        metavar="",
        help="Log every event of llmtap's requests on stderr (start, first chunk, retry, end "
        "or failure, each with its call id and attempt), and print the traceback of an "
        "error. Without it a retry is still shown, as one short line.",
        show_default=False,
    ),
]


class CLIError(Exception):
    """A failure the command explains itself: a message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def plural(count: int, noun: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- settings ----------------------------------------------------------------------------------

#: Environment variables the command reads besides ``LLMTAP_<FIELD>``.
_OTHER_VARIABLES = frozenset({"LLMTAP_CONFIG", "LLMTAP_ENDPOINTS", "LLMTAP_LOG"})
#: Where a field comes from when the neighbours' variables give it (in their order).
_NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "endpoint": ("OPENAI_BASE_URL", "OLLAMA_HOST"),
    "api_key": ("OPENAI_API_KEY",),
}
_OPTION_NAMES = {
    "endpoint": "--endpoint",
    "model": "--model",
    "api_key": "--api-key",
    "idle_timeout": "--idle-timeout",
    "first_token_timeout": "--first-token-timeout",
    "temperature": "--temperature",
    "max_tokens": "--max-tokens",
    "api": "--api",
}
#: API routes a pasted endpoint URL may end with, longest first.
_API_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/models",
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/api/generate",
    "/api/embeddings",
    "/api/version",
    "/api/embed",
    "/api/chat",
    "/api/tags",
    "/api/show",
    "/api/pull",
    "/api/ps",
)
_USERINFO = re.compile(r"^(?P<user>[^/@:]*):[^/@]*@")


def _mask(value: str) -> str:
    """``value`` with a password masked, whether or not it is a whole URL."""
    return scrub(_USERINFO.sub(r"\g<user>:***@", value))


def shown_endpoint(config: LLMConfig) -> str:
    """The endpoint as it may be printed: without the password of its userinfo."""
    return redact_url(config.endpoint)


@dataclass(frozen=True)
class Connection:
    """The connection options of one command line."""

    endpoint: str | None = None
    model: str | None = None
    api_key: str | None = None
    config_file: Path | None = None

    def load(self, **settings: Any) -> LLMConfig:
        """The settings: these options (and the ``[[endpoints]]`` entry ``--endpoint`` names)
        > environment > config file > defaults.

        Args:
            **settings: More field values the command sets (they beat everything too).

        Raises:
            CLIError: A bad option, environment variable or config file (exit code 2).
        """
        _warn_about_unknown_variables()
        overrides: dict[str, Any] = {}
        sources: dict[str, str] = {}

        def flag(field: str, value: Any, source: str) -> None:
            if value is not None:
                overrides[field] = value
                sources[field] = source

        for field, value in settings.items():
            flag(field, value, _OPTION_NAMES.get(field, field))
        flag("model", self.model, "--model")
        flag("api_key", self.api_key, "--api-key")
        if self.endpoint is not None:
            if "://" in self.endpoint:
                flag("endpoint", self.endpoint, "--endpoint")
            else:
                name, entry = self._entry(self.endpoint)
                where = f"the [[endpoints]] entry {name!r}"
                for field, value in entry.items():
                    if field not in overrides:
                        flag(field, value, where)
        try:
            try:
                config = LLMConfig.load(self.config_file, **overrides)
            except LLMUsageError:  # a password in the URL and a key: the key is sent
                keyless = LLMConfig.load(self.config_file, **{**overrides, "api_key": None})
                overrides["endpoint"] = _one_credential(keyless, sources)
                config = LLMConfig.load(self.config_file, **overrides)
        except ConfigFileError as exc:
            raise CLIError(str(exc)) from None
        except ValidationError as exc:
            raise CLIError(_describe(exc, sources)) from None
        _refuse_api_route(config, _endpoint_phrase(_source("endpoint", sources)))
        return config

    def _config_path(self) -> Path:
        return self.config_file.expanduser() if self.config_file else default_config_path()

    def _entry(self, name: str) -> tuple[str, dict[str, Any]]:
        """The settings of the ``[[endpoints]]`` entry ``name``.

        Raises:
            CLIError: There is no such entry (the message lists the names there are).
        """
        path = self._config_path()
        entries: list[dict[str, Any]] = []
        if path.is_file():
            try:
                entries = read_config_file(path)["endpoints"]
            except ConfigFileError as exc:
                raise CLIError(str(exc)) from None
        for entry in entries:
            if entry.get("name") == name:
                extra = ("name", "weight", "max_concurrency")
                return name, {k: v for k, v in entry.items() if k not in extra}
        names = [str(entry["name"]) for entry in entries if isinstance(entry.get("name"), str)]
        if names:
            where = f"of {path} (its names: {', '.join(repr(n) for n in names)})"
        elif path.is_file():
            where = f"({path} defines none)"
        else:
            where = f"(there is no config file at {path})"
        message = (
            f"--endpoint {_mask(name)!r} is neither a URL nor the name of an [[endpoints]] "
            f"entry {where}"
        )
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif re.fullmatch(r"[\w.@:\[\]-]+(:\d+)?(/.*)?", name) and ("." in name or ":" in name):
            message += f"; for a URL write http://{_mask(name)}"
        raise CLIError(message)


def _environment_source(field: str) -> str | None:
    """The variable a field's value comes from, when one gives it."""
    name = f"LLMTAP_{field.upper()}"
    if any(key.upper() == name for key in os.environ):
        return name
    for neighbour in _NEIGHBOURS.get(field, ()):
        if os.environ.get(neighbour):
            return neighbour
    return None


def _source(field: str, sources: Mapping[str, str]) -> str:
    """Where the value of ``field`` was set, as the user would name it."""
    if field in sources:
        return sources[field]
    return _environment_source(field) or "the config file"


def _endpoint_phrase(source: str) -> str:
    """The endpoint, named by where it was set: ``--endpoint``, ``OLLAMA_HOST``, ..."""
    if source == "the config file":
        return "The endpoint in the config file"
    if source.startswith("the [[endpoints]]"):
        return f"The endpoint of {source}"
    return source


def _describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    """One line per bad setting, naming it the way the user set it."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        source = sources.get(field) or _environment_source(field)
        variable = f"LLMTAP_{field.upper()}"
        if source is None or source in (_OPTION_NAMES.get(field), variable):
            where = f"{_OPTION_NAMES.get(field, field)} (or {variable})"
        else:
            where = source
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def _refuse_api_route(config: LLMConfig, endpoint: str) -> None:
    """An endpoint pasted with an API route on it (``.../v1/chat/completions``) is a usage
    error that says which URL to pass instead.

    Raises:
        CLIError: It ends with a route llmtap adds itself.
    """
    path = urlsplit(config.endpoint).path
    route = next((r for r in _API_ROUTES if path.endswith(r)), None)
    if route is None:
        return
    keep = "/v1" if route.startswith("/v1/") else ""
    base = config.endpoint[: len(config.endpoint) - len(route)] + keep
    added = route.removeprefix(keep)
    shown = shown_endpoint(config)
    raise CLIError(
        f"{endpoint} {shown} is the URL of an API route, not of the server: "
        f"pass {redact_url(base)} (llmtap adds {added} and the other routes itself)"
    )


def _one_credential(config: LLMConfig, sources: Mapping[str, str]) -> str:
    """A password in the endpoint URL goes as HTTP Basic auth and an API key as a Bearer
    token: both in the one Authorization header, so the library refuses the pair. On the
    command line, where the two may come from different places, the key is sent and the
    URL's user and password are not, with a warning that says so: the endpoint to use."""
    parts = urlsplit(config.endpoint)
    endpoint = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    key_source = _source("api_key", sources)
    _, err = consoles()
    err.print(
        f"warning: the user and password in the endpoint ({shown_endpoint(config)}) are not "
        f"sent: an API key is set ({key_source}), and both would need the Authorization "
        "header",
        style="yellow",
        markup=False,
    )
    return endpoint


def _warn_about_unknown_variables() -> None:
    """A misspelt ``LLMTAP_*`` variable is ignored by the settings; say so, as a misspelt key
    of the config file is an error."""
    known = {f"LLMTAP_{field.upper()}" for field in LLMConfig.model_fields} | _OTHER_VARIABLES
    _, err = consoles()
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("LLMTAP_") or upper in known:
            continue
        suffixes = sorted(k.removeprefix("LLMTAP_") for k in known)
        close = difflib.get_close_matches(upper.removeprefix("LLMTAP_"), suffixes, n=1)
        hint = f"; did you mean LLMTAP_{close[0]}?" if close else ""
        err.print(
            f"warning: {name} is not an llmtap setting, so it is ignored{hint}",
            style="yellow",
            markup=False,
        )


# --- output --------------------------------------------------------------------------------


class _Console(Console):
    """A rich console whose closed pipe ends the command the way every other write to a
    closed pipe does: with ``BrokenPipeError``, which ``run`` turns into exit code 141 (rich
    itself would exit with 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def consoles() -> tuple[Console, Console]:
    """Consoles for stdout and stderr. Colour and cursor control only where the stream is a
    terminal (``NO_COLOR`` and ``FORCE_COLOR`` are honoured by rich)."""
    return (
        _Console(highlight=False, soft_wrap=True),
        _Console(stderr=True, highlight=False, soft_wrap=True),
    )


def _setting_hint(field: str, value: str) -> str:
    option = {"idle": "--idle-timeout", "first_token": "--first-token-timeout"}.get(field)
    variable = f"LLMTAP_{field.upper()}_TIMEOUT"
    where = f"{option} or {variable}" if option else variable
    return f"{field}_timeout ({value}; {where})"


#: Library wording (``LLMConfig(model=...)``, ``api_key=``, field names) and its command-line
#: equivalent: the flag and the variable.
_COMMAND_LINE_WORDING: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (
        re.compile(r"Set LLMConfig\(model=\.\.\.\) or LLMTAP_MODEL to one of them"),
        lambda _: "Pass --model NAME (or set LLMTAP_MODEL) with one of them",
    ),
    (
        re.compile(r"pass LLMConfig\(model=\.\.\.\) or LLMTAP_MODEL"),
        lambda _: "pass --model NAME (or set LLMTAP_MODEL)",
    ),
    (re.compile(r"LLMConfig\(model=\.\.\.\)"), lambda _: "--model NAME"),
    (
        re.compile(r"Set LLMTAP_API_KEY \(or api_key=(?:, or --api-key)?\) to a valid key"),
        lambda _: "Pass a valid key with --api-key KEY (or set LLMTAP_API_KEY)",
    ),
    (
        re.compile(r"\b(connect|first_token|idle|total|preflight)_timeout \(([^);]*)\)"),
        lambda m: _setting_hint(m[1], m[2]),
    ),
    (
        re.compile(r"Pass verify='<CA bundle>'"),
        lambda _: "Set LLMTAP_VERIFY to the CA bundle file",
    ),
    (re.compile(r"Set endpoint to the new URL"), lambda _: "Pass --endpoint with the new URL"),
    (
        re.compile(r"\bmax_line_bytes \(([^)]*)\)"),
        lambda m: f"max_line_bytes ({m[1]}; LLMTAP_MAX_LINE_BYTES)",
    ),
]


def command_line_text(text: str) -> str:
    """A message of the library as the command line says it: each setting it names comes
    with its flag and its variable, and no secret is in it."""
    for pattern, replace in _COMMAND_LINE_WORDING:
        text = pattern.sub(replace, text)
    return scrub(text)


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error from the library."""
    if isinstance(error, LLMTimeoutError):
        return EXIT_CONNECT if error.deadline in ("connect", "preflight") else EXIT_SERVER
    if isinstance(error, LLMConnectionError):
        return EXIT_CONNECT
    if isinstance(error, LLMModelError):
        return EXIT_NO_MODEL
    if isinstance(error, LLMResponseError):
        if error.status_code in (401, 403):
            return EXIT_AUTH
        listing = (error.url or "").endswith(("/v1/models", "/api/tags", "/api/version"))
        if error.status_code == 404 and not listing:
            return EXIT_NO_MODEL
        return EXIT_SERVER
    if isinstance(error, LLMUsageError | ValidationError):
        return EXIT_USAGE
    return EXIT_SERVER


async def preflight(client: LLMClient) -> PreflightReport:
    """``client.preflight_check()`` for a command: its warnings (a model name the server
    ignores) are shown on stderr, and "no model chosen among several" is a model error
    (exit 4, like a model that is not there).

    Raises:
        CLIError: The server has several models and none was chosen.
    """
    try:
        report = await client.preflight_check()
    except LLMUsageError as exc:
        raise CLIError(command_line_text(str(exc)), EXIT_NO_MODEL) from None
    _, err = consoles()
    for warning in report.warnings:
        text = command_line_text(warning)
        err.print(f"warning: {strip_controls(text)}", style="yellow", markup=False)
    return report


# --- logging -------------------------------------------------------------------------------


class _RetryFormatter(logging.Formatter):
    """``llm_retry`` and ``llm_resume`` events as one readable line; others as they are."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "llmtap", None) or {}
        event = str(record.msg).split(" ", 1)[0]
        if event in ("llm_retry", "llm_resume") and fields:
            what = "retrying" if event == "llm_retry" else "resuming"
            return strip_controls(
                f"{what} ({fields.get('attempt')}/{fields.get('max_retries')}) in "
                f"{fields.get('wait')} s after: {fields.get('error')}"
            )
        return strip_controls(super().format(record))


class _DebugFormatter(logging.Formatter):
    """Every event with its time, level and fields, with no control sequences."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_controls(super().format(record))


def _setup_logging(debug: bool) -> None:
    """The CLI is an application, so it may configure logging: retries as short lines on
    stderr; every llmtap event down to DEBUG, with timestamps and fields, under ``--debug``."""
    logger = logging.getLogger("llmtap")
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(_DebugFormatter("%(asctime)s %(levelname)s %(message)s"))
        logger.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(_RetryFormatter("%(message)s"))
        logger.setLevel(logging.WARNING)
    logger.handlers[:] = [handler]
    logger.propagate = False


# --- signals and the one error path ----------------------------------------------------------

_terminated = False


def terminated() -> bool:
    """Whether SIGTERM arrived (it stops the command as Ctrl-C does, with exit code 143)."""
    return _terminated


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes Ctrl-C's path (asyncio cancels the running task, ``KeyboardInterrupt``
    ends the command), so that what was shown stays and connections close; only the exit
    code differs."""
    global _terminated
    _terminated = True
    on_sigint = signal.getsignal(signal.SIGINT)
    if callable(on_sigint):
        on_sigint(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def _stdout_to_devnull() -> None:
    """Stdout was closed by its reader: later writes (and the flush at exit) go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def run(command: Callable[[], int], *, debug: bool = False, traced: bool = False) -> NoReturn:
    """Run a command body and exit with its code; errors become one or two lines.

    Tracebacks are printed only with ``--debug``. ``traced``: export the command's spans
    when the environment asks for it (``OTEL_EXPORTER_OTLP_ENDPOINT``).
    """
    _setup_logging(debug)
    _, err = consoles()
    signal.signal(signal.SIGTERM, _on_sigterm)
    stop_export = export_spans(err) if traced else None
    try:
        code = command()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if terminated():
            err.print("terminated", style="yellow")
            code = EXIT_TERMINATED
        else:
            err.print("interrupted", style="yellow")
            code = EXIT_INTERRUPTED
    except BrokenPipeError:
        _stdout_to_devnull()
        code = EXIT_PIPE_CLOSED
    except CLIError as exc:
        _print_error(err, exc.message)
        code = exc.code
    except (BatchFileError, StoreError) as exc:  # a file the user named, or a setting
        _print_error(err, str(exc))
        code = EXIT_USAGE
    except (LLMError, LLMUsageError) as exc:
        if debug:
            _print_traceback(err)
        _print_error(err, exc.message if isinstance(exc, LLMError) else str(exc))
        code = exit_code_for(exc)
    except Exception as exc:
        if debug:
            _print_traceback(err)
        _print_error(
            err,
            f"unexpected {type(exc).__name__}: {exc}. Run again with --debug for the "
            "traceback, and please report it",
        )
        code = EXIT_SERVER
    if stop_export is not None:
        stop_export()
    raise typer.Exit(code)


def _print_error(err: Console, text: str) -> None:
    text = strip_controls(command_line_text(text))
    err.print(f"error: {text}", style="red", markup=False)


def _print_traceback(err: Console) -> None:
    err.file.write(strip_controls(scrub(traceback.format_exc())))
    err.file.flush()
