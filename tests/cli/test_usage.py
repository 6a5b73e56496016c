"""The command line itself: --version, --help with examples, usage errors, the config file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import llmtap
from llmtap.cli import app
from llmtap.testing import TestServer
from tests.cli.conftest import Runner, assert_clean_error


async def test_version(cli: Runner) -> None:
    """--version prints the package version."""
    result = await cli("--version")
    assert (result.code, result.out) == (0, f"llmtap {llmtap.__version__}\n")


@pytest.mark.parametrize("command", ["chat", "models", "check", "pull", "bench", "serve-test"])
def test_every_command_has_help_with_examples(command: str) -> None:
    """--help of every command ends with examples that use the command (rendered in-process:
    help involves no I/O)."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    examples = result.output.split("Examples:", 1)[1].split()
    assert examples[:2] == ["llmtap", command]


async def test_unknown_option_is_exit_2_without_traceback(cli: Runner) -> None:
    """An unknown option: exit code 2, click's short message, no traceback."""
    result = await cli("models", "--no-such-option")
    assert result.code == 2
    assert "No such option: --no-such-option" in result.err
    assert "Traceback" not in result.err


async def test_bad_endpoint_names_the_option(cli: Runner) -> None:
    """An endpoint that is not an HTTP URL: exit 2, naming --endpoint and an example."""
    result = await cli("models", "--endpoint", "ftp://localhost:11434")
    assert result.code == 2
    assert result.err == (
        "error: --endpoint (or LLMTAP_ENDPOINT): endpoint must be an http:// or https:// URL "
        "with a host, got 'ftp://localhost:11434' (for example http://localhost:11434)\n"
    )


async def test_bad_environment_value_is_a_usage_error(cli: Runner) -> None:
    """A bad LLMTAP_* value: exit 2, naming the variable."""
    result = await cli("models", env={"LLMTAP_MAX_RETRIES": "-1"})
    assert result.code == 2
    assert result.err == (
        "error: max_retries (or LLMTAP_MAX_RETRIES): Input should be greater than or equal to 0\n"
    )
    assert_clean_error(result)


def _config(home: Path, text: str) -> Path:
    path = home / ".config" / "llmtap" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def test_config_file_gives_the_endpoint(cli: Runner, home: Path) -> None:
    """~/.config/llmtap/config.toml is read by the command when no flag or variable is set."""
    async with TestServer(dialect="vllm") as server:
        _config(home, f'endpoint = "{server.url}"\n')
        result = await cli("models", "--json")
    assert result.code == 0
    assert server.requests[-1].path == "/v1/models"


async def test_environment_beats_the_config_file(cli: Runner, home: Path) -> None:
    """LLMTAP_ENDPOINT wins over the file's endpoint."""
    async with TestServer(dialect="vllm") as file_server, TestServer(dialect="vllm") as env_server:
        _config(home, f'endpoint = "{file_server.url}"\n')
        result = await cli("models", env={"LLMTAP_ENDPOINT": env_server.url})
    assert result.code == 0
    assert (len(file_server.requests), len(env_server.requests)) == (0, 2)


async def test_flag_beats_the_environment(cli: Runner) -> None:
    """--endpoint wins over LLMTAP_ENDPOINT."""
    async with TestServer(dialect="vllm") as flag_server, TestServer(dialect="vllm") as env_server:
        result = await cli(
            "models", "--endpoint", flag_server.url, env={"LLMTAP_ENDPOINT": env_server.url}
        )
    assert result.code == 0
    assert (len(flag_server.requests), len(env_server.requests)) == (2, 0)


async def test_endpoint_flag_can_name_a_config_entry(cli: Runner, home: Path) -> None:
    """--endpoint NAME picks the [[endpoints]] entry of that name, with its model."""
    async with TestServer(dialect="vllm", models=["org/a", "org/b"]) as server:
        _config(
            home,
            f'model = "top-level"\n\n[[endpoints]]\nname = "gpu"\nendpoint = "{server.url}"\n'
            'model = "org/b"\n',
        )
        result = await cli("chat", "--endpoint", "gpu", "hi")
    assert (result.code, result.out) == (0, "echo: hi\n")
    assert server.chat_requests[0].json["model"] == "org/b"


async def test_unknown_config_key_names_key_and_file(cli: Runner, home: Path) -> None:
    """A misspelt key in the file: exit 2, naming the key, the file and the likely fix."""
    path = _config(home, 'modle = "qwen3"\n')
    result = await cli("models")
    assert result.code == 2
    assert result.err == (
        f"error: Unknown key 'modle' in the config file {path}; did you mean 'model'?\n"
    )


async def test_llmtap_config_names_another_file(cli: Runner, tmp_path: Path) -> None:
    """LLMTAP_CONFIG points at the file to read; a missing one is an error."""
    missing = tmp_path / "nope.toml"
    result = await cli("models", env={"LLMTAP_CONFIG": str(missing)})
    assert result.code == 2
    assert result.err == (
        f"error: The config file {missing} does not exist; create it or point LLMTAP_CONFIG "
        "at an existing one\n"
    )


@pytest.mark.parametrize("command", ["chat", "models", "check", "pull", "bench", "serve-test"])
async def test_help_shows_no_type_on_flags(cli: Runner, command: str) -> None:
    """`llmtap COMMAND --help` shows no `<bool>` on flags, and an option that takes a value
    shows what to write (URL|NAME, SECONDS, N, ...) rather than a type label."""
    result = await cli(command, "--help", env={"COLUMNS": "200"})
    options = [line for line in result.out.splitlines() if line.startswith("│ -")]
    assert result.code == 0
    assert len(options) >= 5
    assert [line for line in options if re.search(r"<[a-z]+[^>]*>", line)] == []


async def test_debug_help_says_what_it_does(cli: Runner) -> None:
    """--debug's help says what it logs, and that retries show without it."""
    result = await cli("chat", "--help", env={"COLUMNS": "400"})
    line = next(line for line in result.out.splitlines() if "--debug" in line)
    assert " ".join(line.strip("│ ").split()) == (
        "--debug Log every event of llmtap's requests on stderr (start, first chunk, retry, "
        "end or failure, each with its call id and attempt), and print the traceback of an "
        "error. Without it a retry is still shown, as one short line."
    )


@pytest.mark.parametrize("command", ["chat", "check", "bench"])
async def test_missing_model_exits_4_from_every_command(cli: Runner, command: str) -> None:
    """A model the server does not have is exit code 4 from every command that uses one."""
    async with TestServer(dialect="ollama") as server:
        args = ["--requests", "1", "--concurrency", "1"] if command == "bench" else []
        prompt = ["Hi"] if command == "chat" else []
        result = await cli(command, "-e", server.url, "--model", "nosuch", *args, *prompt)
    assert result.code == 4


@pytest.mark.parametrize("command", ["chat", "check", "bench"])
async def test_no_model_chosen_exits_4_from_every_command(cli: Runner, command: str) -> None:
    """Several models and none chosen is exit code 4 from every command, as in `check`."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        args = ["--requests", "1", "--concurrency", "1"] if command == "bench" else []
        prompt = ["Hi"] if command == "chat" else []
        result = await cli(command, "-e", server.url, *args, *prompt)
    assert result.code == 4
