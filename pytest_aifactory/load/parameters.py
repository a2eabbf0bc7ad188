"""The parameters of a load, checked together before anything of the load is started.

A bad value is a usage error naming the parameter, the value given and what is accepted,
all problems in one paragraph: never a traceback from deep inside numpy or the engine.
``ACCEPTED`` holds the check of each parameter on its own: the load uses it when it runs,
and the plugin on the literal arguments of a test's ``aif_load`` calls when it collects the
test, before any service is started for it (``plugin.literal_loads``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pytest_aifactory.core.errors import LoadConfigError

__all__ = ["ACCEPTED", "check_load_parameters", "check_parameters", "parameter_problems"]

DISTRIBUTIONS = ("poisson", "gamma", "constant")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# parameter -> (is the value accepted, what is accepted); None is "not given" where allowed
ACCEPTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rate": (lambda v: v is None or (_number(v) and v > 0), "a number of requests/s > 0"),
    "concurrency": (lambda v: v is None or (_whole(v) and v >= 1), "a whole number >= 1"),
    "count": (lambda v: v is None or (_whole(v) and v >= 1), "a whole number of requests >= 1"),
    "duration_s": (lambda v: v is None or (_number(v) and v > 0), "a number of seconds > 0"),
    "warmup": (
        lambda v: v == "auto" or (_whole(v) and v >= 0),
        "a whole number of requests >= 0, or 'auto' (MSER-5)",
    ),
    "distribution": (lambda v: v in DISTRIBUTIONS, f"one of {', '.join(DISTRIBUTIONS)}"),
    "burstiness": (lambda v: _number(v) and v > 0, "a number > 0"),
    "timeout_s": (lambda v: _number(v) and v > 0, "a number of seconds > 0"),
    "repeats": (lambda v: _whole(v) and v >= 1, "a whole number of runs >= 1"),
}


def parameter_problems(given: Mapping[str, Any]) -> list[str]:
    """``name=value: expected ...`` for each parameter of ``given`` out of range (others are not looked at)."""
    return [
        f"{name}={value!r}: expected {ACCEPTED[name][1]}"
        for name, value in given.items()
        if name in ACCEPTED and not ACCEPTED[name][0](value)
    ]


def _raise(problems: list[str]) -> None:
    if problems:
        raise LoadConfigError(f"bad load parameters: {'; '.join(problems)}")


def check_parameters(**given: Any) -> None:
    """Raise ``LoadConfigError`` listing the parameters of ``given`` that are out of range."""
    _raise(parameter_problems(given))


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
    problems = parameter_problems(
        {
            "rate": rate,
            "concurrency": concurrency,
            "count": count,
            "duration_s": duration_s,
            "warmup": warmup,
            "distribution": distribution,
            "burstiness": burstiness,
            "timeout_s": timeout_s,
            "repeats": repeats,
        }
    )
    if rate is None and concurrency is None:
        problems.append("give a rate (open loop, requests/s) or a concurrency (closed loop)")
    if (count is None) == (duration_s is None):
        problems.append("give exactly one of count and duration_s")
    _raise(problems)
