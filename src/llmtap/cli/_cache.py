"""``llmtap cache info`` and ``llmtap cache clear``: the response cache's file, the settings'
``cache`` (``LLMTAP_CACHE`` or the config file), else the default one."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import orjson

from llmtap._config import LLMConfig, default_cache_path
from llmtap._store import CacheInfo, cache_info, clear_cache
from llmtap.cli._common import EXIT_OK, CLIError, consoles, plural
from llmtap.cli._models_cmd import human_bytes

__all__ = ["cache_clear_command", "cache_file", "cache_info_command", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[smhdw]?)")


def cache_file(config: LLMConfig) -> Path:
    """The cache file of these settings: their ``cache_path``, else the default file."""
    return config.cache_path or default_cache_path()


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``.

    Raises:
        CLIError: It is none of these.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise CLIError(
            f"--older-than takes seconds or a duration such as 90s, 15m, 12h, 7d or 2w, "
            f"not {text!r}"
        )
    return float(match["number"]) * _UNITS[match["unit"] or "s"]


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def cache_info_command(path: Path, *, as_json: bool) -> int:
    """What the cache at ``path`` holds (a missing file holds nothing; it is not made)."""
    out, _ = consoles()
    info = cache_info(path) if path.is_file() else CacheInfo(path, 0, 0, None, None)
    if as_json:
        out.file.write(orjson.dumps(info.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    rows = [
        ("file", str(info.path)),
        ("answers", f"{info.answers:,}"),
        ("size", human_bytes(info.bytes)),
        ("oldest", _when(info.oldest)),
        ("newest", _when(info.newest)),
    ]
    for name, value in rows:
        out.print(f"{name:<8} {value}", markup=False)
    return EXIT_OK


def cache_clear_command(path: Path, *, older_than: str | None) -> int:
    """Delete the cache's answers (those kept longer than ``older_than``, a duration as the
    user wrote it, when given; the report repeats it so)."""
    seconds = parse_duration(older_than) if older_than is not None else None
    out, _ = consoles()
    if not path.is_file():
        out.print(f"deleted 0 answers (there is no cache at {path})", markup=False)
        return EXIT_OK
    deleted = clear_cache(path, older_than=seconds)
    which = ""
    if older_than is not None:
        shown = older_than.strip()
        which = f" kept more than {shown}{'' if shown[-1:].isalpha() else ' s'} ago"
    out.print(f"deleted {plural(deleted, 'answer')}{which} from {path}", markup=False)
    return EXIT_OK
