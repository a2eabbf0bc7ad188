"""The plugin pytest loads (entry point ``pytest11: aifactory``): markers, options and the run's lifecycle.

The fixtures live in ``fixtures`` and ``service_fixtures``, the SLO verdicts and the results
table in ``outcomes``, the exporters in ``recording``; this module registers them and decides
when the run starts (see ``session``).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_aifactory.plugin import fixtures, hookspecs, literal_loads, service_fixtures
from pytest_aifactory.plugin.options import add_options, explicit_options, project_root, results_dir
from pytest_aifactory.plugin.outcomes import Outcomes, check_slos
from pytest_aifactory.plugin.session import SESSION_KEY, USED_ATTRIBUTE, RunSession, information_only

MARKERS = {
    "inference": "benchmarks of inference servers (vLLM, Triton, llama.cpp, Ollama)",
    "database": "benchmarks of relational databases (PostgreSQL)",
    "objectstore": "benchmarks of S3 object storage",
    "vectordb": "benchmarks of vector databases (Milvus, Chroma, FAISS, Qdrant, Weaviate)",
    "filestorage": "benchmarks of file systems (parallel file system, local disk)",
    "calibration": "calibration of the load engine itself (benchmarks/calibration)",
    "slurm": "needs a working Slurm cluster (sbatch, squeue, sacct); fails under CI=true when missing",
    "slo(*expressions)": "service-level objectives checked against every load result of the test, "
    "e.g. slo('p99_ttft_ms <= 500', 'error_rate <= 0.01')",
}
_MARKER_NAMES = frozenset(name.split("(", 1)[0] for name in MARKERS) - {"slurm"}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """``pytest_aifactory_result``: another plugin's exporter gets every load result."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every ``--aif-*`` option, in one group, with its ini twin."""
    add_options(parser)


class XdistHooks:
    """The xdist controller's side: run id and pid to every worker; the run starts with the first benchmark."""

    def __init__(self, session: RunSession) -> None:
        self.session = session

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        """Pass the run id and the owner pid to a starting worker."""
        node.workerinput["aif_run_id"] = self.session.run_id
        node.workerinput["aif_owner_pid"] = os.getpid()
        node.workerinput["aif_s3_keys"] = self.session.s3_keys

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The first report of a test that uses the plugin starts the controller's run.

        The recorder registered now is not in this hook call any more: it is handed the report.
        """
        if self.session.active or not getattr(report, USED_ATTRIBUTE, False):
            return
        self.session.activate()
        assert self.session.recorder is not None
        self.session.recorder.pytest_runtest_logstart(report.nodeid)
        self.session.recorder.pytest_runtest_logreport(report)


_BENCHMARK_STORAGE_KEY = pytest.StashKey[Path]()


def _benchmark_storage(config: pytest.Config) -> Path | None:
    storage = str(getattr(config.option, "benchmark_storage", "") or "")
    if not storage.startswith("file://"):
        return None
    return config.invocation_params.dir / storage.removeprefix("file://")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Note whether pytest-benchmark's storage folder exists before it creates it (see unconfigure)."""
    storage = _benchmark_storage(early_config)
    if storage is not None and not storage.exists():
        early_config.stash[_BENCHMARK_STORAGE_KEY] = storage


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """pytest-benchmark creates its storage folder in every run: remove it again if it stayed empty."""
    storage = config.stash.get(_BENCHMARK_STORAGE_KEY, None)
    if storage is not None and storage.is_dir() and not any(storage.iterdir()):
        storage.rmdir()


def pytest_configure(config: pytest.Config) -> None:
    """Register markers, fixtures and hook plugins; nothing is created on disk here."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    session = RunSession(config)
    config.stash[SESSION_KEY] = session
    if explicit_options(config):
        session.profile  # noqa: B018 - a bad --aif-profile is a usage error before anything runs
    config.pluginmanager.register(fixtures, "aifactory-fixtures")
    config.pluginmanager.register(service_fixtures, "aifactory-service-fixtures")
    config.pluginmanager.register(literal_loads, "aifactory-literal-loads")
    config.pluginmanager.register(
        Outcomes(config, lambda: session.profile.vars, session.regressions), "aifactory-outcomes"
    )
    if not session.is_worker and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(session), "aifactory-xdist")


def _fixture_names(module: ModuleType) -> set[str]:
    names = set()
    for attribute, value in vars(module).items():
        marker = getattr(value, "_fixture_function_marker", None) or getattr(value, "_pytestfixturefunction", None)
        if marker is not None:
            names.add(marker.name or attribute)
    return names


_FIXTURES = frozenset(_fixture_names(fixtures) | _fixture_names(service_fixtures))


def uses_plugin(item: pytest.Item) -> bool:
    """True when ``item`` requests an aifactory fixture or carries an aifactory marker."""
    if any(item.get_closest_marker(name) is not None for name in _MARKER_NAMES):
        return True
    return bool(set(getattr(item, "fixturenames", ())) & _FIXTURES)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """After ``-m``/``-k``: start the run when a selected test (or an option) asks for aifactory.

    Not after a collection error (a bad literal load argument...): pytest runs nothing then; nor
    after a malformed SLO of a selected test, a usage error before anything is created.
    """
    run = config.stash[SESSION_KEY]
    check_slos(items, lambda: run.profile.vars)
    if information_only(config) or (session.testsfailed and not config.option.continue_on_collection_errors):
        return
    if explicit_options(config) or any(uses_plugin(item) for item in items):
        run.activate()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """An xdist controller given ``--aif-*`` options starts the run at once (it collects nothing)."""
    config = session.config
    if config.pluginmanager.hasplugin("dsession") and explicit_options(config) and not information_only(config):
        config.stash[SESSION_KEY].activate()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Profile, run id and results folder, in a benchmark project or when an ``--aif-*`` option is given."""
    if not explicit_options(config) and not (project_root(config) / "slurm_profiles").is_dir():
        return []
    session = config.stash[SESSION_KEY]
    return [f"aifactory: profile {session.profile.name}, run {session.run_id}, results in {results_dir(config)}"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Mark the reports of tests that use the plugin (the xdist controller starts its run on them)."""
    report = yield
    if uses_plugin(item) and call.when == "setup":
        setattr(report, USED_ATTRIBUTE, True)
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After fixture teardown: cancel whatever the run left (shared services, xdist leftovers)."""
    run = session.config.stash[SESSION_KEY]
    if not run.is_worker:
        run.cancel_leftovers()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Jobs that could not be cancelled, services left running."""
    config.stash[SESSION_KEY].terminal_summary(terminalreporter)
