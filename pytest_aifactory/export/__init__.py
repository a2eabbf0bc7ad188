"""Exporters: the JSON report, Pushgateway, Loki and pytest-benchmark histories."""
