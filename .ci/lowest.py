"""Print pip constraints that pin every direct dependency to the lowest version pyproject.toml
allows (its ``>=`` floor; ``==`` pins stay as they are), for CI's lowest-versions pass.

Usage: ``python3 .ci/lowest.py > constraints.txt && pip install -c constraints.txt -e '.[dev]'``
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path) -> dict[str, str]:
    """The ``>=`` floor of every requirement in the dependencies and every extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    requirements = [*project["dependencies"], *(r for extra in extras for r in extra)]
    found: dict[str, str] = {}
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match:
            found[match.group(1).lower()] = match.group(3)
    return found


if __name__ == "__main__":
    for name, version in sorted(
        floors(Path(__file__).resolve().parent.parent / "pyproject.toml").items()
    ):
        print(f"{name}=={version}")
