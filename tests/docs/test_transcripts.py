"""Every console transcript of the README and the docs is what its commands print: each
``$ `` command runs (in bash, with the ``llmtap`` of this environment) against
``llmtap.testing`` servers standing in for the ones it names, and its output must be the
lines below it, figures that are measurements aside (times, speeds, dates, ids).

The transcripts are made by this test: ``LLMTAP_DOCS_UPDATE=1 pytest tests/docs`` writes
each command's output into its page, so none is typed by hand. A command ending in ``&``
starts in the background (``llmtap serve-test ... &``: later commands talk to it); a line
``^C`` in the output of a foreground command is where it gets SIGINT (Ctrl-C); ``$?`` is the
previous command's exit code.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.farm import Farm
from tests.docs.markdown import Block, Step, blocks, documents, steps, transcript
from tests.docs.scenarios import SCENARIOS, Run
from tests.docs.test_examples import isolate

UPDATE = os.environ.get("LLMTAP_DOCS_UPDATE") == "1"
TRANSCRIPTS = [block for path in documents() for block in blocks(path, "console")]
BIN = Path(sys.executable).parent
#: Measurements, each replaced by a placeholder on both sides before comparing.
_MEASURED = [
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:µs|ms|s)\b"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:[kMGT]?B/s|tokens/s|tok/s)"), "<rate>"),
    (re.compile(r"\b\d+:\d\d:\d\d\b"), "<clock>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d(?:[ T]\d\d:\d\d(?::\d\d)?)?"), "<date>"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<id>"),
    (re.compile(r"\b(?:resp|chatcmpl|call)[-_][0-9A-Za-z]+"), "<id>"),
    # a file of a few hundred bytes whose JSON holds measured times
    (re.compile(r"\b\d+ B\b"), "<bytes>"),
]
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[=>]|\r")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_RULE = re.compile(r"[─━═┄]+")


def normalise(text: str, *, loose: bool = False) -> str:
    """``text`` with its measurements replaced, and what rich's versions draw differently
    (a rule's length, a blank line between two renderables) left out; ``loose``: every
    number and the padding too."""
    for pattern, placeholder in _MEASURED:
        text = pattern.sub(placeholder, text)
    text = _RULE.sub("─", text)
    if loose:
        text = _NUMBER.sub("N", text)
        text = re.sub(r"[ \t]+", " ", text)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def _plain(terminal: str) -> str:
    """What a terminal shows of ``terminal``'s text: no escape sequences, no carriage
    returns."""
    return _CONTROL.sub("", terminal)


def test_the_docs_have_transcripts() -> None:
    """The test below has something to check: the command line guide's transcripts."""
    assert len(TRANSCRIPTS) >= 10


class Shell:
    """The commands of one transcript, run in order in ``home`` with ``env``."""

    def __init__(self, farm: Farm, home: Path, env: dict[str, str]) -> None:
        self.farm = farm
        self.home = home
        self.env = env
        self.status = 0
        self.background: list[subprocess.Popen[str]] = []
        #: Addresses the commands printed → as the docs show them.
        self.aliases: dict[str, str] = {}

    def run(self, step: Step) -> str:
        """Run ``step``'s command and return what it printed, as the docs would show it."""
        command = step.command
        for actual, shown in self.aliases.items():  # a server this transcript started
            command = command.replace(shown, actual)
        command = self.farm.rewrite(command).replace("$?", str(self.status))
        background = re.fullmatch(r"(.*?)\s*&\s*(?:#.*)?", command)
        if background:
            self._start(background.group(1))
            return ""
        if "\n^C" in "\n" + step.output:
            printed = self._interrupt(command)
        elif "\n>>> " in "\n" + step.output:
            printed = self._session(command, step.output)
        else:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.home,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
                check=False,
            )
            self.status = done.returncode
            printed = done.stdout
        return self.show(printed)

    def show(self, printed: str) -> str:
        """``printed`` with the stand-ins' addresses and this run's home as the docs show
        them."""
        printed = self.farm.unrewrite(printed)
        for actual, shown in self.aliases.items():
            printed = printed.replace(actual, shown)
        printed = printed.replace(str(self.home), "~")
        return "\n".join(line.rstrip() for line in printed.splitlines()).strip("\n")

    def _start(self, command: str) -> None:
        """A server in the background: ``llmtap serve-test`` on a free port, which the
        next commands use as the default endpoint."""
        if "serve-test" not in command:
            raise ValueError(f"only llmtap serve-test runs in the background here: {command}")
        process = self._serve(command)
        self.background.append(process)
        url = self._listening(process)
        self.aliases[url] = "http://127.0.0.1:11434"
        self.env = {**self.env, "LLMTAP_ENDPOINT": url}

    def _serve(self, command: str) -> subprocess.Popen[str]:
        """``llmtap serve-test`` on a free port (shown as its default, 11434), in a session
        of its own (Ctrl-C reaches it alone)."""
        return subprocess.Popen(
            ["bash", "-c", f"exec {command} --port 0"],
            cwd=self.home,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def _interrupt(self, command: str) -> str:
        """A server in the foreground, stopped by Ctrl-C once it is listening."""
        process = self._serve(command)
        lines: list[str] = []
        url = self._listening(process, lines)
        self.aliases[url] = "http://127.0.0.1:11434"
        assert process.stdout is not None
        while not lines[-1].startswith("try:"):
            lines.append(process.stdout.readline().rstrip("\n"))
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
        self.status = process.returncode
        return "\n".join([*lines, "^C", rest.rstrip("\n")])

    def _session(self, command: str, shown: str) -> str:
        """An interactive ``llmtap chat`` session on a terminal (a pseudo-terminal here):
        each ``>>> `` line of the page is typed at the prompt, then the session ends."""
        import pexpect

        typed = [line[4:] for line in shown.splitlines() if line.startswith(">>> ")]
        log = io.StringIO()
        child = pexpect.spawn(
            "bash",
            ["-c", command],
            cwd=str(self.home),
            env={**self.env, "TERM": "dumb"},
            encoding="utf-8",
            timeout=30,
            dimensions=(50, 100),
        )
        child.logfile_read = log
        for text in typed:
            child.expect_exact(">>> ")
            child.sendline(text)
        child.expect(pexpect.EOF)
        child.close()
        self.status = child.exitstatus or 0
        return _plain(log.getvalue())

    @staticmethod
    def _listening(process: subprocess.Popen[str], lines: list[str] | None = None) -> str:
        """The URL a starting ``serve-test`` says it listens on."""
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if lines is not None:
                lines.append(line.rstrip("\n"))
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                return found.group(1)
            if not line:
                break
        raise AssertionError(f"serve-test did not start: {process.poll()}")

    def close(self) -> None:
        for process in self.background:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=10)
            if process.poll() is None:
                process.kill()
                process.communicate()


