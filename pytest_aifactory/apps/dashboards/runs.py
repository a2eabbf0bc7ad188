"""The dashboards of runs: the live view of a run, and post-mortem and trends across runs."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table

from pytest_aifactory.apps.dashboards.panels import (
    HALF,
    PROM,
    RUN,
    TEST,
    THIRD,
    WIDE,
    control_link,
    control_variable,
    logs_panel,
    prom,
    run_link,
    run_links,
    series,
    variables,
)
from pytest_aifactory.export.prometheus import DASHBOARD_RESULTS

__all__ = ["live", "trends"]

RESULTS = "|".join(DASHBOARD_RESULTS)  # the result figures of the run comparison, from the metric table
# An SLO's outcome as one number: 1 held, 0 breached, -1 inconclusive (not judged, so never shown as a breach).
SLO_OUTCOME = f"aifactory_slo_passed{{{RUN},{TEST}}} or -aifactory_slo_inconclusive{{{RUN},{TEST}}}"


def live() -> dashboard.Dashboard:
    """A run while it happens: load, latency, errors, the server's own view, SLOs, resources and logs."""
    board = variables(
        dashboard.Dashboard("AI Factory: live run")
        .uid("aif-live")
        .tags(["aifactory"])
        .refresh("5s")
        .time("now-30m", "now")
        .link(run_link())
        .link(control_link())
    ).with_variable(control_variable())
    board = (
        board.with_row(dashboard.Row("Load"))
        .with_panel(
            series(
                "Offered vs achieved rate",
                "reqps",
                HALF,
                prom(f"aifactory_live_achieved_rate{{{RUN},{TEST}}}", "achieved live {{test}} {{point}}"),
                prom(f'aifactory_request_rate{{{RUN},{TEST},kind="offered"}}', "offered {{test}} {{point}}", "B"),
                prom(f'aifactory_request_rate{{{RUN},{TEST},kind="achieved"}}', "achieved {{test}} {{point}}", "C"),
            )
        )
        .with_panel(
            series(
                "Requests and errors",
                "short",
                HALF,
                prom(f"aifactory_live_requests_done_total{{{RUN},{TEST}}}", "done {{point}}"),
                prom(f"aifactory_live_request_errors_total{{{RUN},{TEST}}}", "errors {{point}}", "B"),
                prom(f"aifactory_live_requests_in_flight{{{RUN},{TEST}}}", "in flight {{point}}", "C"),
            )
        )
        .with_panel(
            series(
                "Throughput",
                "short",
                HALF,
                prom(f'aifactory_request_rate{{{RUN},{TEST},kind="completed"}}', "req/s {{test}} {{point}}"),
                prom(
                    f'aifactory_tokens_per_second{{{RUN},{TEST},kind="output"}}', "output tok/s {{test}} {{point}}", "B"
                ),
            )
        )
        .with_panel(
            series(
                "Error ratio",
                "percentunit",
                HALF,
                prom(f"aifactory_error_ratio{{{RUN},{TEST}}}", "{{test}} {{point}}"),
            )
        )
        .with_row(dashboard.Row("Latency"))
        .with_panel(
            series(
                "Live latency (finished requests so far)",
                "s",
                WIDE,
                prom(
                    f'aifactory_live_latency_seconds{{{RUN},{TEST},quantile=~"0.5|0.99"}}',
                    "{{kind}} p{{quantile}} {{point}}",
                ),
            )
        )
        .with_panel(
            series(
                "TTFT",
                "s",
                THIRD,
                prom(
                    f'aifactory_latency_seconds{{{RUN},{TEST},kind="ttft",quantile=~"0.5|0.99"}}',
                    "p{{quantile}} {{point}}",
                ),
            )
        )
        .with_panel(
            series(
                "ITL (per token)",
                "s",
                THIRD,
                prom(
                    f'aifactory_latency_seconds{{{RUN},{TEST},kind="itl",quantile=~"0.5|0.99"}}',
                    "p{{quantile}} {{point}}",
                ),
            )
        )
        .with_panel(
            series(
                "E2E / operation latency",
                "s",
                THIRD,
                prom(
                    f'aifactory_latency_seconds{{{RUN},{TEST},kind="e2e",quantile=~"0.5|0.99"}}',
                    "p{{quantile}} {{point}}",
                ),
            )
        )
    )
    return (
        _server_row(board)
        .with_row(dashboard.Row("SLOs and services"))
        .with_panel(
            stat.Panel()
            .title("SLOs held (1) / breached (0) / inconclusive (-1)")
            .datasource(PROM)
            .height(6)
            .span(HALF)
            .with_target(prom(SLO_OUTCOME, "{{test}} {{point}} {{slo}}", instant=True))
            .data_links(run_links())
        )
        .with_panel(
            series(
                "Service CPU (cores)",
                "short",
                HALF,
                prom(
                    f'rate(aifactory_service_cpu_seconds_total{{{RUN},service=~"$service"}}[1m])',
                    "{{service}} {{node}}",
                ),
            )
        )
        .with_panel(
            series(
                "Service memory",
                "bytes",
                HALF,
                prom(f'aifactory_service_memory_bytes{{{RUN},service=~"$service"}}', "{{service}} {{node}}"),
            )
        )
        .with_panel(
            series(
                "GPU utilisation",
                "percentunit",
                HALF,
                prom(f'aifactory_gpu_utilization_ratio{{{RUN},service=~"$service"}}', "{{node}} gpu{{gpu}}"),
            )
        )
        .with_panel(logs_panel("Logs of the run and its services", '{job="aifactory", run_id=~"$run_id"}'))
    )


