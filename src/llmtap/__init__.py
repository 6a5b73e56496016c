"""llmtap: the async streaming client for local LLM servers and OpenAI-compatible APIs.

Example:
    >>> import asyncio
    >>> import llmtap
    >>> async def main() -> None:
    ...     async with llmtap.LLMClient(model="qwen3") as client:
    ...         await client.preflight_check()
    ...         async for chunk in client.stream_chat_with_retry([llmtap.Message.user("Hi")]):
    ...             ...
    >>> asyncio.run(main())
"""

from llmtap._api import ChatAPI
from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._errors import (
    BatchFileError,
    ConfigFileError,
    LLMConnectionError,
    LLMError,
    LLMModelError,
    LLMParseError,
    LLMRateLimitError,
    LLMResponseError,
    LLMRouterBusyError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMToolLoopError,
    LLMUsageError,
    StoreError,
)
from llmtap._hooks import (
    AttemptFailed,
    FirstChunk,
    Hook,
    HookRecord,
    RequestCancelled,
    RequestFailed,
    RequestFinished,
    RequestStarted,
)
from llmtap._messages import Message, ToolCall
from llmtap._results import (
    ChatResult,
    FinishEvent,
    ModelDetails,
    ModelInfo,
    PreflightReport,
    PullProgress,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from llmtap._router import EndpointStats, Router
from llmtap._stream import ChatStream, ChunkStream, RouterStream
from llmtap._sync import SyncChatStream, SyncClient
from llmtap._toolloop import ToolCallFinished, ToolCallStarted, ToolEvent, ToolRun
from llmtap._tools import Tool, tool
from llmtap._version import __version__
from llmtap._wire.accumulate import Accumulator

from llmtap import batch  # isort: skip  (llmtap.batch.run(...) after import llmtap)

__all__ = [
    "Accumulator",
    "AttemptFailed",
    "BatchFileError",
    "ChatAPI",
    "ChatResult",
    "ChatStream",
    "ChunkStream",
    "ConfigFileError",
    "EndpointStats",
    "FinishEvent",
    "FirstChunk",
    "Hook",
    "HookRecord",
    "LLMClient",
    "LLMConfig",
    "LLMConnectionError",
    "LLMError",
    "LLMModelError",
    "LLMParseError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMRouterBusyError",
    "LLMStreamError",
    "LLMStreamInterrupted",
    "LLMTimeoutError",
    "LLMToolLoopError",
    "LLMUsageError",
    "Message",
    "ModelDetails",
    "ModelInfo",
    "PreflightReport",
    "PullProgress",
    "ReasoningDelta",
    "RequestCancelled",
    "RequestFailed",
    "RequestFinished",
    "RequestStarted",
    "Router",
    "RouterStream",
    "StoreError",
    "StreamEvent",
    "SyncChatStream",
    "SyncClient",
    "TextDelta",
    "Timings",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolEvent",
    "ToolRun",
    "Usage",
    "UsageEvent",
    "__version__",
    "batch",
    "tool",
]
