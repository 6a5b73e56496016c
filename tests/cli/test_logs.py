"""The conversation log on the command line: ``llmtap chat`` logs by default (``--no-log``,
``LLMTAP_LOG=0`` and ``llmtap logs off`` stop it), ``chat -c`` / ``--cid`` send a logged
conversation again byte for byte, and ``llmtap logs`` finds and shows the calls."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest
from typer.testing import CliRunner

from llmtap.cli import app
from llmtap.testing import RecordedRequest, Reply, TestServer
from tests.cli.conftest import ANSI, Runner, assert_clean_error

Spawn = Callable[..., pexpect.spawn]


def default_log(home: Path) -> Path:
    """Where the command logs when nothing says otherwise (the tests' HOME is private, and
    XDG_DATA_HOME is not set)."""
    return home / ".local" / "share" / "llmtap" / "logs.db"


async def logged(cli: Runner, *args: str, env: dict[str, str] | None = None) -> list[Any]:
    """``llmtap logs --json ARGS``, parsed."""
    result = await cli("logs", "--json", *args, env=env)
    assert (result.code, result.err) == (0, "")
    rows: list[Any] = json.loads(result.out)
    return rows


def messages_text(request: RecordedRequest) -> bytes:
    """The raw bytes of the ``messages`` array of a request body, as they were sent."""
    body = request.body.decode()
    start = body.index('"messages":') + len('"messages":')
    _, end = json.JSONDecoder().raw_decode(body, start)
    return body[start:end].encode()


# --- logging by default, and turning it off ---------------------------------------------------


async def test_chat_is_logged_by_default(cli: Runner, home: Path) -> None:
    """A chat with no log setting is a row of ~/.local/share/llmtap/logs.db: the prompt, the
    answer, the model, the tokens, and the request as sent."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "Why is the sky blue?")
    assert (result.code, result.out) == (0, "echo: Why is the sky blue?\n")
    assert default_log(home).is_file()
    [row] = await logged(cli)
    assert (row["prompt"], row["text"], row["model"]) == (
        "Why is the sky blue?",
        "echo: Why is the sky blue?",
        "llama3.2:latest",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached"]) == (10, 6, False)
    assert row["request"]["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.mark.parametrize("how", ["--no-log", "LLMTAP_LOG=0", "LLMTAP_LOG=off", "logs off"])
async def test_each_way_of_turning_the_log_off_logs_nothing(
    cli: Runner, home: Path, how: str
) -> None:
    """--no-log, LLMTAP_LOG=0 (or off), and `llmtap logs off` before: the chat is answered
    and no log file is made."""
    flags = ["--no-log"] if how == "--no-log" else []
    env = dict([how.split("=")]) if how.startswith("LLMTAP_LOG") else {}
    if how == "logs off":
        switched = await cli("logs", "off")
        assert switched.out == (
            "logging is off: llmtap chat logs nothing (--log logs one chat; `llmtap logs on` "
            "turns it back on)\n"
        )
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, *flags, "Hi", env=env)
    assert (result.code, result.out, result.err) == (0, "echo: Hi\n", "")
    assert not default_log(home).exists()


async def test_logs_on_after_off_logs_again(cli: Runner, home: Path) -> None:
    """`llmtap logs off`, a chat (not logged), `llmtap logs on`, a chat (logged); --log logs
    one chat while it is off."""
    async with TestServer(dialect="ollama") as server:
        await cli("logs", "off")
        await cli("chat", "-e", server.url, "unlogged")
        forced = await cli("chat", "-e", server.url, "--log", "forced")
        switched = await cli("logs", "on")
        await cli("chat", "-e", server.url, "logged")
    assert (forced.code, switched.code) == (0, 0)
    assert switched.out == f"logging is on: llmtap chat logs to {default_log(home)}\n"
    assert [row["prompt"] for row in await logged(cli)] == ["forced", "logged"]


async def test_logs_on_warns_when_the_variable_still_says_off(cli: Runner) -> None:
    """`llmtap logs on` with LLMTAP_LOG=0 set: the marker goes, and a warning says that the
    variable keeps the log off."""
    result = await cli("logs", "on", env={"LLMTAP_LOG": "0"})
    assert result.code == 0
    assert result.err == (
        "warning: LLMTAP_LOG=0 is set, and it beats this: logging stays off while it is\n"
    )


async def test_log_db_variable_names_the_file(cli: Runner, home: Path, tmp_path: Path) -> None:
    """LLMTAP_LOG_DB (the library's log_db) is where the chat logs, what `llmtap logs` reads
    and what `llmtap logs path` prints; the default file is not made."""
    target = tmp_path / "elsewhere" / "talks.db"
    env = {"LLMTAP_LOG_DB": str(target)}
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "Hi", env=env)
    path = await cli("logs", "path", env=env)
    assert (result.code, path.out) == (0, f"{target}\n")
    assert [row["prompt"] for row in await logged(cli, env=env)] == ["Hi"]
    assert not default_log(home).exists()


