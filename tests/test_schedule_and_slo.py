"""Arrival schedules (mean rate, burstiness, determinism) and the SLO grammar and messages."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pytest_aifactory.core.slo import SLOBreach, SLOError, assert_slo, check, parse_slo
from pytest_aifactory.load.engine import LoadPlan
from pytest_aifactory.load.schedule import Arrivals, arrival_times
from pytest_aifactory.load.workers import split_plan


@pytest.mark.parametrize("distribution", ["poisson", "gamma", "constant"])
def test_mean_rate(distribution: str) -> None:
    times = arrival_times(Arrivals(200.0, distribution, 0.5, seed=3), count=20000)  # type: ignore[arg-type]
    gaps = np.diff(times)
    assert times[0] == 0.0
    assert 1 / gaps.mean() == pytest.approx(200.0, rel=0.03)


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)])
def test_burstiness_sets_the_spread_of_gaps(burstiness: float, cv: float) -> None:
    # Gamma gaps with shape k have a coefficient of variation of 1/sqrt(k).
    gaps = np.diff(arrival_times(Arrivals(100.0, "gamma", burstiness, seed=1), count=40000))
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_constant_arrivals_are_exact() -> None:
    assert arrival_times(Arrivals(4.0, "constant"), count=4) == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_schedule_is_seeded_and_duration_bounded() -> None:
    a = arrival_times(Arrivals(50.0, seed=7), duration_s=10.0)
    assert a == arrival_times(Arrivals(50.0, seed=7), duration_s=10.0)
    assert a != arrival_times(Arrivals(50.0, seed=8), duration_s=10.0)
    assert max(a) < 10.0
    assert len(a) == pytest.approx(500, rel=0.15)


def test_bad_schedule_parameters() -> None:
    with pytest.raises(ValueError, match="arrival rate must be > 0"):
        Arrivals(0.0)
    with pytest.raises(ValueError, match="unknown arrival distribution 'uniform'; valid: poisson, gamma, constant"):
        Arrivals(1.0, "uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one of count and duration_s"):
        LoadPlan("open", Arrivals(1.0))


def test_workers_share_one_schedule() -> None:
    plan = LoadPlan("open", Arrivals(100.0, seed=2), count=100)
    shards = split_plan(object(), object(), plan, 3)  # type: ignore[arg-type]
    merged = sorted(item for shard in shards for item in shard.schedule or [])
    assert merged == plan.schedule()
    closed = split_plan(object(), object(), LoadPlan("closed", concurrency=5, count=11), 2)  # type: ignore[arg-type]
    assert [s.plan.concurrency for s in closed] == [3, 2]
    assert [s.plan.count for s in closed] == [6, 5]


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("p99_ttft_ms <= 500", "p99_ttft_ms", "<=", 500.0),
        ("output_tok_s>=100", "output_tok_s", ">=", 100.0),
        ("  error_rate < 1e-2 ", "error_rate", "<", 0.01),
        ("goodput_fraction > .9", "goodput_fraction", ">", 0.9),
        ("errors == 0", "errors", "==", 0.0),
    ],
)
def test_slo_grammar(text: str, metric: str, op: str, threshold: float) -> None:
    slo = parse_slo(text)
    assert (slo.metric, slo.op, slo.threshold) == (metric, op, threshold)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99_ttft_ms <== 500", "malformed SLO 'p99_ttft_ms <== 500': expected 'METRIC OP NUMBER'"),
        ("p99_ttft_ms <= fast", "malformed SLO"),
        ("p99_ttft <= 500", "unknown metric 'p99_ttft' in SLO 'p99_ttft <= 500' (did you mean p99_ttft_ms"),
        ("latency_p99 <= 5", "(did you mean p99_latency_ms or "),
        ("speed <= 5", "'speed <= 5'; every metric is declared, with its unit and meaning, in "),
    ],
)
def test_slo_errors_name_expression_and_where_the_metrics_are(text: str, message: str) -> None:
    with pytest.raises(SLOError) as info:
        parse_slo(text)
    assert message in str(info.value)
    assert len(str(info.value)) < 300, str(info.value)  # close matches, not the ~300 metric names


def test_data_family_metrics_parse_with_only_the_core_imported() -> None:
    # they used to be registered when a workload module was imported; now the metric table declares them
    code = (
        "import sys; from pytest_aifactory.core.slo import parse_slo\n"
        "for text in ('mib_s >= 100', 'recall_at_10 >= 0.95', 'bw_mib_s > 1', 'create_s > 1', 'index_build_s < 9'):\n"
        "    parse_slo(text)\n"
        "assert not any(name.startswith('pytest_aifactory.workloads') for name in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_slo_units_come_from_the_metric_table() -> None:
    (verdict,) = check([parse_slo("mib_s >= 100")], {"mib_s": 42.0})
    assert verdict.message() == "mib_s=42 MiB/s, expected >= 100 MiB/s"


def test_breach_messages_list_every_breach() -> None:
    slos = [parse_slo("p99_ttft_ms <= 500"), parse_slo("output_tok_s >= 100"), parse_slo("error_rate <= 0.01")]
    verdicts = check(slos, {"p99_ttft_ms": 812.4, "output_tok_s": 93.1, "error_rate": 0.0})
    assert [v.passed for v in verdicts] == [False, False, True]
    assert verdicts[0].message() == "p99_ttft=812.4 ms, expected <= 500 ms"
    assert verdicts[1].message() == "output_tok_s=93.1 tok/s, expected >= 100 tok/s"


def test_missing_metric_is_a_breach_not_a_pass() -> None:
    (verdict,) = check([parse_slo("p99_ttft_ms <= 500")], {"p99_ttft_ms": float("nan")})
    assert not verdict.passed
    assert verdict.message() == "p99_ttft=nan (no data) ms, expected <= 500 ms"


def test_assert_slo_raises_with_all_breaches() -> None:
    class Result:
        label = "rate=8/s"

        def metrics(self) -> dict[str, float]:
            return {"p99_ttft_ms": 900.0, "error_rate": 0.2}

    with pytest.raises(SLOBreach) as info:
        assert_slo(Result(), "p99_ttft_ms <= 500", "error_rate <= 0.01")
    text = str(info.value)
    # the first line is all pytest's short summary keeps: it names the breached objectives
    assert text.splitlines()[:2] == ["SLO breached: p99_ttft_ms <= 500, error_rate <= 0.01", "2 SLO breach(es):"]
    assert "[rate=8/s] p99_ttft=900 ms, expected <= 500 ms" in text
    assert "[rate=8/s] error_rate=0.2, expected <= 0.01" in text
