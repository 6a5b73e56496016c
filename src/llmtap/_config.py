"""Settings: where the server is, which model, how long to wait, how often to retry.

``LLMConfig`` reads keyword arguments first, then ``LLMTAP_*`` environment variables, then the
conventions of neighbouring tools (``OLLAMA_HOST``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), then
its defaults. Nothing is read before an ``LLMConfig`` is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_serializer, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["LLMConfig", "normalize_ollama_host"]

#: Header names whose values are secrets: redacted in reprs, dumps and logs.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}
)

_OLLAMA_PORT = 11434


def normalize_ollama_host(value: str) -> str:
    """Turn an ``OLLAMA_HOST`` value into a URL the way Ollama's own CLI does.

    A bare host gets ``http://`` and port 11434; a ``host:port`` gets ``http://``.

    >>> normalize_ollama_host("gpu-box")
    'http://gpu-box:11434'
    >>> normalize_ollama_host("0.0.0.0:8080")
    'http://0.0.0.0:8080'
    """
    value = value.strip()
    scheme = "http"
    if "://" in value:
        scheme, _, value = value.partition("://")
    host, _, path = value.partition("/")
    has_port = "]:" in host if host.startswith("[") else ":" in host  # "[::1]:port"
    if not has_port:
        port = 443 if scheme == "https" else _OLLAMA_PORT
        host = f"{host or '127.0.0.1'}:{port}"
    url = f"{scheme}://{host}"
    return f"{url}/{path}".rstrip("/") if path else url


class _NeighbourEnvSource(PydanticBaseSettingsSource):
    """Fallbacks from the environment variables other tools already use."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if base_url := os.environ.get("OPENAI_BASE_URL"):
            values["endpoint"] = base_url
        elif host := os.environ.get("OLLAMA_HOST"):
            values["endpoint"] = normalize_ollama_host(host)
        if key := os.environ.get("OPENAI_API_KEY"):
            values["api_key"] = key
        return values


class LLMConfig(BaseSettings):
    """How to reach one LLM server.

    Every field can also come from an ``LLMTAP_<FIELD>`` environment variable
    (``LLMTAP_ENDPOINT``, ``LLMTAP_MODEL``, ``LLMTAP_API_KEY``, ...). When those are unset,
    ``OPENAI_BASE_URL`` or ``OLLAMA_HOST`` gives the endpoint and ``OPENAI_API_KEY`` the key.

    Example:
        >>> LLMConfig(model="qwen3").endpoint
        'http://localhost:11434'
    """

    model_config = SettingsConfigDict(
        env_prefix="LLMTAP_", extra="forbid", validate_default=True, frozen=True
    )

    endpoint: str = Field("http://localhost:11434", description="Base URL of the server.")
    model: str = Field(
        "", description="Model name; empty: preflight picks the server's only model."
    )
    api_path: str = Field("/v1/chat/completions", description="Chat path under the endpoint.")
    api: Literal["openai", "ollama", "auto"] = Field(
        "openai",
        description="Wire dialect: OpenAI-compatible, Ollama's native /api/chat, or auto.",
    )
    api_key: SecretStr | None = Field(None, description="Sent as `Authorization: Bearer`.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")

    temperature: float | None = Field(0.7, ge=0.0, description="Sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Answer length cap; None: server's.")

    max_retries: int = Field(2, ge=0, description="Retries after the first attempt.")
    retry_backoff_base: float = Field(0.5, ge=0.0, description="First backoff, in seconds.")
    retry_backoff_max: float = Field(20.0, ge=0.0, description="Longest backoff, in seconds.")

    connect_timeout: float = Field(10.0, gt=0.0, description="TCP/TLS connect, in seconds.")
    first_token_timeout: float = Field(
        300.0, gt=0.0, description="From sending the request to the first chunk (cold loads)."
    )
    idle_timeout: float = Field(60.0, gt=0.0, description="Longest silence between chunks.")
    total_timeout: float | None = Field(None, gt=0.0, description="Whole request; None: none.")
    preflight_timeout: float = Field(10.0, gt=0.0, description="All of preflight_check().")

    max_line_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Longest stream line accepted, in bytes."
    )
    max_connections: int = Field(1000, ge=1, description="Connection pool size.")
    embed_batch_size: int = Field(64, ge=1, description="Most texts per embeddings request.")

    verify: bool | str = Field(True, description="TLS: verify (default), False, or a CA bundle.")
    client_cert: str | tuple[str, str] | None = Field(
        None, description="TLS client certificate file, or (certificate, key) files."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        return (init_settings, env_settings, _NeighbourEnvSource(settings_cls))

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"endpoint must be an http:// or https:// URL with a host, got {value!r} "
                "(for example http://localhost:11434)"
            )
        return value.rstrip("/")

    @field_validator("api_path")
    @classmethod
    def _check_api_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"api_path must start with '/', got {value!r}")
        return value

    @field_validator("verify")
    @classmethod
    def _check_verify(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not Path(value).is_file():
            raise ValueError(f"verify names a CA bundle that is not a file: {value!r}")
        return value

    @field_serializer("headers")
    def _dump_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return redact_headers(headers)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_headers(value) if name == "headers" else value

    # --- derived URLs -------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        """The endpoint without a trailing ``/v1`` (where Ollama's ``/api/*`` routes live)."""
        return self.endpoint.removesuffix("/v1")

    def url_for(self, path: str) -> str:
        """Join ``path`` to the endpoint, without doubling a ``/v1`` the endpoint already has.

        >>> LLMConfig(endpoint="https://api.example.com/v1").url_for("/v1/models")
        'https://api.example.com/v1/models'
        """
        if path.startswith("/api/"):
            return self.root_url + path
        if self.endpoint.endswith("/v1") and path.startswith("/v1/"):
            return self.endpoint + path[3:]
        return self.endpoint + path

    @property
    def chat_url(self) -> str:
        """The URL chat requests go to."""
        return self.url_for(self.api_path)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with secret values replaced by ``***``."""
    return {
        name: "***" if name.lower() in SECRET_HEADERS else value for name, value in headers.items()
    }
