"""Settings: where the server is, which model, how long to wait, how often to retry.

``LLMConfig`` reads keyword arguments first, then ``LLMTAP_*`` environment variables, then the
conventions of neighbouring tools (``OLLAMA_HOST``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), then
its defaults. Nothing is read before an ``LLMConfig`` is built, and plain ``LLMConfig()`` never
reads a file: only :meth:`LLMConfig.load` (which the ``llmtap`` command uses) adds a TOML config
file, below the environment and above the defaults.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llmtap._errors import ConfigFileError, LLMUsageError, scrub

__all__ = [
    "LLMConfig",
    "default_cache_path",
    "default_config_path",
    "default_log_path",
    "endpoints_from_env",
    "normalize_ollama_host",
    "read_config_file",
]

#: Header names whose values are secrets: redacted in reprs, dumps and logs.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}
)

_OLLAMA_PORT = 11434


def normalize_ollama_host(value: str) -> str:
    """Turn an ``OLLAMA_HOST`` value into a URL the way Ollama's own CLI does.

    A bare host gets ``http://`` and port 11434; a ``host:port`` gets ``http://``; a bare
    ``:port`` is this machine.

    >>> normalize_ollama_host("gpu-box")
    'http://gpu-box:11434'
    >>> normalize_ollama_host("0.0.0.0:8080")
    'http://0.0.0.0:8080'
    >>> normalize_ollama_host(":11435")
    'http://127.0.0.1:11435'
    """
    value = value.strip()
    scheme = "http"
    if "://" in value:
        scheme, _, value = value.partition("://")
    host, _, path = value.partition("/")
    if host.startswith(":"):
        host = "127.0.0.1" + host
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


#: Values read from a config file for the ``LLMConfig`` being built by ``load()`` in this
#: context (never set for plain ``LLMConfig()``).
_FILE_VALUES: ContextVar[Mapping[str, Any] | None] = ContextVar("_FILE_VALUES", default=None)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The config file's values, below every environment variable."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


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

    endpoint: str = Field(default="http://localhost:11434", description="Base URL of the server.")
    model: str = Field(
        default="", description="Model name; empty: preflight picks the server's only model."
    )
    api_path: str = Field(
        default="/v1/chat/completions", description="Chat path under the endpoint."
    )
    api: Literal["openai", "ollama", "auto", "responses"] = Field(
        default="openai",
        description=(
            "Wire dialect: OpenAI-compatible chat completions, Ollama's native /api/chat, auto "
            "(Ollama's when the server is Ollama), or OpenAI's Responses API (/v1/responses)."
        ),
    )
    api_key: SecretStr | None = Field(default=None, description="Sent as `Authorization: Bearer`.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")

    temperature: float | None = Field(
        default=None,
        ge=0.0,
        description="Sampling temperature; None: not sent, the server's default wins.",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Answer length cap; None: server's."
    )

    max_retries: int = Field(default=2, ge=0, description="Retries after the first attempt.")
    retry_backoff_base: float = Field(default=0.5, ge=0.0, description="First backoff, in seconds.")
    retry_backoff_max: float = Field(
        default=20.0, ge=0.0, description="Longest backoff, in seconds."
    )

    connect_timeout: float = Field(default=10.0, gt=0.0, description="TCP/TLS connect, in seconds.")
    first_token_timeout: float = Field(
        default=300.0,
        gt=0.0,
        description="From sending the request to the first chunk (cold loads).",
    )
    idle_timeout: float = Field(default=60.0, gt=0.0, description="Longest silence between chunks.")
    total_timeout: float | None = Field(
        default=None, gt=0.0, description="Whole request; None: none."
    )
    preflight_timeout: float = Field(default=10.0, gt=0.0, description="All of preflight_check().")

    max_line_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Longest stream line accepted, in bytes."
    )
    max_connections: int = Field(default=1000, ge=1, description="Connection pool size.")
    embed_batch_size: int = Field(
        default=64, ge=1, description="Most texts per embeddings request."
    )

    hooks: Sequence[Callable[[Any], Any]] = Field(
        default=(),
        exclude=True,
        description="Lifecycle hooks: callables (sync or async) taking each record of a call.",
    )

    log_db: Path | str | None = Field(
        default=None,
        description="Log chat calls to this SQLite file (`llmtap logs` reads it); None: no log.",
    )
    cache: bool | Path | str = Field(
        default=False,
        description="Response cache: a SQLite file, or True for the default one; False: none.",
    )
    cache_ttl: float | None = Field(
        default=None, gt=0.0, description="Seconds a cached answer is used; None: for ever."
    )
    cache_nondeterministic: bool = Field(
        default=False,
        description="Cache requests without temperature=0 or a seed too.",
    )

    verify: bool | str = Field(
        default=True, description="TLS: verify (default), False, or a CA bundle."
    )
    client_cert: str | tuple[str, str] | None = Field(
        default=None, description="TLS client certificate file, or (certificate, key) files."
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
        return (
            init_settings,
            env_settings,
            _NeighbourEnvSource(settings_cls),
            _ConfigFileSource(settings_cls),
        )

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        *,
        profile: str | None = None,
        **overrides: Any,
    ) -> Self:
        """Build a config from keyword arguments, the environment and a TOML config file.

        Precedence: ``overrides`` > ``LLMTAP_*`` variables > ``OPENAI_BASE_URL`` /
        ``OLLAMA_HOST`` / ``OPENAI_API_KEY`` > the file > the defaults. The file's top-level
        keys are named like this class's fields; its ``[[endpoints]]`` tables describe further
        servers (see :func:`read_config_file`).

        Args:
            config_file: The file to read. ``None``: the path in ``LLMTAP_CONFIG``, else
                ``$XDG_CONFIG_HOME/llmtap/config.toml`` (``~/.config/llmtap/config.toml``),
                which may be absent; a path that is given (here or in ``LLMTAP_CONFIG``)
                must exist.
            profile: The ``name`` of an ``[[endpoints]]`` table whose keys replace the
                top-level ones.
            **overrides: Field values that beat everything else.

        Raises:
            ConfigFileError: The file is missing (when named), is not TOML, has an unknown
                key, a bad value, or no ``[[endpoints]]`` table named ``profile``.
            pydantic.ValidationError: A value from the arguments or the environment is bad.

        Example:
            >>> config = LLMConfig.load(model="qwen3")
        """
        path = Path(config_file).expanduser() if config_file is not None else None
        required = path is not None or bool(os.environ.get("LLMTAP_CONFIG"))
        path = path or default_config_path()
        values: dict[str, Any] = {}
        if required or path.is_file():
            data = read_config_file(path)
            endpoints: list[dict[str, Any]] = data.pop("endpoints")
            values = data
            if profile is not None:
                values = {**data, **_profile(endpoints, profile, path)}
        elif profile is not None:
            raise ConfigFileError(
                f"No config file at {path}, so there is no [[endpoints]] entry named "
                f"{profile!r}; create the file or pass a URL",
                path=path,
            )
        token = _FILE_VALUES.set(values)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            blamed = _file_errors(cls, exc, values, overrides)
            if not blamed:
                raise
            key, reason = blamed[0]
            raise ConfigFileError(
                f"Bad value for {key!r} in the config file {path}: {reason}", path=path, key=key
            ) from None
        finally:
            _FILE_VALUES.reset(token)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"endpoint must be an http:// or https:// URL with a host, got {scrub(value)!r} "
                "(for example http://localhost:11434)"
            )
        try:
            parts.port  # noqa: B018  (urlsplit checks the port only when asked for it)
        except ValueError:
            port = parts.netloc.rpartition(":")[2]
            raise ValueError(
                f"endpoint has port {port}, which is not a port (0 to 65535), got {scrub(value)!r}"
            ) from None
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

    @field_validator("log_db", mode="after")
    @classmethod
    def _log_db_as_a_path(cls, value: Path | str | None) -> Path | None:
        """A path given as text is kept as a ``Path`` (``~`` expanded)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return Path(value).expanduser()

    @property
    def log_path(self) -> Path | None:
        """The conversation log's file (``log_db`` as a ``Path``), or ``None``: no log."""
        return None if self.log_db is None else Path(self.log_db)

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch_or_path(cls, value: Any) -> Any:
        """``LLMTAP_CACHE=1`` (or ``true``, ``yes``, ``on``) is the default file, ``0`` (or
        ``false``, ``no``, ``off``, empty) none; any other text is a path."""
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("", "0", "false", "no", "off"):
                return False
            return Path(value).expanduser()
        return value

    @property
    def cache_path(self) -> Path | None:
        """The response cache's file: ``cache`` when it is a path, the default file
        (:func:`default_cache_path`) when it is ``True``; ``None`` when there is no cache."""
        if self.cache is True:
            return default_cache_path()
        if self.cache is False:
            return None
        return Path(self.cache).expanduser()

    @field_validator("hooks", mode="after")
    @classmethod
    def _hooks_as_a_tuple(cls, value: Sequence[Callable[[Any], Any]]) -> tuple[Any, ...]:
        """Kept as a tuple, so that a frozen config stays hashable."""
        return tuple(value)

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> Self:
        """A user name in the endpoint URL is sent as HTTP Basic auth; ``api_key`` (or an
        ``Authorization`` header) as a Bearer token. A request carries one ``Authorization``
        header, so the two cannot both be sent: refuse here rather than at the first request.

        Raises:
            LLMUsageError: Both are set.
        """
        userinfo = urlsplit(self.endpoint).username is not None
        bearer = self.api_key is not None or any(
            name.lower() == "authorization" for name in self.headers
        )
        if userinfo and bearer:
            # Not a ValueError: pydantic would wrap it with the whole input, key included.
            which = "api_key" if self.api_key is not None else "an Authorization header"
            raise LLMUsageError(
                f"endpoint {scrub(self.endpoint)!r} carries a user name and password (HTTP "
                f"Basic auth) and {which} is set too (a Bearer token); a request can carry "
                "only one. Drop the credentials from the URL, or unset the key"
            )
        return self

    @field_serializer("endpoint")
    def _dump_endpoint(self, endpoint: str) -> str:
        return scrub(endpoint)

    @field_serializer("headers")
    def _dump_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return redact_headers(headers)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "headers":
                value = redact_headers(value)
            elif name == "endpoint":
                value = scrub(value)
            yield name, value

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


