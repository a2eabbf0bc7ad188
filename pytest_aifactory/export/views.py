"""A run report read the way its HTML report shows it: tests, their points, knee and capacity.

Shared by ``figures`` (what is drawn) and ``findings`` (what is written about it), so that a
sentence and the plot it names rest on the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_aifactory.core.metric_table import Family
from pytest_aifactory.export.compare import families_of

__all__ = ["ReportTest", "figure_id", "knee_index", "report_tests", "value", "verdict_outcome"]

Result = Mapping[str, Any]


def value(result: Result, metric: str) -> float | None:
    """A result's metric, None when not measured (missing, null or NaN)."""
    number = result.get("metrics", {}).get(metric)
    if number is None or (isinstance(number, float) and math.isnan(number)):
        return None
    return float(number)


def verdict_outcome(verdict: Mapping[str, Any]) -> str:
    """``held``, ``breached`` or ``inconclusive`` (not judged).

    Inconclusive: the load generator was the limit, or the value was only a lower bound that
    cannot decide it; reports older than the flag have none.
    """
    return "inconclusive" if verdict.get("inconclusive") else "held" if verdict["passed"] else "breached"


def figure_id(kind: str, index: int | str) -> str:
    """The HTML id of a figure (``t0-sweep``, ``cmp-1-p99_latency_ms``...)."""
    return f"fig-{index}-{kind}"


@dataclass(frozen=True)
class ReportTest:
    """One test of a report: its points in knob order, their SLO verdicts and its families.

    ``answers`` are the results of a capacity search (``"role": "capacity"``: the answer,
    carrying ``capacity_<knob>``), kept out of the points, which include the search's probes.
    """

    index: int
    nodeid: str
    outcome: str
    results: tuple[Result, ...]
    verdicts: tuple[Mapping[str, Any], ...]
    families: tuple[Family, ...]
    answers: tuple[Result, ...] = ()

    @property
    def name(self) -> str:
        """The test's name without its file (``test_llm[fast]``)."""
        return self.nodeid.split("::", 1)[-1]

    @property
    def base(self) -> str:
        """The test function without its parameters (``test_llm``)."""
        return self.name.split("[", 1)[0]

    @property
    def variant(self) -> str:
        """Its parameters (``fast``), or its name when it has none."""
        return self.name.split("[", 1)[1].rstrip("]") if "[" in self.name else self.name

    @property
    def inference(self) -> bool:
        """A test of an inference service (TTFT, tokens)."""
        return "inference" in self.families

    def verdicts_of(self, result: Result) -> list[Mapping[str, Any]]:
        """The SLO verdicts of one point."""
        single = len(self.results) == 1
        return [v for v in self.verdicts if v["label"] == result["label"] or (single and not v["label"])]

    def slo_outcome(self, result: Result) -> str | None:
        """The point's SLO outcome (None: no SLO).

        ``breached`` when one was breached, else ``inconclusive`` when one could not be judged, else ``held``.
        """
        outcomes = {verdict_outcome(v) for v in self.verdicts_of(result)}
        return next((o for o in ("breached", "inconclusive", "held") if o in outcomes), None)

    def capacity(self) -> Result | None:
        """The point of highest throughput at which every SLO held (None without SLOs or such a point)."""
        passing = [r for r in self.results if self.slo_outcome(r) == "held" and value(r, "request_s") is not None]
        return max(passing, key=lambda r: value(r, "request_s") or 0.0, default=None)


def _knob(result: Result) -> float:
    config = result.get("config", {})
    for key in ("rate", "concurrency"):
        if isinstance(config.get(key), (int, float)):
            return float(config[key])
    return math.nan


def report_tests(report: Mapping[str, Any]) -> list[ReportTest]:
    """The tests that produced results, their points ordered by offered rate (or concurrency)."""
    views = []
    for index, test in enumerate(t for t in report["tests"] if t["results"]):
        points = [r for r in test["results"] if r.get("role") != "capacity"]
        ordered = sorted(points, key=lambda r: (math.isnan(_knob(r)), _knob(r)))
        answers = tuple(r for r in test["results"] if r.get("role") == "capacity")
        views.append(
            ReportTest(
                index, test["nodeid"], test["outcome"], tuple(ordered), tuple(test["slo"]), families_of(test), answers
            )
        )
    return views


def knee_index(xs: Sequence[float | None], ys: Sequence[float | None]) -> int | None:
    """Kneedle (Satopää et al., 2011) on a rising latency curve: the point farthest below the chord.

    Both axes are scaled to [0, 1]; the knee is the point maximising ``x - y``. None with fewer
    than three measured points, or when latency rises by less than half over the sweep (no knee).
    """
    points = [(i, x, y) for i, (x, y) in enumerate(zip(xs, ys, strict=True)) if x is not None and y is not None]
    if len(points) < 3:
        return None
    low_x, high_x = min(p[1] for p in points), max(p[1] for p in points)
    low_y, high_y = min(p[2] for p in points), max(p[2] for p in points)
    if high_x <= low_x or high_y < 1.5 * low_y:
        return None
    scores = [((x - low_x) / (high_x - low_x) - (y - low_y) / (high_y - low_y), i) for i, x, y in points]
    best, index = max(scores)
    return index if best > 0 else None
