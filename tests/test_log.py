"""llmtap's logger: silent until the application sets up logging, and then fully there."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_without_logging_set_up_warnings_print_nothing() -> None:
    """With no handler configured anywhere, a llmtap warning does not reach stderr through
    the root logger's last resort (it would mix into a terminal UI)."""
    out = _run(
        """
        import llmtap
        from llmtap._log import get_logger
        get_logger().warning("llm_retry", attempt=1)
        print("done")
        """
    )
    assert (out.stdout, out.stderr) == ("done\n", "")


def test_with_basic_config_warnings_are_shown() -> None:
    """The NullHandler takes nothing away: logging.basicConfig() shows llmtap's events, the
    fields in the message."""
    out = _run(
        """
        import logging
        import llmtap
        from llmtap._log import get_logger
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
        get_logger().warning("llm_retry", attempt=1)
        get_logger().debug("llm_request_started", url="http://x")
        """
    )
    assert out.stderr.splitlines() == [
        "llmtap WARNING llm_retry attempt=1",
        "llmtap DEBUG llm_request_started url='http://x'",
    ]


def test_fields_ride_along_in_extra() -> None:
    """A structured handler finds each event's fields in ``record.llmtap``."""
    out = _run(
        """
        import logging
        import llmtap
        from llmtap._log import get_logger

        class Keep(logging.Handler):
            def emit(self, record):
                print(record.getMessage().split()[0], sorted(record.llmtap.items()))

        logging.getLogger("llmtap").addHandler(Keep())
        logging.getLogger("llmtap").setLevel(logging.INFO)
        get_logger().warning("llm_retry", attempt=2, url="http://x")
        """
    )
    assert out.stdout == "llm_retry [('attempt', 2), ('url', 'http://x')]\n"
