"""Steady state: where the warm-up transient of a run ends, found from its per-request latencies.

The rule is MSER-5 (White, "An effective truncation heuristic for bias reduction in
simulation output", Simulation 69(6), 1997; recommended by Hoad, Robinson and Davies,
JORS 61, 2010): the latencies, in the order the requests were scheduled, are averaged in
batches of 5; the truncation point is the number of leading batches ``d`` that minimises
the squared standard error of the mean of the batches left,
``sum_{j>d} (Y_j - mean_{>d})^2 / (m - d)^2``, searched over the first half of the run (the
rule's validity condition). A minimum at the end of that half means the latency was still
trending half-way through, and the run is flagged as never steady rather than averaged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytest_aifactory.core.records import RequestRecord

__all__ = ["BATCH", "METHOD", "SteadyState", "cut_transient", "mser5"]

BATCH = 5
METHOD = "MSER-5 (White 1997) on per-request latencies in schedule order"
_MIN_BATCHES = 4  # fewer batches than this: too short to judge, nothing is cut


@dataclass(frozen=True)
class SteadyState:
    """The outcome of the rule on one run: how many leading requests to cut, and whether it got steady."""

    cut: int
    steady: bool
    batches: int

    def describe(self) -> dict[str, object]:
        """JSON-ready: the method, the requests cut, whether the run got steady."""
        return {"method": METHOD, "cut_requests": self.cut, "steady": self.steady, "batches": self.batches}


def mser5(latencies: Sequence[float]) -> SteadyState:
    """The MSER-5 truncation of ``latencies`` (in schedule order)."""
    m = len(latencies) // BATCH
    if m < _MIN_BATCHES:
        return SteadyState(0, True, m)
    means = np.asarray(latencies[: m * BATCH], dtype=float).reshape(m, BATCH).mean(axis=1)
    best, best_score = 0, float("inf")
    half = m // 2
    for d in range(half + 1):
        rest = means[d:]
        score = float(((rest - rest.mean()) ** 2).sum()) / (m - d) ** 2
        if score < best_score:
            best, best_score = d, score
    return SteadyState(best * BATCH, best < half, m)


def cut_transient(records: Sequence[RequestRecord]) -> tuple[list[RequestRecord], SteadyState]:
    """``records`` with the transient MSER-5 finds marked as warm-up (earlier warm-up stays so).

    The latencies are those of the completed measured requests in schedule order; every
    request scheduled before the first one kept is cut, failed ones included.
    """
    done = sorted((r for r in records if not r.warmup and r.ok and r.end is not None), key=lambda r: r.scheduled)
    state = mser5([r.end - r.scheduled for r in done if r.end is not None])
    if state.cut == 0:
        return list(records), state
    first_kept = done[state.cut].scheduled
    return [dataclasses.replace(r, warmup=r.warmup or r.scheduled < first_kept) for r in records], state
