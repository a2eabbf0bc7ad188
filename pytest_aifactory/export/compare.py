"""Compare two run reports point by point: relative changes and regressions beyond a margin."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_aifactory.core.metrics import METRICS

__all__ = ["KEY_METRICS", "Change", "compare_reports", "format_comparison"]

KEY_METRICS = (
    "request_s",
    "output_tok_s",
    "goodput_fraction",
    "error_rate",
    "p50_ttft_ms",
    "p99_ttft_ms",
    "p99_tpot_ms",
    "p50_latency_ms",
    "p99_latency_ms",
    "mib_s",
    "bw_mib_s",
    "iops",
    "recall_at_10",
    "create_s",
)


@dataclass(frozen=True)
class Change:
    """One metric of one test point in both runs."""

    test: str
    point: str
    metric: str
    old: float
    new: float
    regression: bool

    @property
    def relative(self) -> float:
        """(new - old) / old, NaN when old is 0."""
        return (self.new - self.old) / self.old if self.old else math.nan


def _points(report: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    return {
        (test["nodeid"], result["label"]): result["metrics"] for test in report["tests"] for result in test["results"]
    }


def compare_reports(old: Mapping[str, Any], new: Mapping[str, Any], margin: float) -> list[Change]:
    """Every key metric of every point in both reports; worse by more than ``margin`` is a regression."""
    before, after = _points(old), _points(new)
    changes = []
    for key in sorted(before.keys() & after.keys()):
        for metric in KEY_METRICS:
            a, b = before[key].get(metric), after[key].get(metric)
            if a is None or b is None:
                continue
            if METRICS[metric].better == "higher":
                worse = b < a * (1 - margin)
            else:
                worse = b > a * (1 + margin) if a > 0 else b > a
            changes.append(Change(key[0], key[1], metric, float(a), float(b), worse))
    return changes


def format_comparison(changes: list[Change], old_id: str, new_id: str) -> str:
    """A side-by-side table."""
    header = ["test", "point", "metric", old_id, new_id, "change", ""]
    rows = [
        [
            c.test.split("::", 1)[-1],
            c.point,
            c.metric,
            f"{c.old:.4g}",
            f"{c.new:.4g}",
            "-" if math.isnan(c.relative) else f"{c.relative:+.1%}",
            "REGRESSION" if c.regression else "",
        ]
        for c in changes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])