def trends() -> dashboard.Dashboard:
    """Finished runs: figures, SLO verdicts, and each test's key metrics across runs."""
    board = variables(
        dashboard.Dashboard("AI Factory: post-mortem and trends")
        .uid("aif-trends")
        .tags(["aifactory"])
        .time("now-90d", "now")
        .link(run_link())
        .link(control_link()),
        service=False,
    ).with_variable(control_variable())
    return (
        board.with_panel(
            series(
                "p99 TTFT across runs",
                "s",
                HALF,
                prom(
                    f'max by (run_id, point) (aifactory_latency_seconds{{{TEST},kind="ttft",quantile="0.99"}})',
                    "{{run_id}} {{point}}",
                ),
            )
        )
        .with_panel(
            series(
                "p99 latency across runs",
                "s",
                HALF,
                prom(
                    f'max by (run_id, point) (aifactory_latency_seconds{{{TEST},kind="e2e",quantile="0.99"}})',
                    "{{run_id}} {{point}}",
                ),
            )
        )
        .with_panel(
            series(
                "Throughput across runs",
                "reqps",
                HALF,
                prom(
                    f'max by (run_id, point) (aifactory_request_rate{{{TEST},kind="completed"}})',
                    "{{run_id}} {{point}}",
                ),
            )
        )
        .with_panel(
            series(
                "Goodput ratio across runs",
                "percentunit",
                HALF,
                prom(f"max by (run_id, point) (aifactory_goodput_ratio{{{TEST}}})", "{{run_id}} {{point}}"),
            )
        )
        .with_panel(
            table.Panel()
            .title("SLO verdicts of the selected runs")
            .datasource(PROM)
            .height(8)
            .span(WIDE)
            .with_target(prom(f"aifactory_slo_value{{{RUN},{TEST}}}", "", instant=True))
            .with_target(prom(SLO_OUTCOME, "", "B", instant=True))
            .data_links(run_links())
        )
        .with_panel(
            table.Panel()
            .title("Run-to-run comparison (p99 latency, throughput)")
            .datasource(PROM)
            .height(8)
            .span(WIDE)
            .with_target(
                prom(f'aifactory_latency_seconds{{{RUN},{TEST},kind="e2e",quantile="0.99"}}', "", instant=True)
            )
            .with_target(prom(f'aifactory_request_rate{{{RUN},{TEST},kind="completed"}}', "", "B", instant=True))
            .with_target(prom(f'aifactory_result_value{{{RUN},{TEST},name=~"{RESULTS}"}}', "", "C", instant=True))
        )
    )


# The server's gauges and counters drawn in pairs: (title, unit, (family, legend) x 2).
_SERVER_PAIRS = (
    (
        "Server requests running and waiting",
        "short",
        (("aifactory_live_server_requests_running", "running"), ("aifactory_live_server_requests_waiting", "waiting")),
    ),
    (
        "KV-cache usage, prefix-cache hit rate",
        "percentunit",
        (
            ("aifactory_live_server_kv_cache_usage_ratio", "KV cache"),
            ("aifactory_live_server_prefix_cache_hit_ratio", "prefix hits"),
        ),
    ),
    (
        "Server requests finished, preemptions",
        "short",
        (
            ("aifactory_live_server_requests_done_total", "finished"),
            ("aifactory_live_server_preemptions_total", "preempted"),
        ),
    ),
)


def _server_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    """The server's own view while a point runs (its /metrics, scraped beside the load): vLLM, Triton."""
    board = (
        board.with_row(dashboard.Row("The server's own view (its /metrics: vLLM, Triton)"))
        .with_panel(
            series(
                "Client vs server TTFT (so far)",
                "s",
                HALF,
                prom(
                    f'aifactory_live_latency_seconds{{{RUN},{TEST},kind="ttft",quantile=~"0.5|0.99"}}',
                    "client p{{quantile}} {{point}}",
                ),
                prom(
                    f'aifactory_live_server_latency_seconds{{{RUN},{TEST},kind="ttft",quantile=~"0.5|0.99"}}',
                    "server p{{quantile}} {{point}}",
                    "B",
                ),
            )
        )
        .with_panel(
            series(
                "Server queue, prefill, decode, e2e (mean so far)",
                "s",
                HALF,
                prom(
                    f'aifactory_live_server_latency_mean_seconds{{{RUN},{TEST},kind=~"queue|prefill|decode|e2e"}}',
                    "{{kind}} {{point}}",
                ),
            )
        )
    )
    for title, unit, pair in _SERVER_PAIRS:
        queries = [
            prom(f"{family}{{{RUN},{TEST}}}", f"{legend} {{{{point}}}}", ref)
            for (family, legend), ref in zip(pair, "AB", strict=True)
        ]
        board = board.with_panel(series(title, unit, THIRD, *queries))
    return board
