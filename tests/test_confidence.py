"""Confidence intervals (bootstrap over requests, t over repeats), pessimistic SLOs and steady state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_aifactory.core.confidence import change_interval, quantile_interval, request_intervals, t_interval
from pytest_aifactory.core.errors import LoadConfigError
from pytest_aifactory.core.metrics import summarize
from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.core.repeats import combine
from pytest_aifactory.core.slo import PESSIMISTIC, SLOBreach, assert_slo, check, parse_slo
from pytest_aifactory.core.steady import cut_transient, mser5
from pytest_aifactory.workloads.runner import LoadRunner, make_plan

pytestmark = pytest.mark.timeout(120)


def _records(latencies_ms: list[float], gap_s: float = 0.01) -> list[RequestRecord]:
    return [
        RequestRecord(i, i * gap_s, sent=i * gap_s, end=i * gap_s + latency / 1000)
        for i, latency in enumerate(latencies_ms)
    ]


def test_mser5_finds_a_planted_ramp_and_leaves_a_flat_run() -> None:
    rng = np.random.default_rng(3)
    flat = rng.normal(50, 5, 1000)
    assert mser5(list(flat)).steady
    assert mser5(list(flat)).cut <= 60  # at most a few batches of noise
    ramp = flat.copy()
    ramp[:200] += np.linspace(200, 0, 200)
    state = mser5(list(ramp))
    assert state.steady
    assert 150 <= state.cut <= 260
    trending = flat + np.linspace(0, 100, 1000)
    assert not mser5(list(trending)).steady


def test_cut_transient_marks_the_ramp_as_warmup() -> None:
    latencies = [300.0 - 2.5 * i for i in range(100)] + [50.0 + (i % 7) for i in range(400)]
    records, state = cut_transient(_records(latencies))
    assert state.cut >= 90
    assert sum(r.warmup for r in records) == state.cut
    assert summarize(records)["p99_e2e_ms"] < 60


def test_request_intervals_cover_the_statistic() -> None:
    rng = np.random.default_rng(0)
    values = list(rng.exponential(10.0, 2000))
    intervals = request_intervals({"latency": values, "lag": values})
    lo, hi = intervals["p99_latency_ms"]
    assert lo < float(np.percentile(values, 99)) < hi
    assert lo < 10.0 * math.log(100) < hi  # the true p99 of the distribution
    assert intervals["mean_latency_ms"][0] < 10.0 < intervals["mean_latency_ms"][1]
    assert not any(name.endswith("_lag_ms") for name in intervals)  # lag is not compared: no interval
    # 100 samples cannot bound a p99 from above (the binomial's 97.5 % point is 100 of 100)
    assert quantile_interval(np.sort(np.asarray(values[:100])), 0.99)[1] == math.inf


def test_t_interval_and_change_interval() -> None:
    lo, hi = t_interval([10.0, 12.0, 11.0]) or (0.0, 0.0)
    assert lo == pytest.approx(11 - 4.303 * 1 / math.sqrt(3), rel=1e-3)
    assert hi == pytest.approx(11 + 4.303 * 1 / math.sqrt(3), rel=1e-3)
    assert t_interval([1.0]) is None
    assert change_interval((100.0, 110.0), (120.0, 130.0)) == pytest.approx((120 / 110 - 1, 130 / 100 - 1))
    assert change_interval((0.0, 1.0), (1.0, 2.0)) is None


def test_pessimistic_slo_uses_the_interval_end_and_says_so() -> None:
    slo = [parse_slo("p99_latency_ms <= 100"), parse_slo("request_s >= 5")]
    metrics = {"p99_latency_ms": 90.0, "request_s": 10.0}
    (latency, rate) = check(slo, metrics, intervals={"p99_latency_ms": (80.0, 120.0)})
    assert not latency.passed
    assert latency.value == 120.0
    assert latency.rule == PESSIMISTIC
    assert "(pessimistic end of the 95 % interval)" in latency.message()
    assert rate.passed
    assert rate.rule == "value (no interval)"
    result = summarize(_records([50.0] * 90 + [99.0] * 10))
    assert_slo(result, "p99_latency_ms <= 100")
    with pytest.raises(SLOBreach, match="pessimistic end"):
        assert_slo(result, "p99_latency_ms <= 99", pessimistic=True)


def test_combine_repeats_means_and_t_intervals() -> None:
    runs = [
        summarize(_records([latency] * 20), config={"schedule_seed": i}) for i, latency in enumerate([10.0, 12.0, 11.0])
    ]
    combined = combine(runs)
    assert combined["p50_latency_ms"] == pytest.approx(11.0)
    assert combined["requests"] == 60
    assert combined.distributions["latency"].count == 60
    assert combined.intervals["p50_latency_ms"] == pytest.approx(t_interval([10.0, 12.0, 11.0]))
    assert combined.interval_method == "Student t over 3 repeats (95%)"
    assert combined.config["seeds"] == [0, 1, 2]
    assert len({r.index for r in combined.records}) == 60
    with pytest.raises(ValueError, match="at least 2 results"):
        combine(runs[:1])


def test_make_plan_warmup_and_repeats_are_checked() -> None:
    assert make_plan(rate=5, count=10, warmup="auto").steady_state
    with pytest.raises(LoadConfigError, match="warmup='some': expected a whole number of requests >= 0, or 'auto'"):
        make_plan(rate=5, count=10, warmup="some")  # type: ignore[arg-type]
    with pytest.raises(LoadConfigError, match="repeats=0: expected a whole number of runs >= 1"):
        make_plan(rate=5, count=10, repeats=0)


@pytest.fixture(scope="module")
def slotted(aif_shared_service):  # type: ignore[no-untyped-def]
    return aif_shared_service("slotted-llm", slots=4, service_ms=40.0)


def test_repeats_and_steady_state_through_the_runner(slotted) -> None:  # type: ignore[no-untyped-def]
    runner = LoadRunner()
    result = runner.openai(slotted, prompts="synthetic:in=4,out=2", rate=20, duration_s=0.5, repeats=3)
    assert [(r.label, r.role) for r in runner.results] == [
        *((f"rate=20/s #{i}", "repeat") for i in (1, 2, 3)),
        ("rate=20/s", "point"),
    ]
    assert result.config["repeats"] == 3
    assert result.config["seeds"] == [0, 1, 2]
    lo, hi = result.intervals["p50_e2e_ms"]
    assert lo <= result["p50_e2e_ms"] <= hi
    assert result.config["service_version"] == "1"
    steady = runner.openai(slotted, prompts="synthetic:in=4,out=2", rate=40, count=40, warmup="auto")
    assert steady.config["steady_state"]["method"].startswith("MSER-5")
    assert steady["requests"] == 40 - steady["transient_requests"]
