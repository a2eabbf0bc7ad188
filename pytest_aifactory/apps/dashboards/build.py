"""Every dashboard as Grafana JSON, and the stable text committed in ``grafana/dashboards``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from pytest_aifactory.apps.dashboards.resources import logs_dashboard, services
from pytest_aifactory.apps.dashboards.runs import live, trends

__all__ = ["build_dashboards", "render", "write_dashboards"]


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
