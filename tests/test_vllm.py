"""A real vLLM (CPU build, tiny generated Llama) started by the project's fixtures: one start.

It takes 25-45 s to start and about 2 GB, so one test drives every check on one instance:
a known load, the server's scraped metrics against what the client saw, its figures so far in
the live snapshots, and a clean stop.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aifactory.jobs.processes import group_members
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, read_json
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.plugin.fixtures import ServiceFactory
from pytest_aifactory.workloads.runner import LoadRunner
from pytest_aifactory.workloads.server_metrics import VLLM_HISTOGRAMS, scraper_for

pytestmark = pytest.mark.timeout(1200)  # the start alone takes minutes on a shared machine

SHM = Path("/dev/shm")


def _leftovers() -> set[Path]:
    return {*SHM.glob("psm_*"), *Path("/tmp").glob("vllm_dist_*")}


def test_vllm_serves_measures_and_stops_clean(aif_service: ServiceFactory) -> None:
    before = _leftovers()
    service = aif_service("vllm")
    endpoint = read_json(service.folder / ENDPOINT_FILE)
    assert endpoint is not None
    pid = int(endpoint["pid"])
    assert len(group_members(pid)) >= 3  # the API server, the engine core, its worker (and a resource tracker)
    held = {*SHM.glob("psm_*")} - before
    assert held, "vLLM's shared-memory segments are where the test looks for them"

    scraper = scraper_for(service)
    assert scraper is not None
    start = scraper.scrape()
    result = LoadRunner().openai(service, prompts="synthetic:in=32:64,out=16", concurrency=4, count=24)
    end = scraper.scrape()
    m = result.metrics()
    assert m["completed"] == 24
    assert m["mean_output_tokens"] == 16  # ignore_eos + min_tokens: exactly max_tokens
    assert not any(r.tokens_estimated for r in result.records)  # per-chunk usage: exact counts
    assert m["server_requests"] == m["requests"]
    assert m["server_mean_ttft_ms"] <= m["mean_ttft_ms"]
    assert m["ttft_client_overhead_ms"] == pytest.approx(m["mean_ttft_ms"] - m["server_mean_ttft_ms"])
    assert 0 <= m["kv_cache_usage"] <= 1  # sampled: a short point may show none in use
    assert 0 <= m["prefix_cache_hit_rate"] <= 1
    assert m["server_max_waiting"] >= 0
    series = result.server_series  # vLLM's gauges at every scrape of the point, for the report
    assert {"started_at", "t", "kv_cache_usage", "running", "waiting"} <= set(series)
    assert len(series["t"]) >= 2  # the start and end scrapes at least
    assert all(0 <= u <= 1 for u in series["kv_cache_usage"])
    # Server TTFT <= client TTFT at every percentile: at every bucket edge, at least the client's
    # share of requests had their first token within it on the server.
    server = end.histogram(start, VLLM_HISTOGRAMS["ttft"])
    assert server is not None
    assert server.count == 24
    client = sorted((r.first_token - r.scheduled) for r in result.records)  # type: ignore[operator]
    for edge in server.edges[:-1]:
        assert server.fraction_within(edge) >= sum(t <= edge for t in client) / len(client), edge

    seen: list[Progress] = []  # the live snapshots, as the live push gets them
    live = LoadRunner(progress=lambda label: seen.append).openai(
        service, prompts="synthetic:in=16,out=16", rate=8, duration_s=3
    )
    so_far = [p.server for p in seen if p.server]
    assert so_far, "no live snapshot carried vLLM's figures"
    assert {"kv_cache_usage", "server_max_running", "server_max_waiting", "server_requests"} <= set(so_far[-1])
    assert 0 < so_far[-1]["server_requests"] <= live["requests"]

    chat = LoadRunner().openai_chat(service, prompts="synthetic:in=16,out=8", concurrency=2, count=6)
    assert chat["mean_output_tokens"] == 8
    assert chat["server_requests"] == 6
    for r in chat.records:  # every chunk carries a token (none for the role-only first delta)
        assert sum(c.tokens for c in r.chunks) == 8
        assert min(c.tokens for c in r.chunks) >= 1

    aif_service.stop(service)
    assert group_members(pid) == []
    assert not (held & _leftovers()), "shared memory or /tmp files left behind"
    assert (service.folder / "work" / "vllm-cache").is_dir()  # VLLM_CACHE_ROOT in the job's scratch folder
