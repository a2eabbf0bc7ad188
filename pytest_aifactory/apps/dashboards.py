"""Grafana dashboards as code (grafana-foundation-sdk), generated into ``grafana/dashboards``.

Four dashboards, all with ``run_id``, ``test`` and ``service`` variables: the live view of a
run, post-mortem and trends across runs, services' resources, and logs. Every query uses the
metric names and labels the exporters define (``export.pushgateway``, ``jobs.telemetry``,
``export.loki``); ``contract_problems`` checks that, and that every datasource uid exists in
the provisioning. ``python -m pytest_aifactory.apps.dashboards DIR`` writes the JSON files.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, logs, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import loki as loki_query
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardLink as DashboardLinkModel
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, DataSourceRef, VariableRefresh

from pytest_aifactory.delivery.loki import LOKI_LABELS
from pytest_aifactory.delivery.pushgateway import GROUP_LABELS
from pytest_aifactory.export.prometheus import DASHBOARD_RESULTS, FINAL_METRICS, LIVE_METRICS
from pytest_aifactory.jobs.telemetry import MONITOR_METRICS

__all__ = ["DATASOURCES", "build_dashboards", "contract_problems", "write_dashboards"]

DATASOURCES = {"prometheus": "aif-prometheus", "loki": "aif-loki"}
PROM = DataSourceRef(type_val="prometheus", uid=DATASOURCES["prometheus"])
LOKI = DataSourceRef(type_val="loki", uid=DATASOURCES["loki"])
RUN = 'run_id=~"$run_id"'
TEST = 'test=~"$test"'
WIDE, HALF, THIRD = 24, 12, 8
RESULTS = "|".join(DASHBOARD_RESULTS)  # the result figures of the run comparison, from the metric table


def _prom(expr: str, legend: str, ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROM)
    return query.instant() if instant else query


def _series(title: str, unit: str, width: int, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(PROM).height(8).span(width)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _variables(board: dashboard.Dashboard, service: bool = True) -> dashboard.Dashboard:
    run = (
        dashboard.QueryVariable("run_id")
        .label("Run")
        .datasource(PROM)
        .query("label_values(aifactory_requests_total, run_id)")
        .include_all(True)
        .multi(True)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    test = (
        dashboard.QueryVariable("test")
        .label("Test")
        .datasource(PROM)
        .query('label_values(aifactory_requests_total{run_id=~"$run_id"}, test)')
        .include_all(True)
        .multi(True)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    board = board.with_variable(run).with_variable(test)
    if service:
        board = board.with_variable(
            dashboard.QueryVariable("service")
            .label("Service")
            .datasource(PROM)
            .query('label_values(aifactory_service_memory_bytes{run_id=~"$run_id"}, service)')
            .include_all(True)
            .multi(True)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    return board


def _logs_panel(title: str, expr: str, width: int = WIDE) -> logs.Panel:
    return (
        logs.Panel()
        .title(title)
        .datasource(LOKI)
        .height(10)
        .span(width)
        .with_target(loki_query.Dataquery().expr(expr).ref_id("A").datasource(LOKI))
    )


def _run_link() -> dashboard.DashboardLink:
    return (
        dashboard.DashboardLink("AI Factory dashboards")
        .type(DashboardLinkType.DASHBOARDS)
        .tags(["aifactory"])
        .include_vars(True)
        .keep_time(True)
    )


def _control_link() -> dashboard.DashboardLink:
    """The control API's interactive page: start a run, stop one, start or stop a service."""
    return (
        dashboard.DashboardLink("Control: start / stop runs and services")
        .type(DashboardLinkType.LINK)
        .url("${control_url}/ui")
        .target_blank(True)
    )


def _run_links() -> list[Builder[DashboardLinkModel]]:
    """Data links on a run's series: its live dashboard, and the control page to stop it."""
    return [
        dashboard.DashboardLink("Open this run's live dashboard").url(
            "/d/aif-live?var-run_id=${__field.labels.run_id}&${__url_time_range}"
        ),
        dashboard.DashboardLink("Stop or inspect this run (control API)")
        .url("${control_url}/ui/runs/${__field.labels.run_id}")
        .target_blank(True),
    ]


def _control_variable() -> dashboard.TextBoxVariable:
    return dashboard.TextBoxVariable("control_url").label("Control API").default_value("http://localhost:8088")


