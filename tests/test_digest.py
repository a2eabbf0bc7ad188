"""nodes=N merging by histograms: the merged percentiles are those of one run, within the stated precision."""

from __future__ import annotations

import json
import math
import random

import pytest

from pytest_aifactory.core.digest import PRECISION, LatencyDigest, record_latencies, summarize_digest
from pytest_aifactory.core.metric_table import PERCENTILES
from pytest_aifactory.core.metrics import GoodputSLO, summarize
from pytest_aifactory.core.records import Chunk, RequestRecord

START = 1_700_000_000.0


def _records(count: int, seed: int = 7) -> list[RequestRecord]:
    """An open-loop load of streamed requests with lognormal TTFTs and gaps, some errors, a warm-up."""
    rng, records = random.Random(seed), []
    for i in range(count):
        scheduled = START + i / 500  # 500 req/s
        sent = scheduled + rng.expovariate(1000)
        first = sent + rng.lognormvariate(math.log(0.05), 0.6)
        chunks, at = [Chunk(first, 1)], first
        for _ in range(rng.randrange(1, 6)):
            at += rng.lognormvariate(math.log(0.01), 0.4)
            chunks.append(Chunk(at, rng.choice((1, 2))))
        failed = rng.random() < 0.01
        records.append(
            RequestRecord(
                index=i,
                scheduled=scheduled,
                sent=sent,
                first_token=None if failed else first,
                end=at,
                chunks=[] if failed else chunks,
                error="HTTP 503" if failed else None,
                status=503 if failed else 200,
                warmup=i < 20,
                worker=f"w{i % 3}",
            )
        )
    return records


def _around_rank(ordered: list[float], percent: float) -> tuple[float, float]:
    """The values next to the nearest rank (HdrHistogram rounds the rank, numpy interpolates)."""
    rank = max(0, math.ceil(percent / 100 * len(ordered)) - 1)
    return ordered[max(rank - 1, 0)], ordered[min(rank + 1, len(ordered) - 1)]


def test_three_shards_merge_to_the_single_run_digest_and_its_exact_percentiles() -> None:
    records = _records(3000)
    shards = [[r for r in records if r.index % 3 == k] for k in range(3)]
    wire = [json.dumps(LatencyDigest.of(shard, START).to_json()) for shard in shards]  # what the nodes send
    merged = LatencyDigest.from_json(json.loads(wire[0]))
    for text in wire[1:]:
        merged.merge(LatencyDigest.from_json(json.loads(text)))
    single = LatencyDigest.of(records, START)
    exact = summarize(records)
    assert merged.seen == single.seen == 3000 - 20
    for family in ("ttft", "itl", "tpot", "e2e", "lag"):
        got, one = merged.distribution(family), single.distribution(family)
        assert got == one, family  # merging is lossless
        assert got.count == exact.distributions[family].count
        ordered = sorted(_values(records, family))
        for name, percent in PERCENTILES.items():
            low, high = _around_rank(ordered, percent)
            assert low * (1 - PRECISION) - 1e-3 <= got.stat(name) <= high * (1 + PRECISION) + 1e-3, (family, name)
        assert got.mean == pytest.approx(exact.distributions[family].mean, rel=PRECISION)


def _values(records: list[RequestRecord], family: str) -> list[float]:
    return [v for r in records if not r.warmup for v in record_latencies(r).get(family, [])]


def test_windows_and_the_bounded_sample() -> None:
    records = _records(12_000)[::2]  # 24 s at 500 req/s, every other one: windows 0, 1, 2 of 10 s
    digest = LatencyDigest.of(records, START, window_s=10.0)
    assert sorted({window for _, window in digest.windows}) == [0, 1, 2]
    first_window = digest.histogram("e2e", lambda w: w == 0).get_total_count()
    assert first_window == len([r for r in records if not r.warmup and r.ok and r.scheduled < START + 10])
    assert len(digest.sample) == digest.sample_size == 1000
    other = LatencyDigest.of(_records(3000, seed=8), START)
    digest.merge(other)
    assert len(digest.sample) == 1000
    assert digest.seen == 6000 - 10 + 3000 - 20
    size = len(json.dumps(digest.to_json()))
    assert size < 600_000, size  # the sample's 1000 records and compressed histograms, whatever the load's size


def test_a_merged_result_has_the_single_run_metrics() -> None:
    records = _records(3000)
    goodput = GoodputSLO(ttft_ms=80)
    merged = LatencyDigest.of(records[0::2], START, goodput=goodput)
    merged.merge(
        LatencyDigest.from_json(
            json.loads(json.dumps(LatencyDigest.of(records[1::2], START, goodput=goodput).to_json()))
        )
    )
    got, exact = summarize_digest(merged, "x"), summarize(records, "x", goodput=goodput)
    assert got.scalars.keys() == exact.scalars.keys()
    for name, value in exact.scalars.items():  # counts, throughputs, rates, goodput: exact
        assert got.scalars[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name
    assert got.distributions.keys() == exact.distributions.keys()
    for family, distribution in exact.distributions.items():
        assert got.distributions[family].count == distribution.count, family
        assert got.distributions[family].mean == pytest.approx(distribution.mean, rel=PRECISION, abs=1e-3), family
    assert got.error_samples == exact.error_samples


def test_a_nodes_3_load_merges_histograms(pytester: pytest.Pytester) -> None:
    """Three client jobs (local profile) send digests; every record is in the sample, so the
    merged percentiles can be checked against the same records summarized on one node."""
    pytester.makepyfile(
        """
        import math
        from pytest_aifactory.core.digest import PRECISION, record_latencies
        from pytest_aifactory.core.metric_table import PERCENTILES

        def test_three(synthetic_llm_service, aif_load):
            result = aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=60, count=120, nodes=3)
            assert sorted(r.index for r in result.records) == list(range(120))
            assert {r.worker for r in result.records} == {"w0", "w1", "w2"}
            assert result.metrics()["requests"] == 120
            assert result.config["record_sample"] == "120 of 120"  # merged from the nodes' histograms
            for family in ("ttft", "itl", "e2e", "lag"):
                ordered = sorted(v for r in result.records for v in record_latencies(r).get(family, []))
                for name, percent in PERCENTILES.items():
                    rank = max(0, math.ceil(percent / 100 * len(ordered)) - 1)
                    low, high = ordered[max(rank - 1, 0)], ordered[min(rank + 1, len(ordered) - 1)]
                    got = result.distributions[family].stat(name)
                    assert low * (1 - PRECISION) - 1e-3 <= got <= high * (1 + PRECISION) + 1e-3, (family, name)
        """
    )
    result = pytester.runpytest_subprocess("--aif-profile=local", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
