"""What llmtap keeps on disk: the conversation log (``LLMConfig(log_db=...)``, ``llmtap logs``)
and the response cache (``LLMConfig(cache=...)``), each a SQLite file written by one background
thread."""

from llmtap._store.cache import Cache, CacheInfo, Flight, cache_info, clear_cache
from llmtap._store.db import open_database
from llmtap._store.log import (
    LoggedCall,
    LogHook,
    continuation,
    latest_conversation,
    open_log,
    search,
)

__all__ = [
    "Cache",
    "CacheInfo",
    "Flight",
    "LogHook",
    "LoggedCall",
    "cache_info",
    "clear_cache",
    "continuation",
    "latest_conversation",
    "open_database",
    "open_log",
    "search",
]
