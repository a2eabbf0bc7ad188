"""The run of one pytest session, created the first time something needs it.

A pytest run that selects no benchmark (no test using an aifactory fixture or marker) and
passes no ``--aif-*`` option never creates it: no folder, report, signal handler,
environment variable or atexit entry. It is created (``RunSession.activate``) after
collection when a selected test needs it, when an ``--aif-*`` option was given, when a
fixture asks for it, or (in the xdist controller, which collects nothing) when the first
report of such a test arrives from a worker.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import secrets
import signal
import subprocess
import threading
from types import FrameType
from typing import Any

import pytest

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.core.profiles import Profile, load_profile
from pytest_aifactory.core.secrets import RUN_SECRET_VARIABLES
from pytest_aifactory.jobs.backends import check_partitions
from pytest_aifactory.jobs.run import RunContext, cancel_run_jobs, new_run_id
from pytest_aifactory.jobs.watchdog import start_watchdog
from pytest_aifactory.plugin.histories import Histories
from pytest_aifactory.plugin.options import check_settings, project_root, results_dir, setting
from pytest_aifactory.plugin.recording import Recorder
from pytest_aifactory.services.catalog import check_profile

__all__ = ["SESSION_KEY", "USED_ATTRIBUTE", "RunSession"]

SESSION_KEY = pytest.StashKey["RunSession"]()
USED_ATTRIBUTE = "aifactory_used"  # set on the reports of tests that use the plugin (read by the xdist controller)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def information_only(config: pytest.Config) -> bool:
    """True for runs that only show something (``--collect-only``, ``--help``, ``--markers`` ...)."""
    option = config.option
    return any(
        getattr(option, name, False)
        for name in ("collectonly", "help", "version", "markers", "showfixtures", "show_fixtures_per_test")
    )


def load_profile_setting(config: pytest.Config) -> Profile:
    """The profile ``--aif-profile`` (or ini ``aif_profile``) names; a usage error naming the flag if bad.

    ``--aif-llm`` replaces the profile's ``llm`` (the ``llm_service`` fixture's server).
    """
    try:
        profile = load_profile(str(setting(config, "aif_profile")), project_root=project_root(config))
        check_profile(profile)
        if not information_only(config):  # collecting a cluster profile's suites needs no cluster
            check_partitions(profile)
    except AifError as exc:
        raise pytest.UsageError(f"--aif-profile: {exc}") from None
    llm = setting(config, "aif_llm")
    if llm:
        profile = dataclasses.replace(profile, llm=str(llm))
        try:
            check_profile(profile)
        except AifError as exc:
            raise pytest.UsageError(f"--aif-llm: {exc}") from None
    return profile


class RunSession:
    """Holds the run id from the start and the run context once activated."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        handed: dict[str, Any] = getattr(config, "workerinput", {})  # what the xdist controller passed
        self.run_id = str(handed.get("aif_run_id") or setting(config, "aif_run_id") or new_run_id())
        self.owner_pid = int(handed.get("aif_owner_pid") or os.getpid())
        # The run's local S3 credentials and vLLM API key: chosen now, put into the environment (unless
        # set) only when the run starts (workers get the controller's, as they may start before it does).
        self.s3_keys: dict[str, str] = handed.get("aif_s3_keys") or {
            v: secrets.token_hex(16) for v in RUN_SECRET_VARIABLES
        }
        self.errors: list[str] = []
        self._profile: Profile | None = None
        self._run: RunContext | None = None
        self.recorder: Recorder | None = None
        self.histories: Histories | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None

    @property
    def active(self) -> bool:
        """True once the run context exists."""
        return self._run is not None

    @property
    def profile(self) -> Profile:
        """The run's profile, loaded (and validated) the first time it is asked for."""
        if self._profile is None:
            self._profile = load_profile_setting(self.config)
        return self._profile

    @property
    def run(self) -> RunContext:
        """The run context, activating the run if needed."""
        if self._run is None:
            self.activate()
        assert self._run is not None
        return self._run

    def activate(self) -> None:
        """Create the results folder, registry, exporters, signal handler and atexit cleanup."""
        if self._run is not None:
            return
        config = self.config
        check_settings(config)  # before the results folder exists: a bad value leaves nothing behind
        for variable, value in self.s3_keys.items():  # before the recorder: its redactor masks them
            os.environ.setdefault(variable, value)
        keep = bool(setting(config, "aif_keep_services"))
        run = RunContext.create(self.run_id, results_dir(config), self.profile, self.owner_pid, keep)
        self._run = run
        self.histories = Histories(config, self.profile, results_dir(config), self.run_id)
        config.pluginmanager.register(self.histories, "aifactory-histories")
        self.recorder = Recorder(config, run, self.is_worker)
        config.pluginmanager.register(self.recorder, "aifactory-recorder")
        self.recorder.run_started()
        if self.is_worker:
            return
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a CI timeout, scancel of a batch run) takes the Ctrl-C path: teardown runs.
            signal.signal(signal.SIGTERM, _raise_interrupt)
        atexit.register(self.cancel_leftovers)
        if not run.services.keep:  # pending jobs of a SIGKILLed run are cancelled too
            self.watchdog = start_watchdog(run.run_dir, self.owner_pid)

    def regressions(self, item: pytest.Item, results: list[LoadResult]) -> list[str]:
        """What got worse against ``--aif-baseline`` (nothing before the run started)."""
        return self.histories.regressions(item, results) if self.histories is not None else []

    def cancel_leftovers(self) -> None:
        """Cancel every job of the run that has not stopped (unless services are kept)."""
        if self._run is not None and not self._run.services.keep:
            self.errors += cancel_run_jobs(self._run.registry, {self._run.backend.name: self._run.backend})

    def terminal_summary(self, terminalreporter: Any) -> None:
        """Jobs that could not be cancelled, and services left running on purpose."""
        if self._run is None:
            return
        run, write = self._run, terminalreporter.write_line
        commands = run.backend.commands_run()
        if commands:
            counts = ", ".join(f"{name} {count}" for name, count in commands.items())
            write(f"aifactory: {run.backend.name} commands run by this process: {counts}")
        if self.errors:
            terminalreporter.section("aifactory: jobs that could not be cancelled", red=True)
            for line in self.errors:
                write(line)
            write(f"retry with: aifactory cleanup {run.run_id} --results-dir {run.run_dir.parent}")
        pending = run.registry.pending()
        if run.services.keep and pending:
            terminalreporter.section("aifactory: services left running (--aif-keep-services)")
            for record in pending:
                write(f"{record.service}: {record.backend} job {record.job_id}, folder {record.folder}")
            write(f"stop them with: aifactory cleanup {run.run_id} --results-dir {run.run_dir.parent}")
