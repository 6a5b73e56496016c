"""One endpoint as llmtap talks to it: its settings, its connections, and what llmtap has
learned about it (the kind of server, the model to use, the parts of requests it refuses).

An :class:`LLMClient` has one; a ``Router`` has one per endpoint. The attempt loop sends every
attempt to one of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmtap._config import LLMConfig
from llmtap._errors import LLMUsageError, redact_url, register_secret
from llmtap._preflight import run_preflight
from llmtap._probe import Probe
from llmtap._results import PreflightReport, ServerKind
from llmtap._wire.dialects import Dialect, MessageLike
from llmtap._wire.embeddings import EmbeddingsRequest
from llmtap._wire.request import ChatRequest, build_request
from llmtap._wire.responses import responses_url

if TYPE_CHECKING:
    from llmtap._http import Session

__all__ = ["Upstream"]


class Upstream:
    """One endpoint, and what is known about it.

    Args:
        config: Its settings.
        name: What to call it in logs, stats and hooks (default: its URL, without a
            password).
        index: Its place among a router's endpoints (0 for a client's only one).
    """

    __slots__ = (
        "_closed",
        "_session",
        "config",
        "index",
        "model",
        "name",
        "refused",
        "server",
        "url",
    )

    def __init__(self, config: LLMConfig, *, name: str | None = None, index: int = 0) -> None:
        if config.api_key is not None:
            register_secret(config.api_key.get_secret_value())
        self.config = config
        #: Its URL, without a password.
        self.url = redact_url(config.endpoint)
        self.name = name or self.url
        self.index = index
        #: The model requests use when they name none (after preflight: as the server
        #: names it).
        self.model = config.model
        #: The kind of server, once preflight (or a probe) has found it.
        self.server: ServerKind | None = None
        #: Parts of requests this server refused, by refit name (see ``_wire.request``):
        #: its later requests are built without them.
        self.refused: set[str] = set()
        self._session: Session | None = None
        self._closed = False

    @property
    def session(self) -> Session:
        """The endpoint's HTTP session (made on first use).

        Raises:
            LLMUsageError: The endpoint was closed.
        """
        if self._closed:
            raise LLMUsageError("this LLMClient is closed; create a new one")
        if self._session is None:
            from llmtap._http import Session  # here: `import llmtap` does not load aiohttp

            self._session = Session(self.config)
        return self._session

    @property
    def connections_in_use(self) -> int:
        """Connections checked out of the pool right now."""
        return 0 if self._session is None else self._session.connections_in_use

    def probe(self) -> Probe:
        """Questions about the endpoint itself (kind, listings, details)."""
        return Probe(self.session, self.config)

    async def preflight(self) -> PreflightReport:
        """Check the server and the model (see ``llmtap._preflight``); afterwards requests
        use the server's kind and the model as it names it."""
        report = await run_preflight(self.probe(), self.config, self.model)
        self.server = report.server
        self.model = report.model
        return report

    @property
    def dialect(self) -> Dialect:
        """The chat dialect requests use: Ollama's native API when configured (or, with
        ``api="auto"``, when the server is Ollama), else OpenAI's."""
        api = self.config.api
        if api == "ollama" or (api == "auto" and self.server == "ollama"):
            return "ollama"
        if api == "responses":
            return "responses"
        return "openai"

    def chat_request(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
        model: str | None = None,
    ) -> ChatRequest:
        """The chat request for this endpoint.

        Args:
            messages: The conversation.
            tools: Tool schemas (dicts) or objects with ``to_schema()``.
            params: Passed through into the body; a ``model`` among them wins.
            stream: Whether to ask for a stream.
            model: The model when ``params`` names none (else the endpoint's own).

        Raises:
            LLMUsageError: No model is set, or the messages or tools are not usable.
        """
        params = dict(params)
        name = params.pop("model", None) or model or self.model
        if not name:
            raise LLMUsageError(
                "no model is set: pass LLMConfig(model=...) or LLMTAP_MODEL, or run "
                "preflight_check() to pick the server's only model"
            )
        config = self.config
        dialect = self.dialect
        if dialect == "ollama":
            url = config.url_for("/api/chat")
        elif dialect == "responses":
            url = responses_url(config.chat_url)
        else:
            url = config.chat_url
        return build_request(
            dialect,
            url,
            model=name,
            messages=messages,
            tools=tools,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            stream=stream,
            params=params,
            refused=self.refused,
        )

    def embeddings_request(
        self, texts: Sequence[str], params: Mapping[str, Any], *, model: str | None = None
    ) -> EmbeddingsRequest:
        """The embeddings request for ``texts`` on this endpoint (Ollama's ``/api/embed``
        when it is Ollama, else ``/v1/embeddings``).

        Raises:
            LLMUsageError: No embedding model is set.
        """
        name = model or self.model
        if not name:
            raise LLMUsageError("no embedding model is set: pass model=... to embed()")
        native = self.config.api == "ollama" or self.server == "ollama"
        url = self.config.url_for("/api/embed" if native else "/v1/embeddings")
        return EmbeddingsRequest(url, native=native, model=name, texts=texts, params=params)

    async def close(self) -> None:
        """Close the connections; the endpoint cannot be used afterwards."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
