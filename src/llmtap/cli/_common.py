"""What every command shares: connection options, settings with their precedence, consoles,
exit codes, and the one place where errors become a short message and an exit code."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from llmtap._config import LLMConfig, default_config_path, read_config_file
from llmtap._errors import (
    ConfigFileError,
    LLMConnectionError,
    LLMError,
    LLMModelError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUsageError,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_NO_ANSWER",
    "EXIT_NO_MODEL",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "ApiKeyOption",
    "CLIError",
    "ConfigOption",
    "Connection",
    "DebugOption",
    "EndpointOption",
    "ModelOption",
    "consoles",
    "exit_code_for",
    "run",
]

#: Exit codes of every command (``llmtap check`` adds ``EXIT_NO_ANSWER``).
EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_NO_MODEL = 4
EXIT_AUTH = 5
EXIT_NO_ANSWER = 6
EXIT_INTERRUPTED = 130

_CONNECTION_PANEL = "Connection"

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        "-e",
        help="Server URL, or the name of an [[endpoints]] entry in the config file. "
        "Default: LLMTAP_ENDPOINT, OLLAMA_HOST, OPENAI_BASE_URL, the config file, "
        "then Ollama at http://localhost:11434.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model name. Default: LLMTAP_MODEL, the config file, or the server's only model.",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
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
        help="Config file (TOML). Default: LLMTAP_CONFIG, else ~/.config/llmtap/config.toml "
        "if it exists.",
        show_default=False,
        dir_okay=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug", help="Log requests and retries, and show tracebacks.", show_default=False
    ),
]


class CLIError(Exception):
    """A failure the command explains itself: a message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Connection:
    """The connection options of one command line."""

    endpoint: str | None = None
    model: str | None = None
    api_key: str | None = None
    config_file: Path | None = None

    def load(self, **settings: Any) -> LLMConfig:
        """The settings: these options > environment > config file > defaults.

        Args:
            **settings: More field values the command sets (they beat everything too).

        Raises:
            CLIError: A bad option, environment variable or config file (exit code 2).
        """
        overrides: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
        profile = None
        if self.endpoint is not None:
            profile = self._profile(self.endpoint)
            if profile is None:
                overrides["endpoint"] = self.endpoint
        if self.model is not None:
            overrides["model"] = self.model
        if self.api_key is not None:
            overrides["api_key"] = self.api_key
        try:
            return LLMConfig.load(self.config_file, profile=profile, **overrides)
        except ConfigFileError as exc:
            raise CLIError(str(exc)) from None
        except ValidationError as exc:
            raise CLIError(_describe(exc)) from None

    def _profile(self, endpoint: str) -> str | None:
        """``endpoint`` when it names an ``[[endpoints]]`` entry of the config file."""
        if "://" in endpoint:
            return None
        path = self.config_file or default_config_path()
        if not path.is_file():
            return None
        try:
            names = {entry.get("name") for entry in read_config_file(path)["endpoints"]}
        except ConfigFileError as exc:
            raise CLIError(str(exc)) from None
        return endpoint if endpoint in names else None


_OPTION_NAMES = {"endpoint": "--endpoint", "model": "--model", "api_key": "--api-key"}


def _describe(exc: ValidationError) -> str:
    """One line per bad setting, naming it the way the user set it."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        where = _OPTION_NAMES.get(field, field)
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where} (or LLMTAP_{field.upper()}): {message}")
    return "; ".join(lines)


def consoles() -> tuple[Console, Console]:
    """Consoles for stdout and stderr. Colour and cursor control only where the stream is a
    terminal (``NO_COLOR`` and ``FORCE_COLOR`` are honoured by rich)."""
    return (
        Console(highlight=False, soft_wrap=True),
        Console(stderr=True, highlight=False, soft_wrap=True),
    )


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


class _RetryFormatter(logging.Formatter):
    """``llm_retry`` and ``llm_resume`` events as one readable line; others as they are."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "llmtap", None) or {}
        event = str(record.msg).split(" ", 1)[0]
        if event in ("llm_retry", "llm_resume") and fields:
            what = "retrying" if event == "llm_retry" else "resuming"
            return (
                f"{what} ({fields.get('attempt')}/{fields.get('max_retries')}) in "
                f"{fields.get('wait')} s after: {fields.get('error')}"
            )
        return super().format(record)


def _setup_logging(debug: bool) -> None:
    """The CLI is an application, so it may configure logging: retries as short lines on
    stderr; everything, with timestamps, under ``--debug``."""
    logger = logging.getLogger("llmtap")
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(_RetryFormatter("%(message)s"))
        logger.setLevel(logging.WARNING)
    logger.handlers[:] = [handler]
    logger.propagate = False


def run(command: Callable[[], int], *, debug: bool = False) -> NoReturn:
    """Run a command body and exit with its code; errors become one or two lines.

    Tracebacks are printed only with ``--debug``.
    """
    _setup_logging(debug)
    _, err = consoles()
    try:
        code = command()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted", style="yellow")
        code = EXIT_INTERRUPTED
    except CLIError as exc:
        err.print(f"error: {exc.message}", style="red", markup=False)
        code = exc.code
    except (LLMError, LLMUsageError) as exc:
        if debug:
            traceback.print_exc()
        text = exc.message if isinstance(exc, LLMError) else str(exc)
        err.print(f"error: {text}", style="red", markup=False)
        if "LLMConfig(model=...)" in text:
            err.print("on the command line: --model NAME", style="yellow")
        code = exit_code_for(exc)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        err.print(
            f"error: unexpected {type(exc).__name__}: {exc}. Run again with --debug for the "
            "traceback, and please report it",
            style="red",
            markup=False,
        )
        code = EXIT_SERVER
    raise typer.Exit(code)
