"""``llmtap chat`` run as a subprocess: one question, stdin, JSON, reasoning, tools, errors."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
from pathlib import Path

from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.cli.conftest import Runner, assert_clean_error, cli_env, run_and_close_stdout


async def test_prompt_is_answered_as_plain_text(cli: Runner) -> None:
    """With a prompt and stdout not a terminal, the answer is written verbatim, then a newline."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="Hello there, *friend*"))
        result = await cli("chat", "--endpoint", server.url, "Hi")
    assert (result.code, result.out, result.err) == (0, "Hello there, *friend*\n", "")
    assert server.chat_requests[0].json["messages"] == [{"role": "user", "content": "Hi"}]


async def test_piped_stdin_is_the_prompt(cli: Runner) -> None:
    """Without a prompt argument, piped stdin (stripped) is the question."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="Four."))
        result = await cli("chat", "--endpoint", server.url, stdin=b"What is 2+2?\n")
    assert (result.code, result.out) == (0, "Four.\n")
    assert server.chat_requests[0].json["messages"][-1]["content"] == "What is 2+2?"


async def test_system_prompt_comes_first(cli: Runner) -> None:
    """--system sends a system message before the question."""
    async with TestServer(dialect="vllm") as server:
        result = await cli("chat", "-e", server.url, "--system", "Be brief.", "Hi")
    assert (result.code, result.out) == (0, "echo: Hi\n")
    assert server.chat_requests[0].json["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }


async def test_json_prints_the_whole_result(cli: Runner) -> None:
    """--json prints the ChatResult as JSON: text, reasoning, finish reason, usage, model."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(reasoning="Short one.", text="Hello there"))
        result = await cli("chat", "--endpoint", server.url, "--json", "Hi")
    assert result.code == 0
    data = json.loads(result.out)
    assert (data["text"], data["reasoning"], data["finish_reason"]) == (
        "Hello there",
        "Short one.",
        "stop",
    )
    assert data["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "source": "server",
    }
    assert (data["model"], data["server"]) == ("llama3.2:latest", "ollama")
    assert data["message"]["content"] == "Hello there"


async def test_reasoning_goes_to_stderr_when_stdout_is_redirected(cli: Runner) -> None:
    """Redirected stdout holds the answer alone; the thinking goes to stderr."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(reasoning="Let me think.", text="Answer."))
        result = await cli("chat", "--endpoint", server.url, "Q")
    assert (result.code, result.out, result.err) == (0, "Answer.\n", "Let me think.\n")


async def test_hide_reasoning_drops_it(cli: Runner) -> None:
    """--hide-reasoning shows no thinking anywhere."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(reasoning="Let me think.", text="Answer."))
        result = await cli("chat", "--endpoint", server.url, "--hide-reasoning", "Q")
    assert (result.code, result.out, result.err) == (0, "Answer.\n", "")


async def test_unreachable_server_exits_3(cli: Runner, closed_port_url: str) -> None:
    """Nothing listening: exit code 3 and a one-line error that says what to do."""
    result = await cli("chat", "--endpoint", closed_port_url, "Hi")
    assert result.code == 3
    assert result.out == ""
    assert result.err.startswith(f"error: Cannot reach {closed_port_url}")
    assert "ollama serve" in result.err
    assert_clean_error(result)


async def test_unknown_model_exits_4_with_the_pull_fix(cli: Runner) -> None:
    """A model the server does not have: exit code 4, naming `ollama pull`."""
    async with TestServer(dialect="ollama", models=["qwen3:latest"]) as server:
        result = await cli("chat", "--endpoint", server.url, "--model", "nosuch", "Hi")
    assert result.code == 4
    assert result.err == (
        "error: Model 'nosuch' is not on the server; run `ollama pull nosuch`. "
        "Available: qwen3:latest\n"
    )


