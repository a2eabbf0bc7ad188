"""Conftest of the shipped suites: every test under ``benchmarks/FAMILY/`` gets the ``FAMILY`` marker.

So ``pytest benchmarks -m inference`` selects ``benchmarks/inference/`` and a new suite file
needs no ``pytestmark`` line. A folder that is not a registered family is a usage error (a
typo would otherwise silently drop the suite from ``-m`` selections). Copy this file into
your own benchmark repository to get the same behaviour there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent / "benchmarks"
FAMILIES = ("inference", "database", "objectstore", "vectordb", "filestorage", "calibration")


def family_of(path: Path) -> str | None:
    """The family folder ``path`` lies in under ``benchmarks/``, if any."""
    try:
        relative = path.resolve().relative_to(BENCHMARKS.resolve())
    except ValueError:
        return None
    return relative.parts[0] if len(relative.parts) > 1 else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        family = family_of(item.path)
        if family is None:
            continue
        if family not in FAMILIES:
            raise pytest.UsageError(
                f"{item.path}: benchmarks/{family}/ is not a benchmark family; use one of: {', '.join(FAMILIES)}"
            )
        item.add_marker(getattr(pytest.mark, family))