async def test_log_variable_that_is_no_switch_is_a_usage_error(cli: Runner) -> None:
    """LLMTAP_LOG=maybe: exit 2, saying what it takes."""
    result = await cli("chat", "-e", "http://127.0.0.1:9", "Hi", env={"LLMTAP_LOG": "maybe"})
    assert (result.code, result.err) == (
        2,
        "error: LLMTAP_LOG must be 1 (or true, yes, on) or 0 (or false, no, off), not 'maybe'\n",
    )


async def test_unusable_default_log_is_a_warning_and_the_chat_goes_on(
    cli: Runner, tmp_path: Path
) -> None:
    """When the default log's folder cannot be made (XDG_DATA_HOME is a file), the chat is
    answered, with one warning that says how to silence it."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "Hi", env={"XDG_DATA_HOME": str(blocker)})
    assert (result.code, result.out) == (0, "echo: Hi\n")
    assert result.err.startswith(f"warning: Cannot open the conversation log at {blocker}/")
    assert result.err.endswith(
        "; choose a writable path; so this run is not logged (--no-log, LLMTAP_LOG=0 or "
        "`llmtap logs off` stop this warning)\n"
    )
    assert len(result.err.splitlines()) == 1


async def test_unusable_log_db_that_was_named_is_an_error(cli: Runner, tmp_path: Path) -> None:
    """A log_db the user named that is not a database: exit 2 and what to do, before any
    request."""
    bad = tmp_path / "notes.db"
    bad.write_text("this is not SQLite, and it is long enough to be read as a header\n" * 4)
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "Hi", env={"LLMTAP_LOG_DB": str(bad)})
    assert result.code == 2
    assert result.err.startswith(f"error: The conversation log at {bad} cannot be used: ")
    assert_clean_error(result)
    assert server.chat_requests == []


# --- continuing a conversation ------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ollama", "vllm"])
async def test_continue_sends_the_stored_history_byte_for_byte(cli: Runner, dialect: str) -> None:
    """`chat -c "next"`: the second request's messages are the first request's, byte for
    byte (the first array's text, less its closing bracket, begins the second's), then the
    answer, then the new question; both calls are one conversation in the log."""
    answer = 'Olá "quoted" \\ tab\there, 🦙 and\u2028a line separator'
    async with TestServer(dialect=dialect) as server:  # type: ignore[arg-type]
        server.script(Reply(text=answer), Reply(text="second answer"))
        first = await cli("chat", "-e", server.url, "-s", "Be brief. «»", "Tell me\nmore ü")
        second = await cli("chat", "-e", server.url, "-c", "next")
    assert (first.code, second.code, second.out) == (0, 0, "second answer\n")
    before, after = (messages_text(request) for request in server.chat_requests)
    assert after.startswith(before[:-1] + b",")
    sent = [json.loads(before), json.loads(after)]
    assert sent[1] == [
        *sent[0],
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "next"},
    ]
    rows = await logged(cli)
    assert [row["prompt"] for row in rows] == ["Tell me\nmore ü", "next"]
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]


async def test_cid_continues_an_older_conversation(cli: Runner) -> None:
    """--cid ID goes on with that conversation, not the latest: its history is sent, and the
    new call joins it in the log."""
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "one")
        await cli("chat", "-e", server.url, "two")
        first, second = await logged(cli)
        assert first["conversation_id"] != second["conversation_id"]
        result = await cli("chat", "-e", server.url, "--cid", first["conversation_id"], "three")
    assert (result.code, result.out) == (0, "echo: three\n")
    assert server.chat_requests[2].json["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "three"},
    ]
    rows = await logged(cli, "--cid", first["conversation_id"])
    assert [row["prompt"] for row in rows] == ["one", "three"]


async def test_continue_uses_the_conversations_model_unless_model_is_given(cli: Runner) -> None:
    """-c sends to the model the conversation used (with several on the server and no
    --model, a new chat could not choose); -m picks another."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        await cli("chat", "-e", server.url, "-m", "b:latest", "hi")
        kept = await cli("chat", "-e", server.url, "-c", "more")
        changed = await cli("chat", "-e", server.url, "-c", "-m", "a:latest", "again")
    assert (kept.code, changed.code) == (0, 0)
    assert [request.json["model"] for request in server.chat_requests] == [
        "b:latest",
        "b:latest",
        "a:latest",
    ]
    assert [m["content"] for m in server.chat_requests[2].json["messages"]] == [
        "hi",
        "echo: hi",
        "more",
        "echo: more",
        "again",
    ]