async def test_server_error_exits_1(cli: Runner) -> None:
    """A server error that retries do not cure: exit code 1 with the server's message."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(status=400, error_message="This model's maximum context is 8"))
        result = await cli("chat", "--endpoint", server.url, "Hi")
    assert result.code == 1
    assert result.err == "error: The server answered 400: This model's maximum context is 8\n"


async def test_auth_refused_exits_5(cli: Runner) -> None:
    """Wrong credentials: exit code 5, and the key does not appear in the message."""
    async with TestServer(dialect="openai", api_key="sk-right") as server:
        result = await cli("chat", "-e", server.url, "-m", "m", "--api-key", "sk-wrong-123", "Hi")
    assert result.code == 5
    assert result.err == (
        "error: The server refused the credentials (401: Incorrect API key provided. You can "
        "find your API key at https://platform.openai.com/account/api-keys.). Pass a valid key "
        "with --api-key KEY (or set LLMTAP_API_KEY)\n"
    )
    assert "sk-wrong-123" not in result.err + result.out


async def test_empty_stdin_is_a_usage_error(cli: Runner) -> None:
    """No prompt and nothing on stdin: exit code 2 and how to give one."""
    result = await cli("chat", "--endpoint", "http://127.0.0.1:9", stdin=b"  \n")
    assert result.code == 2
    assert result.err == (
        'error: Nothing to ask: stdin was empty. Give a prompt: llmtap chat "..."\n'
    )


async def test_several_models_and_none_chosen_says_use_model(cli: Runner) -> None:
    """A server with several models and no --model: exit 4 (a model error, as in `check`),
    saying --model and LLMTAP_MODEL instead of the library's LLMConfig(model=...)."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        result = await cli("chat", "--endpoint", server.url, "Hi")
    assert result.code == 4
    assert result.err == (
        "error: No model is set and the server has several: a:latest, b:latest. Pass --model "
        "NAME (or set LLMTAP_MODEL) with one of them\n"
    )


def _write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


async def test_tools_module_functions_are_called(cli: Runner, tmp_path: Path) -> None:
    """--tools FILE.py: the model's call runs the @tool function, its result goes back to the
    model, and the calls are shown on stderr when stdout is redirected."""
    tools = _write(
        tmp_path / "weather_tools.py",
        '''
        from llmtap import tool

        @tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            return f"sunny in {city}"
        ''',
    )
    async with TestServer(dialect="ollama") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"}, id="call_1")]),
            Reply(text="It is sunny in Paris."),
        )
        result = await cli("chat", "-e", server.url, "--tools", str(tools), "Weather?")
    assert (result.code, result.out) == (0, "It is sunny in Paris.\n")
    assert result.err == '→ get_weather({"city":"Paris"})\n← get_weather: sunny in Paris\n'
    second = server.chat_requests[1].json
    assert second["tools"][0]["function"]["name"] == "get_weather"
    assert second["messages"][-1] == {
        "role": "tool",
        "content": "sunny in Paris",
        "tool_call_id": "call_1",
        "name": "get_weather",
    }


async def test_tools_objects_with_to_schema_are_called(cli: Runner, tmp_path: Path) -> None:
    """Any module-level object with to_schema() and call(arguments) works as a tool."""
    tools = _write(
        tmp_path / "adder.py",
        """
        class Adder:
            def to_schema(self):
                return {"type": "function", "function": {"name": "add", "parameters": {
                    "type": "object", "properties": {"a": {"type": "integer"},
                    "b": {"type": "integer"}}}}}

            def call(self, arguments):
                return {"sum": arguments["a"] + arguments["b"]}

        add = Adder()
        """,
    )
    async with TestServer(dialect="vllm") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("add", {"a": 2, "b": 3}, id="c1")]),
            Reply(text="5"),
        )
        result = await cli("chat", "-e", server.url, "--tools", str(tools), "2+3?")
    assert (result.code, result.out) == (0, "5\n")
    assert result.err == '→ add({"a":2,"b":3})\n← add: {"sum":5}\n'
    assert server.chat_requests[1].json["messages"][-1]["content"] == '{"sum":5}'


