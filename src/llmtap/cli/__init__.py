"""The ``llmtap`` command. Imported only by the console script, never by ``import llmtap``."""

from llmtap.cli._app import app, main

__all__ = ["app", "main"]
