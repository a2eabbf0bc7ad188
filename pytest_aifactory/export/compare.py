"""Compare two run reports point by point: relative changes, regressions and improvements beyond margin and noise.

Each test is compared on the key metrics of its family (``Metric.compare`` in the metric
table): the family markers it carries in the report, else the family its metrics reveal.

A change is a regression (or an improvement) when it is worse (better) than the margin AND
beyond the run-to-run noise: the interval of the relative change, made from both results'
95 % confidence intervals (``core.confidence.change_interval``), lies wholly on that side of
zero. A value known only as a lower bound (a capacity search that stopped before any probe
breached, that the load generator ended, or whose time budget ran out after a breach:
``lower_bounds`` in the result) decides only what
no higher true value could undo: for a metric where higher is better, a new lower bound can
show an improvement but not a regression, and an old one a regression but not an improvement,
unless the value is also known to be below a point (``upper_bounds``: a search whose time
budget ran out after a breach) that settles it.
A metric without intervals in either run (a single run's throughput, or reports made before
intervals existed) is judged by the margin alone, and the message says so; but a latency
statistic of runs that do carry intervals and has none (too few samples to bound a p99) is not
judged at all: its change is noise as far as anyone can tell. Nor is a duration whose values
in both runs lie under its unit's noise floor (``NOISE_FLOORS``: 1 ms for a metric in seconds,
such as a flat index's build time in microseconds). ``differences`` names what makes two runs not comparable
(service version or image, profile, partition, node type, model, dataset).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_aifactory.core.confidence import change_interval
from pytest_aifactory.core.metric_table import FAMILIES, METRICS, TABLE, Family, Metric

__all__ = [
    "Change",
    "compare_reports",
    "differences",
    "families_of",
    "format_comparison",
    "key_metrics",
    "unmatched",
]

Points = dict[tuple[str, str], Mapping[str, Any]]


@dataclass(frozen=True)
class Change:
    """One metric of one test point in both runs.

    ``regression`` and ``improvement`` mean worse or better (in the metric's direction) by
    more than the margin and beyond the noise; ``interval`` is the relative change's
    interval (None: no intervals, judged by the margin alone).
    """

    test: str
    point: str
    metric: str
    old: float
    new: float
    regression: bool
    improvement: bool = False
    interval: tuple[float, float] | None = None
    margin: float = 0.0
    unbounded: bool = False  # a latency statistic with too few samples for an interval: not judged
    below_floor: str = ""  # both values under their unit's noise floor (``1 ms``): not judged
    lower_bound: str = ""  # which value is only a lower bound (``new``, ``old``, ``both``)
    undecided: bool = False  # a change that true values within the bounds could undo: not judged
    least: tuple[float, float] | None = None  # on bounds: the old and new true values with the smallest change

    @property
    def relative(self) -> float:
        """(new - old) / old, NaN when old is 0."""
        return (self.new - self.old) / self.old if self.old else math.nan

    def message(self) -> str:
        """``p99_ttft_ms 212 -> 251 (+18 %, interval [+11, +26] %, beyond 5 % margin)``."""
        relative = "-" if math.isnan(self.relative) else f"{self.relative * 100:+.0f} %"
        if self.below_floor:
            noise = f"below the {self.below_floor} noise floor: not judged"
        elif self.unbounded:
            noise = "too few samples for an interval: not judged"
        elif self.interval is None:
            noise = "no interval: margin only"
        else:
            noise = f"interval [{self.interval[0] * 100:+.0f}, {self.interval[1] * 100:+.0f}] %"
        where = f"[{self.point}] " if self.point else ""
        bound = f", {_BOUNDS[self.lower_bound]}" if self.lower_bound else ""
        if self.undecided:
            verdict = "not judged"
        else:
            verdict = f"{'beyond' if self.regression or self.improvement else 'within'} {self.margin * 100:g} % margin"
        return f"{where}{self.metric} {self.old:.4g} -> {self.new:.4g} ({relative}, {noise}{bound}, {verdict})"


_BOUNDS = {
    "new": "the new value is only a lower bound",
    "old": "the old value is only a lower bound",
    "both": "both values are only lower bounds",
}

# Inference metrics every load computes (without a per-request SLO every request is good): no evidence.
_EVERY_LOAD = {"goodput_s", "goodput_fraction"}


def families_of(test: Mapping[str, Any]) -> tuple[Family, ...]:
    """The families of a report's test: its family markers, else those its figures show.

    Data families show by a metric of their own; inference by a first token or output
    tokens. A test showing none is compared on the metrics common to all families.
    """
    marked = tuple(family for family in FAMILIES if family in test.get("markers", ()))
    if marked:
        return marked
    present = {name for r in test["results"] for name, value in r["metrics"].items() if value} - _EVERY_LOAD
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
    """Every result of the report by (test, point)."""
    return {(test["nodeid"], result["label"]): result for test in report["tests"] for result in test["results"]}


def _direction(metric: Metric, a: float, b: float, margin: float) -> int:
    """-1 when ``b`` is worse than ``a`` by more than ``margin`` (any worsening of 0), +1 when better, else 0."""
    delta = (b - a) if metric.better == "higher" else (a - b)
    limit = margin * abs(a)
    return -1 if delta < -limit else 1 if delta > limit else 0


def _noise(metric: Metric, interval: tuple[float, float] | None) -> int:
    """-1 when the change's interval is wholly worse than no change, +1 wholly better, 0 when it spans it."""
    if interval is None:
        return 2  # no interval: the margin alone decides
    worse, better = (
        (interval[1] < 0, interval[0] > 0) if metric.better == "higher" else (interval[0] > 0, interval[1] < 0)
    )
    return -1 if worse else 1 if better else 0


def _lower_bound(a: Mapping[str, Any], b: Mapping[str, Any], name: str) -> str:
    """Which of the old and new values of ``name`` is only a lower bound: ``old``, ``new``, ``both`` or ``""``."""
    old, new = (name in (point.get("lower_bounds") or {}) for point in (a, b))
    return "both" if old and new else "old" if old else "new" if new else ""


def _span(point: Mapping[str, Any], name: str, value: float) -> tuple[float, float]:
    """The values ``name`` may truly have at ``point``: ``value``, or from it up to its upper bound, or any higher."""
    if name not in (point.get("lower_bounds") or {}):
        return value, value
    if point.get("client_limit"):  # the load generator, not a breach, ended it: no upper end is known
        return value, math.inf
    return value, float((point.get("upper_bounds") or {}).get(name, math.inf))


def _least(metric: Metric, old: tuple[float, float], new: tuple[float, float], direction: int) -> tuple[float, float]:
    """The old and new ends between which the change ``direction`` (-1 worse, +1 better) is smallest.

    A change that makes the value lower is smallest between the old span's low end and the new
    span's high end; one that makes it higher, between the old's high end and the new's low end.
    """
    lower = (direction < 0) == (metric.better == "higher")
    return (old[0], new[1]) if lower else (old[1], new[0])


def _interval(a: Mapping[str, Any], b: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    old, new = (a.get("intervals") or {}).get(name), (b.get("intervals") or {}).get(name)
    if old is None or new is None:
        return None
    return change_interval((float(old[0]), float(old[1])), (float(new[0]), float(new[1])))


def compare_reports(old: Mapping[str, Any], new: Mapping[str, Any], margin: float) -> list[Change]:
    """Every key metric of every point in both reports, each test on its family's metrics."""
    before, after = _points(old), _points(new)
    old_tests, new_tests = _tests(old), _tests(new)
    changes = []
    for key in sorted(before.keys() & after.keys()):
        families = {*families_of(old_tests[key[0]]), *families_of(new_tests[key[0]])}
        for metric in key_metrics(families):
            a, b = before[key]["metrics"].get(metric.name), after[key]["metrics"].get(metric.name)
            if a is None or b is None:
                continue
            interval = _interval(before[key], after[key], metric.name)
            with_intervals = all(point.get("interval_method") for point in (before[key], after[key]))
            unbounded = interval is None and with_intervals and bool(metric.distribution)
            floor = metric.noise_floor
            below_floor = floor[1] if floor and max(abs(float(a)), abs(float(b))) < floor[0] else ""
            judged = not (unbounded or below_floor)
            direction, noise = _direction(metric, float(a), float(b), margin), _noise(metric, interval)
            bound = _lower_bound(before[key], after[key], metric.name)
            spans = _span(before[key], metric.name, float(a)), _span(after[key], metric.name, float(b))
            least = _least(metric, *spans, direction) if direction and bound else None
            undecided = least is not None and _direction(metric, *least, margin) != direction
            regression = direction < 0 and noise in (-1, 2) and judged and not undecided
            improvement = direction > 0 and noise in (1, 2) and judged and not undecided
            changes.append(
                Change(
                    key[0],
                    key[1],
                    metric.name,
                    float(a),
                    float(b),
                    regression,
                    improvement,
                    interval,
                    margin,
                    unbounded,
                    below_floor,
                    bound,
                    undecided,
                    least,
                )
            )
    return changes


def unmatched(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The test points only in ``old`` and those only in ``new`` (``test [point]``)."""
    before, after = _points(old), _points(new)

    def names(keys: Iterable[tuple[str, str]]) -> list[str]:
        return [f"{test} [{point}]" if point else test for test, point in sorted(keys)]

    return names(before.keys() - after.keys()), names(after.keys() - before.keys())


_RUN_FIELDS = {
    "profile": ("profile", "name"),
    "partition": ("profile", "partition"),
    "node type (CPU)": ("cpu_model",),
    "node type (GPUs)": ("gpus",),
}
_POINT_FIELDS = {
    "service": "service",
    "service_version": "service version",
    "service_image": "service image",
    "model": "model",
    "dataset": "dataset",
    "prompts": "prompts",
}


def _field(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, Mapping) else None  # type: ignore[assignment]
    return data


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes the runs not comparable, one line per differing field (known in both runs).

    The run's profile, partition, node type (CPU model, GPUs) and service images, and at the
    points both runs have: the service, its version and image, the model, dataset and prompts.
    """
    found: dict[str, str] = {}
    old_run, new_run = old.get("provenance") or {}, new.get("provenance") or {}
    for name, path in _RUN_FIELDS.items():
        a, b = _field(old_run, path), _field(new_run, path)
        if a is not None and b is not None and a != b:
            found[name] = f"{name} differs: {a!r} in {old['run_id']}, {b!r} in {new['run_id']}"
    old_images, new_images = _field(old_run, ("profile", "images")) or {}, _field(new_run, ("profile", "images")) or {}
    for service in sorted(old_images.keys() & new_images.keys()):
        if old_images[service] != new_images[service]:
            found[f"image {service}"] = (
                f"image of {service} differs: {old_images[service]!r} in {old['run_id']}, "
                f"{new_images[service]!r} in {new['run_id']}"
            )
    before, after = _points(old), _points(new)
    for key in sorted(before.keys() & after.keys()):
        a_config, b_config = before[key].get("config") or {}, after[key].get("config") or {}
        for field, name in _POINT_FIELDS.items():
            a, b = a_config.get(field), b_config.get(field)
            if a is not None and b is not None and a != b and field not in found:
                where = f"{key[0].split('::', 1)[-1]} [{key[1]}]" if key[1] else key[0].split("::", 1)[-1]
                found[field] = f"{name} differs: {a!r} in {old['run_id']}, {b!r} in {new['run_id']} (at {where})"
    return list(found.values())


def _verdict(change: Change) -> str:
    if change.below_floor:
        return f"below the {change.below_floor} noise floor"
    if change.undecided:
        return "lower bound: not judged"
    verdict = "REGRESSION" if change.regression else "improved" if change.improvement else ""
    return f"{verdict} (lower bound)" if verdict and change.lower_bound else verdict


def _table(changes: list[Change], old_id: str, new_id: str) -> list[str]:
    header = ["test", "point", "metric", "better", old_id, new_id, "interval", "change", ""]
    rows = [
        [
            c.test.split("::", 1)[-1],
            c.point,
            c.metric,
            METRICS[c.metric].better,
            f"{c.old:.4g}",
            f"{c.new:.4g}",
            "-" if c.interval is None else f"[{c.interval[0]:+.0%},{c.interval[1]:+.0%}]",
            "-" if math.isnan(c.relative) else f"{c.relative:+.1%}",
            _verdict(c),
        ]
        for c in changes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def format_comparison(
    changes: list[Change], old_id: str, new_id: str, only_old: Iterable[str] = (), only_new: Iterable[str] = ()
) -> str:
    """A side-by-side table (metric, which way is better, both values, the change and its interval, verdict).

    Then the points one run lacks.
    """
    lines = _table(changes, old_id, new_id) if changes else ["no test point appears in both reports"]
    for run_id, points in ((old_id, list(only_old)), (new_id, list(only_new))):
        if points:
            lines += ["", f"only in {run_id}:", *(f"  {point}" for point in points)]
    return "\n".join(lines)
