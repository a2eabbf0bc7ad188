"""The parameters of a load, checked together before anything of the load is started.

A bad value is a usage error naming the parameter, the value given and what is accepted,
all problems in one paragraph: never a traceback from deep inside numpy or the engine.
"""

from __future__ import annotations

import math
from typing import Any

from pytest_aifactory.core.errors import LoadConfigError

__all__ = ["check_load_parameters"]

DISTRIBUTIONS = ("poisson", "gamma", "constant")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_load_parameters(
    rate: Any,
    concurrency: Any,
    count: Any,
    duration_s: Any,
    warmup: Any,
    distribution: Any,
    burstiness: Any,
    timeout_s: Any,
    repeats: Any = 1,
) -> None:
    """Raise ``LoadConfigError`` listing every parameter that is out of range or missing."""
    problems = []
    if rate is not None and not (_number(rate) and rate > 0):
        problems.append(f"rate={rate!r}: expected a number of requests/s > 0")
    if concurrency is not None and not (_whole(concurrency) and concurrency >= 1):
        problems.append(f"concurrency={concurrency!r}: expected a whole number >= 1")
    if rate is None and concurrency is None:
        problems.append("give a rate (open loop, requests/s) or a concurrency (closed loop)")
    if count is not None and not (_whole(count) and count >= 1):
        problems.append(f"count={count!r}: expected a whole number of requests >= 1")
    if duration_s is not None and not (_number(duration_s) and duration_s > 0):
        problems.append(f"duration_s={duration_s!r}: expected a number of seconds > 0")
    if (count is None) == (duration_s is None):
        problems.append("give exactly one of count and duration_s")
    if warmup != "auto" and not (_whole(warmup) and warmup >= 0):
        problems.append(f"warmup={warmup!r}: expected a whole number of requests >= 0, or 'auto' (MSER-5)")
    if distribution not in DISTRIBUTIONS:
        problems.append(f"distribution={distribution!r}: expected one of {', '.join(DISTRIBUTIONS)}")
    if not (_number(burstiness) and burstiness > 0):
        problems.append(f"burstiness={burstiness!r}: expected a number > 0")
    if not (_number(timeout_s) and timeout_s > 0):
        problems.append(f"timeout_s={timeout_s!r}: expected a number of seconds > 0")
    if not (_whole(repeats) and repeats >= 1):
        problems.append(f"repeats={repeats!r}: expected a whole number of runs >= 1")
    if problems:
        raise LoadConfigError(f"bad load parameters: {'; '.join(problems)}")
