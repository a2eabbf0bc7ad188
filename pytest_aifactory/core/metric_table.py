"""The one declaration of every metric: name, unit, better direction, family and where it appears.

``TABLE`` is the only list of metrics. The end-of-run results table, ``aifactory compare``
and the baseline gate, pytest-benchmark's ``extra_info``, the Pushgateway families and the
dashboards all select their metrics from it by the row's flags; the SLO parser validates
names against it. The latency distributions (ttft, itl, tpot, e2e, latency, lag) times their
statistics are generated from the compact ``LATENCIES`` declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FAMILIES",
    "LATENCIES",
    "METRICS",
    "NOISE_FLOORS",
    "PERCENTILES",
    "QUANTILES",
    "RAG_STAGES",
    "RESULT_GAUGE",
    "SERVER_LATENCIES",
    "SERVER_STATS",
    "STATS",
    "TABLE",
    "TURN_METRICS",
    "Family",
    "Latency",
    "Metric",
    "min_samples",
]

Family = Literal["inference", "database", "objectstore", "vectordb", "filestorage"]
Better = Literal["lower", "higher"]
FAMILIES: tuple[Family, ...] = ("inference", "database", "objectstore", "vectordb", "filestorage")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
STATS = ("mean", "stddev", "min", "max", *PERCENTILES)
QUANTILES = {"p50": "0.5", "p90": "0.9", "p95": "0.95", "p99": "0.99", "p999": "0.999"}
RESULT_GAUGE = "aifactory_result_value"  # Prometheus family of the figures without a family of their own
# Per unit: below this value (in both runs) a change is timer noise, not judged by compare or the gate.
NOISE_FLOORS: Mapping[str, tuple[float, str]] = {"s": (0.001, "1 ms")}


@dataclass(frozen=True)
class Metric:
    """One metric and every place it appears.

    Attributes:
        name: flat name in results and reports (``p99_ttft_ms``).
        unit: unit for messages (``ms``, ``MiB/s``; empty for counts and ratios).
        better: which way is better (``lower`` or ``higher``).
        description: what it measures.
        families: the benchmark families whose tests produce it.
        heading: its heading in the end-of-run table (empty: not shown there).
        column: a column of every row of that table, not a figure shown when present.
        fmt: format of its value in that table.
        compare: a key metric of ``aifactory compare`` and of the baseline gate.
        extra_info: copied into pytest-benchmark's ``extra_info``.
        gauge: Prometheus family of the final push (None: not pushed).
        labels: that family's labels besides ``point`` (None: ``name=<metric name>``).
        scale: factor from the metric's unit to the gauge's (ms to seconds).
        dashboard: drawn in the dashboards' run-to-run comparison.
        distribution: for a latency statistic, its distribution (``ttft``).
        stat: for a latency statistic, the statistic (``p99``).
    """

    name: str
    unit: str
    better: Better
    description: str
    families: tuple[Family, ...] = FAMILIES
    heading: str = ""
    column: bool = False
    fmt: str = "{:.4g}"
    compare: bool = False
    extra_info: bool = False
    gauge: str | None = RESULT_GAUGE
    labels: tuple[str, ...] | None = None
    scale: float = 1.0
    dashboard: bool = False
    distribution: str = ""
    stat: str = ""

    def gauge_labels(self) -> tuple[str, ...]:
        """Label values of its gauge besides ``point``."""
        return (self.name,) if self.labels is None else self.labels

    @property
    def noise_floor(self) -> tuple[float, str] | None:
        """Its unit's noise floor and how it is said (``(0.001, "1 ms")``), None when it has none."""
        return NOISE_FLOORS.get(self.unit)

    @property
    def min_samples(self) -> int:
        """Samples a percentile needs to be supported (1 for anything else)."""
        return min_samples(self.stat)


def min_samples(stat: str) -> int:
    """Rule of thumb: a p-th percentile needs 1 / (1 - p) samples (p99: 100, p999: 1000)."""
    if stat not in PERCENTILES:
        return 1
    return round(100 / (100 - PERCENTILES[stat]))


