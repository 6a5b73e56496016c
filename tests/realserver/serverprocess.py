"""A real LLM server as a child process on loopback, for the real-server tier: what the two
servers the tier runs (llama-cpp-python's and llama.cpp's own ``llama-server``) have in common.

Each runs on a free port with one thread (two OpenMP threads on two shared cores stall for
hundreds of milliseconds per token), serves the tiny model as ``tiny``, and writes its output to
a log file, so that a server that fails to start is reported with what it said. A subclass says
how to start it (:meth:`ServerProcess.command`) and how to tell it is ready
(:meth:`ServerProcess.ready`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["MODEL_ALIAS", "START_TIMEOUT", "STOP_TIMEOUT", "ServerProcess", "ServerStartError"]

MODEL_ALIAS = "tiny"
#: How long a server may take to be ready after it was started.
START_TIMEOUT = 60.0
#: How long it may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: How many times a start is tried when another process took the chosen port first.
_PORT_TRIES = 3


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries its output."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One server process serving a GGUF file as model ``tiny``.

    Args:
        model_path: The GGUF file.
        log_path: Where the server's stdout and stderr go.
    """

    #: The server's name in error messages.
    name: ClassVar[str] = "the server"
    #: What :meth:`ready` asks, for error messages.
    ready_probe: ClassVar[str] = "its readiness probe"
    #: What the server prints (lower case) when it cannot bind its port.
    port_taken: ClassVar[str] = "address already in use"

    model_path: Path
    log_path: Path
    port: int = field(default=0, init=False)
    #: Seconds from the start to the first ready answer.
    started_in: float = field(default=0.0, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server on :attr:`port`."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers as a ready server does."""
        raise NotImplementedError

    def get_json(self, path: str) -> Any:
        """``GET path`` parsed as JSON; ``None`` when it fails (not listening yet, a status
        error such as llama-server's 503 while loading, a body that is not JSON)."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        """What the server has printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Start the server and wait until it is :meth:`ready`.

        Raises:
            ServerStartError: It exited, or was not ready within ``START_TIMEOUT``; the
                message has its command line and output.
        """
        for attempt in range(_PORT_TRIES):
            try:
                self._start_once()
                return
            except ServerStartError:
                # Another process may have taken the free port between its choice and the bind.
                if attempt == _PORT_TRIES - 1 or self.port_taken not in self.log().lower():
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
                raise self._failure(f"exited with status {code} before it was ready")
            if self.ready():
                self.started_in = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self._failure(f"did not answer {self.ready_probe} within {START_TIMEOUT:g} s")
            time.sleep(0.1)

    def _failure(self, what: str) -> ServerStartError:
        return ServerStartError(
            f"{self.name} {what}.\ncommand: {' '.join(self.command())}\n"
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
