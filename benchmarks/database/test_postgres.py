"""PostgreSQL: pgbench's TPC-B-like mix and read-only point selects, with pgbench beside us."""

from __future__ import annotations

import pytest

from pytest_aifactory.services.connect import dsn_of
from pytest_aifactory.workloads.sql import pgbench


@pytest.mark.slo("error_rate == 0", "request_s >= {pg_min_tps}", "p99_latency_ms <= {pg_p99_latency_ms}")
def test_tpcb_concurrency_sweep(postgres_service, aif_load, aif_vars):
    """Transactions per second against latency as clients are added (closed loop)."""
    aif_load.sweep(
        "concurrency",
        aif_vars("pg_concurrency", [1, 4, 8]),
        aif_load.sql,
        postgres_service,
        mode="tpcb",
        scale=aif_vars("pg_scale", 2),
        duration_s=aif_vars("pg_duration_s", 5),
    )


@pytest.mark.slo("error_rate == 0", "p99_latency_ms <= {pg_select_p99_latency_ms}")
def test_point_selects_open_loop(postgres_service, aif_load, aif_vars):
    """Read-only point selects at a fixed arrival rate: latency from the scheduled time."""
    aif_load.sql(
        postgres_service,
        mode="select",
        scale=aif_vars("pg_scale", 2),
        rate=aif_vars("pg_select_rate", 500),
        connections=8,
        duration_s=aif_vars("pg_duration_s", 5),
    )


def test_select_tps_beside_pgbench(postgres_service, aif_load, aif_vars):
    """Our closed-loop select tps next to pgbench's on the same server and tables."""
    ours = aif_load.sql(postgres_service, mode="select", scale=aif_vars("pg_scale", 2), concurrency=4, duration_s=5)
    theirs = pgbench(dsn_of(postgres_service), "select", clients=4, seconds=5)
    if theirs is None:
        pytest.skip("pgbench is not installed")
    ours.config["pgbench_tps"] = theirs.tps
    print(f"\nselect-only tps: pytest-aifactory {ours['request_s']:.0f}, pgbench {theirs.tps:.0f} ({theirs.command})")
    assert ours["request_s"] > 0.05 * theirs.tps, "an order of magnitude below pgbench: the client is the bottleneck"


@pytest.mark.slo("error_rate == 0", "capacity_rate >= {pg_min_capacity_tps}")
def test_select_capacity_under_slo(postgres_service, aif_load, aif_vars):
    """The highest open-loop point-select rate (tps) at which p99 latency holds."""
    aif_load.capacity(
        "rate",
        aif_load.sql,
        postgres_service,
        slo=[f"p99_latency_ms <= {aif_vars('pg_select_p99_latency_ms', 100)}", "error_rate == 0"],
        low=aif_vars("pg_capacity_low", 100),
        precision=0.25,
        budget_s=aif_vars("pg_capacity_budget_s", 15),
        mode="select",
        scale=aif_vars("pg_scale", 2),
        connections=8,
        duration_s=aif_vars("pg_capacity_probe_s", 1.5),
        warmup=10,
    )
