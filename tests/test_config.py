"""LLMConfig: defaults, environment, validation, URL joining, secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmtap import LLMConfig, LLMUsageError
from llmtap._config import normalize_ollama_host

_ENV = (
    "LLMTAP_ENDPOINT",
    "LLMTAP_API_KEY",
    "LLMTAP_MODEL",
    "OLLAMA_HOST",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_sketch() -> None:
    """The sketch's fields keep their documented defaults (but temperature: the server's own)."""
    config = LLMConfig()
    assert config.endpoint == "http://localhost:11434"
    assert config.model == ""
    assert config.api_path == "/v1/chat/completions"
    assert config.temperature is None
    assert config.max_tokens is None
    assert config.max_retries == 2
    assert config.retry_backoff_base == 0.5
    assert config.retry_backoff_max == 20.0
    assert (config.connect_timeout, config.first_token_timeout) == (10.0, 300.0)
    assert (config.idle_timeout, config.total_timeout) == (60.0, None)
    assert config.chat_url == "http://localhost:11434/v1/chat/completions"


def test_llmtap_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMTAP_* variables set the fields."""
    monkeypatch.setenv("LLMTAP_ENDPOINT", "http://gpu:8000")
    monkeypatch.setenv("LLMTAP_MODEL", "qwen3")
    monkeypatch.setenv("LLMTAP_MAX_RETRIES", "5")
    config = LLMConfig()
    assert (config.endpoint, config.model, config.max_retries) == ("http://gpu:8000", "qwen3", 5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://10.1.2.3:11434", "http://10.1.2.3:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        (":11435", "http://127.0.0.1:11435"),
    ],
)
def test_ollama_host_is_normalized_like_ollamas_cli(value: str, expected: str) -> None:
    """A bare host gets http:// and port 11434; host:port gets http://."""
    assert normalize_ollama_host(value) == expected


def test_ollama_host_env_is_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """OLLAMA_HOST gives the endpoint when LLMTAP_ENDPOINT is unset, not when it is set."""
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box")
    assert LLMConfig().endpoint == "http://gpu-box:11434"
    monkeypatch.setenv("LLMTAP_ENDPOINT", "http://other:1")
    assert LLMConfig().endpoint == "http://other:1"


def test_openai_env_is_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_BASE_URL and OPENAI_API_KEY apply when the LLMTAP_ ones are unset."""
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    config = LLMConfig()
    assert config.endpoint == "https://api.example.com/v1"
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == "sk-from-openai-env"
    monkeypatch.setenv("LLMTAP_API_KEY", "sk-llmtap")
    key = LLMConfig().api_key
    assert key is not None
    assert key.get_secret_value() == "sk-llmtap"


def test_keyword_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit arguments win over every environment variable."""
    monkeypatch.setenv("LLMTAP_ENDPOINT", "http://env:1")
    assert LLMConfig(endpoint="http://arg:2").endpoint == "http://arg:2"


def test_v1_endpoint_is_not_doubled() -> None:
    """An endpoint ending in /v1 (as OPENAI_BASE_URL does) gets no second /v1."""
    config = LLMConfig(endpoint="https://api.example.com/v1/")
    assert config.chat_url == "https://api.example.com/v1/chat/completions"
    assert config.url_for("/v1/models") == "https://api.example.com/v1/models"
    assert config.url_for("/api/tags") == "https://api.example.com/api/tags"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_retries", -1),
        ("connect_timeout", -1.0),
        ("first_token_timeout", 0.0),
        ("idle_timeout", -5.0),
        ("total_timeout", 0.0),
        ("retry_backoff_base", -0.1),
        ("max_tokens", 0),
        ("temperature", -1.0),
    ],
)
def test_invalid_numbers_fail_naming_the_field(field: str, value: float) -> None:
    """Negative retries or timeouts fail at construction, and the error names the field."""
    with pytest.raises(ValidationError) as info:
        LLMConfig(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("endpoint", ["localhost:11434", "ftp://host", "http://", "just words"])
def test_endpoint_without_scheme_fails(endpoint: str) -> None:
    """A URL without http(s) scheme or host is rejected with a message naming the field."""
    with pytest.raises(ValidationError) as info:
        LLMConfig(endpoint=endpoint)
    assert info.value.errors()[0]["loc"] == ("endpoint",)
    assert "http://" in str(info.value)


def test_verify_path_must_exist() -> None:
    """A CA bundle path that is not a file is rejected at construction."""
    with pytest.raises(ValidationError) as info:
        LLMConfig(verify="/nonexistent/ca.pem")
    assert info.value.errors()[0]["loc"] == ("verify",)


def test_secrets_never_appear_in_repr_or_dump() -> None:
    """The API key and secret headers are hidden in repr, str and JSON dumps."""
    config = LLMConfig(
        api_key="sk-very-secret-1234",
        headers={"Authorization": "Bearer sk-header-secret", "X-Trace": "visible"},
    )
    for text in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert "sk-very-secret-1234" not in text
        assert "sk-header-secret" not in text
    assert "visible" in config.model_dump_json()


def test_a_password_in_the_url_and_an_api_key_are_refused_together() -> None:
    """A user name and password in the endpoint URL (Basic auth) and an api_key (a Bearer
    token) cannot both go in one request: refused at construction, naming both, with
    neither secret in the message (aiohttp used to fail at the first request instead)."""
    with pytest.raises(LLMUsageError) as info:
        LLMConfig(endpoint="http://user:hunter2@gpu:11434", api_key="sk-verysecret")
    text = str(info.value)
    assert "api_key" in text
    assert "user name and password" in text
    assert "http://user:***@gpu:11434" in text
    assert "hunter2" not in text
    assert "sk-verysecret" not in text


def test_a_password_in_the_url_and_an_authorization_header_are_refused_together() -> None:
    """The same for an Authorization header given in headers=."""
    with pytest.raises(LLMUsageError) as info:
        LLMConfig(endpoint="http://u:pw@gpu:11434", headers={"Authorization": "Bearer t"})
    assert "an Authorization header" in str(info.value)


def test_a_password_in_the_url_alone_is_taken() -> None:
    """Basic auth from the URL alone is fine (and masked when shown)."""
    config = LLMConfig(endpoint="http://user:hunter2@gpu:11434")
    assert "hunter2" not in repr(config)
