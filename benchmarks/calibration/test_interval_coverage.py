"""Calibration: do the confidence intervals cover the true value at their nominal 95 %?

Two checks. Simulated: latencies drawn from a known distribution (exponential, mean 10 ms),
so the true p50, p99 and mean are exact; thousands of simulated runs. Measured: the synthetic
server (fixed first-token delay and token interval) driven by the real engine, RUNS short
runs; its true value is unknown, so the pooled estimate over all runs (RUNS times the data
of one) stands for it. For each: the share of single-run intervals (over requests: order
statistics for percentiles, t for the mean) that contain the truth, and the share of
Student t intervals over REPEATS repeats. Run: ``pytest benchmarks/calibration -m calibration -s -k coverage``
(``--readme-figures`` writes the table into README.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from pytest_aifactory.core.confidence import quantile_interval, t_interval
from pytest_aifactory.core.metrics import LoadResult

RUNS, REPEATS, SIMULATED = 80, 5, 2000
STATS = {"p50": 0.5, "p99": 0.99, "mean": None}


def _single(values: np.ndarray, stat: str) -> tuple[float, float] | None:
    ordered = np.sort(values)
    quantile = STATS[stat]
    return t_interval(ordered) if quantile is None else quantile_interval(ordered, quantile)


def _estimate(values: np.ndarray, stat: str) -> float:
    quantile = STATS[stat]
    return float(values.mean()) if quantile is None else float(np.quantile(values, quantile))


def _repeats_coverage(groups: Sequence[Sequence[np.ndarray]], stat: str, truth: float) -> float:
    """Share of Student t intervals over each group's per-run estimates that contain ``truth``."""
    intervals = [t_interval([_estimate(r, stat) for r in group]) for group in groups]
    hits = [lo <= truth <= hi for lo, hi in (i for i in intervals if i is not None)]
    return sum(hits) / len(hits) if hits else math.nan


def _coverage(runs: Sequence[np.ndarray], stat: str, truth: float) -> tuple[float, float, float, float]:
    """Single-run coverage, repeats coverage (consecutive runs, and runs spread over the session), bounded share."""
    singles = [_single(r, stat) for r in runs]
    bounded = [i for i in singles if i is not None and math.isfinite(i[0]) and math.isfinite(i[1])]
    single = sum(lo <= truth <= hi for lo, hi in bounded) / len(bounded) if bounded else math.nan
    count = len(runs) // REPEATS
    consecutive = [runs[i * REPEATS : (i + 1) * REPEATS] for i in range(count)]
    spread = [runs[i : count * REPEATS : count] for i in range(count)]  # one run from each fifth of the session
    return (
        single,
        _repeats_coverage(consecutive, stat, truth),
        _repeats_coverage(spread, stat, truth),
        len(bounded) / len(singles),
    )


def _rows(name: str, runs: Sequence[np.ndarray], truths: dict[str, float]) -> list[str]:
    rows = []
    for stat, truth in truths.items():
        single, consecutive, spread, bounded = _coverage(runs, stat, truth)
        rows.append(
            f"| {name} | {stat} | {len(runs)} x {len(runs[0])} | {truth:.3f} | {single:.3f} | {bounded:.2f} | "
            f"{consecutive:.3f} | {spread:.3f} ({len(runs) // REPEATS} groups) |"
        )
    return rows


@pytest.fixture(scope="module")
def steady_server(aif_shared_service):
    return aif_shared_service("synthetic-llm", ttft_ms=20.0, itl_ms=5.0)


@pytest.mark.timeout(1200)  # 80 runs of 2 s and 2000 simulated ones
def test_interval_coverage(steady_server, aif_load, aif_run, readme_figures, capsys):
    load_average = os.getloadavg()[0]
    rng = np.random.default_rng(12)
    simulated = [rng.exponential(10.0, 400) for _ in range(SIMULATED)]
    exact = {"p50": 10.0 * math.log(2), "p99": 10.0 * math.log(100), "mean": 10.0}
    measured: list[LoadResult] = [
        aif_load.openai(
            steady_server,
            prompts="synthetic:in=16,out=4",
            rate=100,
            distribution="poisson",
            count=200,
            warmup=10,
            seed=run,
            label=f"run {run}",
        )
        for run in range(RUNS)
    ]
    samples = [np.asarray([(r.end - r.scheduled) * 1000 for r in m.records if r.ok and not r.warmup]) for m in measured]
    pooled = np.concatenate(samples)
    truths = {stat: _estimate(pooled, stat) for stat in STATS}
    table = "\n".join(
        [
            readme_figures.provenance(
                "pytest benchmarks/calibration/test_interval_coverage.py -m calibration -s --readme-figures",
                load_average,
            ),
            "",
            "| data | statistic | runs x requests | truth (ms) | single-run coverage | bounded | "
            f"{REPEATS}-repeat coverage, consecutive runs | {REPEATS}-repeat coverage, runs spread over the session |",
            "|---|---|---|---|---|---|---|---|",
            *_rows("simulated exponential(10 ms)", simulated, exact),
            *_rows("synthetic server e2e (truth: pooled)", samples, truths),
        ]
    )
    out = Path(aif_run.run_dir) / "interval-coverage.md"
    out.write_text(table + "\n")
    readme_figures.publish("interval-coverage", table)
    with capsys.disabled():
        print(f"\n{table}\n(written to {out})")
    single, *_ = _coverage(simulated, "p50", exact["p50"])
    assert 0.9 <= single <= 0.99, f"order-statistic p50 intervals covered {single:.3f} of simulated runs"
