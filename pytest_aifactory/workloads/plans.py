"""A load's plan from the keyword arguments a benchmark passes (``rate=``, ``concurrency=``, ``count=``...)."""

from __future__ import annotations

from typing import Literal

from pytest_aifactory.load.engine import LoadPlan
from pytest_aifactory.load.parameters import check_load_parameters
from pytest_aifactory.load.schedule import Arrivals, Distribution

__all__ = ["make_plan", "plan_label"]


def make_plan(
    rate: float | None = None,
    concurrency: int | None = None,
    count: int | None = None,
    duration_s: float | None = None,
    warmup: int | Literal["auto"] = 0,
    distribution: Distribution = "poisson",
    burstiness: float = 1.0,
    seed: int = 0,
    timeout_s: float = 300.0,
    repeats: int = 1,
) -> LoadPlan:
    """Open loop when ``rate`` is given (``concurrency`` then caps requests in flight), else closed loop.

    Every parameter is checked first: ``LoadConfigError`` names the bad ones and what is accepted.
    ``warmup="auto"``: no fixed warm-up count; the transient is found in the latencies (MSER-5).
    """
    check_load_parameters(rate, concurrency, count, duration_s, warmup, distribution, burstiness, timeout_s, repeats)
    steady, fixed = warmup == "auto", 0 if warmup == "auto" else warmup
    if rate is not None:
        if distribution == "poisson" and burstiness != 1.0:
            distribution = "gamma"
        arrivals = Arrivals(rate, distribution, burstiness, seed)
        return LoadPlan(
            "open", arrivals, concurrency, count, duration_s, fixed, timeout_s, steady_state=steady, repeats=repeats
        )
    return LoadPlan(
        "closed", None, concurrency, count, duration_s, fixed, timeout_s, steady_state=steady, repeats=repeats
    )


def plan_label(plan: LoadPlan) -> str:
    """A point's default label: its rate or its concurrency."""
    if plan.arrivals is not None:
        return f"rate={plan.arrivals.rate:g}/s"
    return f"concurrency={plan.concurrency}"
