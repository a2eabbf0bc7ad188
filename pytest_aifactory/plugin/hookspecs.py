"""Hooks pytest-aifactory calls, for other plugins (e.g. an exporter of their own)."""

from __future__ import annotations

import pytest

from pytest_aifactory.core.metrics import LoadResult


@pytest.hookspec
def pytest_aifactory_result(item: pytest.Item, result: LoadResult) -> None:
    """Called in the process that ran the load, once per result (each sweep point), as it is recorded.

    ``result.metrics()`` has every figure by name; ``result.records`` the per-request records.
    """