async def test_tools_module_that_cannot_be_imported_is_a_usage_error(cli: Runner) -> None:
    """--tools naming no module: exit code 2 and what to give instead."""
    result = await cli("chat", "-e", "http://127.0.0.1:9", "--tools", "no_such_tools_mod", "Hi")
    assert result.code == 2
    assert result.err == (
        "error: --tools: no module named 'no_such_tools_mod'; give an importable module or a "
        ".py file\n"
    )


async def test_ctrl_c_exits_130(home: Path) -> None:
    """SIGINT while an answer streams: exit code 130, "interrupted", and no traceback."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text=" ".join(["word"] * 400), delay_between=0.02))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmtap.cli",
            "chat",
            "--endpoint",
            server.url,
            "Hi",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home),
        )
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.read(4), timeout=60)
        process.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert first == b"word"
    assert process.returncode == 130
    assert err == b"interrupted\n"
    assert len(first + rest) < len(" ".join(["word"] * 400))


async def test_prompt_and_piped_text_go_in_one_message(cli: Runner) -> None:
    """PROMPT with piped stdin: one user message, PROMPT first as the instruction, then the
    piped text between <input> lines as its material."""
    async with TestServer(dialect="ollama") as server:
        result = await cli(
            "chat", "-e", server.url, "Summarize this", stdin=b"llamas are camelids.\n"
        )
    assert result.code == 0
    assert server.chat_requests[0].json["messages"] == [
        {"role": "user", "content": "Summarize this\n\n<input>\nllamas are camelids.\n</input>"}
    ]


async def test_prompt_with_an_empty_pipe_is_the_prompt_alone(cli: Runner) -> None:
    """PROMPT with a pipe that carries nothing (or only blank lines): the prompt alone."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "Hi", stdin=b"\n\n")
    assert (result.code, result.out) == (0, "echo: Hi\n")
    assert server.chat_requests[0].json["messages"] == [{"role": "user", "content": "Hi"}]


async def test_invalid_utf8_on_stdin_is_replaced_with_a_warning(cli: Runner) -> None:
    """Bytes on stdin that are not UTF-8 are sent as U+FFFD, with a warning naming the first
    one; the answer still comes."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, stdin=b"caf\xe9 au lait\n")
    assert (result.code, result.out) == (0, "echo: caf\ufffd au lait\n")
    assert result.err == (
        "warning: stdin is not valid UTF-8 (byte 3: 0xe9); the invalid bytes are sent as \ufffd\n"
    )


async def test_invalid_utf8_in_the_prompt_argument(cli: Runner) -> None:
    """A PROMPT argument with bytes that are not UTF-8 (as a Latin-1 terminal sends) is sent
    with U+FFFD for them, with a warning."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "caf\udce9")
    assert (result.code, result.out) == (0, "echo: caf\ufffd\n")
    assert result.err == (
        "warning: the PROMPT argument is not valid UTF-8 (byte 3: 0xe9); the invalid bytes "
        "are sent as \ufffd\n"
    )


async def test_closed_stdout_stops_quietly(home: Path) -> None:
    """Stdout closed by its reader mid-answer (`llmtap chat ... | head -c 4`): exit 141 as a
    process that SIGPIPE ends, and nothing on stderr."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text=" ".join(["word"] * 200), delay_between=0.01))
        result = await run_and_close_stdout(home, "chat", "--endpoint", server.url, "Hi", keep=4)
    assert (result.out, result.code, result.err) == ("word", 141, "")


async def test_idle_timeout_flag_and_its_error_name_the_flag(cli: Runner) -> None:
    """--idle-timeout sets the deadline, and the error for it names the flag and the
    variable, not the library's idle_timeout alone."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="one two three", stall_after=(1, 5.0)))
        result = await cli(
            "chat",
            "-e",
            server.url,
            "--idle-timeout",
            "0.5",
            "Hi",
            env={"LLMTAP_MAX_RETRIES": "0"},
        )
    assert result.code == 1
    assert result.err == (
        "error: The server went silent for longer than idle_timeout (0.5 s; --idle-timeout or "
        "LLMTAP_IDLE_TIMEOUT); raise it if the model is slow to load or to answer\n"
    )