async def test_continue_reads_the_log_when_logging_is_off(cli: Runner) -> None:
    """-c with --no-log still reads the log for the history, and writes nothing to it."""
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "one")
        result = await cli("chat", "-e", server.url, "-c", "--no-log", "two")
    assert (result.code, result.out) == (0, "echo: two\n")
    assert len(server.chat_requests[1].json["messages"]) == 3
    assert [row["prompt"] for row in await logged(cli)] == ["one"]


async def test_unknown_cid_is_a_usage_error(cli: Runner, home: Path) -> None:
    """--cid naming no conversation of the log: exit 2, naming the id and `llmtap logs`;
    nothing is sent."""
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "one")
        result = await cli("chat", "-e", server.url, "--cid", "nosuch", "two")
    assert result.code == 2
    assert result.err == (
        f"error: There is no conversation 'nosuch' in the log at {default_log(home)}; "
        "`llmtap logs` lists them (the CONVERSATION column)\n"
    )
    assert len(server.chat_requests) == 1


async def test_continue_without_a_log_is_a_usage_error(cli: Runner, home: Path) -> None:
    """-c before anything was logged: exit 2, naming the file that is not there."""
    result = await cli("chat", "-e", "http://127.0.0.1:9", "-c", "next")
    assert result.code == 2
    assert result.err == (
        f"error: There is no conversation log at {default_log(home)}, so there is nothing to "
        "continue; chats are logged there unless --no-log, LLMTAP_LOG=0 or `llmtap logs off`\n"
    )


async def test_conversation_whose_calls_failed_cannot_be_continued(cli: Runner) -> None:
    """A conversation with no answered call (its one request failed): exit 2, saying so."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(status=400, error_message="bad request"))
        failed = await cli("chat", "-e", server.url, "one", env={"LLMTAP_MAX_RETRIES": "0"})
        [row] = await logged(cli)
        result = await cli("chat", "-e", server.url, "-c", "two")
    assert (failed.code, row["error_type"]) == (1, "LLMResponseError")
    assert (result.code, result.err) == (
        2,
        f"error: Conversation {row['conversation_id']!r} has no answer to continue from (its "
        "calls failed); `llmtap logs --cid ID` shows its calls, `llmtap logs` the others\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-c", "-s", "Be brief."],
            "--system cannot change a conversation that goes on (-c, --cid): it keeps the "
            "system prompt it had",
        ),
        (
            ["-c", "--cid", "abc"],
            "-c continues the latest conversation, --cid ID another: give one",
        ),
    ],
)
async def test_conflicting_continue_options_are_usage_errors(
    cli: Runner, args: list[str], message: str
) -> None:
    """-s with -c (or --cid), and -c with --cid: exit 2 and why."""
    result = await cli("chat", "-e", "http://127.0.0.1:9", *args, "next")
    assert (result.code, result.err) == (2, f"error: {message}\n")


async def _expect(child: pexpect.spawn, pattern: object) -> None:
    await child.expect(pattern, async_=True)


async def test_session_continues_and_save_keeps_the_whole_conversation(
    cli: Runner, terminal: Spawn, tmp_path: Path
) -> None:
    """`llmtap chat -c` with no prompt: a session whose first question follows the logged
    history; /save writes the history and the new exchange."""
    target = tmp_path / "talk.json"
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "-s", "Be brief.", "hi")
        child = terminal("chat", "-e", server.url, "-c")
        await _expect(child, "continuing conversation [0-9a-f]+: 3 earlier messages")
        await _expect(child, ">>> ")
        child.sendline("more")
        await _expect(child, "echo: more")
        await _expect(child, ">>> ")
        child.sendline(f"/save {target}")
        await _expect(child, "saved to")
        child.sendline("/exit")
        await _expect(child, pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "echo: hi"},
        {"role": "user", "content": "more"},
    ]
    assert server.chat_requests[1].json["messages"] == history
    assert json.loads(target.read_text(encoding="utf-8")) == {
        "model": "llama3.2:latest",
        "messages": [*history, {"role": "assistant", "content": "echo: more"}],
    }


# --- llmtap logs ----------------------------------------------------------------------------


async def _three_calls(cli: Runner) -> None:
    """Three logged calls: two to a:latest, one (the middle) to b:latest."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        server.script(
            Reply(text="Rayleigh scattering of sunlight"),
            Reply(text="Green, mostly"),
            Reply(text="Because of water"),
        )
        for model, prompt in [
            ("a:latest", "Why is the sky blue?"),
            ("b:latest", "What colour is grass?"),
            ("a:latest", "Why is the sea blue?"),
        ]:
            result = await cli("chat", "-e", server.url, "-m", model, prompt)
            assert result.code == 0


