"""What the benchmark server sends and how a request asks for it; shared by server and clients.

A request carries its settings as a ``bench`` object in the JSON body (top level, or inside
Ollama's ``options``) or as a query string (``?chunks=100&pace_ms=20``):

* ``chunks``: content chunks in the answer, each a few characters of text;
* ``pace_ms``: 0 writes the whole answer at once (burst); N writes one content event per
  stream every N ms, all paced streams on one shared clock (as a batching server does);
* ``hold`` and ``group``: answer nothing until ``hold`` requests of the same ``group`` have
  arrived (or 3 s passed). This makes a client open ``hold`` connections at once, so that its
  pool is warm before a measured run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "MESSAGES",
    "MODEL",
    "WORDS",
    "Spec",
    "expected_chars",
    "parse_spec",
]

MODEL = "m"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Say something."}]
#: The content of chunk ``i`` is ``WORDS[i % len(WORDS)]``.
WORDS = (" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".")
_CYCLE = sum(map(len, WORDS))


def expected_chars(chunks: int) -> int:
    """Characters of text in an answer of ``chunks`` content chunks."""
    full, rest = divmod(chunks, len(WORDS))
    return full * _CYCLE + sum(len(word) for word in WORDS[:rest])


@dataclass(frozen=True, slots=True)
class Spec:
    """What one request asks the server for (see the module docstring)."""

    chunks: int = 100
    pace_ms: float = 0.0
    hold: int = 0
    group: str = ""

    def body(self) -> dict[str, Any]:
        """The ``bench`` object to put in the request body."""
        body: dict[str, Any] = {"chunks": self.chunks}
        if self.pace_ms:
            body["pace_ms"] = self.pace_ms
        if self.hold:
            body["hold"] = self.hold
            body["group"] = self.group
        return body


def parse_spec(body: Any, query: str) -> Spec:
    """The :class:`Spec` a request asks for: its body's ``bench`` object, then its query."""
    settings: dict[str, Any] = {}
    if isinstance(body, dict):
        bench = body.get("bench")
        options = body.get("options")
        if not isinstance(bench, dict) and isinstance(options, dict):
            bench = options.get("bench")
        if isinstance(bench, dict):
            settings.update(bench)
    settings.update(parse_qsl(query))
    return Spec(
        chunks=max(0, int(settings.get("chunks", 100))),
        pace_ms=max(0.0, float(settings.get("pace_ms", 0))),
        hold=max(0, int(settings.get("hold", 0))),
        group=str(settings.get("group", "")),
    )
