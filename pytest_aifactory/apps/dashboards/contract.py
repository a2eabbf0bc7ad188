"""The contract between dashboards and exporters: metrics, labels and datasource uids that exist."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_aifactory.delivery.loki import LOKI_LABELS
from pytest_aifactory.delivery.pushgateway import GROUP_LABELS
from pytest_aifactory.export.prometheus import FINAL_METRICS, LIVE_METRICS
from pytest_aifactory.jobs.telemetry import MONITOR_METRICS

__all__ = ["contract_problems", "emitted"]


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
