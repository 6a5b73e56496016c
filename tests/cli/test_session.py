"""``llmtap chat`` in a pseudo-terminal: the interactive session, and what a terminal shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pexpect

from llmtap.testing import Reply, TestServer
from tests.cli.conftest import ANSI

Spawn = Callable[..., pexpect.spawn]


async def _expect(child: pexpect.spawn, pattern: object) -> None:
    await child.expect(pattern, async_=True)


def _contents(server: TestServer, index: int) -> list[str]:
    return [m["content"] for m in server.chat_requests[index].json["messages"]]


async def test_ctrl_c_stops_the_answer_and_the_session_goes_on(terminal: Spawn) -> None:
    """Ctrl-C in the middle of an answer stops it, keeps what was shown in the history, and
    the next question is answered in the same session."""
    slow = " ".join(f"w{i}" for i in range(300))
    async with TestServer(dialect="ollama") as server:
        server.script(
            Reply(text="First answer."),
            Reply(text=slow, delay_between=0.02),
            Reply(text="Third answer."),
        )
        child = terminal("chat", "--endpoint", server.url)
        await _expect(child, ">>> ")
        child.sendline("hello")
        await _expect(child, "First answer.")
        await _expect(child, ">>> ")
        child.sendline("tell me more")
        await _expect(child, "w5 ")
        child.sendintr()
        await _expect(child, r"\[stopped\]")
        await _expect(child, ">>> ")
        child.sendline("and again")
        await _expect(child, "Third answer.")
        await _expect(child, ">>> ")
        child.sendline("/exit")
        await _expect(child, pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    assert len(server.chat_requests) == 3
    history = _contents(server, 2)
    assert history[:3] == ["hello", "First answer.", "tell me more"]
    partial = history[3]
    assert partial.startswith("w0 w1 w2 w3 w4 w5")
    assert partial != slow
    assert history[4] == "and again"


async def test_reset_forgets_the_conversation(terminal: Spawn) -> None:
    """/reset clears the history: the next request holds only the new question."""
    async with TestServer(dialect="ollama") as server:
        child = terminal("chat", "--endpoint", server.url, "--system", "Be brief.")
        await _expect(child, ">>> ")
        child.sendline("one")
        await _expect(child, "echo: one")
        await _expect(child, ">>> ")
        child.sendline("/reset")
        await _expect(child, "conversation cleared")
        child.sendline("two")
        await _expect(child, "echo: two")
        await _expect(child, ">>> ")
        child.sendeof()
        await _expect(child, pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    assert _contents(server, 0) == ["Be brief.", "one"]
    assert _contents(server, 1) == ["Be brief.", "two"]


async def test_model_and_system_commands_change_the_next_request(terminal: Spawn) -> None:
    """/model NAME and /system TEXT apply to the following questions."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        child = terminal("chat", "--endpoint", server.url, "--model", "a")
        await _expect(child, ">>> ")
        child.sendline("/model b:latest")
        await _expect(child, "model: b:latest")
        child.sendline("/system Answer in French.")
        await _expect(child, "system prompt set")
        child.sendline("hi")
        await _expect(child, "echo: hi")
        await _expect(child, ">>> ")
        child.sendline("/exit")
        await _expect(child, pexpect.EOF)
        child.close()
    request = server.chat_requests[0].json
    assert request["model"] == "b:latest"
    assert request["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
    ]


async def test_save_writes_the_conversation_as_json(terminal: Spawn, tmp_path: Path) -> None:
    """/save FILE.json writes the model and the messages."""
    target = tmp_path / "talk.json"
    async with TestServer(dialect="ollama") as server:
        child = terminal("chat", "--endpoint", server.url)
        await _expect(child, ">>> ")
        child.sendline("hi")
        await _expect(child, "echo: hi")
        await _expect(child, ">>> ")
        child.sendline(f"/save {target}")
        await _expect(child, "saved to")
        child.sendline("/exit")
        await _expect(child, pexpect.EOF)
        child.close()
    assert json.loads(target.read_text()) == {
        "model": "llama3.2:latest",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "echo: hi"},
        ],
    }


