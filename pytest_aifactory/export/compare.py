"""Compare two run reports point by point: relative changes, regressions and improvements beyond a margin.

Each test is compared on the key metrics of its family (``Metric.compare`` in the metric
table): the family markers it carries in the report, else the family its metrics reveal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_aifactory.core.metric_table import FAMILIES, METRICS, TABLE, Family, Metric

__all__ = ["Change", "compare_reports", "families_of", "format_comparison", "key_metrics", "unmatched"]

Points = dict[tuple[str, str], Mapping[str, Any]]


@dataclass(frozen=True)
class Change:
    """One metric of one test point in both runs.

    ``regression`` and ``improvement`` mean worse or better (in the metric's direction) by
    more than the margin.
    """

    test: str
    point: str
    metric: str
    old: float
    new: float
    regression: bool
    improvement: bool = False

    @property
    def relative(self) -> float:
        """(new - old) / old, NaN when old is 0."""
        return (self.new - self.old) / self.old if self.old else math.nan


def families_of(test: Mapping[str, Any]) -> tuple[Family, ...]:
    """The families of a report's test: its family markers, else those its figures show.

    Data families show by a metric of their own; inference by a first token or output
    tokens. A test showing none is compared on the metrics common to all families.
    """
    marked = tuple(family for family in FAMILIES if family in test.get("markers", ()))
    if marked:
        return marked
    present = {name for r in test["results"] for name, value in r["metrics"].items() if value}
    own = {METRICS[name].families for name in present if name in METRICS}
    data = tuple(family for family in FAMILIES if family != "inference" and (family,) in own)
    return data or (("inference",) if ("inference",) in own else ())


def key_metrics(families: Iterable[Family]) -> list[Metric]:
    """The compared metrics of ``families`` (those common to all families when none is given)."""
    wanted = set(families)
    return [m for m in TABLE if m.compare and (bool(wanted & set(m.families)) if wanted else m.families == FAMILIES)]


def _tests(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {test["nodeid"]: test for test in report["tests"]}


def _points(report: Mapping[str, Any]) -> Points:
    return {
        (test["nodeid"], result["label"]): result["metrics"] for test in report["tests"] for result in test["results"]
    }


def _direction(metric: Metric, a: float, b: float, margin: float) -> int:
    """-1 when ``b`` is worse than ``a`` by more than ``margin`` (any worsening of 0), +1 when better, else 0."""
    delta = (b - a) if metric.better == "higher" else (a - b)
    limit = margin * abs(a)
    return -1 if delta < -limit else 1 if delta > limit else 0


def compare_reports(old: Mapping[str, Any], new: Mapping[str, Any], margin: float) -> list[Change]:
    """Every key metric of every point in both reports, each test on its family's metrics."""
    before, after = _points(old), _points(new)
    old_tests, new_tests = _tests(old), _tests(new)
    changes = []
    for key in sorted(before.keys() & after.keys()):
        families = {*families_of(old_tests[key[0]]), *families_of(new_tests[key[0]])}
        for metric in key_metrics(families):
            a, b = before[key].get(metric.name), after[key].get(metric.name)
            if a is None or b is None:
                continue
            direction = _direction(metric, float(a), float(b), margin)
            changes.append(Change(key[0], key[1], metric.name, float(a), float(b), direction < 0, direction > 0))
    return changes


def unmatched(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The test points only in ``old`` and those only in ``new`` (``test [point]``)."""
    before, after = _points(old), _points(new)

    def names(keys: Iterable[tuple[str, str]]) -> list[str]:
        return [f"{test} [{point}]" if point else test for test, point in sorted(keys)]

    return names(before.keys() - after.keys()), names(after.keys() - before.keys())


def _table(changes: list[Change], old_id: str, new_id: str) -> list[str]:
    header = ["test", "point", "metric", "better", old_id, new_id, "change", ""]
    rows = [
        [
            c.test.split("::", 1)[-1],
            c.point,
            c.metric,
            METRICS[c.metric].better,
            f"{c.old:.4g}",
            f"{c.new:.4g}",
            "-" if math.isnan(c.relative) else f"{c.relative:+.1%}",
            "REGRESSION" if c.regression else "improved" if c.improvement else "",
        ]
        for c in changes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def format_comparison(
    changes: list[Change], old_id: str, new_id: str, only_old: Iterable[str] = (), only_new: Iterable[str] = ()
) -> str:
    """A side-by-side table (metric, which way is better, both values, verdict), then the points one run lacks."""
    lines = _table(changes, old_id, new_id) if changes else ["no test point appears in both reports"]
    for run_id, points in ((old_id, list(only_old)), (new_id, list(only_new))):
        if points:
            lines += ["", f"only in {run_id}:", *(f"  {point}" for point in points)]
    return "\n".join(lines)
