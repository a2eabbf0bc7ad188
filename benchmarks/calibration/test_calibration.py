"""Calibration: how honest is the load engine on this machine?

A synthetic OpenAI-compatible server with known timing (first token 20 ms after the request
arrives, then a token every 5 ms) is driven at rising rates, by one worker process and by
four. For each rate: achieved/target rate, schedule lag p99, and measured-minus-true TTFT
(p50, p99); then the highest rate each setup sustains (achieved/target >= 0.99 and lag
p99 <= 2 ms). Arrivals are constant, so that the
offered rate equals the target and the ratio measures the client alone.
Run: ``pytest benchmarks/calibration -m calibration -s``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TTFT_MS, ITL_MS = 20.0, 5.0
RATES = [100, 200, 300, 400, 500, 600, 800]


@pytest.fixture(scope="module")
def calibrated_server(aif_shared_service):
    return aif_shared_service("synthetic-llm", ttft_ms=TTFT_MS, itl_ms=ITL_MS)


def _sustains(m: dict[str, float], rate: float) -> bool:
    return m["achieved_rate"] / rate >= 0.99 and m["p99_lag_ms"] <= 2.0


@pytest.mark.parametrize("workers", [1, 4])
def test_engine_calibration(calibrated_server, aif_load, aif_run, capsys, workers):
    rows, best = [], 0
    for rate in RATES:
        result = aif_load.openai(
            calibrated_server,
            prompts="synthetic:in=16,out=4",
            rate=rate,
            distribution="constant",  # offered == target: the ratio measures the client alone
            duration_s=4.0,
            warmup=rate // 2,
            workers=workers,
            label=f"workers={workers} rate={rate}",
        )
        m = result.metrics()
        ok = _sustains(m, rate)
        best = rate if ok else best
        rows.append(
            f"| {workers} | {rate} | {m['achieved_rate'] / rate:.3f} | {m['p99_lag_ms']:.2f} | "
            f"{m['p50_ttft_ms'] - TTFT_MS:.2f} | {m['p99_ttft_ms'] - TTFT_MS:.2f} | {'yes' if ok else 'no'} |"
        )
    table = "\n".join(
        [
            "| workers | target req/s | achieved/target | lag p99 ms | TTFT err p50 ms | TTFT err p99 ms | sustained |",
            "|---|---|---|---|---|---|---|",
            *rows,
            f"\nHighest sustained rate with {workers} worker(s): {best} req/s",
        ]
    )
    out = Path(aif_run.run_dir) / f"calibration-workers{workers}.md"
    out.write_text(table + "\n")
    with capsys.disabled():
        print(f"\n{table}\n(written to {out})")
    assert best > 0, "the engine sustained none of the rates"
