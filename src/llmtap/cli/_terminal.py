"""Text from a model or a server on its way to a terminal, with its control sequences removed.

A model's answer is untrusted text. Written to a terminal as it is, an escape sequence in it
drives the terminal: OSC 0 sets the window title, OSC 52 writes the clipboard, CSI sequences
move the cursor and erase what was shown, a carriage return overwrites a line. On a terminal
llmtap removes them all (CSI, OSC, DCS, SOS, PM and APC sequences with their payload, other
escape sequences, and every other C0 or C1 control character but newline and tab); text that
goes to a pipe or a file is left byte for byte as the model sent it.
"""

from __future__ import annotations

import re

from rich.console import Console

__all__ = ["TerminalFilter", "for_console", "strip_controls"]

#: A complete control sequence.
_SEQUENCE = (
    r"\x1b\[ [0-?]* [ -/]* [@-~]"  # CSI: parameters, intermediates, final byte
    r"| \x9b [0-?]* [ -/]* [@-~]"  # CSI as one C1 character
    r"| \x1b[\]PX^_] .*? (?:\x07|\x1b\\|\x9c)"  # OSC, DCS, SOS, PM, APC: up to BEL or ST
    r"| [\x90\x98\x9d\x9e\x9f] .*? (?:\x07|\x1b\\|\x9c)"  # the same, from a C1 character
    r"| \x1b (?: [ -/]+ [0-~] | (?![\[\]PX^_]) [0-~] )"  # any other escape sequence
)
_COMPLETE = re.compile(_SEQUENCE, re.VERBOSE | re.DOTALL)
#: A complete control sequence, or one control character (any but newline and tab).
_CONTROL = re.compile(_SEQUENCE + r"| [\x00-\x08\x0b-\x1f\x7f-\x9f]", re.VERBOSE | re.DOTALL)
#: The start of a sequence that may complete in the next piece of text.
_UNFINISHED = re.compile(
    r"""
      \x1b (?: \[ [0-?]* [ -/]* | [\]PX^_] [^\x07\x9c]* | [ -/]* )
    | \x9b [0-?]* [ -/]*
    | [\x90\x98\x9d\x9e\x9f] [^\x07\x9c]*
    """,
    re.VERBOSE | re.DOTALL,
)
_INTRODUCERS = re.compile(r"[\x1b\x90\x98\x9b\x9d\x9e\x9f]")
#: The longest unfinished sequence held back for the next piece (then it is dropped).
_MAX_HELD = 64 * 1024


def strip_controls(text: str) -> str:
    """``text`` without control sequences or control characters (newline and tab stay).

    >>> strip_controls("a\\x1b]0;title\\x07b\\x1b[2Jc\\r\\n")
    'abc\\n'
    """
    return _CONTROL.sub("", text)


def _unfinished_start(text: str) -> int | None:
    """Where a control sequence begins that ``text`` ends before it is complete."""
    for found in _INTRODUCERS.finditer(text):
        start = found.start()
        if _COMPLETE.match(text, start):
            continue
        if _UNFINISHED.fullmatch(text, start):
            return start
    return None


class TerminalFilter:
    """Strips control sequences from text that arrives in pieces: a sequence cut between two
    pieces is held back until it is complete (so that neither half shows), then removed."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """What of ``text`` (after what was held back) can be written now."""
        text = self._held + text
        self._held = ""
        start = _unfinished_start(text)
        if start is not None and len(text) - start <= _MAX_HELD:
            text, self._held = text[:start], text[start:]
        return strip_controls(text)

    def flush(self) -> str:
        """The end of the text: what is still held back, stripped."""
        held, self._held = self._held, ""
        return strip_controls(held)


def for_console(text: str, console: Console) -> str:
    """``text`` as it may be written to ``console``: stripped on a terminal, as it is
    anywhere else."""
    return strip_controls(text) if console.is_terminal else text
