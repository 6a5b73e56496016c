"""``LLMConfig.load`` and ``read_config_file``: the config file, its precedence and its errors.
Plain ``LLMConfig()`` never reads a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmtap import LLMConfig
from llmtap._config import ConfigFileError, default_config_path, read_config_file

_ENV = (
    "LLMTAP_ENDPOINT",
    "LLMTAP_API_KEY",
    "LLMTAP_MODEL",
    "LLMTAP_MAX_RETRIES",
    "LLMTAP_CONFIG",
    "OLLAMA_HOST",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "XDG_CONFIG_HOME",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _file(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_apply(tmp_path: Path) -> None:
    """Top-level keys of the file set the fields."""
    path = _file(tmp_path, 'endpoint = "http://gpu:8000"\nmodel = "qwen3"\nmax_retries = 5\n')
    config = LLMConfig.load(path)
    assert (config.endpoint, config.model, config.max_retries) == ("http://gpu:8000", "qwen3", 5)


def test_precedence_is_arguments_env_file_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arguments beat LLMTAP_* beat the neighbours' variables beat the file beat defaults."""
    path = _file(
        tmp_path,
        'endpoint = "http://file:1"\nmodel = "file-model"\nmax_retries = 7\napi_key = "k-file"\n',
    )
    monkeypatch.setenv("LLMTAP_MODEL", "env-model")
    monkeypatch.setenv("OLLAMA_HOST", "neighbour")
    config = LLMConfig.load(path, max_retries=1)
    assert (config.endpoint, config.model, config.max_retries) == (
        "http://neighbour:11434",
        "env-model",
        1,
    )
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == "k-file"
    assert config.temperature is None


def test_plain_llmconfig_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMConfig() ignores LLMTAP_CONFIG and the default file: no surprises for libraries."""
    path = _file(tmp_path, 'model = "from-file"\n')
    monkeypatch.setenv("LLMTAP_CONFIG", str(path))
    assert LLMConfig().model == ""
    assert LLMConfig.load().model == "from-file"


def test_default_path_follows_home_and_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LLMTAP_CONFIG: $XDG_CONFIG_HOME/llmtap/config.toml, else ~/.config/..."""
    assert default_config_path() == tmp_path / "home" / ".config" / "llmtap" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_config_path() == tmp_path / "xdg" / "llmtap" / "config.toml"


def test_missing_default_file_is_fine() -> None:
    """No file at the default place: load() gives the defaults."""
    assert LLMConfig.load().endpoint == "http://localhost:11434"


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    """A file that is named but absent raises, naming it."""
    with pytest.raises(ConfigFileError) as info:
        LLMConfig.load(tmp_path / "absent.toml")
    assert info.value.path == tmp_path / "absent.toml"
    assert str(info.value) == (
        f"The config file {tmp_path / 'absent.toml'} does not exist; create it or point "
        "LLMTAP_CONFIG at an existing one"
    )


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    """A key that is not a setting raises, naming the key and the file."""
    path = _file(tmp_path, 'endpiont = "http://x:1"\n')
    with pytest.raises(ConfigFileError) as info:
        read_config_file(path)
    assert info.value.key == "endpiont"
    assert str(info.value) == (
        f"Unknown key 'endpiont' in the config file {path}; did you mean 'endpoint'?"
    )


def test_unknown_key_in_an_endpoints_table(tmp_path: Path) -> None:
    """A bad key inside [[endpoints]] is named with its table's index."""
    path = _file(tmp_path, '[[endpoints]]\nname = "a"\n\n[[endpoints]]\nzzz = 1\n')
    with pytest.raises(ConfigFileError) as info:
        read_config_file(path)
    assert info.value.key == "endpoints[1].zzz"


def test_bad_value_names_key_and_file(tmp_path: Path) -> None:
    """A value the field rejects raises ConfigFileError naming the key and the file."""
    path = _file(tmp_path, "max_retries = -1\n")
    with pytest.raises(ConfigFileError) as info:
        LLMConfig.load(path)
    assert info.value.key == "max_retries"
    assert str(info.value) == (
        f"Bad value for 'max_retries' in the config file {path}: Input should be greater than "
        "or equal to 0"
    )


def test_bad_value_that_is_overridden_is_no_error(tmp_path: Path) -> None:
    """A bad value in the file that an argument replaces is never used, so never reported."""
    path = _file(tmp_path, "max_retries = -1\n")
    assert LLMConfig.load(path, max_retries=2).max_retries == 2


def test_bad_argument_still_raises_validation_error(tmp_path: Path) -> None:
    """A bad value from the arguments is the caller's, not the file's."""
    path = _file(tmp_path, 'model = "m"\n')
    with pytest.raises(ValidationError):
        LLMConfig.load(path, max_retries=-1)


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    """A file that is not TOML raises, naming the file and the parser's complaint."""
    path = _file(tmp_path, "model = \n")
    with pytest.raises(ConfigFileError) as info:
        LLMConfig.load(path)
    assert str(info.value).startswith(f"The config file {path} is not valid TOML: ")


def test_endpoints_tables_are_returned(tmp_path: Path) -> None:
    """read_config_file gives the settings and the [[endpoints]] tables as a list of dicts."""
    path = _file(
        tmp_path,
        'model = "m"\n\n[[endpoints]]\nname = "a"\nendpoint = "http://a:1"\n\n'
        '[[endpoints]]\nendpoint = "http://b:2"\nmax_retries = 0\n',
    )
    assert read_config_file(path) == {
        "model": "m",
        "endpoints": [
            {"name": "a", "endpoint": "http://a:1"},
            {"endpoint": "http://b:2", "max_retries": 0},
        ],
    }
    assert read_config_file(_file(tmp_path, "", "empty.toml")) == {"endpoints": []}


def test_profile_picks_an_endpoints_table(tmp_path: Path) -> None:
    """profile=NAME lays that table's keys over the top-level ones."""
    path = _file(
        tmp_path,
        'model = "m"\nmax_retries = 4\n\n[[endpoints]]\nname = "b"\nendpoint = "http://b:2"\n',
    )
    config = LLMConfig.load(path, profile="b")
    assert (config.endpoint, config.model, config.max_retries) == ("http://b:2", "m", 4)
    with pytest.raises(ConfigFileError) as info:
        LLMConfig.load(path, profile="c")
    assert (
        str(info.value)
        == f"No [[endpoints]] entry named 'c' in the config file {path} (names: 'b')"
    )


def test_relative_certificate_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    """A relative CA bundle path is resolved from the file's directory, not the cwd."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = _file(tmp_path, 'verify = "certs/ca.pem"\n')
    assert LLMConfig.load(path).verify == str(tmp_path / "certs" / "ca.pem")
