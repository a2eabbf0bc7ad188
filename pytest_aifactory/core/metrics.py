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

import dataclasses
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
    "Totals",
    "assemble",
    "itl_per_token",
    "lag_samples_ms",
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
    core or more (one thread paces and sends: at a core it can do no more). The reason says
    which it was: the client's own work (its loop saturated), or, when the loop was nearly idle
    (under ``idle_cpu_cores``) while its sends were late, the machine (other processes, or the
    service on the same cores, took the CPU the client was waiting for). In between it says
    neither: the CPU is averaged over the load's window, so a short burst the client could not
    keep up with, followed by waiting for responses, also averages low. Both are client-bound:
    either way the latencies measured include the client's lateness.
    """

    lag_p99_ms: float = 50.0
    loop_cpu_cores: float = 0.9
    idle_cpu_cores: float = 0.1

    def reason(self, scalars: dict[str, float], lag: Distribution) -> str:
        """``lag p99 125 ms, CPU 0.99 core: ...`` (which held the client back) when it was the limit, else empty."""
        cpu = scalars.get("loop_cpu_cores", math.nan)
        if not (lag.p99 > self.lag_p99_ms or cpu >= self.loop_cpu_cores):
            return ""
        if math.isnan(cpu):
            return f"lag p99 {lag.p99:.3g} ms, CPU not available"
        text = f"lag p99 {lag.p99:.3g} ms, CPU {cpu:.2f} core"
        if cpu >= self.loop_cpu_cores:
            return f"{text}: its event loop was saturated by its own work"
        if cpu < self.idle_cpu_cores:
            return f"{text}: it was mostly idle, so the machine (other processes, the service) held it back"
        return text


CLIENT_BOUND = ClientBound()


@dataclass
class LoadResult:
    """What one load run (or one point of a sweep) measured.

    ``role`` is ``point`` for a run, ``probe`` for a point of a capacity search (its SLOs
    are the search's business, not the test's), ``repeat`` for one of ``repeats=N`` runs
    (their combination is the result judged) and ``capacity`` for a search's answer.
    ``intervals`` holds confidence intervals by metric name, made as ``interval_method``
    says; ``notes`` are sentences shown with the result (the capacity answer, a run that
    never got steady). ``server_series``: the server's own gauges over the point, as its
    ``/metrics`` scrapes read them (``workloads.server_metrics.gauge_series``), when it has any.
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
    lower_bounds: dict[str, str] = field(default_factory=dict)  # metric: why its value is only "at least"
    upper_bounds: dict[str, float] = field(default_factory=dict)  # metric of lower_bounds: its true value is below
    intervals: dict[str, Interval] = field(default_factory=dict)
    interval_method: str = ""
    notes: list[str] = field(default_factory=list)
    server_series: dict[str, Any] = field(default_factory=dict)  # the server's gauges over the point

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
            "lower_bounds": self.lower_bounds,
            "upper_bounds": self.upper_bounds,
            "role": self.role,
            "intervals": {k: [lo, hi] for k, (lo, hi) in self.intervals.items() if math.isfinite(lo + hi)},
            "interval_method": self.interval_method,
            "notes": self.notes,
        }
        if self.server_series:
            data["server_series"] = self.server_series
        if with_records:
            data["records"] = [r.to_json() for r in self.records]
        return data


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _ttft_ms(r: RequestRecord) -> float | None:
    return (r.first_token - r.scheduled) * 1000 if r.first_token is not None else None


def lag_samples_ms(records: Iterable[RequestRecord]) -> list[float]:
    """Schedule lag (ms) of each record that was sent: its actual send minus its scheduled time."""
    return [(r.sent - r.scheduled) * 1000 for r in records if r.sent is not None]


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


