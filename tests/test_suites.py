"""The shipped benchmark suites, run for real as a user runs them (local and on Slurm)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run_pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(900)


def run_suite(tmp_path: Path, marker: str, profile: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(ROOT, "benchmarks", "-m", marker, f"--aif-profile={profile}", f"--aif-results-dir={tmp_path}")


@pytest.mark.parametrize("profile", ["local", pytest.param("ci-slurm", marks=pytest.mark.slurm)])
def test_inference_suite(tmp_path: Path, profile: str) -> None:
    done = run_suite(tmp_path, "inference", profile)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "aifactory results (latencies in ms)" in done.stdout
    for test in (
        "test_rate_sweep_goodput",
        "test_concurrency_sweep",
        "test_long_prompt_prefill",
        "test_generate_stream",
        "test_rag_pipeline",
        "test_shared_prefix_lowers_ttft",
        "test_conversations",
        "test_trace_replay",
        "test_embeddings_batch_sweep",
    ):
        assert test in done.stdout
    assert " FAIL(" not in done.stdout


@pytest.mark.slurm
@pytest.mark.timeout(1800)
def test_llm_suite_on_vllm(tmp_path: Path) -> None:
    """The unchanged LLM suite on a real vLLM as a Slurm job; its own TTFT and queue time in the table."""
    done = run_pytest(
        ROOT,
        "benchmarks/inference/test_llm.py",
        "--aif-profile=ci-slurm",
        "--aif-llm=vllm",
        f"--aif-results-dir={tmp_path}",
        "--timeout=1200",  # the first test's setup starts vLLM: 25-45 s idle, minutes on a shared machine
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    table = done.stdout[done.stdout.index("aifactory results (latencies in ms)") :]
    for test in ("rate_sweep_goodput", "concurrency_sweep", "long_prompt_prefill", "chat_completions"):
        assert f"test_{test}" in table  # passed, or skipped as inconclusive when the machine starves the client
    assert "srv ttft mean" in table
    assert "srv queue" in table
    assert " FAIL(" not in done.stdout


@pytest.mark.parametrize("profile", ["local", pytest.param("ci-slurm", marks=pytest.mark.slurm)])
@pytest.mark.parametrize("family", ["database", "objectstore", "vectordb", "filestorage"])
def test_data_suites(tmp_path: Path, profile: str, family: str) -> None:
    done = run_suite(tmp_path, family, profile)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "aifactory results (latencies in ms)" in done.stdout
    assert " FAIL(" not in done.stdout


@pytest.mark.parametrize(
    ("profile", "marker"),
    [
        ("meluxina-gpu", "inference"),
        ("meluxina-cpu", "database or objectstore or vectordb or filestorage"),
        ("meluxina-largemem", "database or objectstore or vectordb or filestorage"),
    ],
)
def test_suites_collect_on_meluxina_profiles(profile: str, marker: str) -> None:
    """Every threshold the selected suites name is set by the cluster profile (checked without a cluster)."""
    done = run_pytest(ROOT, "benchmarks", "-m", marker, f"--aif-profile={profile}", "--collect-only", "-q")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tests collected" in done.stdout