async def test_logs_query_finds_words_in_the_prompt_or_the_answer(cli: Runner) -> None:
    """-q TEXT: calls whose prompt or answer holds every word of it, oldest first."""
    await _three_calls(cli)
    by_prompt = await logged(cli, "-q", "blue why")
    by_answer = await logged(cli, "-q", "scattering")
    in_neither = await logged(cli, "-q", "blue grass")
    assert [row["prompt"] for row in by_prompt] == ["Why is the sky blue?", "Why is the sea blue?"]
    assert [row["prompt"] for row in by_answer] == ["Why is the sky blue?"]
    assert in_neither == []


async def test_logs_filters_by_model_and_conversation_and_count(cli: Runner) -> None:
    """--model, --conversation and -n narrow the calls; -n keeps the latest N, shown oldest
    first."""
    await _three_calls(cli)
    every = await logged(cli)
    by_model = await logged(cli, "--model", "a:latest")
    one = await logged(cli, "--conversation", every[1]["conversation_id"])
    latest_two = await logged(cli, "-n", "2")
    assert [row["prompt"] for row in every] == [
        "Why is the sky blue?",
        "What colour is grass?",
        "Why is the sea blue?",
    ]
    assert [row["prompt"] for row in by_model] == [every[0]["prompt"], every[2]["prompt"]]
    assert [row["prompt"] for row in one] == ["What colour is grass?"]
    assert [row["prompt"] for row in latest_two] == [every[1]["prompt"], every[2]["prompt"]]


async def test_logs_json_holds_every_field(cli: Runner) -> None:
    """--json: one array of objects with every logged field."""
    await _three_calls(cli)
    [row] = await logged(cli, "-n", "1")
    assert sorted(row) == sorted(
        [
            "id", "conversation_id", "time", "endpoint", "server", "model", "prompt", "text",
            "reasoning", "tool_calls", "finish_reason", "prompt_tokens", "completion_tokens",
            "total_tokens", "timings", "attempts", "cached", "error_type", "error", "request",
        ]
    )  # fmt: skip
    assert (row["text"], row["finish_reason"], row["server"]) == (
        "Because of water",
        "stop",
        "ollama",
    )
    assert row["time"].endswith("+00:00")


async def test_logs_in_a_pipe_is_one_whole_line_per_call(cli: Runner) -> None:
    """Off a terminal: a header, a rule, then one line per call with the local time (UTC in
    the tests), conversation, model, tokens, and the first lines of prompt and answer, uncut;
    a failed call shows its error type."""
    long_prompt = "Tell me " + "very " * 40 + "much\nsecond line"
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="Short.\nMore."), Reply(status=400))
        await cli("chat", "-e", server.url, long_prompt)
        await cli("chat", "-e", server.url, "fails", env={"LLMTAP_MAX_RETRIES": "0"})
    rows = await logged(cli)
    result = await cli("logs")
    assert result.code == 0
    header, rule, *lines = result.out.splitlines()
    assert header.split() == ["TIME", "CONVERSATION", "MODEL", "IN", "OUT", "PROMPT", "ANSWER"]
    assert set(rule.strip()) <= {"─", " "}
    assert len(lines) == 2
    date, clock = rows[0]["time"][:10], rows[0]["time"][11:19]
    assert lines[0].split()[:6] == [
        date,
        clock,
        rows[0]["conversation_id"],
        "llama3.2:latest",
        str(rows[0]["prompt_tokens"]),
        str(rows[0]["completion_tokens"]),
    ]
    assert " ".join(lines[0].split()[6:]) == "Tell me " + "very " * 40 + "much … Short. …"
    assert lines[1].split()[2:] == [
        rows[1]["conversation_id"],
        "llama3.2:latest",
        "fails",
        "error:",
        "LLMResponseError",
    ]