@dataclass(frozen=True)
class Latency:
    """One latency distribution (ms); its statistics become rows ``{stat}_{name}_ms``.

    ``headings``, ``compare`` and ``extra_info`` name the statistics shown in the results
    table, compared across runs and copied to pytest-benchmark. Only a distribution with
    ``kind`` set is pushed to Prometheus (its mean and percentiles, in seconds).
    """

    name: str
    text: str
    families: tuple[Family, ...] = FAMILIES
    kind: str = ""
    column: bool = False
    fmt: str = "{:.4g}"
    headings: Mapping[str, str] = field(default_factory=dict)
    compare: tuple[str, ...] = ()
    extra_info: tuple[str, ...] = ()

    def rows(self) -> list[Metric]:
        """Every statistic of the distribution as a metric."""
        return [self._row(stat) for stat in STATS]

    def _row(self, stat: str) -> Metric:
        gauge: str | None = None
        labels: tuple[str, ...] | None = None
        if self.kind and stat == "mean":
            gauge, labels = "aifactory_latency_mean_seconds", (self.kind,)
        elif self.kind and stat in QUANTILES:
            gauge, labels = "aifactory_latency_seconds", (self.kind, QUANTILES[stat])
        return Metric(
            f"{stat}_{self.name}_ms",
            "ms",
            "lower",
            f"{stat} of the {self.text}",
            self.families,
            heading=self.headings.get(stat, ""),
            column=self.column,
            fmt=self.fmt,
            compare=stat in self.compare,
            extra_info=stat in self.extra_info,
            gauge=gauge,
            labels=labels,
            scale=0.001,
            distribution=self.name,
            stat=stat,
        )


_LLM: tuple[Family, ...] = ("inference",)
_VECTOR: tuple[Family, ...] = ("vectordb",)
_FILES: tuple[Family, ...] = ("filestorage",)
_RATE = "aifactory_request_rate"
_ENERGY = "aifactory_energy_joules"
_PER_UNIT = "aifactory_energy_per_unit_joules"
_NODE = "of the service's node over the point"
_TOKENS = "aifactory_tokens_per_second"

# fmt: off
TURN_METRICS = 8  # turns with a TTFT distribution of their own
RAG_STAGES = {
    "embed": "embedding the question",
    "search": "vector search for the top-k documents",
    "prefill": "LLM request sent to its first token",
    "decode": "LLM first token to the end of the answer",
    "overhead": "the client's own time: end-to-end minus lag and stages",
}

LATENCIES = (
    Latency("ttft", "time to first token", _LLM, "ttft", headings={"p50": "ttft p50", "p99": "ttft p99"},
            compare=("p50", "p99"), extra_info=("p50", "p99")),
    Latency("itl", "inter-token latency, per token", _LLM, "itl"),
    Latency("tpot", "time per output token after the first", _LLM, "tpot", fmt="{:.3g}",
            headings={"p99": "tpot p99"}, compare=("p99",), extra_info=("p99",)),
    Latency("e2e", "end-to-end latency from the scheduled time", kind="e2e",
            extra_info=("p50", "p90", "p99", "p999")),
    Latency("latency", "operation latency from the scheduled time (same as e2e)", column=True,
            headings={"p50": "p50 ms", "p99": "p99 ms"}, compare=("p50", "p99")),
    Latency("lag", "schedule lag: actual send minus scheduled time", kind="lag", column=True, fmt="{:.3g}",
            headings={"p99": "p99 lag"}, extra_info=("p99",)),
    # conversations: whole sessions and the first turns one by one
    Latency("session", "conversation session duration: first turn due to last turn end", _LLM),
    *(Latency(f"ttft_turn{k}", f"time to first token of turn {k} of a conversation", _LLM)
      for k in range(1, TURN_METRICS + 1)),
    # a RAG pipeline's stages, and the client's own time between them
    *(Latency(stage, f"RAG stage: {text}", _LLM) for stage, text in RAG_STAGES.items()),
)

# The server's own latency histograms (its /metrics: vLLM), as ``server_{stat}_{stem}_ms``.
SERVER_LATENCIES = {
    "ttft": "time to first token",
    "queue": "time waiting in its queue",
    "prefill": "prefill time",
    "decode": "decode time",
    "itl": "inter-token latency",
    "e2e": "end-to-end request latency",
}
SERVER_STATS = ("mean", "p50", "p90", "p99")
# Means in the table: exact (sum / count), where a percentile is interpolated inside a coarse bucket.
# Not key metrics of compare: only servers with metrics (vLLM, Triton) have them.
_SERVER_HEADINGS = {"server_mean_ttft_ms": "srv ttft mean", "server_mean_queue_ms": "srv queue"}
_SERVER = "the server's own count (its /metrics), warm-up included"

