"""Confidence intervals of results, and of the change between two results.

Two methods, named in every result that carries intervals (``interval_method``):

- one run, **over its requests**, for the latency distributions the runs are compared on
  (``Metric.compare``): a percentile's interval is the distribution-free one from order
  statistics (the ranks between the binomial(n, p) 2.5 % and 97.5 % quantiles: Conover,
  *Practical Nonparametric Statistics*, 3rd ed. 1999, section 3.2; Le Boudec, *Performance
  Evaluation of Computer and Communication Systems*, 2010, theorem 2.1), the mean's is
  mean +- t s / sqrt(n). Both treat the requests as independent: requests queued behind one
  another are not, so under load the intervals are too narrow (the coverage benchmark in
  ``benchmarks/calibration`` measures by how much). Throughputs of a single run get none:
  the run is one sample of them. This costs one sort per distribution, where a bootstrap
  would resample every request a thousand times.
- ``repeats=N`` (N >= 2): every metric is the mean over the repeats, its interval a
  **Student t interval over the N per-repeat values** (mean +- t(0.975, N-1) s / sqrt(N)).

The interval of a relative change new/old - 1 is the conservative span of the ratios of the
two intervals' ends (``change_interval``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from pytest_aifactory.core.metric_table import METRICS, PERCENTILES

__all__ = [
    "LEVEL",
    "Interval",
    "change_interval",
    "quantile_interval",
    "repeat_method",
    "request_intervals",
    "request_method",
    "t_interval",
]

LEVEL = 0.95

Interval = tuple[float, float]


def request_method() -> str:
    """How a single run's intervals are made."""
    return f"over requests: order statistics for percentiles, t for means ({LEVEL:.0%})"


def repeat_method(repeats: int) -> str:
    """How the intervals of ``repeats`` runs are made."""
    return f"Student t over {repeats} repeats ({LEVEL:.0%})"


def _compared(distribution: str) -> list[str]:
    """The compared statistics of ``distribution`` (``p50``, ``p99``...)."""
    return list(dict.fromkeys(m.stat for m in METRICS.values() if m.distribution == distribution and m.compare))


def quantile_interval(ordered: npt.NDArray[np.float64], quantile: float) -> Interval:
    """The distribution-free interval of the ``quantile`` (0..1) from sorted samples.

    With the 1-based order statistics x(l) <= x(u), l the binomial's 2.5 % quantile and u
    one above its 97.5 % quantile. An end beyond the samples is unbounded (+-inf): too few
    samples to bound a p99 from above, say, which a pessimistic SLO then treats as a breach.
    """
    n = len(ordered)
    tail = (1 - LEVEL) / 2
    low = int(scipy_stats.binom.ppf(tail, n, quantile))
    high = int(scipy_stats.binom.ppf(1 - tail, n, quantile))  # u - 1: the 0-based index of x(u)
    lower = float(ordered[low - 1]) if low >= 1 else -math.inf
    upper = float(ordered[high]) if high < n else math.inf
    return lower, upper


def request_intervals(samples: Mapping[str, Sequence[float]]) -> dict[str, Interval]:
    """Intervals of the mean and compared statistics of each distribution of per-request ``samples`` (ms)."""
    intervals: dict[str, Interval] = {}
    for name, values in samples.items():
        stats = _compared(name)
        if len(values) < 2 or not stats:
            continue
        ordered = np.sort(np.asarray(values, dtype=float))
        mean = t_interval(ordered)
        if mean is not None:
            intervals[f"mean_{name}_ms"] = mean
        for stat in stats:
            intervals[f"{stat}_{name}_ms"] = quantile_interval(ordered, PERCENTILES[stat] / 100)
    return intervals


def t_interval(values: Sequence[float] | npt.NDArray[np.float64]) -> Interval | None:
    """Mean +- t s / sqrt(n) of ``values`` (None with fewer than 2 finite values)."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(data) < 2:
        return None
    mean = float(data.mean())
    half = float(scipy_stats.t.ppf((1 + LEVEL) / 2, len(data) - 1)) * float(data.std(ddof=1)) / math.sqrt(len(data))
    return mean - half, mean + half


def change_interval(old: Interval, new: Interval) -> Interval | None:
    """The interval of new/old - 1 from both intervals (None when old's could be 0 or negative)."""
    if old[0] <= 0 or new[0] < 0:
        return None
    return new[0] / old[1] - 1, new[1] / old[0] - 1
