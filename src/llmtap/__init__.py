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
from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMUsageError,
)
from llmtap._messages import Message, ToolCall
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
from llmtap._stream import ChatStream
from llmtap._sync import SyncChatStream, SyncClient

__version__ = "0.1.0"

__all__ = [
    "Accumulator",
    "ChatResult",
    "ChatStream",
    "FinishEvent",
    "LLMClient",
    "LLMConfig",
    "LLMConnectionError",
    "LLMError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMStreamError",
    "LLMStreamInterrupted",
    "LLMTimeoutError",
    "LLMUsageError",
    "Message",
    "PreflightReport",
    "ReasoningDelta",
    "StreamEvent",
    "SyncChatStream",
    "SyncClient",
    "TextDelta",
    "Timings",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageEvent",
    "__version__",
]