@contextlib.contextmanager
def shell(block: Block, home: Path) -> Iterator[tuple[Shell, Run]]:
    """The transcript's servers (as its scenario sets them up) and a shell to run it in."""
    with pytest.MonkeyPatch.context() as monkeypatch, Farm(["llama3.2:latest"]) as farm:
        run = Run(farm, home, block.body, {}, monkeypatch)
        with contextlib.contextmanager(SCENARIOS[block.scenario])(run):
            env = {
                **os.environ,
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "LLMTAP_ENDPOINT": farm.server().url,
                "COLUMNS": "100",
                "NO_COLOR": "1",
                "PYTHONUTF8": "1",
            }
            runner = Shell(farm, home, env)
            try:
                yield runner, run
            finally:
                runner.close()


def _write_back(block: Block, made: str) -> None:
    """Put the transcript this run made into the page, in place of the block's body."""
    text = block.path.read_text(encoding="utf-8")
    found = [match.start() for match in re.finditer(re.escape(block.body), text)]
    assert found, f"{block.where} changed while the test ran"
    start = min(found, key=lambda at: abs(at - block.start))  # earlier blocks may have grown
    block.path.write_text(text[:start] + made + text[start + len(block.body) :], "utf-8")


@pytest.mark.parametrize("block", TRANSCRIPTS, ids=lambda block: block.where)
def test_every_transcript_is_what_its_commands_print(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command of the transcript prints what the page shows under it."""
    isolate(monkeypatch, tmp_path)
    shown = steps(block.body)
    made: list[Step] = []
    with shell(block, tmp_path) as (runner, run):
        for step in shown:
            made.append(Step(step.command, runner.run(step)))
    if UPDATE:
        _write_back(block, transcript(made))
        return
    for expected, actual in zip(shown, made, strict=True):
        assert normalise(actual.output, loose=run.loose) == normalise(
            expected.output, loose=run.loose
        ), f"{block.where}: `{expected.command}` printed:\n{actual.output}"


def test_normalise_hides_measurements_only() -> None:
    """Times, speeds, dates and ids are masked; words and counts are not."""
    line = "✓ first token    0.024 s  (5 ms) 2025-06-01 12:04 resp_8f3a 46.4 tokens/s 3 models"
    assert normalise(line) == ("✓ first token    <time>  (<time>) <date> <id> <rate> 3 models")
    assert normalise("│ 1 │ 0.5 │", loose=True) == "│ N │ N │"
    assert normalise("NAME\n─────\n\nx") == normalise("NAME\n──────\nx") == "NAME\n─\nx"
