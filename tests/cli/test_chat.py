"""``llmtap chat`` run as a subprocess: one question, stdin, JSON, reasoning, tools, errors."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
from pathlib import Path

from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.cli.conftest import Runner, assert_clean_error, cli_env


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
    assert "Set LLMTAP_API_KEY" in result.err
    assert "sk-wrong-123" not in result.err + result.out
    assert_clean_error(result)


async def test_empty_stdin_is_a_usage_error(cli: Runner) -> None:
    """No prompt and nothing on stdin: exit code 2 and how to give one."""
    result = await cli("chat", "--endpoint", "http://127.0.0.1:9", stdin=b"  \n")
    assert result.code == 2
    assert result.err == (
        'error: Nothing to ask: stdin was empty. Give a prompt: llmtap chat "..."\n'
    )


async def test_several_models_and_none_chosen_says_use_model(cli: Runner) -> None:
    """A server with several models and no --model: exit 4 (model missing or none chosen),
    pointing at --model."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        result = await cli("chat", "--endpoint", server.url, "Hi")
    assert result.code == 4
    assert result.err.splitlines()[1] == "on the command line: --model NAME"
    assert_clean_error(result)


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
