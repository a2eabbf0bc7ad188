"""Records to results: pure functions, no I/O.

Definitions (compared with vLLM's and GuideLLM's in the README):

- TTFT: first chunk with content minus the request's *scheduled* time (vLLM: minus the
  actual send, which hides client queueing).
- E2E latency: end of the response minus the scheduled time.
- ITL, per token: a chunk carrying k tokens after a gap g contributes k intervals of g/k
  (vLLM pools one interval per chunk); extra tokens of the first chunk contribute intervals
  of 0. So mean ITL over a request equals its TPOT.
- TPOT: (end - first token) / (output tokens - 1), for outputs of more than one token (as
  vLLM; GuideLLM includes the first token).
- Schedule lag: actual send minus scheduled time, for every request.
- Throughputs: completed requests, output tokens and input + output tokens per second of
  the measured window (first scheduled send to last response end, warm-up excluded).
- Goodput: requests meeting every per-request SLO, per second; ``goodput_fraction`` is
  their share of all measured requests (errors count as not good).
- Client health: the CPU the load generator used (``client_cpu_cores``, all its processes;
  ``loop_cpu_cores``, the busiest event-loop thread), its longest event-loop stall, and
  ``client_bound`` (1 when the load generator, not the service, was the limit: ``CLIENT_BOUND``).

All latencies are in milliseconds. What each metric means, its unit and which way is better
are declared once, in ``metric_table``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_aifactory.core.confidence import Interval, request_intervals, request_method
from pytest_aifactory.core.metric_table import PERCENTILES, STATS
from pytest_aifactory.core.records import ClientHealth, RequestRecord

__all__ = [
    "CLIENT_BOUND",
    "PERCENTILES",
    "ClientBound",
    "Distribution",
    "GoodputSLO",
    "LoadResult",
    "itl_per_token",
    "summarize",
]


@dataclass(frozen=True)
class Distribution:
    """Summary statistics of one latency distribution, in milliseconds."""

    count: int
    mean: float
    stddev: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        """Summarize ``values`` (NaN everywhere when empty)."""
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
        data = np.asarray(values, dtype=float)
        points = np.percentile(data, list(PERCENTILES.values()))
        return cls(
            len(values),
            float(data.mean()),
            float(data.std(ddof=1)) if len(values) > 1 else 0.0,
            float(data.min()),
            float(data.max()),
            *(float(p) for p in points),
        )

    def stat(self, name: str) -> float:
        """One statistic by name (``p99``, ``mean``...)."""
        return float(getattr(self, name))


@dataclass(frozen=True)
class GoodputSLO:
    """Per-request limits a request must all meet to count as good (ms)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def good(self, record: RequestRecord) -> bool:
        """True when ``record`` completed and meets every limit that is set."""
        if not record.ok:
            return False
        checks = (
            (self.ttft_ms, _ttft_ms(record)),
            (self.tpot_ms, _tpot_ms(record)),
            (self.e2e_ms, _e2e_ms(record)),
        )
        return all(limit is None or (value is not None and value <= limit) for limit, value in checks)


@dataclass(frozen=True)
class ClientBound:
    """When the load generator, not the service, was the limit (the result is ``client_bound``).

    Schedule lag p99 above ``lag_p99_ms``, or an event loop that used ``loop_cpu_cores`` of a
    core or more (one thread paces and sends: at a core it can do no more).
    """

    lag_p99_ms: float = 50.0
    loop_cpu_cores: float = 0.9

    def reason(self, scalars: dict[str, float], lag: Distribution) -> str:
        """``lag p99 125 ms, CPU 0.99 core`` when the client was the limit, else empty."""
        cpu = scalars.get("loop_cpu_cores", math.nan)
        if not (lag.p99 > self.lag_p99_ms or cpu >= self.loop_cpu_cores):
            return ""
        cpu_text = "CPU not available" if math.isnan(cpu) else f"CPU {cpu:.2f} core"
        return f"lag p99 {lag.p99:.3g} ms, {cpu_text}"


CLIENT_BOUND = ClientBound()


@dataclass
class LoadResult:
    """What one load run (or one point of a sweep) measured.

    ``role`` is ``point`` for a run, ``probe`` for a point of a capacity search (its SLOs
    are the search's business, not the test's), ``repeat`` for one of ``repeats=N`` runs
    (their combination is the result judged) and ``capacity`` for a search's answer.
    ``intervals`` holds confidence intervals by metric name, made as ``interval_method``
    says; ``notes`` are sentences shown with the result (the capacity answer, a run that
    never got steady).
    """

    label: str
    mode: str
    config: dict[str, Any]
    distributions: dict[str, Distribution]
    scalars: dict[str, float]
    error_samples: list[str] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    client_limit: str = ""  # why the load generator was the limit (empty: it was not)
    role: str = "point"
    intervals: dict[str, Interval] = field(default_factory=dict)
    interval_method: str = ""
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Every metric by its flat name (``p99_ttft_ms``, ``output_tok_s``...)."""
        flat = dict(self.scalars)
        for name, dist in self.distributions.items():
            for stat in STATS:
                flat[f"{stat}_{name}_ms"] = dist.stat(stat)
        return flat

    def __getitem__(self, metric: str) -> float:
        return self.metrics()[metric]

    @property
    def completed(self) -> int:
        """Requests completed without error."""
        return int(self.scalars["completed"])

    def to_json(self, with_records: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None)."""
        data: dict[str, Any] = {
            "label": self.label,
            "mode": self.mode,
            "config": self.config,
            "metrics": {k: _finite(v) for k, v in self.metrics().items()},
            "error_samples": self.error_samples,
            "client_limit": self.client_limit,
            "role": self.role,
            "intervals": {k: [lo, hi] for k, (lo, hi) in self.intervals.items() if math.isfinite(lo + hi)},
            "interval_method": self.interval_method,
            "notes": self.notes,
        }
        if with_records:
            data["records"] = [r.to_json() for r in self.records]
        return data


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _ttft_ms(r: RequestRecord) -> float | None:
    return (r.first_token - r.scheduled) * 1000 if r.first_token is not None else None


