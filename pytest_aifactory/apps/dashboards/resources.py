"""The dashboards of what runs beside the tests: services' resources, and logs."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from pytest_aifactory.apps.dashboards.panels import HALF, RUN, THIRD, logs_panel, prom, run_link, series, variables

__all__ = ["logs_dashboard", "services"]


def services() -> dashboard.Dashboard:
    """Resources used per service and node, from the monitor in the service jobs."""
    sel = f'{RUN},service=~"$service"'
    board = variables(
        dashboard.Dashboard("AI Factory: services")
        .uid("aif-services")
        .tags(["aifactory"])
        .refresh("10s")
        .time("now-1h", "now")
        .link(run_link())
    )
    return (
        board.with_panel(
            series(
                "CPU (cores)",
                "short",
                HALF,
                prom(f"rate(aifactory_service_cpu_seconds_total{{{sel}}}[1m])", "{{service}} {{job_id}}"),
            )
        )
        .with_panel(
            series("Memory", "bytes", HALF, prom(f"aifactory_service_memory_bytes{{{sel}}}", "{{service}} {{job_id}}"))
        )
        .with_panel(
            series("Node CPU", "percentunit", THIRD, prom(f"aifactory_node_cpu_utilization_ratio{{{sel}}}", "{{node}}"))
        )
        .with_panel(
            series(
                "Node network",
                "Bps",
                THIRD,
                prom(f"rate(aifactory_node_network_bytes_total{{{sel}}}[1m])", "{{node}} {{direction}}"),
            )
        )
        .with_panel(
            series(
                "Node disk",
                "Bps",
                THIRD,
                prom(f"rate(aifactory_node_disk_bytes_total{{{sel}}}[1m])", "{{node}} {{direction}}"),
            )
        )
        .with_panel(
            series(
                "GPU utilisation",
                "percentunit",
                THIRD,
                prom(f"aifactory_gpu_utilization_ratio{{{sel}}}", "{{node}} gpu{{gpu}}"),
            )
        )
        .with_panel(
            series(
                "GPU memory", "bytes", THIRD, prom(f"aifactory_gpu_memory_used_bytes{{{sel}}}", "{{node}} gpu{{gpu}}")
            )
        )
        .with_panel(
            series("GPU power", "watt", THIRD, prom(f"aifactory_gpu_power_watts{{{sel}}}", "{{node}} gpu{{gpu}}"))
        )
    )


def logs_dashboard() -> dashboard.Dashboard:
    """The run's events and the services' logs, filtered by service and level."""
    level = dashboard.CustomVariable("level").label("Level").values("info,warning,error").include_all(True).multi(True)
    board = variables(
        dashboard.Dashboard("AI Factory: logs")
        .uid("aif-logs")
        .tags(["aifactory"])
        .time("now-6h", "now")
        .link(run_link()),
        service=False,
    ).with_variable(level)
    return (
        board.with_panel(
            logs_panel("Run events (pytest)", '{job="aifactory", run_id=~"$run_id", service="pytest", level=~"$level"}')
        )
        .with_panel(
            logs_panel("Service logs", '{job="aifactory", run_id=~"$run_id", service!="pytest", level=~"$level"}')
        )
        .with_panel(logs_panel("Errors", '{job="aifactory", run_id=~"$run_id", level="error"}'))
    )