async def test_logs_on_a_terminal_fits_the_table_to_its_width(cli: Runner, terminal: Spawn) -> None:
    """On a terminal (100 columns) the table has its columns and fits: a long prompt is cut
    with an ellipsis."""
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "word " * 60)
    [row] = await logged(cli)
    child = terminal("logs")
    await _expect(child, pexpect.EOF)
    child.close()
    lines = ANSI.sub("", child.before).replace("\r", "").splitlines()
    assert child.exitstatus == 0
    assert lines[0].split() == ["TIME", "CONVERSATION", "MODEL", "IN", "OUT", "PROMPT", "ANSWER"]
    assert max(len(line) for line in lines) <= 100
    assert lines[2].split()[2:6] == [
        row["conversation_id"],
        "llama3.2:latest",
        str(row["prompt_tokens"]),
        str(row["completion_tokens"]),
    ]
    assert lines[2].split()[6:] == ["word", "word…", "echo:", "wor…"]


async def test_logs_path_prints_the_default_file(cli: Runner, home: Path) -> None:
    """`llmtap logs path`: the default log file, whether or not it exists yet."""
    result = await cli("logs", "path")
    assert (result.code, result.out, result.err) == (0, f"{default_log(home)}\n", "")


async def test_logs_database_reads_another_file(cli: Runner, tmp_path: Path) -> None:
    """--database FILE reads that log (and `logs --database FILE path` names it)."""
    other = tmp_path / "other.db"
    async with TestServer(dialect="ollama") as server:
        await cli("chat", "-e", server.url, "Hi", env={"LLMTAP_LOG_DB": str(other)})
    rows = await logged(cli, "--database", str(other))
    default = await logged(cli)
    path = await cli("logs", "--database", str(other), "path")
    assert ([row["prompt"] for row in rows], default, path.out) == (["Hi"], [], f"{other}\n")


async def test_logs_with_nothing_logged(cli: Runner, home: Path) -> None:
    """No log yet: the table says so on stderr (and makes no file); --json prints []."""
    table = await cli("logs")
    as_json = await cli("logs", "--json")
    assert (table.code, table.out) == (0, "")
    assert table.err == f"nothing is logged yet (there is no log at {default_log(home)})\n"
    assert (as_json.code, as_json.out) == (0, "[]\n")
    assert not default_log(home).exists()


@pytest.mark.parametrize("args", [["logs"], ["cache", "info"]])
def test_logs_and_cache_have_help_with_examples(args: list[str]) -> None:
    """--help of `logs` and `cache info` renders (in-process: no I/O), and `logs` ends with
    examples of itself."""
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    if args == ["logs"]:
        examples = result.output.split("Examples:", 1)[1].split()
        assert examples[:2] == ["llmtap", "logs"]


async def test_logs_help_shows_no_type_on_flags(cli: Runner) -> None:
    """`llmtap logs --help`: no `<bool>` on its flags (as every other command)."""
    result = await cli("logs", "--help", env={"COLUMNS": "200"})
    options = [line for line in result.out.splitlines() if line.startswith("│ -")]
    assert result.code == 0
    assert len(options) >= 5
    assert [line for line in options if re.search(r"<[a-z]+[^>]*>", line)] == []


# --- batch and bench --------------------------------------------------------------------------


async def test_batch_logs_only_when_asked(cli: Runner, home: Path, tmp_path: Path) -> None:
    """`llmtap batch` logs nothing by default; --log logs every line's call."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"custom_id": "a", "prompt": "q1"}\n{"custom_id": "b", "prompt": "q2"}\n')
    async with TestServer(dialect="ollama") as server:
        quiet = await cli("batch", str(source), "-o", str(tmp_path / "o1.jsonl"), "-e", server.url)
        assert (quiet.code, default_log(home).exists()) == (0, False)
        loud = await cli(
            "batch", str(source), "-o", str(tmp_path / "o2.jsonl"), "-e", server.url, "--log"
        )
    assert loud.code == 0
    assert sorted(row["prompt"] for row in await logged(cli)) == ["q1", "q2"]


async def test_bench_never_logs(cli: Runner, home: Path) -> None:
    """`llmtap bench` with LLMTAP_LOG=1 still logs nothing: measured requests are not
    conversations."""
    async with TestServer(dialect="ollama") as server:
        result = await cli(
            "bench", "-e", server.url, "--concurrency", "1", "--requests", "1", "--json",
            env={"LLMTAP_LOG": "1"},
        )  # fmt: skip
    assert result.code == 0
    assert not default_log(home).exists()
