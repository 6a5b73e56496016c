"""Start and stop llama-cpp-python's OpenAI-compatible server on loopback, for the real-server tier.

The server runs as a child process (``python -m llama_cpp.server``); what it shares with the
tier's other server is in :mod:`tests.realserver.serverprocess`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tests.realserver.serverprocess import MODEL_ALIAS, ServerProcess, ServerStartError

__all__ = ["MODEL_ALIAS", "LlamaServer", "ServerStartError"]


@dataclass
class LlamaServer(ServerProcess):
    """One ``llama_cpp.server`` process serving a GGUF file as model ``tiny``; ready when
    ``GET /v1/models`` lists it.

    Args:
        model_path: The GGUF file.
        log_path: Where the server's stdout and stderr go.
        interrupt_requests: The server's ``--interrupt_requests``: when true (its default) a
            second request cuts a running stream short; when false requests queue.
    """

    name = "llama-cpp-python's server"
    ready_probe = "GET /v1/models"

    interrupt_requests: bool = True

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "512", "--n_threads", "1", "--n_threads_batch", "1",
            "--interrupt_requests", str(self.interrupt_requests),
        ]  # fmt: skip

    def ready(self) -> bool:
        """Whether ``GET /v1/models`` lists the model."""
        body = self.get_json("/v1/models")
        entries = body.get("data") if isinstance(body, dict) else None
        return MODEL_ALIAS in [entry.get("id") for entry in entries or ()]
