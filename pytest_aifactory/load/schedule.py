"""Arrival schedules: precomputed, seeded send times for open-loop load.

Gaps between arrivals are drawn from a gamma distribution with shape ``burstiness`` and
mean ``1/rate`` (burstiness 1 is a Poisson process, below 1 burstier, above 1 smoother), as
in vLLM's benchmark; ``constant`` sends exactly every ``1/rate`` seconds. The whole schedule is
computed before the first send, so computing it never delays a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Arrivals", "arrival_times"]

Distribution = Literal["poisson", "gamma", "constant"]


@dataclass(frozen=True)
class Arrivals:
    """How requests arrive in open-loop mode."""

    rate: float
    distribution: Distribution = "poisson"
    burstiness: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"arrival rate must be > 0 requests/s, got {self.rate}")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be > 0, got {self.burstiness}")
        if self.distribution not in ("poisson", "gamma", "constant"):
            raise ValueError(f"unknown arrival distribution {self.distribution!r}; valid: poisson, gamma, constant")


def arrival_times(arrivals: Arrivals, count: int | None = None, duration_s: float | None = None) -> list[float]:
    """Send times in seconds from the start: ``count`` of them, or all before ``duration_s``.

    The first request is sent at 0; the schedule is the same for the same ``arrivals``.
    """
    if (count is None) == (duration_s is None):
        raise ValueError("give exactly one of count and duration_s")
    mean_gap = 1.0 / arrivals.rate
    rng = np.random.default_rng(arrivals.seed)
    shape = 1.0 if arrivals.distribution == "poisson" else arrivals.burstiness

    def gaps(size: int) -> npt.NDArray[Any]:
        if arrivals.distribution == "constant":
            return np.full(size, mean_gap)
        return rng.gamma(shape, mean_gap / shape, size=size)

    if count is not None:
        drawn = gaps(count)
        drawn[0] = 0.0
        return [float(t) for t in np.cumsum(drawn)]
    limit = float(duration_s or 0.0)
    times = np.array([0.0])
    while times[-1] < limit:
        times = np.concatenate([times, times[-1] + np.cumsum(gaps(int(arrivals.rate * limit) + 16))])
    return [float(t) for t in times[times < limit]]
