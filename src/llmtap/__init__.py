"""llmtap: the async streaming client for local LLM servers and OpenAI-compatible APIs."""

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

__all__ = [
    "LLMConnectionError",
    "LLMError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMStreamError",
    "LLMStreamInterrupted",
    "LLMTimeoutError",
    "LLMUsageError",
    "Message",
    "ToolCall",
]
