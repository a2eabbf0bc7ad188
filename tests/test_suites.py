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
    ):
        assert test in done.stdout
    assert " FAIL(" not in done.stdout


@pytest.mark.parametrize("profile", ["local", pytest.param("ci-slurm", marks=pytest.mark.slurm)])
@pytest.mark.parametrize("family", ["database", "objectstore", "vectordb", "filestorage"])
def test_data_suites(tmp_path: Path, profile: str, family: str) -> None:
    done = run_suite(tmp_path, family, profile)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "aifactory results (latencies in ms)" in done.stdout
    assert " FAIL(" not in done.stdout
