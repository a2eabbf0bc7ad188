"""pytest-benchmark histories of load results, and the baseline regression gate."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import run_pytest

pytestmark = pytest.mark.timeout(300)

SUITE = """
import os

def test_stream(aif_service, aif_load):
    server = aif_service("synthetic-llm", ttft_ms=float(os.environ["TTFT_MS"]), itl_ms=1.0)
    aif_load.sweep("concurrency", [1, 2], aif_load.openai, server, prompts="synthetic:in=4,out=4", count=30)
"""


def run(pytester: pytest.Pytester, ttft_ms: float, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(pytester.path, "--benchmark-storage=file://./hist", *args, env={"TTFT_MS": str(ttft_ms)})


def test_runs_land_in_pytest_benchmark_storage_and_compare(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    first = run(pytester, 5, "--benchmark-autosave", "--aif-run-id=one")
    assert first.returncode == 0, first.stdout[-3000:]
    (saved,) = list((pytester.path / "hist").rglob("0001_*.json"))
    data = json.loads(saved.read_text())
    assert data["machine_info"]["node"] == "local:local"  # the profile, not the hostname
    assert data["aifactory_run_id"] == "one"
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["test_stream[concurrency=1]", "test_stream[concurrency=2]"]
    bench = data["benchmarks"][0]
    assert bench["stats"]["rounds"] == 30  # one sample per request
    assert 0.005 < bench["stats"]["median"] < 1.0
    assert bench["extra_info"]["completed"] == 30
    assert "p99_ttft_ms" in bench["extra_info"]
    assert "benchmark 'test_stream'" not in first.stdout  # its OPS (1 / mean latency) is not our throughput

    same = run(pytester, 5, "--benchmark-autosave", "--benchmark-compare", "--benchmark-compare-fail=mean:400%")
    assert same.returncode == 0, same.stdout[-3000:]
    assert "benchmark 'test_stream'" in same.stdout  # its comparison table, asked for
    slower = run(pytester, 80, "--benchmark-compare=0001", "--benchmark-compare-fail=mean:100%")
    assert slower.returncode != 0
    assert "Performance has regressed" in slower.stdout + slower.stderr

    cli = subprocess.run(
        ["pytest-benchmark", "--storage", "file://./hist", "compare", "0001", "0002"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "test_stream[concurrency=1]" in cli.stdout


def test_baseline_gate_on_our_metrics(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    base = run(pytester, 5, "--aif-run-id=base", "--aif-results-dir=res")
    assert base.returncode == 0, base.stdout[-3000:]
    ok = run(pytester, 5, "--aif-results-dir=res", "--aif-baseline=base", "--aif-regression-margin=300")
    assert ok.returncode == 0, ok.stdout[-3000:]
    worse = run(pytester, 80, "--aif-results-dir=res", "--aif-baseline=base", "--aif-regression-margin=50")
    assert worse.returncode == 1
    assert "regression(s) against the baseline" in worse.stdout
    assert (
        "] p50_ttft_ms " in worse.stdout
    )  # [point] p50_ttft_ms OLD -> NEW (+x %, interval [...] %, beyond 50 % margin)
    assert "beyond 50 % margin)" in worse.stdout
    bad = run(pytester, 5, "--aif-baseline=nope")
    assert bad.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--aif-baseline: no report at 'nope'" in bad.stderr
