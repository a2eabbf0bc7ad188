"""What a report's plots need of one load, bounded whatever its length: a timeline and latency quantiles.

Computed from the records in the process that ran the load and carried by the JSON report
instead of the records (60,000 records of a 10-minute 100 req/s run become a few tens of KB):

- ``timeline``: per window (1 s, widened so that there are at most ``MAX_WINDOWS``), the
  offered rate (scheduled sends), the achieved rate (real sends), completions and errors per
  second, requests in flight at the window's end, and the p99 end-to-end latency (and p99
  TTFT for streamed outputs) of the requests that ended in it.
- ``cdf``: each latency distribution's values at the fixed quantile ``LEVELS`` (exact
  quantiles of the samples, as the report's p50/p99 are), enough to draw its CDF.

Values keep 4 significant digits. A window without completions has no p99 (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.core.metrics import _e2e_ms, _tpot_ms, _ttft_ms, itl_per_token
from pytest_aifactory.core.records import RequestRecord

__all__ = ["LEVELS", "MAX_WINDOWS", "compact_series"]

MAX_WINDOWS = 600
LEVELS: tuple[float, ...] = (*(i / 100 for i in range(100)), 0.995, 0.999, 0.9999, 1.0)


def _short(value: float) -> float | None:
    return None if math.isnan(value) else float(f"{value:.4g}")


def _column(values: Sequence[float] | npt.NDArray[Any]) -> list[float | None]:
    return [_short(float(v)) for v in values]


def _quantiles(values: Sequence[float]) -> list[float | None] | None:
    if not values:
        return None
    return _column(np.quantile(np.asarray(values, dtype=float), LEVELS))


def _window_p99(ends: npt.NDArray[Any], latencies: npt.NDArray[Any], edges: npt.NDArray[Any]) -> list[float | None]:
    which = np.searchsorted(edges, ends, side="right") - 1
    column: list[float | None] = []
    for window in range(len(edges) - 1):
        inside = latencies[which == window]
        column.append(_short(float(np.percentile(inside, 99))) if inside.size else None)
    return column


def _timeline(measured: Sequence[RequestRecord]) -> tuple[float, dict[str, list[float | None]]]:
    start = min(r.scheduled for r in measured)
    stop = max(max(r.end or r.sent or r.scheduled for r in measured), start + 1e-9)
    width = float(max(1, math.ceil((stop - start) / MAX_WINDOWS)))
    count = max(1, math.ceil((stop - start) / width))
    edges = start + width * np.arange(count + 1)
    edges[-1] = max(edges[-1], stop)

    def per_second(times: Sequence[float]) -> list[float | None]:
        return _column(np.histogram(np.asarray(times, dtype=float), edges)[0] / width)

    ok = [r for r in measured if r.ok]
    sent = np.asarray(sorted(r.sent for r in measured if r.sent is not None), dtype=float)
    ended = np.asarray(sorted(r.end if r.end is not None else math.inf for r in measured if r.sent is not None))
    in_flight = np.searchsorted(sent, edges[1:], side="right") - np.searchsorted(ended, edges[1:], side="right")
    ok_ends = np.asarray([r.end for r in ok], dtype=float)
    timeline = {
        "t": _column(edges[:-1] - start),
        "offered": per_second([r.scheduled for r in measured]),
        "achieved": per_second(sent.tolist()),
        "completed": per_second(ok_ends.tolist()),
        "errors": per_second([r.end if r.end is not None else r.scheduled for r in measured if not r.ok]),
        "in_flight": _column(in_flight),
        "p99_ms": _window_p99(ok_ends, np.asarray([_e2e_ms(r) for r in ok], dtype=float), edges),
    }
    with_first = [r for r in ok if r.first_token is not None]
    if with_first:
        first_ends = np.asarray([r.end for r in with_first], dtype=float)
        timeline["p99_ttft_ms"] = _window_p99(first_ends, np.asarray([_ttft_ms(r) for r in with_first]), edges)
    return width, timeline


def compact_series(records: Sequence[RequestRecord], started_at: float | None = None) -> dict[str, Any] | None:
    """The timeline and latency quantiles of the measured records (None without any).

    ``started_at`` is the wall-clock time (Unix seconds) of the load's time zero, so that the
    timeline lines up with the services' resource samples.
    """
    measured = [r for r in records if not r.warmup]
    if not measured:
        return None
    width, timeline = _timeline(measured)
    ok = [r for r in measured if r.ok]
    samples = {
        "ttft": [v for r in ok if (v := _ttft_ms(r)) is not None],
        "itl": [v for r in ok for v in itl_per_token(r)],
        "tpot": [v for r in ok if (v := _tpot_ms(r)) is not None],
        "latency": [v for r in ok if (v := _e2e_ms(r)) is not None],
        "lag": [(r.sent - r.scheduled) * 1000 for r in measured if r.sent is not None],
    }
    cdf: dict[str, Any] = {"levels": list(LEVELS)}
    cdf.update({name: q for name, values in samples.items() if (q := _quantiles(values)) is not None})
    return {
        "window_s": width,
        "started_at": started_at + min(r.scheduled for r in measured) if started_at is not None else None,
        "timeline": timeline,
        "cdf": cdf,
    }
