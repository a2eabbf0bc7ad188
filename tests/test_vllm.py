"""A real vLLM (CPU build, tiny generated Llama) started by the project's fixtures.

It takes 25-45 s to start and about 2 GB, so each test drives all its checks on one instance:
a known load, the server's scraped metrics against what the client saw, its figures so far in
the live snapshots, and a clean stop; the prefix-cache suite (one vLLM with caching on, one with
it off); a vLLM job killed on Slurm.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from helpers import run_pytest, slurm_services, wait_for

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import load_profile
from pytest_aifactory.jobs.node_files import NODE_FILES, mapped_shared_memory
from pytest_aifactory.jobs.processes import group_members, process_tree
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, read_json
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.plugin.fixtures import ServiceFactory
from pytest_aifactory.services import own_python
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.workloads.runner import LoadRunner
from pytest_aifactory.workloads.server_metrics import VLLM_HISTOGRAMS, scraper_for

pytestmark = pytest.mark.timeout(1200)  # the start alone takes minutes on a shared machine

SHM = Path("/dev/shm")
ROOT = Path(__file__).resolve().parent.parent


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


def test_prefix_caching_on_and_off(tmp_path: Path) -> None:
    """The prefix-cache suite on vLLM, as a user runs it: what the cache is worth reaches the report.

    With caching on, shared prefixes answer measurably sooner than unique ones and the server
    counts cache hits; with it off, it counts none. The suite's prompts on vLLM are long enough
    that their prefill, which the cache saves, outweighs the rest of a request on the tiny model.
    """
    done = run_pytest(
        ROOT,
        "benchmarks/inference/test_prefix_cache.py",
        "--aif-llm=vllm",
        f"--aif-results-dir={tmp_path}",
        "--aif-run-id=prefix",
        "--timeout=1200",
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "prefix" / "report.json").read_text())
    results = {r["label"]: r["metrics"] for test in report["tests"] for r in test["results"]}
    on, off = results["prefix share=1"], results["prefix share=1, caching off"]
    assert on["p50_ttft_vs_unique"] < 0.8
    assert on["prefix_cache_hit_rate"] > 0
    assert results["prefix share=0"].get("prefix_cache_hit_rate", 0) < on["prefix_cache_hit_rate"]
    assert off.get("prefix_cache_hit_rate", 0) == 0
    assert off["p50_ttft_vs_unique"] > on["p50_ttft_vs_unique"]  # without the cache, sharing saves less


@pytest.mark.slurm
def test_a_killed_vllm_job_leaves_nothing_on_its_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM as a Slurm job, SIGKILLed (scancel's escalation): its {tmp} and /dev/shm/psm_* go all the same.

    vLLM may stop within Slurm's KillWait after a plain ``scancel``, so the test sends the
    escalation's SIGKILL itself, to every process of the job step (the job's Python and vLLM's).
    """
    monkeypatch.setenv("AIF_VLLM_API_KEY", "killed-job-key")  # a run generates it; this test makes no run
    manager = slurm_services(tmp_path / "run")
    service = manager.launch(build_spec("vllm", manager.profile))
    try:
        endpoint = read_json(service.folder / ENDPOINT_FILE)
        assert endpoint is not None
        pid = int(endpoint["pid"])
        started = (service.folder / "service.out").read_text().split("[aifactory] start: ")[-1].split()
        tmp = Path(next(word for word in started if word.startswith("TMPDIR=")).removeprefix("TMPDIR="))
        segments = mapped_shared_memory(group_members(pid))
        assert segments, "vLLM's shared-memory segments are where the test looks for them"
        left = [tmp, *map(Path, sorted(segments))]
        wait_for(  # the job looks at what its service maps once a second
            "the job's record of vLLM's shared memory",
            lambda: set(segments) <= set((read_json(service.folder / NODE_FILES) or {}).get("paths", {})),
        )
        job_side = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # vLLM's parent
        step = process_tree(job_side)
        for signum in (signal.SIGSTOP, signal.SIGKILL):  # all at once, as slurmstepd: none reacts to another's end
            for process in step:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process, signum)
        wait_for(
            "the killed job to leave the queue",
            lambda: not manager.backend.status(service.job_id, service.folder).active,
        )
        assert group_members(pid) == []
        assert all(path.exists() for path in left), "the kill let the job clean up: nothing is tested"
        manager.stop(service)
        assert [path for path in left if path.exists()] == []
    finally:
        manager.close()  # the job of a failed check


def test_an_installed_plugin_without_a_vllm_environment_is_told_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No setting, no AIF_VLLM_PYTHON, no .venv-vllm (a wheel user's project): a clear error, not a traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(own_python, "_CHECKOUT", tmp_path)
    monkeypatch.delenv("AIF_VLLM_PYTHON", raising=False)
    profile = load_profile("local")
    with pytest.raises(
        ServiceConfigError, match=r"set services\.vllm\.settings\.python in the profile or AIF_VLLM_PYTHON"
    ):
        build_spec("vllm", profile)
    monkeypatch.setenv("AIF_VLLM_PYTHON", str(tmp_path / "vllm-env" / "bin" / "python"))
    command = build_spec("vllm", profile).command
    assert command[command.index("-m") - 1] == str(tmp_path / "vllm-env" / "bin" / "python")
