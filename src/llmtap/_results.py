"""What a chat stream produces: small events while it runs, one ``ChatResult`` at the end.

The events are plain frozen slotted dataclasses, cheap enough to build once per token; the
pydantic models (``ChatResult``, ``Usage``, ``Timings``) are built once per answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from llmtap._messages import Message, ToolCall

__all__ = [
    "ChatResult",
    "FinishEvent",
    "ModelDetails",
    "ModelInfo",
    "PreflightReport",
    "PullProgress",
    "ReasoningDelta",
    "ServerKind",
    "StreamEvent",
    "TextDelta",
    "Timings",
    "ToolCallDelta",
    "Usage",
    "UsageEvent",
    "trusted",
]

#: The kinds of server llmtap tells apart.
ServerKind = Literal["ollama", "llama.cpp", "vllm", "openai-compatible"]

_M = TypeVar("_M", bound=BaseModel)
#: Per model class: every field in declaration order, holding its default (or, for a
#: required field, a placeholder the caller always overwrites); ``None`` when the class is
#: not plain enough for :func:`trusted` (aliases, post-init, extra fields, factories).
_TEMPLATES: dict[type[BaseModel], dict[str, Any] | None] = {}


def _template(cls: type[BaseModel]) -> dict[str, Any] | None:
    if cls.__pydantic_post_init__ or cls.__pydantic_root_model__:
        return None
    if cls.model_config.get("extra") == "allow":
        return None
    template: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if field.alias is not None or field.validation_alias is not None:
            return None
        if field.default_factory is not None:
            return None
        template[name] = None if field.is_required() else field.default
    return template


def trusted(cls: type[_M], **values: Any) -> _M:
    """``cls.model_construct(**values)``, for values this package built and checked, and
    which include every required field.

    The same model (same fields, defaults, ``model_fields_set``, order), built without
    ``model_construct``'s per-field walk over aliases and defaults: about a quarter of its
    cost, and four models are built per answer. A class for which that walk matters
    (aliases, post-init, extra fields, default factories) goes to ``model_construct``.
    """
    if cls not in _TEMPLATES:
        _TEMPLATES[cls] = _template(cls)
    template = _TEMPLATES[cls]
    if template is None:
        return cls.model_construct(**values)
    fields = dict(template)
    fields.update(values)
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class Usage(BaseModel):
    """Token counts for one answer. A count nobody knows is ``None``.

    Attributes:
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens generated.
        total_tokens: Their sum, as the server reported it (or computed from the two).
        source: Where the figures came from. ``"server"``: the server reported them (a count
            it did not report is ``None``; all three are when it reported none in a whole,
            non-streamed answer). ``"counted"``: a streamed answer came with no usage
            (llama-cpp-python's server, or one that ignores ``stream_options``), so
            ``completion_tokens`` is the number of chunks that carried output: one token each
            on llama.cpp, vLLM and most servers, an estimate elsewhere; the others are
            ``None``.

    Example:
        >>> Usage(prompt_tokens=12, completion_tokens=34, total_tokens=46).total_tokens
        46
    """

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    source: Literal["server", "counted"] = "server"


class Timings(BaseModel):
    """How long an answer took, in seconds. Any figure that was not measured is ``None``.

    The first two are measured by the client; the last three are the server's own figures,
    where it reports them (Ollama's native API, llama.cpp's ``timings``).

    Attributes:
        time_to_first_token: From sending the request to the first output token.
        total: From sending the request to the end of the answer.
        tokens_per_second: Generation speed: the server's own figure (Ollama's
            ``eval_count`` over ``eval_duration``, llama.cpp's ``predicted_per_second``), else
            the completion tokens (reported or counted) over the time from the first token to
            the end.
        load_duration: Time the server spent loading the model (Ollama reports it).
        prompt_duration: Time the server spent reading the prompt (Ollama's
            ``prompt_eval_duration``, llama.cpp's ``prompt_ms``: the part of the prompt it
            had not cached).
        generation_duration: Time the server spent generating the answer (Ollama's
            ``eval_duration``, llama.cpp's ``predicted_ms``).

    Example:
        >>> Timings(time_to_first_token=0.25, total=1.5).total
        1.5
    """

    model_config = ConfigDict(frozen=True)

    time_to_first_token: float | None = None
    total: float | None = None
    tokens_per_second: float | None = None
    load_duration: float | None = None
    prompt_duration: float | None = None
    generation_duration: float | None = None


class ChatResult(BaseModel):
    """The whole answer to one chat request, assembled from its stream.

    Attributes:
        message: The answer as an assistant ``Message``, ready to append to the conversation.
            Its ``content`` is the text, or ``None`` when the text is empty and the model only
            called tools.
        text: The answer's text (``""`` if there was none).
        reasoning: The model's thinking, from whichever field the server used for it
            (``reasoning``, ``reasoning_content`` or ``thinking``); ``""`` if there was none.
        tool_calls: The tool calls, in the order of their index, with decoded arguments.
        finish_reason: Why generation stopped (``"stop"``, ``"length"``, ``"tool_calls"``,
            ...), or ``None`` if the server never said.
        usage: Token counts, always present: as the server reported them, or for a stream
            that carried none, the output chunks counted (``usage.source`` says which; a count
            nobody knows is ``None``).
        timings: Durations, measured by the client or reported by the server, always present
            (a figure not known, such as the first token's time of a non-streamed answer, is
            ``None``).
        model: The model name the server reported.
        server: The kind of server: ``"ollama"``, ``"llama.cpp"``, ``"vllm"`` or
            ``"openai-compatible"``.
        warnings: Things worth knowing that did not stop the answer.
        response_id: The answer's id as the server gave it (``chatcmpl-...`` over chat
            completions, ``resp_...`` over the Responses API, which a later request can name
            as ``previous_response_id``); ``None`` where the server gives none (Ollama's
            native API).
        cached: Whether the answer came from the response cache (``LLMConfig(cache=...)``),
            or from an identical call made at the same time, rather than from a request of
            its own. Its ``usage`` and ``timings`` are those of the request that got it.

    Example:
        >>> result = ChatResult(
        ...     message=Message(role="assistant", content="Hi!"),
        ...     text="Hi!",
        ...     finish_reason="stop",
        ... )
        >>> result.text, result.finish_reason, result.tool_calls
        ('Hi!', 'stop', ())
        >>> history = [Message.user("Hello"), result.message]  # continue the conversation
    """

    model_config = ConfigDict(frozen=True)

    message: Message
    text: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = Usage()
    timings: Timings = Timings()
    model: str | None = None
    server: str | None = None
    warnings: tuple[str, ...] = ()
    response_id: str | None = None
    cached: bool = False


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of the answer's text.

    Example:
        >>> event = TextDelta("Hel")
        >>> event.type, event.text
        ('text', 'Hel')
    """

    type: ClassVar[Literal["text"]] = "text"
    text: str


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    """A piece of the model's thinking (never part of the answer's text).

    Example:
        >>> ReasoningDelta("Let me think.").type
        'reasoning'
    """

    type: ClassVar[Literal["reasoning"]] = "reasoning"
    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A piece of one tool call.

    ``id`` and ``name`` are given once per call, on the first piece that carries them (servers
    that repeat them on every piece are normalised); ``None`` otherwise. A call the server sent
    without an id gets one only in the final ``ChatResult``.

    Attributes:
        index: Which call this piece belongs to; unique per call within one answer.
        id: The call's id, on the piece that introduced it.
        name: The function's name, on the piece that introduced it.
        arguments: The argument text of this piece as received (a whole JSON text when the
            server sent the call whole; an object argument is serialised to JSON).

    Example:
        >>> ToolCallDelta(0, "call_1", "get_weather", '{"city": ').arguments
        '{"city": '
    """

    type: ClassVar[Literal["tool_call"]] = "tool_call"
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True, frozen=True)
class UsageEvent:
    """The server reported token counts (sent again each time they change).

    Example:
        >>> UsageEvent(Usage(prompt_tokens=3)).usage.prompt_tokens
        3
    """

    type: ClassVar[Literal["usage"]] = "usage"
    usage: Usage


@dataclass(slots=True, frozen=True)
class FinishEvent:
    """The server said why generation stopped.

    Example:
        >>> FinishEvent("length").finish_reason
        'length'
    """

    type: ClassVar[Literal["finish"]] = "finish"
    finish_reason: str


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | UsageEvent | FinishEvent
"""Any event a stream produces; tell them apart with ``match`` or their ``type``."""


class ModelInfo(BaseModel):
    """One model a server offers. Anything the server does not report is ``None``.

    Ollama reports the most (``/api/tags`` and ``/api/ps``); llama.cpp reports size,
    parameter count and context; vLLM the context length; OpenAI-style servers little more
    than the name.

    Attributes:
        name: The name to pass as ``model`` (Ollama: ``name:tag``).
        size: Bytes on disk.
        parameter_size: The parameter count as the server writes it (``"3.2B"``).
        quantization: The quantization level (``"Q4_K_M"``).
        family: The model family (``"llama"``).
        format: The file format (``"gguf"``).
        digest: The model's content digest.
        modified_at: When the model was last pulled or changed.
        loaded: Whether it is in memory now; ``None`` when the server does not say. Ollama
            says through ``/api/ps``; llama.cpp and vLLM only list the models they serve,
            which are loaded.
        context_length: The context length (Ollama: the one it runs with, when loaded).
        size_vram: Bytes of the loaded model held in GPU memory (Ollama).
        expires_at: When Ollama will unload it (Ollama, loaded models).
        owned_by: The ``owned_by`` of an OpenAI-style listing.

    Example:
        >>> ModelInfo(name="qwen3:latest", size=5_200_000_000, loaded=True).loaded
        True
    """

    model_config = ConfigDict(frozen=True)

    name: str
    size: int | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    family: str | None = None
    format: str | None = None
    digest: str | None = None
    modified_at: datetime | None = None
    loaded: bool | None = None
    context_length: int | None = None
    size_vram: int | None = None
    expires_at: datetime | None = None
    owned_by: str | None = None


class ModelDetails(BaseModel):
    """Details of one Ollama model, from ``POST /api/show``.

    Attributes:
        name: The model asked about.
        family: The model family.
        parameter_size: The parameter count as Ollama writes it (``"3.2B"``).
        quantization: The quantization level.
        format: The file format.
        context_length: The context length the model was trained for
            (``model_info["<arch>.context_length"]``).
        capabilities: What it can do (``"completion"``, ``"tools"``, ``"thinking"``, ...).
        modified_at: When it was last pulled or changed.
        raw: The whole answer, for anything not above (``template``, ``parameters``,
            ``model_info``, ``license``...).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    format: str | None = None
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()
    modified_at: datetime | None = None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One progress line of an Ollama pull.

    Lines without a ``digest`` are stages (``"pulling manifest"``, ``"verifying sha256
    digest"``, ``"writing manifest"``, ``"success"``); lines with one report the download of
    that layer: ``completed`` of ``total`` bytes. A resumed pull starts a layer at the bytes
    Ollama already has.

    Example:
        >>> PullProgress("pulling 6a0746a1ec1a", "sha256:6a07...", 100, 40).fraction
        0.4
    """

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    @property
    def done(self) -> bool:
        """Whether this is the last line of a successful pull."""
        return self.status == "success"

    @property
    def fraction(self) -> float | None:
        """How much of the layer is downloaded (0 to 1), when the line says."""
        if not self.total or self.completed is None:
            return None
        return min(1.0, self.completed / self.total)


class PreflightReport(BaseModel):
    """What :meth:`LLMClient.preflight_check` found.

    Attributes:
        server: ``"ollama"``, ``"llama.cpp"``, ``"vllm"`` or ``"openai-compatible"``.
        version: The server's version, where it tells: Ollama's and vLLM's version,
            llama.cpp's build (``b6500-1a2b3c4d``, from ``GET /props``).
        models: The models the server offers, as it names them.
        model: The model requests will use: the configured one, resolved as the server resolves
            it (``qwen3`` on Ollama is ``qwen3:latest``), or the server's only model.
        latency: Seconds the checks took.
        warnings: Things that work but may surprise (a name a single-model server ignores).
        endpoint: The endpoint checked.
    """

    model_config = ConfigDict(frozen=True)

    server: ServerKind
    version: str | None
    models: tuple[str, ...]
    model: str
    latency: float
    warnings: tuple[str, ...] = ()
    endpoint: str
