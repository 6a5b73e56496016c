"""Bulk jobs: a JSONL file of requests through a client or a router, resumable (see
``llmtap.batch``)."""

from llmtap._batch.lines import Defaults
from llmtap._batch.runner import BatchReport, BatchTarget, errors_path_for, run

__all__ = ["BatchReport", "BatchTarget", "Defaults", "errors_path_for", "run"]
