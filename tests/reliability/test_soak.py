"""The soak script, short: 1,000 streams at concurrency 100 against five faulty servers in
worker processes, run as CI would run it, must end with no duplicated or lost token and no
leaked connection or task."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


async def test_short_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    """`benchmarks/soak.py --streams 1000` exits 0 with zero duplicated or lost tokens, zero
    leaked connections and tasks, no non-LLMError escaping — and faults did happen."""
    counts_file = tmp_path / "soak.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SOAK), "--streams", "1000", "--concurrency", "100",
        "--seed", "7", "--json", str(counts_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)  # a hang guard
    assert process.returncode == 0, (out + err).decode()
    counts = json.loads(counts_file.read_text())
    assert counts["streams"] == 1000
    assert (counts["duplicated"], counts["lost"]) == (0, 0)
    assert (counts["leaked_connections"], counts["leaked_tasks"], counts["crashed"]) == (0, 0, 0)
    assert counts["completed"] + counts["interrupted"] + sum(counts["failed"].values()) == 1000
    assert counts["retried"] > 0
    assert counts["interrupted"] > 0
    assert counts["ok"] is True
