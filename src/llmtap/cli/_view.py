"""How an answer appears while it streams: text, dimmed reasoning, tool calls.

On a terminal the text is rendered as Markdown as it grows (the last screenful live, the whole
answer once it is complete); anywhere else it is written verbatim, with no escape codes.
Reasoning goes to stdout, dimmed, on a terminal; when stdout is redirected it goes to stderr
so that the redirected output holds the answer alone.

What the model sends is untrusted: on a terminal its control sequences are removed
(``_terminal``), so that an answer cannot set the title, write the clipboard or move the
cursor; text written to a pipe or a file stays byte for byte what the model sent.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment

from llmtap._results import ReasoningDelta, StreamEvent, TextDelta
from llmtap.cli._terminal import TerminalFilter, for_console, strip_controls

__all__ = ["AnswerView"]

#: Most redraws per second of the live Markdown view.
_REFRESH_RATE = 15.0


class _Tail:
    """The last screenful of the answer rendered as Markdown (what a live view can redraw)."""

    def __init__(self) -> None:
        self.text = ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = TerminalFilter().feed(self.text)  # a sequence still arriving is held back
        lines = console.render_lines(Markdown(shown), options, pad=False)
        height = max(1, console.size.height - 2)
        for line in lines[-height:]:
            yield from line
            yield Segment.line()


class AnswerView:
    """Shows one answer (of one or more model rounds) as its events arrive.

    Args:
        out: The stdout console.
        err: The stderr console.
        markdown: Render the text as Markdown (only on a terminal).
        reasoning: Show the model's thinking.
    """

    def __init__(self, out: Console, err: Console, *, markdown: bool, reasoning: bool) -> None:
        self.out = out
        self.err = err
        self.markdown = markdown and out.is_terminal
        self.show_reasoning = reasoning
        self.text = ""  # the text of the current round
        self._reasoning_open = False
        self._tail: _Tail | None = None
        self._live: Live | None = None
        self._last_refresh = 0.0
        self._text_written = False
        self._text_filter = TerminalFilter() if out.is_terminal else None
        reasoning_console = out if out.is_terminal else err
        self._reasoning_filter = TerminalFilter() if reasoning_console.is_terminal else None

    # --- events ---------------------------------------------------------------------------

    def feed(self, event: StreamEvent) -> None:
        """Show one stream event (text and reasoning; the rest shows in the result)."""
        if type(event) is TextDelta:
            self._text(event.text)
        elif type(event) is ReasoningDelta:
            self._reasoning(event.text)

    def _reasoning(self, text: str) -> None:
        if not self.show_reasoning or not text:
            return
        console = self.out if self.out.is_terminal else self.err
        if self._reasoning_filter is not None:
            text = self._reasoning_filter.feed(text)
        console.print(text, style="dim", end="", markup=False, highlight=False)
        console.file.flush()
        self._reasoning_open = True

    def _close_reasoning(self) -> None:
        if self._reasoning_open:
            console = self.out if self.out.is_terminal else self.err
            if self._reasoning_filter is not None:
                rest = self._reasoning_filter.flush()
                console.print(rest, style="dim", end="", markup=False, highlight=False)
            console.print()  # end its line
            self._reasoning_open = False

    def _text(self, text: str) -> None:
        if not text:
            return
        self._close_reasoning()
        self.text += text
        if not self.markdown:
            if self._text_filter is not None:
                text = self._text_filter.feed(text)
            self.out.file.write(text)
            self.out.file.flush()
            self._text_written = True
            return
        if self._live is None:
            self._tail = _Tail()
            self._live = Live(
                self._tail,
                console=self.out,
                auto_refresh=False,
                transient=True,
                vertical_overflow="visible",
            )
            self._live.start()
        assert self._tail is not None
        self._tail.text = self.text
        now = time.monotonic()
        if now - self._last_refresh >= 1 / _REFRESH_RATE:
            self._live.refresh()
            self._last_refresh = now

    def end_round(self) -> None:
        """The model's turn ended (maybe with tool calls): settle what was shown."""
        self._close_reasoning()
        if self._live is not None:
            self._live.stop()
            self._live = None
            self.out.print(Markdown(strip_controls(self.text)), soft_wrap=False)
        elif self._text_written:
            if self._text_filter is not None:
                self.out.file.write(self._text_filter.flush())
            if not strip_controls(self.text).endswith("\n"):
                self.out.file.write("\n")
            self.out.file.flush()
        self.text = ""
        self._text_written = False

    def tool_call(self, name: str, arguments: dict[str, Any]) -> None:
        """Show a call the model made."""
        console = self.out if self.out.is_terminal else self.err
        args = orjson.dumps(arguments).decode()
        console.print(for_console(f"→ {name}({args})", console), style="cyan", markup=False)

    def tool_result(self, name: str, output: str, *, failed: bool) -> None:
        """Show what a tool returned (shortened)."""
        console = self.out if self.out.is_terminal else self.err
        shown = output if len(output) <= 200 else output[:200] + "…"
        console.print(
            for_console(f"← {name}: {shown}", console),
            style="red" if failed else "dim",
            markup=False,
        )

    def interrupted(self) -> str:
        """The answer was stopped (Ctrl-C): keep what was shown, say so, and return the text
        of the round that was cut short."""
        partial = self.text
        self.end_round()
        self.err.print("[stopped]", style="yellow", markup=False)
        return partial
