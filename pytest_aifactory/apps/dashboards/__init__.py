"""Grafana dashboards as code (grafana-foundation-sdk), generated into ``grafana/dashboards``.

Four dashboards, all with ``run_id``, ``test`` and ``service`` variables: the live view of a
run, post-mortem and trends across runs, services' resources, and logs. Every query uses the
metric names and labels the exporters define (``export.pushgateway``, ``jobs.telemetry``,
``export.loki``); ``contract_problems`` checks that, and that every datasource uid exists in
the provisioning. ``python -m pytest_aifactory.apps.dashboards DIR`` writes the JSON files.

Modules: ``panels`` (shared builders, datasource uids), ``runs`` (live, trends), ``resources``
(services, logs), ``build`` (JSON and files), ``contract`` (the checker), ``__main__`` (the CLI).
"""

__all__: list[str] = []
