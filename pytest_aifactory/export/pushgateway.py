"""Live and final metrics to a Prometheus Pushgateway, spooled to disk when it cannot be reached.

Groups are ``job="aifactory"``, ``run_id`` and ``test`` (the test's name, base64 in the URL
path); each sweep point is a ``point`` label, so cardinality stays at the size of a sweep.
Metric names follow Prometheus conventions and are the contract the dashboards are built
on: ``METRIC_NAMES`` lists every one this module can emit.

A push that fails (gateway down, slow, refusing) is written to the spool folder, keyed by its
group, so the latest state of every group survives; ``Pushgateway.resend()`` (at the end of
the run, and ``aifactory resend RUN_ID``) delivers what is spooled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest

from pytest_aifactory.export.secrets import Redactor

__all__ = ["LIVE_METRICS", "METRIC_NAMES", "GatewayTarget", "Pushgateway", "final_registry", "live_registry"]

QUANTILES = {"p50": "0.5", "p90": "0.9", "p95": "0.95", "p99": "0.99", "p999": "0.999"}
LATENCY_KINDS = ("ttft", "itl", "tpot", "e2e", "lag")
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
    "aifactory_slo_passed": ("1 when the SLO held for the point, else 0", ("point", "slo")),
    "aifactory_slo_value": ("The measured value an SLO was checked against", ("point", "slo")),
    "aifactory_result_value": ("Any other figure of a result (MiB/s, recall, IOPS...)", ("point", "name")),
}
METRIC_NAMES: frozenset[str] = frozenset({*LIVE_METRICS, *FINAL_METRICS})
GROUP_LABELS = ("job", "run_id", "test")


@dataclass(frozen=True)
class GatewayTarget:
    """Where and how to push: URL, basic auth (password from an environment variable), TLS."""

    url: str
    username: str | None = None
    password_env: str = "AIF_PUSHGATEWAY_PASSWORD"
    ca_file: str | None = None
    insecure: bool = False
    timeout_s: float = 5.0


def _gauges(registry: CollectorRegistry, table: Mapping[str, tuple[str, tuple[str, ...]]]) -> dict[str, Gauge]:
    return {name: Gauge(name, text, labels, registry=registry) for name, (text, labels) in table.items()}


def live_registry(snapshots: Mapping[str, Any]) -> CollectorRegistry:
    """Live figures of the running load(s): ``{point: Progress}``."""
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

        used = set()
        for kind in LATENCY_KINDS:
            for stat, quantile in QUANTILES.items():
                key = f"{stat}_{kind}_ms"
                used.add(key)
                put(
                    "aifactory_latency_seconds",
                    None if metrics.get(key) is None else metrics[key] / 1000,
                    kind,
                    quantile,
                )
            mean = metrics.get(f"mean_{kind}_ms")
            put("aifactory_latency_mean_seconds", None if mean is None else mean / 1000, kind)
        put("aifactory_requests_total", metrics.get("requests"))
        put("aifactory_request_errors_total", metrics.get("errors"))
        put("aifactory_error_ratio", metrics.get("error_rate"))
        put("aifactory_goodput_ratio", metrics.get("goodput_fraction"))
        for kind, key in (
            ("offered", "offered_rate"),
            ("achieved", "achieved_rate"),
            ("completed", "request_s"),
            ("goodput", "goodput_s"),
        ):
            put("aifactory_request_rate", metrics.get(key), kind)
        for kind, key in (("output", "output_tok_s"), ("total", "total_tok_s")):
            put("aifactory_tokens_per_second", metrics.get(key), kind)
        handled = {
            "requests",
            "errors",
            "error_rate",
            "goodput_fraction",
            "offered_rate",
            "achieved_rate",
            "request_s",
            "goodput_s",
            "output_tok_s",
            "total_tok_s",
        }
        for name, value in metrics.items():
            if name not in handled and not name.endswith("_ms"):
                put("aifactory_result_value", value, name)
        for verdict in row.get("verdicts", []):
            put("aifactory_slo_passed", 1.0 if verdict["passed"] else 0.0, verdict["slo"])
            put("aifactory_slo_value", verdict["value"], verdict["slo"])
    return registry


def _segment(name: str, value: str) -> str:
    encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=") or "="
    return f"{name}@base64/{encoded}"


class Pushgateway:
    """Pushes groups of one run; spools what it cannot deliver."""

    def __init__(self, target: GatewayTarget, run_id: str, spool_dir: Path, redactor: Redactor) -> None:
        self.target = target
        self.run_id = run_id
        self.spool_dir = spool_dir
        self.redactor = redactor
        self.delivered = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def path(self, test: str, extra_labels: Mapping[str, str] | None = None) -> str:
        """The group's URL path (``extra_labels`` are more grouping labels)."""
        extra = "".join(f"/{_segment(k, v)}" for k, v in sorted((extra_labels or {}).items()))
        return f"/metrics/job/aifactory/{_segment('run_id', self.run_id)}/{_segment('test', test)}{extra}"

    def _client(self) -> httpx.Client:
        auth = None
        if self.target.username:
            auth = httpx.BasicAuth(self.target.username, os.environ.get(self.target.password_env, ""))
        verify: bool | str = False if self.target.insecure else (self.target.ca_file or True)
        return httpx.Client(
            base_url=self.target.url.rstrip("/"), auth=auth, verify=verify, timeout=self.target.timeout_s
        )

    def _send(self, method: str, path: str, body: bytes) -> None:
        with self._client() as client:
            response = client.request(method, path, content=body, headers={"Content-Type": "text/plain; version=0.0.4"})
        if response.status_code >= 300:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}: {response.text[:200]}", request=response.request, response=response
            )

    def push(
        self, test: str, registry: CollectorRegistry, method: str = "PUT", extra_labels: Mapping[str, str] | None = None
    ) -> bool:
        """Push a group (PUT replaces it); on failure spool it and return False."""
        body = self.redactor.text(generate_latest(registry).decode()).encode()
        return self._deliver(method, self.path(test, extra_labels), body)

    def delete(self, test: str) -> bool:
        """Delete a group (the Pushgateway never forgets one by itself)."""
        return self._deliver("DELETE", self.path(test), b"")

    def _deliver(self, method: str, path: str, body: bytes) -> bool:
        try:
            self._send(method, path, body)
        except httpx.HTTPError as exc:
            with self._lock:
                self.failures.append(f"{method} {path}: {type(exc).__name__}: {self.redactor.text(str(exc))[:200]}")
                self._spool(method, path, body)
            return False
        with self._lock:
            self.delivered += 1
            self._unspool(path)
        return True

    def _spool_file(self, path: str) -> Path:
        return self.spool_dir / f"{hashlib.sha256(path.encode()).hexdigest()[:20]}.json"

    def _spool(self, method: str, path: str, body: bytes) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        file = self._spool_file(path)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"method": method, "path": path, "body": body.decode()}), encoding="utf-8")
        os.replace(tmp, file)

    def _unspool(self, path: str) -> None:
        self._spool_file(path).unlink(missing_ok=True)

    def spooled(self) -> list[Path]:
        """Spooled pushes not yet delivered."""
        return sorted(self.spool_dir.glob("*.json")) if self.spool_dir.exists() else []

    def resend(self) -> tuple[int, int]:
        """Deliver the spool: (sent, still spooled)."""
        sent = 0
        for file in self.spooled():
            entry = json.loads(file.read_text(encoding="utf-8"))
            try:
                self._send(entry["method"], entry["path"], entry["body"].encode())
            except httpx.HTTPError:
                continue
            file.unlink(missing_ok=True)
            sent += 1
        return sent, len(self.spooled())
