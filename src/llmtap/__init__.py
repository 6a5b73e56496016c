"""llmtap: the async streaming client for local LLM servers and OpenAI-compatible APIs.

Example:
    >>> import llmtap
    >>> async def main() -> None:
    ...     async with llmtap.LLMClient(model="qwen3") as client:
    ...         await client.preflight_check()
    ...         async for chunk in client.stream_chat_with_retry([llmtap.Message.user("Hi")]):
    ...             ...
"""

from llmtap._accumulate import Accumulator
from llmtap._client import ChunkStream, LLMClient
from llmtap._config import ConfigFileError, LLMConfig
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMParseError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMToolLoopError,
    LLMUsageError,
)
from llmtap._messages import Message, ToolCall
from llmtap._models import ModelDetails, ModelInfo, PullProgress
from llmtap._preflight import PreflightReport
from llmtap._results import (
    ChatResult,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from llmtap._router import EndpointStats, LLMRouterBusyError, Router, RouterStream
from llmtap._stream import ChatStream
from llmtap._sync import SyncChatStream, SyncClient
from llmtap._toolloop import ToolCallFinished, ToolCallStarted, ToolEvent, ToolRun
from llmtap._tools import Tool, tool

__version__ = "0.1.0"

__all__ = [
    "Accumulator",
    "ChatResult",
    "ChatStream",
    "ChunkStream",
    "ConfigFileError",
    "EndpointStats",
    "FinishEvent",
    "LLMClient",
    "LLMConfig",
    "LLMConnectionError",
    "LLMError",
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
    "Router",
    "RouterStream",
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
    "tool",
]
