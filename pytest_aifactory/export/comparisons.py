"""Side-by-side groups for the HTML report: several runs, or several services of one family in a run.

Several runs: each later run against the first, on every test point they share. In one run:
the variants of one parametrised test (``test_search[milvus]``, ``test_search[chroma]``) on
the points they share, each against the first. The metrics are the family's key metrics
(``compare.key_metrics``); ``differences`` says what is not the same (provenance, load
configuration), so a reader knows whether the numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_aifactory.export.compare import Change, compare_reports
from pytest_aifactory.export.views import ReportTest
from pytest_aifactory.workloads.energy import ENERGY_BOOKKEEPING

__all__ = ["Side", "SideBySide", "across_runs", "within_run"]

_PROVENANCE = ("cpu_model", "cpu_count", "gpus", "python")
_PROFILE = ("name", "executor", "partition", "images")
# where and when, not what: addresses, the monotonic clock's zero (a point in time of the host), and
# where the energy came from (its window, job ids in its reasons)
_UNCOMPARED_CONFIG = {
    "seed",
    "base_url",
    "address",
    "url",
    "dsn",
    "endpoint",
    "clock_zero_monotonic_s",
    *ENERGY_BOOKKEEPING,
}


@dataclass(frozen=True)
class Side:
    """One run, or one variant of a test, as a report (``tests`` with results)."""

    name: str
    report: Mapping[str, Any]
    capacity: dict[str, float] = field(default_factory=dict)  # test -> best req/s meeting the SLOs


@dataclass(frozen=True)
class SideBySide:
    """Sides compared with the first: the changes of each, and what differs between them."""

    key: str
    title: str
    sides: tuple[Side, ...]
    changes: dict[str, list[Change]]
    differences: list[str]

    def values(self, metric: str) -> dict[str, dict[str, float | None]]:
        """Per side, the metric at every point (``test [point]``)."""
        table: dict[str, dict[str, float | None]] = {}
        for side in self.sides:
            row = table.setdefault(side.name, {})
            for test in side.report["tests"]:
                for result in test["results"]:
                    name = _point(test["nodeid"], result["label"], len(self.sides[0].report["tests"]) > 1)
                    row[name] = result["metrics"].get(metric)
        return table


def _point(nodeid: str, label: str, with_test: bool) -> str:
    test = nodeid.split("::", 1)[-1]
    return f"{test} [{label}]" if with_test and label else (label or test)


def _differing(name: str, values: Sequence[Any]) -> str | None:
    if all(v == values[0] for v in values[1:]):
        return None
    return f"{name}: {' vs '.join(str(v) for v in values)}"


def _config_differences(sides: Sequence[Side]) -> list[str]:
    found = []
    points = [{(t["nodeid"], r["label"]): r["config"] for t in s.report["tests"] for r in t["results"]} for s in sides]
    for key in sorted(set.intersection(*(set(p) for p in points))):
        configs = [p[key] for p in points]
        for name in sorted({k for c in configs for k in c} - _UNCOMPARED_CONFIG):
            text = _differing(f"{key[1] or key[0]}: {name}", [c.get(name) for c in configs])
            if text:
                found.append(text)
    return found


def _provenance_differences(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    found = []
    provenance = [r["provenance"] for r in reports]
    for name in _PROVENANCE:
        found.append(_differing(name, [p.get(name) for p in provenance]))
    for name in _PROFILE:
        found.append(_differing(f"profile {name}", [p["profile"].get(name) for p in provenance]))
    for package in sorted({k for p in provenance for k in p.get("packages", {})}):
        found.append(
            _differing(f"{package} version", [p.get("packages", {}).get(package, "absent") for p in provenance])
        )
    found.append(_differing("nodes", [r.get("nodes") for r in reports]))
    return [text for text in found if text]


def _grouped(sides: Sequence[Side], key: str, title: str, margin: float, differences: list[str]) -> SideBySide:
    first = sides[0]
    changes = {side.name: compare_reports(first.report, side.report, margin) for side in sides[1:]}
    return SideBySide(key, title, tuple(sides), changes, differences + _config_differences(sides))


def across_runs(
    reports: Sequence[Mapping[str, Any]], capacities: Sequence[dict[str, float]], margin: float
) -> SideBySide:
    """Every run against the first."""
    sides = [Side(r["run_id"], r, c) for r, c in zip(reports, capacities, strict=True)]
    title = f"runs {', '.join(s.name for s in sides[1:])} against {sides[0].name}"
    return _grouped(sides, "runs", title, margin, _provenance_differences(reports))


def within_run(tests: Sequence[ReportTest], margin: float) -> list[SideBySide]:
    """The variants of each parametrised test of one family, against the first variant."""
    groups: dict[tuple[str, tuple[str, ...]], list[ReportTest]] = {}
    for test in tests:
        groups.setdefault((test.base, test.families), []).append(test)
    found: list[SideBySide] = []
    for (base, families), members in groups.items():
        if len(members) < 2:
            continue
        sides = []
        for test in members:
            best = test.capacity()
            report = {"tests": [{"nodeid": base, "markers": list(families), "results": list(test.results)}]}
            sides.append(Side(test.variant, report, {base: best["metrics"]["request_s"]} if best else {}))
        title = f"{base}: {', '.join(s.name for s in sides[1:])} against {sides[0].name}"
        found.append(_grouped(sides, f"family-{len(found)}", title, margin, []))
    return found
