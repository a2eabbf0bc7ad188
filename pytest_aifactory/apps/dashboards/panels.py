"""Panel, query, variable and link builders shared by the dashboards, and the datasource uids."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, logs, prometheus, timeseries
from grafana_foundation_sdk.builders import loki as loki_query
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models.dashboard import DashboardLink as DashboardLinkModel
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, DataSourceRef, VariableRefresh

__all__ = [
    "DATASOURCES",
    "HALF",
    "LOKI",
    "PROM",
    "RUN",
    "TEST",
    "THIRD",
    "WIDE",
    "control_link",
    "control_variable",
    "logs_panel",
    "prom",
    "run_link",
    "run_links",
    "series",
    "variables",
]

DATASOURCES = {"prometheus": "aif-prometheus", "loki": "aif-loki"}
PROM = DataSourceRef(type_val="prometheus", uid=DATASOURCES["prometheus"])
LOKI = DataSourceRef(type_val="loki", uid=DATASOURCES["loki"])
RUN = 'run_id=~"$run_id"'
TEST = 'test=~"$test"'
WIDE, HALF, THIRD = 24, 12, 8


def prom(expr: str, legend: str, ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    """A PromQL query on the Prometheus datasource, a range query unless ``instant``."""
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROM)
    return query.instant() if instant else query


def series(title: str, unit: str, width: int, *queries: prometheus.Dataquery) -> timeseries.Panel:
    """A time series panel of ``width`` columns drawing ``queries``."""
    panel = timeseries.Panel().title(title).unit(unit).datasource(PROM).height(8).span(width)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def variables(board: dashboard.Dashboard, service: bool = True) -> dashboard.Dashboard:
    """``board`` with the ``run_id`` and ``test`` variables, and ``service`` unless told not to."""
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


def logs_panel(title: str, expr: str, width: int = WIDE) -> logs.Panel:
    """A logs panel of the LogQL ``expr`` on the Loki datasource."""
    return (
        logs.Panel()
        .title(title)
        .datasource(LOKI)
        .height(10)
        .span(width)
        .with_target(loki_query.Dataquery().expr(expr).ref_id("A").datasource(LOKI))
    )


def run_link() -> dashboard.DashboardLink:
    """The link to the other AI Factory dashboards, keeping the variables and time range."""
    return (
        dashboard.DashboardLink("AI Factory dashboards")
        .type(DashboardLinkType.DASHBOARDS)
        .tags(["aifactory"])
        .include_vars(True)
        .keep_time(True)
    )


def control_link() -> dashboard.DashboardLink:
    """The control API's interactive page: start a run, stop one, start or stop a service."""
    return (
        dashboard.DashboardLink("Control: start / stop runs and services")
        .type(DashboardLinkType.LINK)
        .url("${control_url}/ui")
        .target_blank(True)
    )


def run_links() -> list[Builder[DashboardLinkModel]]:
    """Data links on a run's series: its live dashboard, and the control page to stop it."""
    return [
        dashboard.DashboardLink("Open this run's live dashboard").url(
            "/d/aif-live?var-run_id=${__field.labels.run_id}&${__url_time_range}"
        ),
        dashboard.DashboardLink("Stop or inspect this run (control API)")
        .url("${control_url}/ui/runs/${__field.labels.run_id}")
        .target_blank(True),
    ]


def control_variable() -> dashboard.TextBoxVariable:
    """The ``control_url`` variable: where the control API listens."""
    return dashboard.TextBoxVariable("control_url").label("Control API").default_value("http://localhost:8088")