async def test_reasoning_is_dimmed_on_a_terminal(terminal: Spawn) -> None:
    """On a terminal the thinking is shown in the dim style (SGR 2) before the answer."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(reasoning="Thinking hard.", text="Done."))
        child = terminal("chat", "--endpoint", server.url, "Q")
        await _expect(child, pexpect.EOF)
        child.close()
    screen = ANSI.sub("", child.before)
    assert "\x1b[2mThinking\x1b[0m\x1b[2m hard.\x1b[0m" in child.before
    assert screen.split()[:2] == ["Thinking", "hard."]
    assert screen.split()[-1] == "Done."
    assert child.exitstatus == 0


async def test_hide_reasoning_on_a_terminal(terminal: Spawn) -> None:
    """--hide-reasoning leaves only the answer on the terminal."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(reasoning="Thinking hard.", text="Done."))
        child = terminal("chat", "--endpoint", server.url, "--hide-reasoning", "Q")
        await _expect(child, pexpect.EOF)
        child.close()
    assert "Thinking" not in child.before
    assert ANSI.sub("", child.before).split()[-1] == "Done."


async def test_markdown_is_rendered_on_a_terminal_and_raw_keeps_it(terminal: Spawn) -> None:
    """On a terminal **bold** is rendered (no asterisks); --raw prints the text as sent."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="Use **bold** here."), Reply(text="Use **bold** here."))
        rendered = terminal("chat", "--endpoint", server.url, "Q")
        await _expect(rendered, pexpect.EOF)
        rendered.close()
        raw = terminal("chat", "--endpoint", server.url, "--raw", "Q")
        await _expect(raw, pexpect.EOF)
        raw.close()
    assert ANSI.sub("", rendered.before).split()[-3:] == ["Use", "bold", "here."]
    assert "\x1b[1m" in rendered.before
    assert ANSI.sub("", raw.before).strip() == "Use **bold** here."


async def test_save_never_overwrites_and_save_bang_does(terminal: Spawn, tmp_path: Path) -> None:
    """/save FILE refuses a file that exists (and leaves it alone); /save! FILE replaces it."""
    target = tmp_path / "talk.md"
    target.write_text("my notes\n", encoding="utf-8")
    async with TestServer(dialect="ollama") as server:
        child = terminal("chat", "--endpoint", server.url)
        await _expect(child, ">>> ")
        child.sendline("hi")
        await _expect(child, "echo: hi")
        await _expect(child, ">>> ")
        child.sendline(f"/save {target}")
        await _expect(child, "exists; /save! ")
        await _expect(child, ">>> ")
        kept = target.read_text(encoding="utf-8")
        child.sendline(f"/save! {target}")
        await _expect(child, "saved to")
        child.sendline("/exit")
        await _expect(child, pexpect.EOF)
        child.close()
    assert kept == "my notes\n"
    assert target.read_text(encoding="utf-8") == (
        "# Conversation with llama3.2:latest\n\n**user:** hi\n\n**assistant:** echo: hi\n"
    )


#: An answer that tries to drive the terminal: set the title (OSC 0), write the clipboard
#: (OSC 52, ended by ST), clear the screen (CSI 2J), and overwrite its line (CR).
_HOSTILE = "safe\x1b]0;pwned-title\x07 text\x1b]52;c;cHduZWQtY2xpcA==\x1b\\ and\x1b[2J more\rover"


def _drove_the_terminal(output: str) -> list[str]:
    """What of the hostile answer's control sequences reached the terminal."""
    found = ["\x1b]", "\x1b[2J", "pwned-title", "cHduZWQtY2xpcA==", "\r" + "over"]
    return [piece for piece in found if piece in output]


async def test_control_sequences_in_raw_text_are_stripped_on_a_terminal(
    terminal: Spawn,
) -> None:
    """--raw on a terminal: the model's escape sequences (title, clipboard, erase) and
    control characters are removed; the plain text is shown."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(chunks=[_HOSTILE[:10], _HOSTILE[10:30], _HOSTILE[30:]]))
        child = terminal("chat", "--endpoint", server.url, "--raw", "Q")
        await _expect(child, pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    assert _drove_the_terminal(child.before) == []
    assert ANSI.sub("", child.before).strip() == "safe text and moreover"


async def test_control_sequences_in_markdown_and_reasoning_are_stripped(
    terminal: Spawn,
) -> None:
    """The Markdown view and the dimmed reasoning strip them too."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(reasoning=_HOSTILE, text=_HOSTILE))
        child = terminal("chat", "--endpoint", server.url, "Q")
        await _expect(child, pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    words = ANSI.sub("", child.before).split()
    assert _drove_the_terminal(child.before) == []
    assert (words[:4], words[-4:]) == (["safe", "text", "and", "moreover"],) * 2
    assert set(words) == {"safe", "text", "and", "moreover"}