def _e2e_ms(r: RequestRecord) -> float | None:
    return (r.end - r.scheduled) * 1000 if r.end is not None else None


def output_tokens(r: RequestRecord) -> int:
    """The server's count when it gave one, else the tokens of the chunks."""
    return r.output_tokens if r.output_tokens is not None else sum(c.tokens for c in r.chunks)


def _tpot_ms(r: RequestRecord) -> float | None:
    tokens = output_tokens(r)
    if r.first_token is None or r.end is None or tokens < 2:
        return None
    return (r.end - r.first_token) * 1000 / (tokens - 1)


def itl_per_token(r: RequestRecord) -> list[float]:
    """Inter-token intervals (ms): k per chunk of k tokens; 0 for extra first-chunk tokens."""
    intervals: list[float] = []
    previous: float | None = None
    for chunk in r.chunks:
        if previous is None:
            intervals += [0.0] * max(chunk.tokens - 1, 0)
        elif chunk.tokens > 0:
            intervals += [(chunk.at - previous) * 1000 / chunk.tokens] * chunk.tokens
        if chunk.tokens > 0:
            previous = chunk.at
    return intervals


def _rate(times: Iterable[float]) -> float:
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] <= ordered[0]:
        return math.nan
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def _error_samples(records: Sequence[RequestRecord], limit: int = 5) -> list[str]:
    seen: dict[str, int] = {}
    for r in records:
        if r.error is not None:
            seen[r.error] = seen.get(r.error, 0) + 1
    return [f"{count}x {text}" for text, count in sorted(seen.items(), key=lambda kv: -kv[1])[:limit]]


def _health_scalars(health: Sequence[ClientHealth]) -> dict[str, float]:
    """The client's CPU (all processes, and the busiest loop thread) and longest stall; NaN when unknown."""
    if not health:
        return {"client_cpu_cores": math.nan, "loop_cpu_cores": math.nan, "loop_stall_max_ms": math.nan}
    wall = max(max(h.wall_s for h in health), 1e-9)
    return {
        "client_cpu_cores": sum(h.cpu_s for h in health) / wall,
        "loop_cpu_cores": max(h.loop_cpu_s / max(h.wall_s, 1e-9) for h in health),
        "loop_stall_max_ms": max(h.stall_max_ms for h in health),
    }


def summarize(
    records: Sequence[RequestRecord],
    label: str = "",
    mode: str = "open",
    config: dict[str, Any] | None = None,
    goodput: GoodputSLO | None = None,
    health: Sequence[ClientHealth] = (),
) -> LoadResult:
    """Turn per-request records into a ``LoadResult`` (warm-up records are left out).

    ``health``: each load-generating process's own figures, which decide ``client_bound``.
    """
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    ends = [r.end for r in measured if r.end is not None]
    start = min((r.scheduled for r in measured), default=0.0)
    duration = max(max(ends, default=start) - start, 1e-9)
    out_tokens = [output_tokens(r) for r in ok]
    in_tokens = [r.input_tokens or 0 for r in ok]
    itl = [value for r in ok for value in itl_per_token(r)]
    e2e = [v for r in ok if (v := _e2e_ms(r)) is not None]
    samples = {
        "ttft": [v for r in ok if (v := _ttft_ms(r)) is not None],
        "itl": itl,
        "tpot": [v for r in ok if (v := _tpot_ms(r)) is not None],
        "e2e": e2e,
        "latency": e2e,
        "lag": [(r.sent - r.scheduled) * 1000 for r in measured if r.sent is not None],
    }
    distributions = {name: Distribution.of(values) for name, values in samples.items()}
    good = sum(1 for r in ok if goodput is None or goodput.good(r))
    count = len(measured)
    scalars = {
        "requests": float(count),
        "completed": float(len(ok)),
        "errors": float(count - len(ok)),
        "error_rate": (count - len(ok)) / count if count else math.nan,
        "duration_s": duration,
        "request_s": len(ok) / duration,
        "output_tok_s": sum(out_tokens) / duration,
        "total_tok_s": (sum(out_tokens) + sum(in_tokens)) / duration,
        "offered_rate": _rate(r.scheduled for r in measured),
        "achieved_rate": _rate(r.sent for r in measured if r.sent is not None),
        "goodput_s": good / duration,
        "goodput_fraction": good / count if count else math.nan,
        "mean_input_tokens": float(np.mean(in_tokens)) if in_tokens else math.nan,
        "mean_output_tokens": float(np.mean(out_tokens)) if out_tokens else math.nan,
        **_health_scalars(health),
    }
    limit = CLIENT_BOUND.reason(scalars, distributions["lag"])
    scalars["client_bound"] = 1.0 if limit else 0.0
    for key in sorted({k for r in ok for k in r.extra}):  # per-request amounts (bytes...) as rates
        scalars[f"{key}_s"] = sum(r.extra.get(key, 0.0) for r in ok) / duration
    for key in sorted({k for r in ok for k in r.values}):  # per-request scores (recall...)
        scores = [r.values[key] for r in ok if key in r.values]
        scalars[key] = float(np.mean(scores))
        scalars[f"min_{key}"] = float(np.min(scores))
    return LoadResult(
        label=label,
        mode=mode,
        config=dict(config or {}),
        distributions=distributions,
        scalars=scalars,
        error_samples=_error_samples(measured),
        records=list(records),
        client_limit=limit,
        intervals=request_intervals(samples),
        interval_method=request_method(),
    )