async def test_first_token_timeout_flag_and_its_error_name_the_flag(cli: Runner) -> None:
    """--first-token-timeout sets the deadline for the first chunk, and its error names the
    flag and the variable."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="late", delay_before_headers=5.0))
        result = await cli(
            "chat",
            "-e",
            server.url,
            "--first-token-timeout",
            "0.5",
            "Hi",
            env={"LLMTAP_MAX_RETRIES": "0"},
        )
    assert result.code == 1
    assert result.err == (
        "error: No answer arrived within first_token_timeout (0.5 s; --first-token-timeout or "
        "LLMTAP_FIRST_TOKEN_TIMEOUT); raise it if the model is slow to load or to answer\n"
    )


async def test_sigterm_stops_like_ctrl_c_and_exits_143(home: Path) -> None:
    """SIGTERM while an answer streams: what was written stays (ended by a newline),
    "terminated" on stderr, exit code 143 (128 + SIGTERM), no traceback."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text=" ".join(["word"] * 400), delay_between=0.02))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmtap.cli",
            "chat",
            "--endpoint",
            server.url,
            "Hi",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(home),
        )
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.read(4), timeout=60)
        process.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert (first, process.returncode, err) == (b"word", 143, b"terminated\n")
    assert (first + rest).endswith(b"word\n")
    assert len(first + rest) < len(" ".join(["word"] * 400))


async def test_answer_cut_by_max_tokens_shows_a_sign(cli: Runner) -> None:
    """An answer that ends because --max-tokens was reached ends with a note on stderr;
    stdout holds the answer alone."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="one two", finish_reason="length"))
        result = await cli("chat", "-e", server.url, "--max-tokens", "2", "Hi")
    assert (result.code, result.out) == (0, "one two\n")
    assert result.err == "[answer cut short: --max-tokens 2 reached]\n"


async def test_answer_cut_by_the_servers_limit_shows_a_sign(cli: Runner) -> None:
    """Without --max-tokens, a "length" finish is the server's own limit, and says so."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="one two", finish_reason="length"))
        result = await cli("chat", "-e", server.url, "Hi")
    assert (result.code, result.out) == (0, "one two\n")
    assert result.err == "[answer cut short: the server's token limit]\n"


async def test_debug_logs_each_request_with_its_call_id(cli: Runner) -> None:
    """--debug shows every request's DEBUG events on stderr, each with its call id: at least
    llm_request_started and llm_request_finished."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "--debug", "hi")
    assert (result.code, result.out) == (0, "echo: hi\n")
    lines = result.err.splitlines()
    started = [line for line in lines if " llm_request_started " in line]
    finished = [line for line in lines if " llm_request_finished " in line]
    assert (len(started), len(finished)) == (1, 1)
    assert " DEBUG llm_request_started call_id=" in started[0]
    assert " DEBUG llm_request_finished call_id=" in finished[0]


async def test_piped_answer_keeps_control_characters_byte_exact(cli: Runner) -> None:
    """When stdout is a pipe the answer is written byte for byte, escape sequences and all
    (the reader decides what to do with them)."""
    text = "safe\x1b]0;title\x07 text\x1b[2J and\r more"
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(chunks=[text[:7], text[7:]]))
        result = await cli("chat", "--endpoint", server.url, "Q")
    assert (result.code, result.out, result.err) == (0, text + "\n", "")


async def test_stream_broken_after_one_chunk_counts_in_good_english(cli: Runner) -> None:
    """A stream that breaks after one delivered chunk says "after 1 chunk", not "1 chunks";
    what arrived stays on stdout."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(chunks=["one", " two", " three"], reset_after=1))
        result = await cli("chat", "-e", server.url, "Hi", env={"LLMTAP_API": "ollama"})
    assert (result.code, result.out) == (1, "one\n")
    assert result.err.startswith(
        "error: The stream broke after 1 chunk had been delivered; not retried, to avoid "
        "repeating it. Cause: "
    )
