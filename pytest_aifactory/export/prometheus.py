"""The Prometheus metric families of a run: live figures of running loads, final figures of results.

Metric names follow Prometheus conventions and are the contract the dashboards are built
on: ``METRIC_NAMES`` lists every one this module can emit. Which result metric goes to which
family (and labels) is declared in the metric table (``Metric.gauge``); a figure the table does
not declare (a workload's own rate or score) goes to ``aifactory_result_value``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from pytest_aifactory.core.metric_table import (
    METRICS,
    QUANTILES,
    RESULT_GAUGE,
    SERVER_LATENCIES,
    SERVER_STATS,
    TABLE,
)
from pytest_aifactory.export.views import verdict_outcome

__all__ = [
    "DASHBOARD_RESULTS",
    "FINAL_METRICS",
    "LIVE_METRICS",
    "LIVE_SERVER",
    "METRIC_NAMES",
    "final_registry",
    "live_registry",
]

# The result figures the dashboards' run comparison draws (``aifactory_result_value{name=...}``).
DASHBOARD_RESULTS: tuple[str, ...] = tuple(m.name for m in TABLE if m.dashboard and m.gauge == RESULT_GAUGE)
LIVE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "aifactory_live_requests_sent_total": ("Requests sent so far in the running load", ("point",)),
    "aifactory_live_requests_done_total": ("Requests finished so far in the running load", ("point",)),
    "aifactory_live_request_errors_total": ("Failed requests so far in the running load", ("point",)),
    "aifactory_live_requests_in_flight": ("Requests in flight now", ("point",)),
    "aifactory_live_elapsed_seconds": ("Seconds since the running load started", ("point",)),
    "aifactory_live_achieved_rate": ("Requests sent per second so far", ("point",)),
    "aifactory_live_latency_seconds": (
        "Latency quantiles of the requests finished so far",
        ("point", "kind", "quantile"),
    ),
    "aifactory_live_server_latency_seconds": (
        "The server's latency quantiles so far in the running load (its /metrics histograms)",
        ("point", "kind", "quantile"),
    ),
    "aifactory_live_server_latency_mean_seconds": (
        "The server's mean latencies so far in the running load (its /metrics)",
        ("point", "kind"),
    ),
    "aifactory_live_server_requests_done_total": ("Requests the server finished so far in the load", ("point",)),
    "aifactory_live_server_preemptions_total": ("Requests the server preempted so far in the load", ("point",)),
    "aifactory_live_server_requests_running": ("Requests the server runs now (last scrape)", ("point",)),
    "aifactory_live_server_requests_waiting": ("Requests waiting in the server's queue now", ("point",)),
    "aifactory_live_server_kv_cache_usage_ratio": ("The server's KV-cache usage now (fraction)", ("point",)),
    "aifactory_live_server_prefix_cache_hit_ratio": (
        "Prefix-cache hits / queries so far in the load",
        ("point",),
    ),
}
FINAL_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "aifactory_latency_seconds": ("Latency quantiles of a finished load", ("point", "kind", "quantile")),
    "aifactory_latency_mean_seconds": ("Mean latency of a finished load", ("point", "kind")),
    "aifactory_requests_total": ("Measured requests of a finished load", ("point",)),
    "aifactory_request_errors_total": ("Failed requests of a finished load", ("point",)),
    "aifactory_error_ratio": ("Failed / measured requests", ("point",)),
    "aifactory_request_rate": ("Requests per second: offered, achieved, completed, goodput", ("point", "kind")),
    "aifactory_tokens_per_second": ("Tokens per second: output, total", ("point", "kind")),
    "aifactory_goodput_ratio": ("Share of requests meeting every per-request SLO", ("point",)),
    "aifactory_energy_joules": ("Energy over a finished load: total and by source", ("point", "source")),
    "aifactory_energy_per_unit_joules": ("Energy per unit of work of a finished load", ("point", "unit")),
    "aifactory_slo_passed": (
        "1 when the SLO held for the point, 0 when breached (absent: inconclusive)",
        ("point", "slo"),
    ),
    "aifactory_slo_inconclusive": (
        "1 when the SLO could not be judged (the load generator was the limit, or only a lower bound)",
        ("point", "slo"),
    ),
    "aifactory_slo_value": ("The measured value an SLO was checked against", ("point", "slo")),
    "aifactory_result_value": ("Any other figure of a result (MiB/s, recall, IOPS...)", ("point", "name")),
}
# The server's own figures so far (``Progress.server``: result metric names) -> live family, labels.
LIVE_SERVER: dict[str, tuple[str, tuple[str, ...]]] = {
    **{
        f"server_{stat}_{stem}_ms": (
            ("aifactory_live_server_latency_mean_seconds", (stem,))
            if stat == "mean"
            else ("aifactory_live_server_latency_seconds", (stem, QUANTILES[stat]))
        )
        for stem in SERVER_LATENCIES
        for stat in SERVER_STATS
    },
    "server_requests": ("aifactory_live_server_requests_done_total", ()),
    "server_preemptions": ("aifactory_live_server_preemptions_total", ()),
    "server_max_running": ("aifactory_live_server_requests_running", ()),
    "server_max_waiting": ("aifactory_live_server_requests_waiting", ()),
    "kv_cache_usage": ("aifactory_live_server_kv_cache_usage_ratio", ()),
    "prefix_cache_hit_rate": ("aifactory_live_server_prefix_cache_hit_ratio", ()),
}
METRIC_NAMES: frozenset[str] = frozenset({*LIVE_METRICS, *FINAL_METRICS})


def _gauges(registry: CollectorRegistry, table: Mapping[str, tuple[str, tuple[str, ...]]]) -> dict[str, Gauge]:
    return {name: Gauge(name, text, labels, registry=registry) for name, (text, labels) in table.items()}


def live_registry(snapshots: Mapping[str, Any]) -> CollectorRegistry:
    """Live figures of the running load(s): ``{point: Progress}``, the server's own beside them."""
    registry = CollectorRegistry()
    gauges = _gauges(registry, LIVE_METRICS)
    for point, progress in snapshots.items():
        gauges["aifactory_live_requests_sent_total"].labels(point).set(progress.sent)
        gauges["aifactory_live_requests_done_total"].labels(point).set(progress.done)
        gauges["aifactory_live_request_errors_total"].labels(point).set(progress.errors)
        gauges["aifactory_live_requests_in_flight"].labels(point).set(progress.in_flight)
        gauges["aifactory_live_elapsed_seconds"].labels(point).set(progress.elapsed_s)
        rate = progress.sent / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        gauges["aifactory_live_achieved_rate"].labels(point).set(rate)
        recent = list(progress.records)[-2000:]
        for kind, values in (
            ("e2e", [r.end - r.scheduled for r in recent if r.end is not None and r.error is None]),
            ("ttft", [r.first_token - r.scheduled for r in recent if r.first_token is not None]),
        ):
            if values:
                points = np.percentile(values, [float(q) * 100 for q in QUANTILES.values()])
                for quantile, value in zip(QUANTILES.values(), points, strict=True):
                    gauges["aifactory_live_latency_seconds"].labels(point, kind, quantile).set(float(value))
        for name, figure in progress.server.items():
            if name in LIVE_SERVER and not math.isnan(figure):
                family, labels = LIVE_SERVER[name]
                scale = 0.001 if family.endswith("_seconds") else 1.0  # the result's ms to seconds
                gauges[family].labels(point, *labels).set(figure * scale)
    return registry


def final_registry(rows: Sequence[Mapping[str, Any]]) -> CollectorRegistry:
    """Final figures and SLO verdicts of a test: one row per result (``Outcomes`` rows)."""
    registry = CollectorRegistry()
    gauges = _gauges(registry, FINAL_METRICS)
    for row in rows:
        point, metrics = row["label"] or "-", row["result"]["metrics"]

        def put(name: str, value: Any, *labels: str, point: str = point) -> None:
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                gauges[name].labels(point, *labels).set(float(value))

        for name, value in metrics.items():
            metric = METRICS.get(name)
            if metric is None:
                put(RESULT_GAUGE, value, name)
            elif metric.gauge is not None and value is not None:
                put(metric.gauge, value * metric.scale, *metric.gauge_labels())
        for verdict in row.get("verdicts", []):
            outcome = verdict_outcome(verdict)
            if outcome == "inconclusive":  # neither held nor breached: a 0 would read as a breach
                put("aifactory_slo_inconclusive", 1.0, verdict["slo"])
            else:
                put("aifactory_slo_passed", 1.0 if outcome == "held" else 0.0, verdict["slo"])
            put("aifactory_slo_value", verdict["value"], verdict["slo"])
    return registry
