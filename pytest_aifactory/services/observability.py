"""The monitoring stack as services: Prometheus Pushgateway and Prometheus (images, or Debian packages).

Prometheus scrapes the Pushgateway with ``honor_labels: true`` (so the pushed ``job``,
``run_id`` and ``test`` labels are kept); its configuration is written by the job, outside the
image (which has no Python).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import CallProbe, HttpProbe, ServiceSpec

__all__ = ["PROMETHEUS", "PUSHGATEWAY", "prometheus", "prometheus_config", "pushgateway"]

PUSHGATEWAY: dict[str, SettingValue] = {}


def pushgateway(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The Pushgateway (Debian names it ``prometheus-pushgateway``), its state in the scratch folder."""
    return ServiceSpec(
        name="pushgateway",
        command=(
            "pushgateway",
            "--web.listen-address={host}:{ports.http}",
            "--persistence.file={workdir}/pushgateway.state",
        ),
        probe=HttpProbe(path="/-/ready"),
        readiness_timeout_s=30,
        image="docker://prom/pushgateway:v1.11.0",
        host_commands={"pushgateway": "prometheus-pushgateway"},  # Debian's name
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


_DURATION = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _interval_s(interval: str) -> float:
    """A Prometheus duration (``1s``, ``500ms``, ``1m30s``) in seconds."""
    parts = _DURATION.findall(interval)
    if not parts or "".join(number + unit for number, unit in parts) != interval:
        raise ServiceConfigError(
            f"service 'prometheus': settings.scrape_interval is {interval!r}; "
            "valid: a Prometheus duration such as 1s, 500ms, 15s or 1m30s"
        )
    return sum(int(number) * _UNIT_S[unit] for number, unit in parts)


def prometheus(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Prometheus scraping ``settings.pushgateway`` (host:port) every ``scrape_interval``; ready once it has.

    Its first scrape comes up to 5 s (target discovery) and one interval after it starts.
    """
    gateway, interval = str(settings["pushgateway"]), str(settings["scrape_interval"])
    if not gateway:
        raise ServiceConfigError("service 'prometheus': settings.pushgateway is empty; valid: the host:port it scrapes")
    config = prometheus_config(gateway, interval)
    return ServiceSpec(
        name="prometheus",
        files={"{workdir}/prometheus.yml": yaml.safe_dump(config, sort_keys=False)},
        command=(
            "prometheus",
            "--config.file={workdir}/prometheus.yml",
            "--storage.tsdb.path={workdir}/tsdb",
            "--web.listen-address={host}:{ports.http}",
        ),
        probe=CallProbe("pytest_aifactory.services.readiness:prometheus_ready"),
        readiness_timeout_s=30 + 2 * _interval_s(interval),
        image="docker://prom/prometheus:v2.53.3",
    )
