"""pytest-benchmark histories and regression gates for load results.

Every load result becomes a normal pytest-benchmark entry (named ``test[point]``, grouped by
test), so ``--benchmark-autosave``, ``--benchmark-compare``, ``--benchmark-compare-fail`` and
``pytest-benchmark compare`` work across runs. Its stats are the end-to-end latencies of the
completed requests (seconds); percentiles, throughputs and the configuration are in
``extra_info``. Externally measured samples can only enter pytest-benchmark through its
private API (its issue #52): this module is tested against the pinned range 5.1 to 5.2.

pytest-benchmark's own table would show these entries with its OPS column (1 / mean latency,
not a throughput): it leaves them out unless ``--benchmark-compare`` asks for its comparison;
our results table shows the real figures. Its storage, JSON and ``--benchmark-compare-fail``
see every entry regardless.

``--aif-baseline REPORT|RUN_ID`` adds a gate on our own metrics: a test fails when a point's
throughput dropped, or a latency rose, by more than ``--aif-regression-margin`` percent and
beyond the noise (``export.compare``); it refuses, failing the test, to compare with a
baseline that is not comparable (another profile, partition, service version or image,
model or dataset), naming what differs.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_aifactory.core.metric_table import TABLE
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.export.compare import compare_reports, differences
from pytest_aifactory.plugin.options import setting

__all__ = ["Histories"]

_AIF_MARK = "aif_run_id"  # in the extra_info of every entry made here
_EXTRA = tuple(metric.name for metric in TABLE if metric.extra_info)


class Histories:
    """Feeds pytest-benchmark and gates on a baseline report."""

    def __init__(self, config: pytest.Config, profile: Profile, results_dir: Path, run_id: str) -> None:
        self.config = config
        self.profile = profile
        self.run_id = run_id
        self.baseline = self._load_baseline(setting(config, "aif_baseline"), results_dir)
        self.margin = float(setting(config, "aif_regression_margin")) / 100

    @staticmethod
    def _load_baseline(value: str | None, results_dir: Path) -> dict[str, Any] | None:
        if not value:
            return None
        for path in (Path(value), results_dir / value / "report.json"):
            if path.is_file():
                data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                return data
        raise pytest.UsageError(
            f"--aif-baseline: no report at {value!r} (a report.json path, or a run id in {results_dir})"
        )

    def add(self, item: pytest.Item, result: LoadResult) -> None:
        """One pytest-benchmark entry for ``result`` (when pytest-benchmark is active)."""
        session = getattr(self.config, "_benchmarksession", None)
        if session is None or session.disabled or session.skip:
            return
        from pytest_benchmark.fixture import BenchmarkFixture

        label = f"[{result.label}]" if result.label else ""
        # Only name, _nodeid and callspec are read from the node: a stand-in keeps us off pytest internals
        # (pytest 9.2 has no Node._nodeid, which pytest-benchmark 5.2 reads).
        node = SimpleNamespace(name=f"{item.name}{label}", _nodeid=f"{item.nodeid}{label}")
        fixture = BenchmarkFixture(
            node,
            add_stats=session.benchmarks.append,
            logger=session.logger,
            warner=item.warn,
            disabled=session.disabled,
            **session.options,
        )
        fixture.group = item.name
        fixture._mode = "pytest-aifactory load"  # private API: marks the fixture as used
        metrics = result.metrics()
        fixture.extra_info.update({k: metrics[k] for k in _EXTRA if k in metrics and metrics[k] == metrics[k]})
        fixture.extra_info.update({_AIF_MARK: self.run_id}, aif_profile=self.profile.name, aif_mode=result.mode)
        stats = fixture._make_stats(1)
        latencies = [r.end - r.scheduled for r in result.records if r.ok and not r.warmup and r.end is not None]
        for latency in latencies or [float("nan")]:
            stats.update(latency)

    def regressions(self, item: pytest.Item, results: list[LoadResult]) -> list[str]:
        """Messages for every key metric of ``results`` worse than the baseline by the margin."""
        if self.baseline is None:
            return []
        test = {
            "nodeid": item.nodeid,
            "markers": [mark.name for mark in item.iter_markers()],
            "results": [r.to_json() for r in results],
        }
        profile = {
            "name": self.profile.name,
            "partition": self.profile.slurm.partition,
            "images": {name: o.image for name, o in self.profile.services.items() if o.image},
        }
        current = {"run_id": self.run_id, "provenance": {"profile": profile}, "tests": [test]}
        differing = differences(self.baseline, current)
        if differing:
            lines = "\n".join(f"  {d}" for d in differing)
            pytest.fail(f"not comparable with the baseline {self.baseline['run_id']}:\n{lines}", pytrace=False)
        return [c.message() for c in compare_reports(self.baseline, current, self.margin) if c.regression]

    @pytest.hookimpl(wrapper=True)
    def pytest_benchmark_group_stats(
        self, config: pytest.Config, benchmarks: Any, group_by: str
    ) -> Generator[None, list[tuple[Any, list[dict[str, Any]]]], list[tuple[Any, list[dict[str, Any]]]]]:
        """Keep our entries out of pytest-benchmark's table unless its comparison was asked for."""
        groups = yield
        if config.getoption("benchmark_compare"):
            return groups
        kept = [(name, [b for b in group if _AIF_MARK not in b["extra_info"]]) for name, group in groups]
        return [(name, group) for name, group in kept if group]

    @pytest.hookimpl
    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict[str, Any]) -> None:
        """Name the profile and partition, not the compute node, so runs on any node compare."""
        machine_info["node"] = f"{self.profile.name}:{self.profile.slurm.partition or self.profile.executor}"
        machine_info["aifactory_profile"] = self.profile.name

    @pytest.hookimpl
    def pytest_benchmark_update_json(self, config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
        """Record the run id beside pytest-benchmark's own data."""
        output_json["aifactory_run_id"] = self.run_id