@dataclass
class Totals:
    """The exact counts and sums of measured records that the throughput figures need; mergeable.

    ``scheduled`` and ``sent`` are (count, first, last) of those instants; ``values`` holds
    (sum, count, min) per per-request score; ``errors`` counts each error text.
    """

    requests: int = 0
    completed: int = 0
    good: int = 0
    output_tokens: int = 0
    input_tokens: int = 0
    last_end: float = -math.inf
    scheduled: tuple[int, float, float] = (0, math.inf, -math.inf)
    sent: tuple[int, float, float] = (0, math.inf, -math.inf)
    extra: dict[str, float] = field(default_factory=dict)
    values: dict[str, tuple[float, int, float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, measured: Sequence[RequestRecord], goodput: GoodputSLO | None = None) -> Totals:
        """The totals of ``measured`` (warm-up already left out)."""
        totals = cls()
        for r in measured:
            totals._add(r, goodput)
        return totals

    def _add(self, r: RequestRecord, goodput: GoodputSLO | None) -> None:
        self.requests += 1
        self.scheduled = _span(self.scheduled, r.scheduled)
        if r.sent is not None:
            self.sent = _span(self.sent, r.sent)
        if r.end is not None:
            self.last_end = max(self.last_end, r.end)
        if r.error is not None:
            self.errors[r.error] = self.errors.get(r.error, 0) + 1
        if not r.ok:
            return
        self.completed += 1
        self.good += 1 if goodput is None or goodput.good(r) else 0
        self.output_tokens += output_tokens(r)
        self.input_tokens += r.input_tokens or 0
        for key, amount in r.extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + amount
        for key, score in r.values.items():
            total, count, low = self.values.get(key, (0.0, 0, math.inf))
            self.values[key] = (total + score, count + 1, min(low, score))

    def merge(self, other: Totals) -> Totals:
        """These totals and ``other``'s together (a new object)."""
        merged = Totals(
            self.requests + other.requests,
            self.completed + other.completed,
            self.good + other.good,
            self.output_tokens + other.output_tokens,
            self.input_tokens + other.input_tokens,
            max(self.last_end, other.last_end),
            _join(self.scheduled, other.scheduled),
            _join(self.sent, other.sent),
            dict(self.extra),
            dict(self.values),
            dict(self.errors),
        )
        for key, amount in other.extra.items():
            merged.extra[key] = merged.extra.get(key, 0.0) + amount
        for key, (total, count, low) in other.values.items():
            mine = merged.values.get(key, (0.0, 0, math.inf))
            merged.values[key] = (mine[0] + total, mine[1] + count, min(mine[2], low))
        for text, count in other.errors.items():
            merged.errors[text] = merged.errors.get(text, 0) + count
        return merged

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (infinities as JSON's Infinity, which Python reads back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Totals:
        """Inverse of ``to_json``."""
        counts = {key: int(data[key]) for key in ("requests", "completed", "good", "output_tokens", "input_tokens")}
        return cls(
            **counts,
            last_end=float(data["last_end"]),
            scheduled=(int(data["scheduled"][0]), float(data["scheduled"][1]), float(data["scheduled"][2])),
            sent=(int(data["sent"][0]), float(data["sent"][1]), float(data["sent"][2])),
            extra={key: float(value) for key, value in data["extra"].items()},
            values={key: (float(a), int(b), float(c)) for key, (a, b, c) in data["values"].items()},
            errors={key: int(value) for key, value in data["errors"].items()},
        )

    def scalars(self) -> dict[str, float]:
        """Counts, throughputs, rates, goodput, token means, per-request amounts and scores."""
        count, start = self.requests, self.scheduled[1] if self.requests else 0.0
        duration = max(max(self.last_end, start) - start, 1e-9)
        scalars = {
            "requests": float(count),
            "completed": float(self.completed),
            "errors": float(count - self.completed),
            "error_rate": (count - self.completed) / count if count else math.nan,
            "duration_s": duration,
            "request_s": self.completed / duration,
            "output_tok_s": self.output_tokens / duration,
            "total_tok_s": (self.output_tokens + self.input_tokens) / duration,
            "offered_rate": _rate(self.scheduled),
            "achieved_rate": _rate(self.sent),
            "goodput_s": self.good / duration,
            "goodput_fraction": self.good / count if count else math.nan,
            "mean_input_tokens": self.input_tokens / self.completed if self.completed else math.nan,
            "mean_output_tokens": self.output_tokens / self.completed if self.completed else math.nan,
        }
        for key in sorted(self.extra):  # per-request amounts (bytes...) as rates
            scalars[f"{key}_s"] = self.extra[key] / duration
        for key in sorted(self.values):  # per-request scores (recall...)
            total, n, low = self.values[key]
            scalars[key], scalars[f"min_{key}"] = total / n, low
        return scalars

    def error_samples(self, limit: int = 5) -> list[str]:
        """The most frequent errors, ``3x HTTP 503``."""
        ranked = sorted(self.errors.items(), key=lambda kv: -kv[1])[:limit]
        return [f"{count}x {text}" for text, count in ranked]


def _span(span: tuple[int, float, float], at: float) -> tuple[int, float, float]:
    return span[0] + 1, min(span[1], at), max(span[2], at)


def _join(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    return a[0] + b[0], min(a[1], b[1]), max(a[2], b[2])


def _rate(span: tuple[int, float, float]) -> float:
    """Events per second over (count, first, last): NaN for fewer than two, or no time between."""
    count, first, last = span
    return (count - 1) / (last - first) if count >= 2 and last > first else math.nan


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
    e2e = [v for r in ok if (v := _e2e_ms(r)) is not None]
    samples = {
        "ttft": [v for r in ok if (v := _ttft_ms(r)) is not None],
        "itl": [value for r in ok for value in itl_per_token(r)],
        "tpot": [v for r in ok if (v := _tpot_ms(r)) is not None],
        "e2e": e2e,
        "latency": e2e,
        "lag": lag_samples_ms(measured),
    }
    distributions = {name: Distribution.of(values) for name, values in samples.items()}
    result = assemble(records, distributions, Totals.of(measured, goodput), label, mode, config, health)
    result.intervals, result.interval_method = request_intervals(samples), request_method()
    return result


def assemble(
    records: Sequence[RequestRecord],
    distributions: dict[str, Distribution],
    totals: Totals,
    label: str = "",
    mode: str = "open",
    config: dict[str, Any] | None = None,
    health: Sequence[ClientHealth] = (),
) -> LoadResult:
    """A ``LoadResult`` from its distributions and totals (``records``: all of them, or a sample)."""
    scalars = {**totals.scalars(), **_health_scalars(health)}
    limit = CLIENT_BOUND.reason(scalars, distributions["lag"])
    scalars["client_bound"] = 1.0 if limit else 0.0
    return LoadResult(
        label=label,
        mode=mode,
        config=dict(config or {}),
        distributions=distributions,
        scalars=scalars,
        error_samples=totals.error_samples(),
        records=list(records),
        client_limit=limit,
    )
