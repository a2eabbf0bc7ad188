"""Capacity search: the highest load (rate or concurrency) at which every SLO still holds.

How it stops. It probes ``low`` first: when the SLOs fail there, the answer is "unreachable
even at the lowest point" and nothing else runs. Otherwise it brackets: it multiplies the
knob by ``growth`` until a probe breaches an SLO (or ``high`` passes: then capacity is at
least ``high``). Then it bisects the bracket [highest pass, lowest breach] until it is
within ``precision`` of its lower end (for a concurrency: also until the two are adjacent
integers). Before every probe after the first it checks the time budget: when the time
spent plus the longest probe so far would exceed ``budget_s``, it stops and answers with
what it has, saying so. A probe where the load generator was the limit (its result's
``client_limit``) ends the search too: beyond it the figures are the client's, and the
answer (capacity at least the last pass) is inconclusive, as its SLO verdicts then are.
The answer is always the highest value that passed (so it errs low,
by at most the precision, when the service's SLOs hold below a single threshold; by up to its
bracket when the time budget ended the search, and the answer then says so as a lower bound
capped by the breached point), and every probe is kept as a normal result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_aifactory.core.errors import LoadConfigError
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.core.slo import SLO, Verdict, check

__all__ = ["Capacity", "CapacitySearch", "Probe", "search_capacity"]

Knob = Literal["rate", "concurrency"]
Status = Literal["found", "unreachable", "above-highest", "budget", "client-bound"]


@dataclass(frozen=True)
class CapacitySearch:
    """Where to search, how finely, and for how long."""

    knob: Knob
    low: float
    high: float | None = None
    precision: float = 0.05
    budget_s: float = 600.0
    growth: float = 2.0

    def __post_init__(self) -> None:
        if self.knob not in ("rate", "concurrency"):
            raise LoadConfigError(f"capacity knob must be 'rate' or 'concurrency', got {self.knob!r}")
        if not self.low > 0:
            raise LoadConfigError(f"capacity search: low must be > 0, got {self.low}")
        if self.high is not None and not self.high > self.low:
            raise LoadConfigError(f"capacity search: high ({self.high}) must be above low ({self.low})")
        if not 0 < self.precision < 1:
            raise LoadConfigError(f"capacity search: precision is a fraction in (0, 1), got {self.precision}")
        if not self.growth > 1:
            raise LoadConfigError(f"capacity search: growth must be > 1, got {self.growth}")
        if not self.budget_s > 0:
            raise LoadConfigError(f"capacity search: budget_s must be > 0, got {self.budget_s}")
        if self.knob == "concurrency" and self.low != int(self.low):
            raise LoadConfigError(f"capacity search: a concurrency is a whole number, got low={self.low}")

    def grown(self, value: float) -> float:
        """The next bracketing value after ``value`` (capped at ``high``)."""
        nxt = value * self.growth
        if self.knob == "concurrency":
            nxt = max(value + 1, math.floor(nxt))
        return nxt if self.high is None else min(nxt, self.high)

    def middle(self, passed: float, breached: float) -> float:
        """The bisection point of a bracket."""
        return (passed + breached) // 2 if self.knob == "concurrency" else (passed + breached) / 2

    def narrow(self, passed: float, breached: float) -> bool:
        """True when the bracket is within the precision (or integers are adjacent)."""
        if self.knob == "concurrency" and breached - passed <= 1:
            return True
        return breached - passed <= self.precision * passed


@dataclass(frozen=True)
class Probe:
    """One probed point: the knob's value, its result and the SLO verdicts there."""

    value: float
    result: LoadResult
    verdicts: tuple[Verdict, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        """Every SLO held."""
        return all(v.passed for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        """The point as the report holds it."""
        return {
            "value": self.value,
            "label": self.result.label,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "breaches": [v.message() for v in self.verdicts if not v.passed],
        }


@dataclass
class Capacity:
    """The answer of a search, with every probe."""

    search: CapacitySearch
    slos: tuple[SLO, ...]
    status: Status = "found"
    probes: list[Probe] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def metric(self) -> str:
        """The answer's metric name: ``capacity_rate`` or ``capacity_concurrency``."""
        return f"capacity_{self.search.knob}"

    @property
    def value(self) -> float:
        """The highest value at which every SLO held (NaN when none did)."""
        return max((p.value for p in self.probes if p.passed), default=math.nan)

    @property
    def bracket(self) -> tuple[float, float]:
        """The highest pass and the lowest breach above it (NaN where there is none)."""
        above = [p.value for p in self.probes if not p.passed and not p.value <= self.value]
        return self.value, min(above, default=math.nan)

    def best(self) -> Probe | None:
        """The probe at the answer."""
        return next((p for p in self.probes if p.passed and p.value == self.value), None)

    def message(self) -> str:
        """The answer in one sentence."""
        knob, slos = self.search.knob, ", ".join(str(s) for s in self.slos)
        lowest = self.probes[0] if self.probes else None
        last = self.probes[-1] if self.probes else None
        if self.status == "client-bound" and last is not None:
            held = f"capacity is at least {self.value:g}" if self.best() else "nothing is known of capacity"
            return (
                f"inconclusive: the load generator was the limit at {knob}={last.value:g} "
                f"({last.result.client_limit}); {held}; use workers=N or nodes=N"
            )
        if self.status == "unreachable" and lowest is not None:
            breaches = "; ".join(v.message() for v in lowest.verdicts if not v.passed)
            return f"SLO unreachable even at the lowest point {knob}={lowest.value:g}: {breaches}"
        lo, hi = self.bracket
        probes = f"{len(self.probes)} probe{'' if len(self.probes) == 1 else 's'}"
        where = f"{self.metric} = {lo:g} ({probes} in {self.elapsed_s:.1f} s; SLOs: {slos})"
        if self.status == "above-highest":
            return f"{where}: every SLO held up to the highest point {knob}={lo:g}, capacity is at least that"
        if self.status == "budget":
            spent = f"{where}: time budget of {self.search.budget_s:g} s spent"
            if math.isnan(hi):
                return f"{spent} before any probe breached an SLO: capacity is at least {lo:g}"
            return f"{spent}, capacity is within [{lo:g}, {hi:g})"
        return f"{where}: capacity within [{lo:g}, {hi:g}), precision {self.search.precision:.0%}"

    def to_json(self) -> dict[str, Any]:
        """The answer and its curve, for the report."""
        lo, hi = self.bracket
        return {
            "knob": self.search.knob,
            "metric": self.metric,
            "value": None if math.isnan(lo) else lo,
            "bracket": [None if math.isnan(v) else v for v in (lo, hi)],
            "status": self.status,
            "message": self.message(),
            "precision": self.search.precision,
            "budget_s": self.search.budget_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "slos": [str(s) for s in self.slos],
            "probes": [p.to_json() for p in sorted(self.probes, key=lambda p: p.value)],
        }

    def to_result(self, label: str = "capacity") -> LoadResult:
        """The answer as a result: the figures of the point at capacity, plus ``capacity_<knob>``."""
        best = self.best()
        scalars = {**(best.result.scalars if best else {}), self.metric: self.value}
        lower, upper = self._bounds()
        return LoadResult(
            label=label,
            mode=best.result.mode if best else (self.probes[0].result.mode if self.probes else ""),
            config={**(best.result.config if best else {}), "capacity": self.to_json()},
            distributions=dict(best.result.distributions) if best else {},
            scalars=scalars,
            role="capacity",
            intervals=dict(best.result.intervals) if best else {},
            interval_method=best.result.interval_method if best else "",
            notes=[self.message()],
            client_limit=self.probes[-1].result.client_limit if self.status == "client-bound" else "",
            lower_bounds=lower,
            upper_bounds=upper,
        )

    def _bounds(self) -> tuple[dict[str, str], dict[str, float]]:
        """The answer as a lower bound, and why; with the breached point that caps it, if one does.

        The load generator was the limit above it, no probe breached above it, or the time budget
        ended the search before its bracket was as narrow as its precision: only then is capacity
        known to be below a point (a client-bound search's top probe did not breach).
        """
        lo, hi = self.bracket
        if math.isnan(lo):
            return {}, {}
        capped: dict[str, float] = {}
        if self.status == "client-bound":
            why = f"the load generator was the limit at {self.search.knob}={self.probes[-1].value:g}"
        elif self.status == "budget" and not math.isnan(hi):
            why, capped = f"the time budget ran out with capacity within [{lo:g}, {hi:g})", {self.metric: hi}
        elif self.status in ("budget", "above-highest"):
            held = "the time budget ran out" if self.status == "budget" else "every SLO held up to the highest point"
            why = f"{held} before any breach"
        else:
            return {}, {}
        return {self.metric: f"the search shows only that capacity is at least {lo:g} ({why})"}, capped


def search_capacity(
    probe: Callable[[float], LoadResult],
    slos: Sequence[SLO],
    search: CapacitySearch,
    clock: Callable[[], float] = time.monotonic,
) -> Capacity:
    """Run the search: ``probe(value)`` runs the load at one value of the knob."""
    answer = Capacity(search, tuple(slos))
    start = clock()

    def run(value: float) -> Probe:
        began = clock()
        result = probe(value)
        verdicts = check(slos, result.metrics(), client_limit=result.client_limit)
        point = Probe(value, result, tuple(verdicts), clock() - began)
        answer.probes.append(point)
        answer.elapsed_s = clock() - start
        return point

    def stop(point: Probe) -> bool:
        """True when the search must stop at ``point`` (client-bound, or a breach at the lowest point)."""
        if point.result.client_limit:
            answer.status = "client-bound"
        elif not point.passed and len(answer.probes) == 1:
            answer.status = "unreachable"
        return answer.status != "found"

    def affordable() -> bool:
        longest = max(p.seconds for p in answer.probes)
        return clock() - start + longest <= search.budget_s

    passed = search.low
    if stop(run(passed)):
        return answer
    breached: float | None = None  # None while bracketing (growing), then bisecting
    while breached is None or not search.narrow(passed, breached):
        if breached is None and search.high is not None and passed >= search.high:
            answer.status = "above-highest"
            return answer
        if not affordable():
            answer.status = "budget"
            return answer
        value = search.grown(passed) if breached is None else search.middle(passed, breached)
        point = run(value)
        if stop(point):
            return answer
        if point.passed:
            passed = value
        else:
            breached = value
    return answer
