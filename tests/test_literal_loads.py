"""What the collection-time check of ``aif_load`` arguments reads, and what it leaves to run time.

The end-to-end check (real service fixture, no job for a bad literal) is in ``test_faults.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_aifactory.plugin.literal_loads import literal_problems

HERE = Path(__file__).parent


@pytest.mark.parametrize("rate", [5, 0])
def reassigned(aif_load: Any, rate: float) -> None:
    rate = max(rate, 1)  # the value passed is not the parametrized one: known only when it runs
    aif_load.openai("http://x", rate=rate, count=3)


def variables(aif_load: Any) -> None:
    rate, plan = -5, {"count": -5}
    aif_load.openai("http://x", rate=rate, count=3)
    aif_load.openai("http://x", concurrency=1, **plan)


@pytest.mark.parametrize("plan", [{"rate": 5, "count": 3}, pytest.param({"concurrency": 2, "duration_s": 1.5})])
def good(aif_load: Any, plan: dict[str, Any]) -> None:
    aif_load.openai("http://x", rate=2.5, count=10, warmup="auto", prompts="synthetic:in=4,out=8")
    aif_load.openai("http://x", prompts="sharegpt:written/by/the/test.json", **plan)
    aif_load.sweep("concurrency", [1, 2, 4], aif_load.openai, "http://x", duration_s=2)


class Suite:
    @pytest.mark.parametrize(("clients", "seconds"), [(1, 2), (0, -1)])
    def method(self, aif_load: Any, clients: int, seconds: float) -> None:
        aif_load.sql(
            "postgresql://x",
            concurrency=clients,
            duration_s=seconds,
            distribution="uniform",
        )


@pytest.mark.parametrize("function", [reassigned, variables, good])
def test_values_not_known_before_the_run_or_good_are_left_alone(function: Any) -> None:
    assert literal_problems(function, HERE) == []


def test_each_bad_value_is_named_with_its_line_and_where_it_comes_from() -> None:
    line = Suite.method.__code__.co_firstlineno + 2
    assert literal_problems(Suite.method, HERE) == [
        f"test_literal_loads.py:{line}: aif_load.sql: concurrency=0: expected a whole number >= 1 "
        "(clients = 0, from parametrize)",
        f"test_literal_loads.py:{line}: aif_load.sql: duration_s=-1: expected a number of seconds > 0 "
        "(seconds = -1, from parametrize)",
        f"test_literal_loads.py:{line}: aif_load.sql: distribution='uniform': expected one of poisson, gamma, constant",
    ]