#: Keys an ``[[endpoints]]`` table may hold besides ``LLMConfig``'s fields.
ENDPOINT_EXTRA_KEYS = frozenset({"name", "weight", "max_concurrency"})
_PATH_FIELDS = ("verify", "client_cert")


def default_config_path() -> Path:
    """Where ``LLMConfig.load()`` looks for the config file when given none.

    ``$LLMTAP_CONFIG`` if set, else ``$XDG_CONFIG_HOME/llmtap/config.toml``, else
    ``~/.config/llmtap/config.toml``.
    """
    if explicit := os.environ.get("LLMTAP_CONFIG"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llmtap" / "config.toml"


def default_log_path() -> Path:
    """Where the command line logs conversations: ``$XDG_DATA_HOME/llmtap/logs.db``, else
    ``~/.local/share/llmtap/logs.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llmtap" / "logs.db"


def default_cache_path() -> Path:
    """The response cache's file for ``LLMConfig(cache=True)``:
    ``$XDG_CACHE_HOME/llmtap/cache.db``, else ``~/.cache/llmtap/cache.db``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmtap" / "cache.db"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file and check its keys.

    Example file::

        endpoint = "http://gpu-box:11434"
        model = "qwen3"
        max_retries = 3

        [[endpoints]]
        name = "vllm"
        endpoint = "http://gpu-box:8000"
        model = "Qwen/Qwen3-8B"

    Relative ``verify`` and ``client_cert`` paths are taken relative to the file.

    Args:
        path: The file.

    Returns:
        The top-level settings (keys are ``LLMConfig`` field names), plus ``"endpoints"``:
        the ``[[endpoints]]`` tables as a list of dicts (``[]`` when there are none), each with
        ``LLMConfig`` field names and an optional ``name``.

    Raises:
        ConfigFileError: The file cannot be read, is not TOML, or has a key that is not a
            setting (the message names the key and the file).
    """
    path = Path(path).expanduser()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigFileError(
            f"The config file {path} does not exist; create it or point LLMTAP_CONFIG "
            "at an existing one",
            path=path,
        ) from None
    except OSError as exc:
        raise ConfigFileError(
            f"Cannot read the config file {path}: {exc.strerror}", path=path
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(
            f"The config file {path} is not valid TOML: {exc}", path=path
        ) from None
    fields = set(LLMConfig.model_fields)
    endpoints = data.pop("endpoints", [])
    _check_keys(data, fields, path, "")
    if not isinstance(endpoints, list) or not all(isinstance(e, dict) for e in endpoints):
        raise ConfigFileError(
            f"'endpoints' in the config file {path} must be [[endpoints]] tables",
            path=path,
            key="endpoints",
        )
    for index, entry in enumerate(endpoints):
        _check_keys(entry, fields | ENDPOINT_EXTRA_KEYS, path, f"endpoints[{index}].")
    base = path.parent
    return {
        **_resolve_paths(data, base),
        "endpoints": [_resolve_paths(entry, base) for entry in endpoints],
    }


def _check_keys(
    table: Mapping[str, Any], allowed: set[str] | frozenset[str], path: Path, prefix: str
) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"the keys are LLMConfig's fields: {', '.join(sorted(allowed))}"
            )
            raise ConfigFileError(
                f"Unknown key {prefix + key!r} in the config file {path}; {hint}",
                path=path,
                key=prefix + key,
            )


def _resolve_paths(table: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``table`` with relative certificate paths made relative to the config file."""
    result = dict(table)
    for name in _PATH_FIELDS:
        value = result.get(name)
        if isinstance(value, str):
            result[name] = str(base / Path(value).expanduser())
        elif isinstance(value, list):
            result[name] = [
                str(base / Path(item).expanduser()) if isinstance(item, str) else item
                for item in value
            ]
    return result


def _profile(endpoints: list[dict[str, Any]], name: str, path: Path) -> dict[str, Any]:
    """The settings of the ``[[endpoints]]`` table called ``name``."""
    for entry in endpoints:
        if entry.get("name") == name:
            return {key: value for key, value in entry.items() if key not in ENDPOINT_EXTRA_KEYS}
    names = ", ".join(repr(e["name"]) for e in endpoints if isinstance(e.get("name"), str))
    raise ConfigFileError(
        f"No [[endpoints]] entry named {name!r} in the config file {path} "
        f"(names: {names or 'none'})",
        path=path,
        key="endpoints",
    )


def _file_errors(
    cls: type[LLMConfig],
    exc: ValidationError,
    values: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """The validation errors caused by values that came from the config file."""
    if not values:
        return []
    higher: set[str] = set(overrides)
    higher |= set(EnvSettingsSource(cls)())
    higher |= set(_NeighbourEnvSource(cls)())
    blamed: list[tuple[str, str]] = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        if key in values and key not in higher:
            blamed.append((key, error["msg"]))
    return blamed


def endpoints_from_env() -> list[str]:
    """The URLs in ``LLMTAP_ENDPOINTS`` (comma-separated; empty when it is unset), as a
    ``Router``, ``llmtap batch`` and ``llmtap.ray`` read them."""
    urls = (url.strip() for url in os.environ.get("LLMTAP_ENDPOINTS", "").split(","))
    return [url for url in urls if url]
