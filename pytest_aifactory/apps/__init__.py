"""Applications on top of the package: the aifactory CLI, the control API and the Grafana dashboards."""
