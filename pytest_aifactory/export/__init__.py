"""Exporters: the JSON report, the Prometheus metric families and run comparisons."""
