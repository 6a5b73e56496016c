"""Where the command's settings come from, run as a subprocess: --endpoint names, the
neighbours' variables, endpoint URLs pasted whole, misspelt variables."""

from __future__ import annotations

from pathlib import Path

from llmtap.testing import TestServer
from tests.cli.conftest import Runner, assert_clean_error


def _config(home: Path, text: str) -> Path:
    path = home / ".config" / "llmtap" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def test_endpoint_name_beats_llmtap_endpoint(cli: Runner, home: Path) -> None:
    """--endpoint NAME is a flag: the entry it names wins over LLMTAP_ENDPOINT (flags win)."""
    async with TestServer(dialect="vllm") as named, TestServer(dialect="vllm") as env_server:
        _config(home, f'[[endpoints]]\nname = "gpu"\nendpoint = "{named.url}"\n')
        result = await cli(
            "chat", "--endpoint", "gpu", "hi", env={"LLMTAP_ENDPOINT": env_server.url}
        )
    assert (result.code, result.out) == (0, "echo: hi\n")
    assert (len(named.chat_requests), len(env_server.requests)) == (1, 0)


async def test_endpoint_entry_settings_beat_the_environment(cli: Runner, home: Path) -> None:
    """The entry's other settings count as flags too: its model beats LLMTAP_MODEL; --model
    still beats the entry."""
    async with TestServer(dialect="vllm", models=["org/a", "org/b", "org/c"]) as server:
        _config(home, f'[[endpoints]]\nname = "gpu"\nendpoint = "{server.url}"\nmodel = "org/b"\n')
        entry = await cli("chat", "-e", "gpu", "hi", env={"LLMTAP_MODEL": "org/a"})
        flag = await cli("chat", "-e", "gpu", "-m", "org/c", "hi", env={"LLMTAP_MODEL": "org/a"})
    assert (entry.code, flag.code) == (0, 0)
    assert [r.json["model"] for r in server.chat_requests] == ["org/b", "org/c"]


async def test_unknown_endpoint_name_lists_the_names(cli: Runner, home: Path) -> None:
    """An --endpoint that is neither a URL nor an entry's name: exit 2, listing the names the
    config file defines and the closest one."""
    path = _config(
        home,
        '[[endpoints]]\nname = "gpu"\nendpoint = "http://gpu:8000"\n\n'
        '[[endpoints]]\nname = "laptop"\nendpoint = "http://localhost:11434"\n',
    )
    result = await cli("models", "--endpoint", "gpu2")
    assert result.code == 2
    assert result.err == (
        f"error: --endpoint 'gpu2' is neither a URL nor the name of an [[endpoints]] entry of "
        f"{path} (its names: 'gpu', 'laptop'); did you mean 'gpu'?\n"
    )


async def test_endpoint_without_scheme_and_no_config_file(cli: Runner, home: Path) -> None:
    """A host:port without http:// and no config file: exit 2, saying there is no file to
    define names and how to write the URL."""
    path = home / ".config" / "llmtap" / "config.toml"
    result = await cli("models", "--endpoint", "localhost:11434")
    assert result.code == 2
    assert result.err == (
        "error: --endpoint 'localhost:11434' is neither a URL nor the name of an [[endpoints]] "
        f"entry (there is no config file at {path}); for a URL write http://localhost:11434\n"
    )


async def test_ollama_host_with_only_a_port_means_this_machine(cli: Runner) -> None:
    """OLLAMA_HOST=:PORT, which Ollama accepts, is 127.0.0.1:PORT."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "hi", env={"OLLAMA_HOST": f":{server.port}"})
    assert (result.code, result.out, result.err) == (0, "echo: hi\n", "")


async def test_ollama_host_with_a_bad_port_is_a_usage_error(cli: Runner) -> None:
    """OLLAMA_HOST with a port that cannot be: exit 2, naming OLLAMA_HOST and the value."""
    result = await cli("models", env={"OLLAMA_HOST": "127.0.0.1:99999"})
    assert result.code == 2
    assert result.err == (
        "error: OLLAMA_HOST: endpoint has port 99999, which is not a port (0 to 65535), got "
        "'http://127.0.0.1:99999'\n"
    )


async def test_endpoint_flag_with_a_bad_port_is_a_usage_error(cli: Runner) -> None:
    """--endpoint with a port that cannot be: exit 2, naming the flag."""
    result = await cli("chat", "--endpoint", "http://127.0.0.1:99999", "hi")
    assert result.code == 2
    assert result.err == (
        "error: --endpoint (or LLMTAP_ENDPOINT): endpoint has port 99999, which is not a port "
        "(0 to 65535), got 'http://127.0.0.1:99999'\n"
    )


async def test_full_api_url_says_what_to_pass(cli: Runner) -> None:
    """--endpoint .../v1/chat/completions (a common paste): exit 2 before any request, saying
    which URL to pass instead."""
    async with TestServer(dialect="vllm") as server:
        result = await cli("chat", "--endpoint", f"{server.url}/v1/chat/completions", "hi")
    assert result.code == 2
    assert result.err == (
        f"error: --endpoint {server.url}/v1/chat/completions is the URL of an API route, not "
        f"of the server: pass {server.url}/v1 (llmtap adds /chat/completions and the other "
        "routes itself)\n"
    )
    assert server.requests == []


async def test_full_api_url_in_a_variable_names_the_variable(cli: Runner) -> None:
    """The same paste in OPENAI_BASE_URL names that variable; an Ollama route is recognised
    too."""
    openai = await cli("models", env={"OPENAI_BASE_URL": "http://127.0.0.1:9/chat/completions"})
    ollama = await cli("models", env={"LLMTAP_ENDPOINT": "http://127.0.0.1:9/api/chat"})
    assert (openai.code, ollama.code) == (2, 2)
    assert openai.err == (
        "error: OPENAI_BASE_URL http://127.0.0.1:9/chat/completions is the URL of an API route, "
        "not of the server: pass http://127.0.0.1:9 (llmtap adds /chat/completions and the "
        "other routes itself)\n"
    )
    assert ollama.err == (
        "error: LLMTAP_ENDPOINT http://127.0.0.1:9/api/chat is the URL of an API route, not of "
        "the server: pass http://127.0.0.1:9 (llmtap adds /api/chat and the other routes "
        "itself)\n"
    )


async def test_misspelt_variable_is_warned_about(cli: Runner) -> None:
    """An LLMTAP_* variable that is no setting: a warning naming the closest one; the command
    still runs."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("chat", "-e", server.url, "hi", env={"LLMTAP_MODLE": "qwen3"})
    assert (result.code, result.out) == (0, "echo: hi\n")
    assert result.err == (
        "warning: LLMTAP_MODLE is not an llmtap setting, so it is ignored; did you mean "
        "LLMTAP_MODEL?\n"
    )


async def test_unknown_variable_without_a_close_match(cli: Runner) -> None:
    """An LLMTAP_* variable far from every setting: the warning says it is ignored."""
    async with TestServer(dialect="ollama") as server:
        result = await cli("models", "-e", server.url, "--json", env={"LLMTAP_XYZZY": "1"})
    assert result.code == 0
    assert result.err == "warning: LLMTAP_XYZZY is not an llmtap setting, so it is ignored\n"
    assert_clean_error(result)
