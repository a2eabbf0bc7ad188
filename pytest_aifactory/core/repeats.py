"""``repeats=N``: N runs of one load folded into one result with confidence intervals.

Every figure of the combined result is the mean over the repeats, except the counts
(``requests``, ``completed``, ``errors``, and each distribution's sample count), which are
totals. Every metric's interval is a Student t interval over the N per-repeat values
(``core.confidence``). The repeats' ``schedule_seed`` (from their configurations) become
``seeds``; the records of all repeats are kept (repeat ``i`` numbers its requests from
``i * 10**9``, so they stay distinct).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from pytest_aifactory.core.confidence import repeat_method, t_interval
from pytest_aifactory.core.metrics import Distribution, LoadResult

__all__ = ["INDEX_STRIDE", "combine"]

INDEX_STRIDE = 10**9
_TOTALS = ("requests", "completed", "errors")


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _distribution(parts: Sequence[Distribution]) -> Distribution:
    stats = [f.name for f in dataclasses.fields(Distribution) if f.name != "count"]
    return Distribution(sum(p.count for p in parts), *(_mean([p.stat(name) for p in parts]) for name in stats))


def combine(results: Sequence[LoadResult]) -> LoadResult:
    """One result from the repeats of a load (the first one's label, mode and configuration)."""
    if len(results) < 2:
        raise ValueError(f"combining repeats needs at least 2 results, got {len(results)}")
    first = results[0]
    names = {name for r in results for name in r.distributions}
    distributions = {
        name: _distribution([r.distributions[name] for r in results if name in r.distributions])
        for name in sorted(names)
    }
    keys = {key for r in results for key in r.scalars}
    scalars = {
        key: (sum if key in _TOTALS else _mean)([r.scalars.get(key, math.nan) for r in results]) for key in sorted(keys)
    }
    per_repeat = [r.metrics() for r in results]
    intervals = {}
    for metric in per_repeat[0]:
        interval = t_interval([m.get(metric, math.nan) for m in per_repeat])
        if interval is not None and metric not in _TOTALS:
            intervals[metric] = interval
    records = [
        dataclasses.replace(record, index=record.index + i * INDEX_STRIDE)
        for i, r in enumerate(results)
        for record in r.records
    ]
    return LoadResult(
        label=first.label,
        mode=first.mode,
        config={**first.config, "repeats": len(results), "seeds": [r.config.get("schedule_seed") for r in results]},
        distributions=distributions,
        scalars=scalars,
        error_samples=sorted({s for r in results for s in r.error_samples}),
        records=records,
        intervals=intervals,
        interval_method=repeat_method(len(results)),
        notes=sorted({n for r in results for n in r.notes}),
    )
