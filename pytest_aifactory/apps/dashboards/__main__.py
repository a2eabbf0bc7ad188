"""``python -m pytest_aifactory.apps.dashboards [DIR]``: write every dashboard to ``DIR`` (``grafana/dashboards``)."""

from __future__ import annotations

import sys
from pathlib import Path

from pytest_aifactory.apps.dashboards.build import write_dashboards

__all__: list[str] = []

if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "grafana/dashboards")
    for written in write_dashboards(target):
        print(written)