def live() -> dashboard.Dashboard:
    """A run while it happens: load, latency, errors, SLOs, the services' resources and logs."""
    board = _variables(
        dashboard.Dashboard("AI Factory: live run")
        .uid("aif-live")
        .tags(["aifactory"])
        .refresh("5s")
        .time("now-30m", "now")
        .link(_run_link())
        .link(_control_link())
    ).with_variable(_control_variable())
    return (
        board.with_row(dashboard.Row("Load"))
        .with_panel(
            _series(
                "Offered vs achieved rate",
                "reqps",
                HALF,
                _prom(f"aifactory_live_achieved_rate{{{RUN},{TEST}}}", "achieved live {{test}} {{point}}"),
                _prom(f'aifactory_request_rate{{{RUN},{TEST},kind="offered"}}', "offered {{test}} {{point}}", "B"),
                _prom(f'aifactory_request_rate{{{RUN},{TEST},kind="achieved"}}', "achieved {{test}} {{point}}", "C"),
            )
        )
        .with_panel(
            _series(
                "Requests and errors",
                "short",
                HALF,
                _prom(f"aifactory_live_requests_done_total{{{RUN},{TEST}}}", "done {{point}}"),
                _prom(f"aifactory_live_request_errors_total{{{RUN},{TEST}}}", "errors {{point}}", "B"),
                _prom(f"aifactory_live_requests_in_flight{{{RUN},{TEST}}}", "in flight {{point}}", "C"),
            )
        )
        .with_panel(
            _series(
                "Throughput",
                "short",
                HALF,
                _prom(f'aifactory_request_rate{{{RUN},{TEST},kind="completed"}}', "req/s {{test}} {{point}}"),
                _prom(
                    f'aifactory_tokens_per_second{{{RUN},{TEST},kind="output"}}', "output tok/s {{test}} {{point}}", "B"
                ),
            )
        )
        .with_panel(
            _series(
                "Error ratio",
                "percentunit",
                HALF,
                _prom(f"aifactory_error_ratio{{{RUN},{TEST}}}", "{{test}} {{point}}"),
            )
        )
        .with_row(dashboard.Row("Latency"))
        .with_panel(
            _series(
                "Live latency (finished requests so far)",
                "s",
                WIDE,
                _prom(
                    f'aifactory_live_latency_seconds{{{RUN},{TEST},quantile=~"0.5|0.99"}}',
                    "{{kind}} p{{quantile}} {{point}}",
                ),
            )
        )
        .with_panel(
            _series(
                "TTFT",
                "s",
                THIRD,
                _prom(
                    f'aifactory_latency_seconds{{{RUN},{TEST},kind="ttft",quantile=~"0.5|0.99"}}',
                    "p{{quantile}} {{point}}",
                ),
            )
        )
        .with_panel(
            _series(
                "ITL (per token)",
                "s",
                THIRD,
                _prom(
                    f'aifactory_latency_seconds{{{RUN},{TEST},kind="itl",quantile=~"0.5|0.99"}}',
                    "p{{quantile}} {{point}}",
                ),
            )
        )
        .with_panel(
            _series(
                "E2E / operation latency",
                "s",
                THIRD,
                _prom(
                    f'aifactory_latency_seconds{{{RUN},{TEST},kind="e2e",quantile=~"0.5|0.99"}}',
                    "p{{quantile}} {{point}}",
                ),
            )
        )
        .with_row(dashboard.Row("SLOs and services"))
        .with_panel(
            stat.Panel()
            .title("SLOs held (1) / breached (0)")
            .datasource(PROM)
            .height(6)
            .span(HALF)
            .with_target(_prom(f"aifactory_slo_passed{{{RUN},{TEST}}}", "{{test}} {{point}} {{slo}}", instant=True))
            .data_links(_run_links())
        )
        .with_panel(
            _series(
                "Service CPU (cores)",
                "short",
                HALF,
                _prom(
                    f'rate(aifactory_service_cpu_seconds_total{{{RUN},service=~"$service"}}[1m])',
                    "{{service}} {{node}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Service memory",
                "bytes",
                HALF,
                _prom(f'aifactory_service_memory_bytes{{{RUN},service=~"$service"}}', "{{service}} {{node}}"),
            )
        )
        .with_panel(
            _series(
                "GPU utilisation",
                "percentunit",
                HALF,
                _prom(f'aifactory_gpu_utilization_ratio{{{RUN},service=~"$service"}}', "{{node}} gpu{{gpu}}"),
            )
        )
        .with_panel(_logs_panel("Logs of the run and its services", '{job="aifactory", run_id=~"$run_id"}'))
    )


def trends() -> dashboard.Dashboard:
    """Finished runs: figures, SLO verdicts, and each test's key metrics across runs."""
    board = _variables(
        dashboard.Dashboard("AI Factory: post-mortem and trends")
        .uid("aif-trends")
        .tags(["aifactory"])
        .time("now-90d", "now")
        .link(_run_link())
        .link(_control_link()),
        service=False,
    ).with_variable(_control_variable())
    return (
        board.with_panel(
            _series(
                "p99 TTFT across runs",
                "s",
                HALF,
                _prom(
                    f'max by (run_id, point) (aifactory_latency_seconds{{{TEST},kind="ttft",quantile="0.99"}})',
                    "{{run_id}} {{point}}",
                ),
            )
        )
        .with_panel(
            _series(
                "p99 latency across runs",
                "s",
                HALF,
                _prom(
                    f'max by (run_id, point) (aifactory_latency_seconds{{{TEST},kind="e2e",quantile="0.99"}})',
                    "{{run_id}} {{point}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Throughput across runs",
                "reqps",
                HALF,
                _prom(
                    f'max by (run_id, point) (aifactory_request_rate{{{TEST},kind="completed"}})',
                    "{{run_id}} {{point}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Goodput ratio across runs",
                "percentunit",
                HALF,
                _prom(f"max by (run_id, point) (aifactory_goodput_ratio{{{TEST}}})", "{{run_id}} {{point}}"),
            )
        )
        .with_panel(
            table.Panel()
            .title("SLO verdicts of the selected runs")
            .datasource(PROM)
            .height(8)
            .span(WIDE)
            .with_target(_prom(f"aifactory_slo_value{{{RUN},{TEST}}}", "", instant=True))
            .with_target(_prom(f"aifactory_slo_passed{{{RUN},{TEST}}}", "", "B", instant=True))
            .data_links(_run_links())
        )
        .with_panel(
            table.Panel()
            .title("Run-to-run comparison (p99 latency, throughput)")
            .datasource(PROM)
            .height(8)
            .span(WIDE)
            .with_target(
                _prom(f'aifactory_latency_seconds{{{RUN},{TEST},kind="e2e",quantile="0.99"}}', "", instant=True)
            )
            .with_target(_prom(f'aifactory_request_rate{{{RUN},{TEST},kind="completed"}}', "", "B", instant=True))
            .with_target(_prom(f'aifactory_result_value{{{RUN},{TEST},name=~"{RESULTS}"}}', "", "C", instant=True))
        )
    )


def services() -> dashboard.Dashboard:
    """Resources used per service and node, from the monitor in the service jobs."""
    sel = f'{RUN},service=~"$service"'
    board = _variables(
        dashboard.Dashboard("AI Factory: services")
        .uid("aif-services")
        .tags(["aifactory"])
        .refresh("10s")
        .time("now-1h", "now")
        .link(_run_link())
    )
    return (
        board.with_panel(
            _series(
                "CPU (cores)",
                "short",
                HALF,
                _prom(f"rate(aifactory_service_cpu_seconds_total{{{sel}}}[1m])", "{{service}} {{job_id}}"),
            )
        )
        .with_panel(
            _series(
                "Memory", "bytes", HALF, _prom(f"aifactory_service_memory_bytes{{{sel}}}", "{{service}} {{job_id}}")
            )
        )
        .with_panel(
            _series(
                "Node CPU", "percentunit", THIRD, _prom(f"aifactory_node_cpu_utilization_ratio{{{sel}}}", "{{node}}")
            )
        )
        .with_panel(
            _series(
                "Node network",
                "Bps",
                THIRD,
                _prom(f"rate(aifactory_node_network_bytes_total{{{sel}}}[1m])", "{{node}} {{direction}}"),
            )
        )
        .with_panel(
            _series(
                "Node disk",
                "Bps",
                THIRD,
                _prom(f"rate(aifactory_node_disk_bytes_total{{{sel}}}[1m])", "{{node}} {{direction}}"),
            )
        )
        .with_panel(
            _series(
                "GPU utilisation",
                "percentunit",
                THIRD,
                _prom(f"aifactory_gpu_utilization_ratio{{{sel}}}", "{{node}} gpu{{gpu}}"),
            )
        )
        .with_panel(
            _series(
                "GPU memory", "bytes", THIRD, _prom(f"aifactory_gpu_memory_used_bytes{{{sel}}}", "{{node}} gpu{{gpu}}")
            )
        )
        .with_panel(
            _series("GPU power", "watt", THIRD, _prom(f"aifactory_gpu_power_watts{{{sel}}}", "{{node}} gpu{{gpu}}"))
        )
    )


def logs_dashboard() -> dashboard.Dashboard:
    """The run's events and the services' logs, filtered by service and level."""
    level = dashboard.CustomVariable("level").label("Level").values("info,warning,error").include_all(True).multi(True)
    board = _variables(
        dashboard.Dashboard("AI Factory: logs")
        .uid("aif-logs")
        .tags(["aifactory"])
        .time("now-6h", "now")
        .link(_run_link()),
        service=False,
    ).with_variable(level)
    return (
        board.with_panel(
            _logs_panel(
                "Run events (pytest)", '{job="aifactory", run_id=~"$run_id", service="pytest", level=~"$level"}'
            )
        )
        .with_panel(
            _logs_panel("Service logs", '{job="aifactory", run_id=~"$run_id", service!="pytest", level=~"$level"}')
        )
        .with_panel(_logs_panel("Errors", '{job="aifactory", run_id=~"$run_id", level="error"}'))
    )


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by file name."""
    boards = {"live-run": live(), "trends": trends(), "services": services(), "logs": logs_dashboard()}
    return {name: json.loads(json.dumps(board.build(), cls=JSONEncoder)) for name, board in boards.items()}


def render(board: Mapping[str, Any]) -> str:
    """Stable JSON text of one dashboard (as committed)."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def write_dashboards(folder: Path) -> list[Path]:
    """Write every dashboard to ``folder/NAME.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, board in build_dashboards().items():
        path = folder / f"{name}.json"
        path.write_text(render(board), encoding="utf-8")
        paths.append(path)
    return paths


def _targets(board: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            yield f"variable {variable['name']}", {"expr": text, "datasource": variable.get("datasource", {})}


_METRIC = re.compile(r"\b(aifactory_[a-z0-9_]+)")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_LINK_LABEL = re.compile(r"__field\.labels\.([a-zA-Z_][a-zA-Z0-9_]*)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def emitted() -> tuple[set[str], set[str]]:
    """Metric names and label names the exporters really emit (from their definitions)."""
    tables = [LIVE_METRICS, FINAL_METRICS, MONITOR_METRICS]
    names = {name for table in tables for name in table}
    labels = {label for table in tables for _, labels in table.values() for label in labels}
    labels |= set(GROUP_LABELS) | {"service", "job_id", "node", "instance", "quantile"}
    return names, labels


def contract_problems(boards: Mapping[str, Mapping[str, Any]], datasource_uids: set[str]) -> list[str]:
    """Queries naming metrics or labels no exporter emits, and unknown datasource uids."""
    metrics, labels = emitted()
    problems = []
    for name, board in boards.items():
        for panel in board.get("panels", []):
            uid = (panel.get("datasource") or {}).get("uid")
            if uid and uid not in datasource_uids:
                problems.append(f"{name}: panel {panel.get('title')!r} uses datasource uid {uid!r}")
            for link in ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("links", []):
                problems += [
                    f"{name}: a data link of {panel.get('title')!r} uses label {label!r}, which no exporter sets"
                    for label in _LINK_LABEL.findall(str(link.get("url", "")))
                    if label not in labels
                ]
        for title, target in _targets(board):
            expr = str(target.get("expr", ""))
            uid = (target.get("datasource") or {}).get("uid")
            if uid and uid not in datasource_uids:
                problems.append(f"{name}: {title!r} uses datasource uid {uid!r}")
            is_loki = (target.get("datasource") or {}).get("type") == "loki"
            allowed = set(LOKI_LABELS) if is_loki else labels
            if not is_loki:
                problems += [
                    f"{name}: {title!r} queries {m!r}, which no exporter emits"
                    for m in _METRIC.findall(expr)
                    if m not in metrics
                ]
            used = set(_MATCHER.findall(expr)) | {
                w.strip() for group in _BY.findall(expr) for w in group.split(",") if w.strip()
            }
            used |= set(_LEGEND.findall(str(target.get("legendFormat", ""))))
            problems += [
                f"{name}: {title!r} uses label {label!r}, which no exporter sets" for label in sorted(used - allowed)
            ]
    return problems


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "grafana/dashboards")
    for written in write_dashboards(target):
        print(written)
