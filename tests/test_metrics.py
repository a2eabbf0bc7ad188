"""Every metric formula, on hand-made records with known answers; the metric table as the one declaration."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

import pytest_aifactory
from pytest_aifactory.core.composite import summarize_pipeline, summarize_sessions
from pytest_aifactory.core.metric_table import LATENCIES, METRICS, TABLE, min_samples
from pytest_aifactory.core.metrics import GoodputSLO, LoadResult, itl_per_token, summarize
from pytest_aifactory.core.records import Chunk, RequestRecord, attribute_tokens
from pytest_aifactory.export.compare import key_metrics
from pytest_aifactory.export.prometheus import FINAL_METRICS, final_registry
from pytest_aifactory.plugin.outcomes import format_results
from pytest_aifactory.workloads import files


def rec(
    index: int, scheduled: float, sent: float, chunks: list[tuple[float, int]], end: float, **kw: object
) -> RequestRecord:
    first = chunks[0][0] if chunks else None
    return RequestRecord(
        index=index,
        scheduled=scheduled,
        sent=sent,
        first_token=first,
        end=end,
        chunks=[Chunk(t, n) for t, n in chunks],
        **kw,  # type: ignore[arg-type]
    )


def test_latencies_are_measured_from_the_scheduled_time() -> None:
    # Due at 0.0, sent 10 ms late (client queueing), first token at 0.110, done at 0.210.
    r = rec(0, 0.0, 0.010, [(0.110, 1), (0.160, 1), (0.210, 1)], 0.210, output_tokens=3, input_tokens=7)
    m = summarize([r]).metrics()
    assert m["p50_ttft_ms"] == pytest.approx(110.0)
    assert m["p50_e2e_ms"] == pytest.approx(210.0)
    assert m["p50_lag_ms"] == pytest.approx(10.0)
    assert m["p50_tpot_ms"] == pytest.approx(50.0)  # (0.210 - 0.110) / (3 - 1)
    assert m["mean_itl_ms"] == pytest.approx(50.0)


def test_multi_token_chunk_contributes_one_interval_per_token() -> None:
    # Chunk 2 carries 4 tokens after a 40 ms gap: 4 intervals of 10 ms, not one of 40 ms.
    r = rec(0, 0.0, 0.0, [(0.100, 1), (0.140, 4)], 0.140, output_tokens=5)
    assert itl_per_token(r) == pytest.approx([10.0, 10.0, 10.0, 10.0])
    m = summarize([r]).metrics()
    assert m["mean_itl_ms"] == pytest.approx(m["mean_tpot_ms"])
    assert m["mean_tpot_ms"] == pytest.approx(10.0)


def test_extra_tokens_in_first_chunk_are_zero_intervals() -> None:
    r = rec(0, 0.0, 0.0, [(0.100, 3), (0.130, 1)], 0.130, output_tokens=4)
    assert itl_per_token(r) == pytest.approx([0.0, 0.0, 30.0])
    assert summarize([r]).metrics()["mean_tpot_ms"] == pytest.approx(10.0)


def test_empty_chunks_carry_no_interval() -> None:
    r = rec(0, 0.0, 0.0, [(0.100, 1), (0.120, 0), (0.150, 1)], 0.150, output_tokens=2)
    assert itl_per_token(r) == pytest.approx([50.0])


def test_one_token_output_has_ttft_but_no_tpot_or_itl() -> None:
    r = rec(0, 0.0, 0.0, [(0.080, 1)], 0.090, output_tokens=1)
    result = summarize([r])
    m = result.metrics()
    assert m["p50_ttft_ms"] == pytest.approx(80.0)
    assert math.isnan(m["p50_tpot_ms"])
    assert result.distributions["tpot"].count == 0
    assert result.distributions["itl"].count == 0


def test_errors_count_in_error_rate_not_in_latency() -> None:
    good = rec(0, 0.0, 0.0, [(0.1, 1), (0.2, 1)], 0.2, output_tokens=2)
    bad = RequestRecord(index=1, scheduled=0.5, sent=0.5, end=0.6, error="HTTP 500: boom", status=500)
    result = summarize([good, bad])
    m = result.metrics()
    assert m["error_rate"] == pytest.approx(0.5)
    assert m["completed"] == 1
    assert m["errors"] == 1
    assert result.distributions["e2e"].count == 1
    assert result.error_samples == ["1x HTTP 500: boom"]


def test_throughputs_over_the_measured_window_without_warmup() -> None:
    warm = rec(0, 0.0, 0.0, [(0.5, 10)], 9.0, output_tokens=10, warmup=True)
    a = rec(1, 1.0, 1.0, [(1.1, 1), (1.5, 1)], 1.5, output_tokens=20, input_tokens=100)
    b = rec(2, 2.0, 2.0, [(2.1, 1), (3.0, 1)], 3.0, output_tokens=30, input_tokens=100)
    m = summarize([warm, a, b]).metrics()
    assert m["requests"] == 2
    assert m["duration_s"] == pytest.approx(2.0)  # first scheduled (1.0) to last end (3.0)
    assert m["request_s"] == pytest.approx(1.0)
    assert m["output_tok_s"] == pytest.approx(25.0)
    assert m["total_tok_s"] == pytest.approx(125.0)
    assert m["offered_rate"] == pytest.approx(1.0)


def test_goodput_counts_requests_meeting_every_limit() -> None:
    fast = rec(0, 0.0, 0.0, [(0.05, 1), (0.10, 1)], 0.10, output_tokens=2)
    slow_ttft = rec(1, 1.0, 1.0, [(1.50, 1), (1.55, 1)], 1.55, output_tokens=2)
    slow_tpot = rec(2, 2.0, 2.0, [(2.05, 1), (2.50, 1)], 2.50, output_tokens=2)
    failed = RequestRecord(index=3, scheduled=3.0, sent=3.0, end=4.0, error="boom")
    m = summarize([fast, slow_ttft, slow_tpot, failed], goodput=GoodputSLO(ttft_ms=100, tpot_ms=100)).metrics()
    assert m["goodput_fraction"] == pytest.approx(0.25)
    assert m["goodput_s"] == pytest.approx(1 / 4.0)


def test_percentiles_and_spread() -> None:
    records = [rec(i, float(i), float(i), [(i + (i + 1) / 1000, 1)], i + 0.5) for i in range(100)]
    d = summarize(records).distributions["ttft"]
    assert d.count == 100
    assert d.min == pytest.approx(1.0)
    assert d.max == pytest.approx(100.0)
    assert d.p50 == pytest.approx(50.5)
    assert d.p99 == pytest.approx(99.01)
    assert d.stddev == pytest.approx(29.0115, rel=1e-4)


def test_attribute_tokens() -> None:
    assert attribute_tokens(["a", "b", "c"], None) == ([1, 1, 1], False)
    assert attribute_tokens(["a", "b", "c"], 3) == ([1, 1, 1], False)
    counts, estimated = attribute_tokens(["a", "bbbb", "c"], 7)
    assert estimated
    assert sum(counts) == 7
    assert counts[1] == max(counts)
    assert attribute_tokens(["a", "b"], 1) == ([1, 1], True)
    assert attribute_tokens([], 5) == ([], True)


# The metric table is the only declaration of metrics.


def family_results(tmp_path: Path) -> dict[str, list[LoadResult]]:
    """A result as each family's workload makes it (records through ``summarize``, fio's JSON, metadata)."""

    def load(**kw: Any) -> list[RequestRecord]:
        return [rec(i, i * 0.01, i * 0.01, kw.pop("chunks", []), i * 0.01 + 0.005, **kw) for i in range(50)]

    llm = [rec(i, i * 0.1, i * 0.1, [(i * 0.1 + 0.05, 2), (i * 0.1 + 0.08, 3)], i * 0.1 + 0.08) for i in range(20)]
    vectors = summarize(
        [rec(i, i * 0.01, i * 0.01, [], i * 0.01 + 0.005, values={"recall_at_10": 0.9}) for i in range(9)]
    )
    vectors.scalars.update(insert_vec_s=1000.0, index_build_s=0.5)  # the load phase's figures (workloads.vectors)
    side = {"io_bytes": 1 << 20, "bw": 2048.0, "iops": 512.0}
    clat = {"N": 100, "mean": 1e6, "stddev": 1e5, "min": 5e5, "max": 2e6, "percentile": {"50.000000": 1e6}}
    fio = {"read": {**side, "clat_ns": clat}, "write": {"io_bytes": 0, "bw": 0.0, "iops": 0.0}}
    return {
        "inference": [summarize(llm)],
        "database": [summarize(load())],
        "objectstore": [
            summarize([rec(i, i * 0.01, i * 0.01, [], i * 0.01 + 0.005, extra={"mib": 4.0}) for i in range(9)])
        ],
        "vectordb": [vectors],
        "filestorage": [
            files._result(files.FioJob("read"), fio, True, tmp_path),
            files.metadata_load(tmp_path, files=20, threads=2),
        ],
    }


def test_every_metric_a_workload_emits_is_in_the_table(tmp_path: Path) -> None:
    for family, results in family_results(tmp_path).items():
        emitted = {name for result in results for name in result.metrics()}
        assert emitted <= set(METRICS), f"{family} emits undeclared {sorted(emitted - set(METRICS))}"
        finite = {name for result in results for name, value in result.metrics().items() if not math.isnan(value)}
        # capacity_* come from a capacity search's answer only (tests/test_capacity.py)
        keys = {m.name for m in key_metrics([family]) if not m.name.startswith("capacity_")}  # type: ignore[list-item]
        assert keys <= finite, f"{family}'s key metrics {sorted(keys - finite)} are never measured"


def test_distributions_are_the_declared_latencies() -> None:
    emitted = [set(summarizer([]).distributions) for summarizer in (summarize, summarize_sessions, summarize_pipeline)]
    assert set.union(*emitted) == {latency.name for latency in LATENCIES}


def test_the_final_push_handles_every_table_metric() -> None:
    row = {"label": "p", "result": {"metrics": {m.name: 2.0 for m in TABLE}}, "verdicts": []}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in final_registry([row]).collect() for s in f.samples
    }
    pushed = {latency.name for latency in LATENCIES if latency.kind}
    for metric in TABLE:
        if metric.gauge is None:  # only a latency's spread, or a latency that is a copy of another (latency = e2e)
            assert metric.stat in ("stddev", "min", "max") or metric.distribution not in pushed, metric.name
            continue
        assert metric.gauge in FINAL_METRICS, metric
        labels = dict(zip(FINAL_METRICS[metric.gauge][1], ("p", *metric.gauge_labels()), strict=True))
        assert samples[(metric.gauge, tuple(sorted(labels.items())))] == pytest.approx(2.0 * metric.scale), metric.name


def test_no_other_module_declares_metrics() -> None:
    package = Path(pytest_aifactory.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"METRICS\[[^\]]+\]\s*=|MetricInfo|KEY_METRICS|_EXTRA = \(", text), path


def test_results_table_warns_when_samples_are_too_few() -> None:
    def row(test: str, samples: int, families: list[str]) -> dict[str, Any]:
        metrics = {
            "requests": samples,
            "error_rate": 0.0,
            "p50_latency_ms": 5.0,
            "p99_latency_ms": 812.4,
            "p99_ttft_ms": 9.0,
        }
        return {
            "test": f"b.py::{test}",
            "label": "rate=20",
            "result": {"metrics": metrics},
            "slo": "-",
            "families": families,
            "samples": {"latency": samples, "ttft": samples},
        }

    lines = format_results([row("test_small", 24, ["inference"]), row("test_big", 500, ["objectstore"])])
    small = next(line for line in lines if line.startswith("test_small")).split()
    big = next(line for line in lines if line.startswith("test_big")).split()
    assert small[2:4] == ["e2e", "24"]  # which latency, and its sample size
    assert big[2:4] == ["op", "500"]
    assert "812.4!" in small
    assert "ttft p99 9!" in " ".join(small)
    assert "812.4" in big
    assert not any(cell.endswith("!") for cell in big)
    assert "! test_small [rate=20]: p99 ms, ttft p99 from 24 samples (a p99 needs >= 100)" in lines
    assert not any("test_big" in line and line.startswith("!") for line in lines)
    assert any("p99 needs >= 100, p999 >= 1000" in line for line in lines)


@pytest.mark.parametrize(("stat", "needed"), [("p50", 2), ("p90", 10), ("p99", 100), ("p999", 1000), ("mean", 1)])
def test_samples_a_statistic_needs(stat: str, needed: int) -> None:
    assert min_samples(stat) == needed
