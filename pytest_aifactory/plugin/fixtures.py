"""The run's fixtures: ``aif_run``, ``aif_profile``, ``aif_service``, ``aif_shared_service``, ``aif_load``.

A test fails when a service *it requested* died during it (directly as a fixture value, or
through a call of ``aif_service``/``aif_shared_service`` made for it), with the service's
state and logs; a service another test started is not its concern.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from pytest_aifactory.core.errors import (
    JobError,
    LoadConfigError,
    ProfileError,
    ServiceConfigError,
    ServiceDiedError,
    ServiceStartupError,
)
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.jobs.liveness import LivenessWatcher
from pytest_aifactory.jobs.registry import JobRecord
from pytest_aifactory.jobs.run import RunContext
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.plugin.options import setting
from pytest_aifactory.plugin.outcomes import ENDED_KEY, RESULTS_KEY, progress_printer, terminal_lines
from pytest_aifactory.plugin.session import SESSION_KEY
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.services.spec import Resources, RunningService, ServiceSpec
from pytest_aifactory.workloads.runner import LoadRunner

__all__ = ["ServiceFactory"]

_REQUESTED_KEY = pytest.StashKey[list[RunningService]]()


class ServiceFactory:
    """Callable fixture value: ``aif_service("name", **overrides)`` or ``aif_service(spec)``."""

    def __init__(self, run: RunContext, shared: bool) -> None:
        self._run = run
        self._shared = shared
        self.services: list[RunningService] = []
        self.requester: pytest.Item | None = None  # the test being set up or run, set by the hooks below

    def spec(self, service: str | ServiceSpec, **overrides: Any) -> ServiceSpec:
        """The spec a call would start (catalog name under the run's profile, or as given)."""
        if isinstance(service, ServiceSpec):
            return service.with_overrides(**overrides) if overrides else service
        return build_spec(service, self._run.profile, **overrides)

    def __call__(self, service: str | ServiceSpec, **overrides: Any) -> RunningService:
        """Start (or attach to, when shared) the service and wait until it is ready."""
        spec = self.spec(service, **overrides)
        manager = self._run.services
        running = manager.shared(spec) if self._shared else manager.launch(spec)
        self.services.append(running)
        if self.requester is not None:
            self.requester.stash.setdefault(_REQUESTED_KEY, []).append(running)
        return running

    def stop(self, service: RunningService) -> None:
        """Stop a private service now (a test of a restart or of a clean stop); it is no longer checked."""
        if self._shared:
            raise ValueError("a shared service stops with the run; start a private one with aif_service")
        self._run.services.stop(service)
        self.services.remove(service)
        if self.requester is not None and service in self.requester.stash.get(_REQUESTED_KEY, []):
            self.requester.stash[_REQUESTED_KEY].remove(service)

    def close(self) -> None:
        """Stop the private services this factory started."""
        if self._shared:
            return
        for service in self.services:
            self._run.services.stop(service)


def _factories(item: pytest.Item) -> list[ServiceFactory]:
    return [value for value in getattr(item, "funcargs", {}).values() if isinstance(value, ServiceFactory)]


def _requested(item: pytest.Item) -> list[RunningService]:
    """The services ``item`` asked for: fixture values, and what factory calls made for it returned."""
    funcargs = getattr(item, "funcargs", None) or {}  # None once the test is torn down
    found = [value for value in funcargs.values() if isinstance(value, RunningService)]
    return found + [s for s in item.stash.get(_REQUESTED_KEY, []) if s not in found]


def _death(item: pytest.Item, failed: bool = False) -> str | None:
    """Why a service ``item`` requested is gone (its state and logs), or None while all live.

    After a failure (``failed``), a service that stopped answering its probe is gone too.
    """
    session = item.config.stash[SESSION_KEY]
    if not session.active:
        return None
    for service in _requested(item):
        try:
            session.run.services.check_alive(service, probe=failed)
        except ServiceDiedError as exc:
            return str(exc)
    return None


_SHARED: list[ServiceFactory] = []  # the session-scoped factory, once created (one per process)
# Said in one paragraph, without a traceback: bad input, a service that could not start.
_PLAIN_ERRORS = (JobError, LoadConfigError, ProfileError, ServiceConfigError, ServiceStartupError)


def _plainly(exc: BaseException) -> str | None:
    """The message of an error that is a failure of its own (not of the code around it), else None."""
    return str(exc) if isinstance(exc, _PLAIN_ERRORS) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Calls of the shared factory during this test's setup are made for this test.

    A service that cannot start, a bad setting: one paragraph, no traceback.
    """
    for factory in _SHARED:
        factory.requester = item
    try:
        yield
    except BaseException as exc:
        problem = _plainly(exc)
        if problem is None:
            raise
    else:
        problem = None
    finally:
        for factory in _factories(item):
            factory.requester = item
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A service the test requested that died during it fails the test, with its state and logs.

    The death is the failure, said once: what it caused in the test body (a stopped load,
    refused connections) is not chained to it. Bad load parameters are one paragraph too.
    """
    try:
        yield
    except BaseException as exc:
        failure = (
            None if isinstance(exc, KeyboardInterrupt | SystemExit) else _death(item, failed=True) or _plainly(exc)
        )
        if failure is None:
            raise
    else:
        failure = _death(item)
    finally:
        for factory in _SHARED:
            factory.requester = None
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return None


@pytest.fixture(scope="session")
def aif_run(pytestconfig: pytest.Config) -> RunContext:
    """The run: id, results folder, profile, job registry and service manager."""
    return pytestconfig.stash[SESSION_KEY].run


@pytest.fixture(scope="session")
def aif_profile(aif_run: RunContext) -> Profile:
    """The Slurm profile of this run (``--aif-profile``)."""
    return aif_run.profile


@pytest.fixture(scope="session")
def aif_vars(aif_profile: Profile) -> Callable[..., Any]:
    """``aif_vars("llm_rates", [1, 2, 4])``: a suite variable from the profile, else the default.

    ``aif_vars("vec_dataset", "clustered", choices=DATASETS)`` also checks the value; a value of
    another kind than the default is refused too, naming the profile and the key.
    """
    return aif_profile.var


@pytest.fixture
def aif_service(request: pytest.FixtureRequest, aif_run: RunContext) -> Iterator[ServiceFactory]:
    """Start private services for one test: ``aif_service("http", cpus=2)``; stopped after it."""
    factory = ServiceFactory(aif_run, shared=False)
    factory.requester = request.node
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def aif_shared_service(request: pytest.FixtureRequest, aif_run: RunContext) -> Iterator[ServiceFactory]:
    """Start a service once for the whole run (once across xdist workers); stopped at the end."""
    factory = ServiceFactory(aif_run, shared=True)
    factory.requester = request.node if isinstance(request.node, pytest.Item) else None
    _SHARED.append(factory)
    try:
        yield factory
    finally:
        _SHARED.remove(factory)
        factory.close()


ProgressFactory = Callable[[str], Callable[[Progress], None]]


def _combined(factories: list[ProgressFactory]) -> ProgressFactory | None:
    """One progress factory feeding all of ``factories`` (terminal line, live pushes)."""
    if not factories:
        return None

    def factory(label: str) -> Callable[[Progress], None]:
        callbacks = [f(label) for f in factories]

        def update(progress: Progress) -> None:
            for callback in callbacks:
                callback(progress)

        return update

    return factory


@pytest.fixture
def aif_load(request: pytest.FixtureRequest, pytestconfig: pytest.Config, aif_run: RunContext) -> Iterator[LoadRunner]:
    """Drive load and get results: ``aif_load.openai(llm_service, rate=20, count=200)``.

    Every result is recorded for the test's ``slo`` marker and the results table, and handed
    to the ``pytest_aifactory_result`` hook. With ``nodes=N`` the load runs as N jobs of the
    profile (client nodes); they are recorded in the run's job registry and cancelled if
    the test ends before they do. A service the test requested that dies stops the load under
    way within seconds (the liveness watcher tells the engine); what it measured is kept.
    """
    item = request.node
    session = pytestconfig.stash[SESSION_KEY]
    shard_dir = aif_run.run_dir / "load" / f"{item.name}-{os.getpid()}"
    shards: list[JobRecord] = []

    def record(result: LoadResult) -> None:
        item.stash.setdefault(RESULTS_KEY, []).append(result)
        item.stash.setdefault(ENDED_KEY, []).append(time.time())
        assert session.histories is not None
        session.histories.add(item, result)
        pytestconfig.hook.pytest_aifactory_result(item=item, result=result)
        if session.recorder is not None:
            session.recorder.result_measured(item.nodeid, result)

    def submit(fn: Callable[..., Any], *args: Any) -> Any:
        folder = shard_dir / f"job-{len(shards)}"
        with aif_run.registry.submitting(aif_run.backend.name, "load-shard", folder) as note:
            job = aif_run.backend.submit_function(folder, "load-shard", Resources(cpus=2, time_min=60), fn, *args)
            shards.append(note(str(job.job_id)))
        return job

    write = terminal_lines(pytestconfig)
    factories: list[ProgressFactory | None] = []
    if write is not None:
        factories.append(progress_printer(write, item.name))
    if session.recorder is not None:
        factories.append(session.recorder.progress(item.name))
    watcher = LivenessWatcher(lambda: _requested(item), aif_run.services.is_alive)
    try:
        yield LoadRunner(
            on_result=record,
            progress=_combined([f for f in factories if f is not None]),
            workers=int(setting(pytestconfig, "aif_load_workers")),
            submit=submit,
            shard_dir=shard_dir,
            stop=watcher.stop,
            sacct_energy=aif_run.backend.consumed_energy,
            low_wakeup_latency=bool(setting(pytestconfig, "aif_low_wakeup_latency")),
            realtime_priority=bool(setting(pytestconfig, "aif_realtime_priority")),
        )
    finally:
        watcher.close()
    for shard in shards:
        aif_run.backend.cancel(shard.job_id, shard.folder)
        aif_run.registry.stopped(shard)