TABLE: tuple[Metric, ...] = (
    Metric("requests", "", "higher", "measured requests (warm-up excluded)", heading="req", column=True,
           fmt="{:.0f}", extra_info=True, gauge="aifactory_requests_total", labels=()),
    Metric("completed", "", "higher", "requests completed without error", extra_info=True),
    Metric("errors", "", "lower", "requests that failed", gauge="aifactory_request_errors_total", labels=()),
    Metric("error_rate", "", "lower", "failed / measured requests", heading="err%", column=True, fmt="{:.1%}",
           compare=True, extra_info=True, gauge="aifactory_error_ratio", labels=()),
    Metric("duration_s", "s", "lower", "measured window: first scheduled send to last end"),
    Metric("request_s", "req/s", "higher", "completed requests per second", heading="req/s", column=True,
           compare=True, extra_info=True, gauge=_RATE, labels=("completed",)),
    Metric("output_tok_s", "tok/s", "higher", "output tokens per second", _LLM, heading="tok/s", compare=True,
           extra_info=True, gauge=_TOKENS, labels=("output",)),
    *(row for latency in LATENCIES for row in latency.rows()),
    Metric("offered_rate", "req/s", "higher", "rate of the schedule (open loop) or of sends (closed)",
           extra_info=True, gauge=_RATE, labels=("offered",)),
    Metric("achieved_rate", "req/s", "higher", "rate at which requests really left the client",
           extra_info=True, gauge=_RATE, labels=("achieved",)),
    Metric("client_cpu_cores", "cores", "lower", "CPU the load generator's processes used over the load"),
    Metric("loop_cpu_cores", "cores", "lower", "CPU of the busiest event-loop thread (at 1 the client is the limit)"),
    Metric("loop_stall_max_ms", "ms", "lower", "longest event-loop stall of the load generator"),
    Metric("client_bound", "", "lower", "1 when the load generator, not the service, was the limit", extra_info=True),
    Metric("total_tok_s", "tok/s", "higher", "input + output tokens per second", _LLM, gauge=_TOKENS,
           labels=("total",)),
    Metric("goodput_s", "req/s", "higher", "requests meeting every per-request SLO, per second", _LLM,
           gauge=_RATE, labels=("goodput",)),
    Metric("goodput_fraction", "", "higher", "share of requests meeting every per-request SLO", _LLM,
           compare=True, extra_info=True, gauge="aifactory_goodput_ratio", labels=()),
    Metric("mean_input_tokens", "tok", "higher", "mean input tokens per request", _LLM),
    Metric("sessions", "", "higher", "conversation sessions measured (warm-up excluded)", _LLM),
    Metric("sessions_completed", "", "higher", "conversation sessions whose every turn completed", _LLM),
    Metric("mean_turns", "", "higher", "mean turns per completed session", _LLM),
    Metric("p50_ttft_vs_unique", "", "lower", "p50 TTFT with shared prefixes over that with unique ones", _LLM),
    Metric("inputs_s", "inputs/s", "higher", "embedding inputs per second", _LLM),
    Metric("input_tok_s", "tok/s", "higher", "embedding input tokens per second (server usage)", _LLM),
    Metric("mean_output_tokens", "tok", "higher", "mean output tokens per request", _LLM),
    *(
        Metric(f"server_{stat}_{stem}_ms", "ms", "lower", f"server-side {stat} of the {text} (its /metrics histogram)",
               _LLM, heading=_SERVER_HEADINGS.get(f"server_{stat}_{stem}_ms", ""),
               extra_info=f"server_{stat}_{stem}_ms" in _SERVER_HEADINGS)
        for stem, text in SERVER_LATENCIES.items() for stat in SERVER_STATS
    ),
    Metric("ttft_client_overhead_ms", "ms", "lower", "mean client TTFT minus mean server TTFT: network, HTTP, client",
           _LLM, heading="ttft-srv", extra_info=True),
    Metric("server_requests", "", "higher", f"requests the server finished: {_SERVER}", _LLM),
    Metric("server_preemptions", "", "lower", f"requests the server preempted: {_SERVER}", _LLM),
    Metric("prefix_cache_hit_rate", "", "higher", "prefix-cache hits / queries (tokens) during the point", _LLM,
           heading="prefix hit", fmt="{:.1%}", extra_info=True),
    Metric("kv_cache_usage", "", "lower", "peak KV-cache usage (fraction of its blocks) during the point", _LLM,
           fmt="{:.1%}", extra_info=True),
    Metric("server_max_running", "", "higher", "most requests the server ran at once (sampled)", _LLM),
    Metric("server_max_waiting", "", "lower", "most requests waiting in the server's queue (sampled)", _LLM),
    Metric("recall_at_1", "", "higher", "mean recall@1 over the queries", _VECTOR),
    Metric("recall_at_10", "", "higher", "mean recall@10 over the queries", _VECTOR, heading="recall@10",
           fmt="{:.3f}", compare=True, extra_info=True, dashboard=True),
    Metric("recall_at_100", "", "higher", "mean recall@100 over the queries", _VECTOR),
    *(Metric(f"min_recall_at_{k}", "", "higher", f"lowest per-query recall@{k}", _VECTOR) for k in (1, 10, 100)),
    Metric("insert_vec_s", "vec/s", "higher", "vectors inserted per second (load phase)", _VECTOR,
           heading="insert vec/s", compare=True),
    Metric("index_build_s", "s", "lower", "index build (and flush) time", _VECTOR, compare=True),
    Metric("mib_s", "MiB/s", "higher", "payload MiB moved per second", ("objectstore",), heading="MiB/s",
           compare=True, extra_info=True, dashboard=True),
    Metric("bw_mib_s", "MiB/s", "higher", "fio bandwidth", _FILES, heading="MiB/s", compare=True, extra_info=True),
    Metric("iops", "IOPS", "higher", "fio I/O operations per second", _FILES, heading="IOPS", compare=True,
           extra_info=True, dashboard=True),
    *(
        Metric(f"{op}_s", "ops/s", "higher", f"metadata {op} operations per second", _FILES, heading=f"{op}/s",
               compare=True)
        for op in ("create", "stat", "remove")
    ),
    # energy (workloads.energy): absent where no source gives it, never 0
    Metric("energy_j", "J", "lower", f"energy {_NODE}: RAPL + NVML, else Slurm's (energy_source)", extra_info=True,
           gauge=_ENERGY, labels=("total",)),
    Metric("energy_rapl_j", "J", "lower", f"CPU package energy (RAPL) {_NODE}", gauge=_ENERGY, labels=("rapl",)),
    Metric("energy_nvml_j", "J", "lower", "energy of the service's GPUs over the point (NVML)", gauge=_ENERGY,
           labels=("nvml",)),
    Metric("energy_sacct_j", "J", "lower", "Slurm's ConsumedEnergy of the service's job over the point",
           gauge=_ENERGY, labels=("sacct",)),
    Metric("j_per_request", "J", "lower", "energy per completed request (mean power / request_s)", _LLM,
           heading="J/req", extra_info=True, gauge=_PER_UNIT, labels=("request",)),
    Metric("j_per_output_token", "J", "lower", "energy per output token (mean power / output_tok_s)", _LLM,
           heading="J/tok", extra_info=True, gauge=_PER_UNIT, labels=("output_token",)),
    Metric("j_per_query", "J", "lower", "energy per completed query (mean power / request_s)", _VECTOR,
           heading="J/query", extra_info=True, gauge=_PER_UNIT, labels=("query",)),
    Metric("j_per_transaction", "J", "lower", "energy per transaction (mean power / request_s)", ("database",),
           heading="J/txn", extra_info=True, gauge=_PER_UNIT, labels=("transaction",)),
    Metric("j_per_gib", "J", "lower", "energy per GiB moved (mean power / GiB/s)", ("objectstore",),
           heading="J/GiB", extra_info=True, gauge=_PER_UNIT, labels=("gib",)),
    Metric("capacity_rate", "req/s", "higher", "highest offered rate at which every SLO held (capacity search)",
           heading="capacity req/s", compare=True, extra_info=True),
    Metric("capacity_concurrency", "", "higher", "highest concurrency at which every SLO held (capacity search)",
           heading="capacity conc", compare=True, extra_info=True),
    Metric("transient_requests", "", "lower", "leading requests cut as warm-up transient (MSER-5)"),
)

# fmt: on
METRICS: Mapping[str, Metric] = {metric.name: metric for metric in TABLE}
