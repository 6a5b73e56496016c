"""Start and stop llama-cpp-python's OpenAI-compatible server on loopback, for the real-server tier.

The server runs as a child process (``python -m llama_cpp.server``) on a free port with one
thread (two OpenMP threads on two shared cores stall for hundreds of milliseconds per token).
Its output goes to a log file, so a server that fails to start is reported with what it said.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MODEL_ALIAS", "LlamaServer", "ServerStartError"]

MODEL_ALIAS = "tiny"
#: How long the server may take to answer ``GET /v1/models`` after it was started.
START_TIMEOUT = 60.0
#: How long it may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries its output."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    """One ``llama_cpp.server`` process serving a GGUF file as model ``tiny``.

    Args:
        model_path: The GGUF file.
        log_path: Where the server's stdout and stderr go.
        interrupt_requests: The server's ``--interrupt_requests``: when true (its default) a
            second request cuts a running stream short; when false requests queue.
    """

    model_path: Path
    log_path: Path
    interrupt_requests: bool = True
    port: int = 0
    started_in: float = 0.0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "512", "--n_threads", "1", "--n_threads_batch", "1",
            "--interrupt_requests", str(self.interrupt_requests),
        ]  # fmt: skip

    def log(self) -> str:
        """What the server has printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Start the server and wait until ``GET /v1/models`` lists the model.

        Raises:
            ServerStartError: It exited, or did not answer within ``START_TIMEOUT``; the
                message has its command line and output.
        """
        for attempt in range(3):
            try:
                self._start_once()
                return
            except ServerStartError:
                # Another process may have taken the free port between its choice and the bind.
                if attempt == 2 or "address already in use" not in self.log().lower():
                    raise

    def _start_once(self) -> None:
        self.port = _free_port()
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = began + START_TIMEOUT
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise self._failure(f"exited with status {code} before it answered")
            if self._lists_model():
                self.started_in = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self._failure(f"did not answer GET /v1/models within {START_TIMEOUT:g} s")
            time.sleep(0.1)

    def _lists_model(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as response:
                body = json.loads(response.read())
        except (OSError, ValueError):
            return False
        ids = [entry.get("id") for entry in body.get("data") or ()]
        return MODEL_ALIAS in ids

    def _failure(self, what: str) -> ServerStartError:
        return ServerStartError(
            f"llama-cpp-python's server {what}.\ncommand: {' '.join(self.command())}\n"
            f"--- server output ({self.log_path}) ---\n{self.log()[-8000:]}"
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None
