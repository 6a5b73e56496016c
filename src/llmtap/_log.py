"""Structured logging that leaves the application in charge.

llmtap never configures logging. Events go to the standard-library logger ``llmtap`` through
structlog: the message reads ``event key=value ...`` for plain handlers, and the fields ride along
in ``extra={"llmtap": {...}}`` for structured ones. Secrets are redacted before anything leaves.

The one thing done at import is what the logging HOWTO asks of libraries: a ``NullHandler`` on
the ``llmtap`` logger, so that an application without logging set up does not get llmtap's
warnings on stderr through the root logger's last resort. It changes nothing once the
application configures logging.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from llmtap._config import SECRET_HEADERS
from llmtap._errors import scrub

__all__ = ["get_logger"]

_SECRET_KEYS = SECRET_HEADERS | {"api_key", "password", "token", "secret"}

logging.getLogger("llmtap").addHandler(logging.NullHandler())


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {
            key: "***" if str(key).lower() in _SECRET_KEYS else _redact(item)
            for key, item in value.items()
        }
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _to_stdlib(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    event = str(event_dict.pop("event", ""))
    fields = " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    return {"msg": f"{event} {fields}" if fields else event, "extra": {"llmtap": dict(event_dict)}}


class _LazyLogger:
    """Builds the structlog logger on first use, so that ``import llmtap`` stays fast."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def _get(self) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=[_redact_processor, _to_stdlib],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        return self._logger

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at DEBUG level with ``fields``."""
        if logging.getLogger(self._name).isEnabledFor(logging.DEBUG):
            self._get().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO level with ``fields``."""
        self._get().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at WARNING level with ``fields``."""
        self._get().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR level with ``fields``."""
        self._get().error(event, **fields)


def get_logger(name: str = "llmtap") -> _LazyLogger:
    """A structlog logger bound to the standard-library logger ``name``, built lazily."""
    return _LazyLogger(name)
