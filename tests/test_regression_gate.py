"""The noise-aware regression gate (``--aif-baseline``, ``aifactory compare``); it refuses non-comparable runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_aifactory.export.compare import compare_reports, differences
from tests.helpers import aifactory, run_pytest

pytestmark = pytest.mark.timeout(600)  # four pytest runs: about 40 s on a quiet machine


def report(run_id: str, metrics: dict[str, float], intervals: dict[str, list[float]], **config: Any) -> dict[str, Any]:
    result = {"label": "rate=20/s", "mode": "open", "config": config, "metrics": metrics, "intervals": intervals}
    test = {"nodeid": "b/test_llm.py::test_llm", "markers": ["inference"], "results": [{**result, "error_samples": []}]}
    return {"schema_version": 2, "run_id": run_id, "tests": [test]}


def _change(old: dict[str, Any], new: dict[str, Any], margin: float = 0.05) -> Any:
    (change,) = [c for c in compare_reports(old, new, margin) if c.metric == "p99_ttft_ms"]
    return change


def test_a_regression_is_beyond_the_margin_and_the_noise() -> None:
    old = report("a", {"p99_ttft_ms": 212.0}, {"p99_ttft_ms": [205.0, 220.0]})
    new = report("b", {"p99_ttft_ms": 251.0}, {"p99_ttft_ms": [245.0, 258.0]})
    change = _change(old, new)
    assert change.regression
    assert change.message() == "[rate=20/s] p99_ttft_ms 212 -> 251 (+18 %, interval [+11, +26] %, beyond 5 % margin)"
    noisy = report("c", {"p99_ttft_ms": 251.0}, {"p99_ttft_ms": [150.0, 400.0]})
    assert not _change(old, noisy).regression  # beyond the margin, within the noise
    assert "interval [-32, +95] %, within 5 % margin" in _change(old, noisy).message()
    close = report("d", {"p99_ttft_ms": 219.0}, {"p99_ttft_ms": [218.0, 219.5]})
    assert not _change(old, close).regression  # beyond the noise, within the margin
    bare = report("e", {"p99_ttft_ms": 251.0}, {})
    assert _change(old, bare).regression  # a report without intervals: the margin alone decides, and says so
    assert "no interval: margin only" in _change(old, bare).message()
    few = {**report("f", {"p99_ttft_ms": 251.0}, {})}
    few["tests"][0]["results"][0]["interval_method"] = "over requests"
    for run in (old, few):
        run["tests"][0]["results"][0]["interval_method"] = "over requests"
    assert not _change(old, few).regression  # runs with intervals, and this p99 had too few samples for one
    assert "too few samples for an interval: not judged" in _change(old, few).message()


def test_non_comparable_runs_name_the_differing_field() -> None:
    old = report("a", {"p99_ttft_ms": 1.0}, {}, service_version="1", model="m", seed=1)
    new = report("b", {"p99_ttft_ms": 1.0}, {}, service_version="2", model="m", seed=2)
    old["provenance"] = {"profile": {"name": "local", "partition": None, "images": {"vllm": "vllm:0.10"}}}
    new["provenance"] = {"profile": {"name": "local", "partition": "gpu", "images": {"vllm": "vllm:0.11"}}}
    assert differences(old, new) == [
        "image of vllm differs: 'vllm:0.10' in a, 'vllm:0.11' in b",
        "service version differs: '1' in a, '2' in b (at test_llm [rate=20/s])",
    ]  # a partition unknown in one run, and seeds, do not make runs incomparable
    assert differences(old, old) == []


SUITE = """
import os

def test_point(aif_service, aif_load):
    server = aif_service("slotted-llm", slots=4, service_ms=100.0, slowdown=float(os.environ["SLOWDOWN"]),
                         version=os.environ["VERSION"])
    aif_load.openai(server, prompts="synthetic:in=4,out=2", rate=20, count=60, warmup=3, distribution="constant")
"""


def _run(path: Path, run_id: str, slowdown: float, version: str, *args: str) -> Any:
    env = {"SLOWDOWN": str(slowdown), "VERSION": version}
    return run_pytest(path, f"--aif-run-id={run_id}", "--aif-results-dir=res", *args, env=env)


def test_gate_passes_the_same_service_fails_a_slowdown_and_refuses_another_version(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    gate = ("--aif-baseline=base", "--aif-regression-margin=10")
    assert _run(pytester.path, "base", 1.0, "1").returncode == 0
    same = _run(pytester.path, "same", 1.0, "1", *gate)
    assert same.returncode == 0, same.stdout[-3000:]
    slower = _run(pytester.path, "slower", 1.3, "1", *gate)
    assert slower.returncode == 1
    assert "regression(s) against the baseline" in slower.stdout
    assert "[rate=20/s] p50_latency_ms 1" in slower.stdout  # about 100 -> 130 ms
    assert "beyond 10 % margin)" in slower.stdout
    other = _run(pytester.path, "other", 1.0, "2", *gate)
    assert other.returncode == 1
    assert "not comparable with the baseline base:\n  service version differs: '1' in base, '2' in other" in (
        other.stdout
    )
    reports = pytester.path / "res"
    cli = aifactory("compare", str(reports / "base" / "report.json"), str(reports / "slower" / "report.json"))
    assert cli.returncode == 1, cli.stdout
    assert "regression(s) beyond the 5 % margin and the noise:" in cli.stdout
    refused = aifactory("compare", str(reports / "base" / "report.json"), str(reports / "other" / "report.json"))
    assert refused.returncode == 2
    assert refused.stdout.splitlines()[:2] == [
        "not comparable: base and other",
        "  service version differs: '1' in base, '2' in other (at test_point [rate=20/s])",
    ]
    base = json.loads((reports / "base" / "report.json").read_text())
    assert base["tests"][0]["results"][0]["config"]["service_version"] == "1"
