"""S3 object storage: PUT, GET (checked), mixed and LIST over object sizes and concurrency."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("size", "count"), [("4KiB", 200), ("1MiB", 60), ("16MiB", 16)])
@pytest.mark.slo("error_rate == 0", "p99_latency_ms <= {s3_p99_latency_ms}")
def test_put_get_by_size(s3_service, aif_load, size, count):
    """Throughput and latency of PUT and GET at one object size."""
    aif_load.s3(s3_service, op="put", size=size, objects=16, concurrency=4, count=count)
    got = aif_load.s3(s3_service, op="get", size=size, objects=16, concurrency=4, count=count)
    assert got["mib_s"] > 0


@pytest.mark.slo("error_rate == 0")
def test_get_concurrency_sweep(s3_service, aif_load, aif_vars):
    """GETs of 64 KiB objects as concurrency rises; time to first byte is the TTFT column."""
    aif_load.sweep(
        "concurrency",
        aif_vars("s3_concurrency", [1, 4, 16]),
        aif_load.s3,
        s3_service,
        op="get",
        size="64KiB",
        objects=32,
        count=aif_vars("s3_requests", 60),
    )


@pytest.mark.slo("error_rate == 0")
def test_mixed_and_list(s3_service, aif_load, aif_vars):
    """70/30 GET/PUT at a set arrival rate, and LIST."""
    aif_load.s3(s3_service, op="mixed", size="256KiB", objects=32, rate=aif_vars("s3_rate", 50), count=100)
    aif_load.s3(s3_service, op="list", objects=32, concurrency=2, count=20)


@pytest.mark.slo("error_rate == 0")
def test_large_objects(s3_service, aif_load):
    """256 MiB objects, one at a time."""
    aif_load.s3(s3_service, op="put", size="256MiB", concurrency=1, count=2)
    aif_load.s3(s3_service, op="get", size="256MiB", objects=2, concurrency=1, count=2)


@pytest.mark.slo("error_rate == 0", "capacity_rate >= {s3_min_get_capacity}")
def test_get_capacity_under_slo(s3_service, aif_load, aif_vars):
    """The highest rate of 64 KiB GETs (ops/s) at which p99 time to first byte holds."""
    aif_load.capacity(
        "rate",
        aif_load.s3,
        s3_service,
        slo=[f"p99_ttft_ms <= {aif_vars('s3_get_p99_ttfb_ms', 200)}", "error_rate == 0"],
        low=aif_vars("s3_capacity_low", 20),
        precision=0.25,
        budget_s=aif_vars("s3_capacity_budget_s", 15),
        op="get",
        size="64KiB",
        objects=32,
        concurrency=aif_vars("s3_capacity_concurrency", 32),
        duration_s=aif_vars("s3_capacity_probe_s", 1.5),
        warmup=5,
    )
