"""The monitoring stack as services: Prometheus Pushgateway and Prometheus (Debian packages).

``python -m pytest_aifactory.services.observability write-config FILE TARGET [INTERVAL]``
writes a Prometheus configuration that scrapes the Pushgateway at TARGET with
``honor_labels: true`` (so the pushed ``job``, ``run_id`` and ``test`` labels are kept).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

__all__ = ["PROMETHEUS", "PUSHGATEWAY", "prometheus", "prometheus_config", "pushgateway"]

PUSHGATEWAY: dict[str, SettingValue] = {}


def pushgateway(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """``prometheus-pushgateway`` with its state persisted in the scratch folder."""
    return ServiceSpec(
        name="pushgateway",
        command=(
            "prometheus-pushgateway",
            "--web.listen-address={host}:{ports.http}",
            "--persistence.file={workdir}/pushgateway.state",
        ),
        probe=HttpProbe(path="/-/ready"),
        readiness_timeout_s=30,
        image="docker://prom/pushgateway:v1.11.0",
    )


PROMETHEUS: dict[str, SettingValue] = {"pushgateway": "", "scrape_interval": "1s"}


def prometheus_config(target: str, interval: str) -> dict[str, object]:
    """Prometheus scraping one Pushgateway, keeping the pushed labels."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [target]}]}
        ],
    }


def prometheus(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Prometheus scraping ``settings.pushgateway`` (host:port) every ``scrape_interval``."""
    return ServiceSpec(
        name="prometheus",
        setup=(
            (
                "{python}",
                "-m",
                "pytest_aifactory.services.observability",
                "write-config",
                "{workdir}/prometheus.yml",
                str(settings["pushgateway"]),
                str(settings["scrape_interval"]),
            ),
        ),
        command=(
            "prometheus",
            "--config.file={workdir}/prometheus.yml",
            "--storage.tsdb.path={workdir}/tsdb",
            "--web.listen-address={host}:{ports.http}",
        ),
        probe=HttpProbe(path="/-/ready"),
        readiness_timeout_s=30,
        image="docker://prom/prometheus:v2.53.3",
    )


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] != "write-config":
        sys.exit("usage: python -m pytest_aifactory.services.observability write-config FILE TARGET [INTERVAL]")
    config = prometheus_config(sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else "15s")
    Path(sys.argv[2]).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
