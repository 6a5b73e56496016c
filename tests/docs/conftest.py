"""The documentation site, built once per run with ``mkdocs build --strict``, and served on
loopback for a real browser."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The longest a site build may take (it takes a few seconds).
BUILD_TIMEOUT = 180.0


def skip_or_fail(reason: str) -> NoReturn:
    """Skip outside CI, saying why; fail in CI, which must run every test."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}. CI runs these tests; they must not be skipped", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class BuiltSite:
    """A site that ``mkdocs build --strict`` wrote, and what the build printed."""

    directory: Path
    log: str


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The site built from mkdocs.yml, strictly (any warning fails the build), once per run."""
    if importlib.util.find_spec("mkdocs") is None:
        skip_or_fail("the docs tests need MkDocs and its plugins: pip install -e '.[docs]'")
    directory = tmp_path_factory.mktemp("site")
    # Material for MkDocs prints a notice about its future on every build; it says nothing
    # about this site, so the log is kept to the build's own lines.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(directory),
        "--config-file",
        str(ROOT / "mkdocs.yml"),
    ]
    built = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    log = built.stdout + built.stderr
    if built.returncode != 0:
        pytest.fail(
            f"mkdocs build --strict exited {built.returncode}:\n{built.stderr}", pytrace=False
        )
    return BuiltSite(directory, log)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def site_url(site: BuiltSite) -> Iterator[str]:
    """The built site served over HTTP on 127.0.0.1 (a free port), for the whole run."""
    handler = functools.partial(_QuietHandler, directory=str(site.directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
