"""The server's own view of a load: its Prometheus ``/metrics``, scraped around each point.

A ``ServerScraper`` reads the endpoint when a point starts and when it ends, and every few
seconds between (gauges such as KV-cache usage only mean something while the load runs);
each periodic scrape also updates the point's figures so far, which ride on the load's live
snapshots (``beside``) to the live push.
Counters and histograms are turned into what the point added (end minus start), so a
shared server's earlier traffic is left out; the server cannot tell warm-up requests from
measured ones, so its figures cover every request of the point. Text parsing is
``prometheus_client``'s (the exposition format's reference implementation).

vLLM's families give server-side TTFT, queue, prefill, decode, inter-token and end-to-end
latency (histograms: percentiles interpolated inside buckets as Prometheus'
``histogram_quantile`` does, so they are as coarse as the buckets), requests running and
waiting, KV-cache usage, prefix-cache hit rate and preemptions. A figure the server did not
expose, or that has no samples, is left out (not available), never 0. Triton's counters
give its requests and mean queue and request time.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pytest_aifactory.core.metric_table import PERCENTILES, SERVER_STATS
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.services.spec import RunningService

__all__ = [
    "MAX_SAMPLES",
    "VLLM_GAUGES",
    "VLLM_HISTOGRAMS",
    "Histogram",
    "ServerScraper",
    "Snapshot",
    "scraper_for",
    "triton_figures",
    "ttft_overhead",
    "vllm_figures",
]


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: bucket upper bounds (``+Inf`` last) and cumulative counts."""

    edges: tuple[float, ...]
    counts: tuple[float, ...]
    total: float

    @property
    def count(self) -> float:
        """Observations."""
        return self.counts[-1] if self.counts else 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        """What was observed since ``earlier`` (same buckets)."""
        if earlier is None:
            return self
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        return Histogram(self.edges, counts, self.total - earlier.total)

    def mean(self) -> float:
        """Mean observation (nan without any)."""
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, linearly interpolated inside its bucket (Prometheus' rule)."""
        if not self.count:
            return math.nan
        rank = q * self.count
        i = bisect.bisect_left(self.counts, rank)
        if i >= len(self.edges) - 1:  # in the +Inf bucket: the highest finite bound
            return self.edges[-2] if len(self.edges) > 1 else math.nan
        low = self.edges[i - 1] if i > 0 else 0.0
        below = self.counts[i - 1] if i > 0 else 0.0
        inside = self.counts[i] - below
        return low + (self.edges[i] - low) * ((rank - below) / inside if inside else 1.0)

    def fraction_within(self, bound: float) -> float:
        """Share of observations known to be <= ``bound`` (a bucket edge)."""
        return self.counts[self.edges.index(bound)] / self.count if self.count else math.nan


@dataclass(frozen=True)
class Snapshot:
    """One scrape: every sample summed over its label sets, histograms by bucket."""

    at: float
    values: Mapping[str, float]
    histograms: Mapping[str, Histogram]

    @classmethod
    def parse(cls, text: str, at: float) -> Snapshot:
        """Parse the exposition text of one scrape."""
        values: dict[str, float] = {}
        buckets: dict[str, dict[float, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_bucket") and "le" in sample.labels:
                    by_edge = buckets.setdefault(sample.name.removesuffix("_bucket"), {})
                    edge = float(sample.labels["le"])
                    by_edge[edge] = by_edge.get(edge, 0.0) + sample.value
                else:
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
        histograms = {
            name: Histogram(
                tuple(sorted(edges)), tuple(edges[e] for e in sorted(edges)), values.get(f"{name}_sum", 0.0)
            )
            for name, edges in buckets.items()
        }
        return cls(at, values, histograms)

    def increase(self, earlier: Snapshot, name: str) -> float | None:
        """How much counter ``name`` grew since ``earlier`` (None: not exposed).

        The parser names a counter's samples ``NAME_total`` even where the server wrote
        ``NAME`` (Triton's): either spelling finds it.
        """
        key = name if name in self.values else f"{name}_total"
        if key not in self.values:
            return None
        return self.values[key] - earlier.values.get(key, 0.0)

    def histogram(self, earlier: Snapshot, name: str) -> Histogram | None:
        """Histogram ``name``'s observations since ``earlier`` (None: not exposed)."""
        if name not in self.histograms:
            return None
        return self.histograms[name].minus(earlier.histograms.get(name))


@dataclass
class ServerScraper:
    """Scrapes ``url`` at a point's start and end, and every ``interval_s`` between.

    ``figures(start, end, samples)`` turns the scrapes into result metrics. ``latest`` holds
    the point's figures so far, for the live view: latencies and counters since the point's
    start, and the gauges (KV-cache usage, running, waiting) as the last scrape read them.
    """

    url: str
    figures: Callable[[Snapshot, Snapshot, list[Snapshot]], dict[str, float]]
    gauges: Mapping[str, str] = field(default_factory=dict)  # series name -> gauge family, kept over the point
    interval_s: float = 1.0
    samples: list[Snapshot] = field(default_factory=list)
    latest: Mapping[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def scrape(self) -> Snapshot:
        """One scrape now."""
        response = httpx.get(self.url, timeout=10.0)
        response.raise_for_status()
        return Snapshot.parse(response.text, time.time())

    def start(self) -> Snapshot:
        """Scrape the start and begin the periodic scrapes."""
        first = self.scrape()
        self.samples = [first]
        self.latest = {}
        self._stop.clear()
        self._thread = threading.Thread(target=self._periodic, name="aif-server-metrics", daemon=True)
        self._thread.start()
        return first

    def _periodic(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                sample = self.scrape()
            except httpx.HTTPError:
                continue  # a missed sample; the end scrape says whether the server is gone
            self.samples.append(sample)
            self.latest = self.figures(self.samples[0], sample, [sample])

    def beside(self, progress: Callable[[Progress], None]) -> Callable[[Progress], None]:
        """``progress`` fed the load's snapshots with the server's latest figures (``Progress.server``)."""

        def update(snapshot: Progress) -> None:
            progress(replace(snapshot, server=self.latest))

        return update

    def stop(self) -> None:
        """Stop the periodic scrapes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self, start: Snapshot) -> dict[str, float]:
        """Stop the periodic scrapes, scrape the end and return the point's figures."""
        self.stop()
        end = self.scrape()
        self.samples.append(end)
        return self.figures(start, end, self.samples)

    def series(self) -> dict[str, Any]:
        """The point's ``gauges`` as scraped (empty without any), for the report's plots.

        ``started_at`` is the first scrape (Unix time), ``t`` seconds from it; at most
        ``MAX_SAMPLES`` scrapes are kept, evenly spread, so a long point stays small.
        """
        kept = self.samples[:: max(1, math.ceil(len(self.samples) / MAX_SAMPLES))]
        columns = {
            name: [_number(s.values.get(family)) for s in kept]
            for name, family in self.gauges.items()
            if any(family in s.values for s in kept)
        }
        if not columns or not kept:
            return {}
        return {"started_at": kept[0].at, "t": [round(s.at - kept[0].at, 3) for s in kept], **columns}


# Result metric stem (``metric_table.SERVER_LATENCIES``) -> vLLM histogram family (seconds).
VLLM_HISTOGRAMS = {
    "ttft": "vllm:time_to_first_token_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
    "itl": "vllm:inter_token_latency_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
}

# The report's name of a vLLM gauge kept over the point (``ServerScraper.series``) -> its family.
VLLM_GAUGES = {
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
}
MAX_SAMPLES = 600


def vllm_figures(start: Snapshot, end: Snapshot, samples: list[Snapshot]) -> dict[str, float]:
    """The point as vLLM saw it: latencies (ms), requests, cache and queue figures."""
    figures: dict[str, float] = {}
    for stem, family in VLLM_HISTOGRAMS.items():
        histogram = end.histogram(start, family)
        if histogram is None or not histogram.count:
            continue
        for stat in SERVER_STATS:
            value = histogram.mean() if stat == "mean" else histogram.quantile(PERCENTILES[stat] / 100)
            figures[f"server_{stat}_{stem}_ms"] = value * 1000
    counters = {"server_requests": "vllm:request_success_total", "server_preemptions": "vllm:num_preemptions_total"}
    for name, family in counters.items():
        if (grown := end.increase(start, family)) is not None:
            figures[name] = grown
    hits = end.increase(start, "vllm:prefix_cache_hits_total")
    queries = end.increase(start, "vllm:prefix_cache_queries_total")
    if hits is not None and queries:
        figures["prefix_cache_hit_rate"] = hits / queries
    gauges = {
        "kv_cache_usage": VLLM_GAUGES["kv_cache_usage"],
        "server_max_running": VLLM_GAUGES["running"],
        "server_max_waiting": VLLM_GAUGES["waiting"],
    }
    for name, family in gauges.items():
        seen = [s.values[family] for s in samples if family in s.values]
        if seen:
            figures[name] = max(seen)
    return figures


def triton_figures(start: Snapshot, end: Snapshot, samples: list[Snapshot]) -> dict[str, float]:
    """The point as Triton saw it: requests, mean queue and request time (its counters, in µs)."""
    figures: dict[str, float] = {}
    succeeded = end.increase(start, "nv_inference_request_success")
    if succeeded is None:
        return figures
    figures["server_requests"] = succeeded
    requests = succeeded + (end.increase(start, "nv_inference_request_failure") or 0.0)
    durations = {"queue": "nv_inference_queue_duration_us", "e2e": "nv_inference_request_duration_us"}
    for stem, family in durations.items():
        spent = end.increase(start, family)
        if spent is not None and requests:
            figures[f"server_mean_{stem}_ms"] = spent / requests / 1000
    return figures


FIGURES: dict[str, Callable[[Snapshot, Snapshot, list[Snapshot]], dict[str, float]]] = {
    "vllm": vllm_figures,
    "triton": triton_figures,
}
GAUGES: dict[str, Mapping[str, str]] = {"vllm": VLLM_GAUGES}


def scraper_for(service: RunningService | str) -> ServerScraper | None:
    """A scraper of the service's ``/metrics`` when its meta names a known kind (``metrics: vllm``)."""
    if not isinstance(service, RunningService):
        return None
    kind = service.spec.meta.get("metrics", "")
    if kind not in FIGURES:
        return None
    url = service.url(service.spec.meta.get("metrics_path", "/metrics"), port=service.spec.meta.get("metrics_port"))
    return ServerScraper(url, FIGURES[kind], GAUGES.get(kind, {}))


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def ttft_overhead(client: Mapping[str, float], server: Mapping[str, float]) -> dict[str, float]:
    """Client minus server mean TTFT: network, HTTP and client time (empty without both)."""
    if "mean_ttft_ms" not in client or "server_mean_ttft_ms" not in server:
        return {}
    difference = client["mean_ttft_ms"] - server["server_mean_ttft_ms"]
    return {} if math.isnan(difference) else {"ttft_client_overhead_ms": difference}
