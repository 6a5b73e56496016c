"""Bulk jobs: every line of a JSONL file through an ``LLMClient`` or a ``Router``, each answer
written as it completes, resumable after a crash.

Input is OpenAI's Batch API format (``{"custom_id", "method": "POST", "url":
"/v1/chat/completions" | "/v1/embeddings", "body": {...}}``), so a file made for OpenAI's
batch endpoint runs unchanged against Ollama, llama.cpp or vLLM, or a short form
(``{"custom_id"?, "messages": [...]}``, ``{"custom_id"?, "prompt": "..."}``). Output is
OpenAI's batch output format, ``chat.completion`` bodies built from llmtap's ``ChatResult``
whatever the server's dialect; failures go to a separate errors file.

Example:
    >>> import llmtap.batch
    >>> async with Router(["http://gpu1:11434", "http://gpu2:11434"], model="qwen3") as router:
    ...     report = await llmtap.batch.run(router, "in.jsonl", "out.jsonl", resume=True)
    >>> print(report.succeeded, report.failures, f"{report.requests_per_second:.1f} req/s")
    3 0 ... req/s
"""

from llmtap._batch import BatchReport, BatchTarget, run
from llmtap._errors import BatchFileError

__all__ = ["BatchFileError", "BatchReport", "BatchTarget", "run"]
