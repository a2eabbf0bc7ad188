"""The runs the control API starts: how one is launched (a local pytest or a Slurm job), described and stopped.

``ControlState`` is what the API knows: the project, its runs and its exploration services.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, Field

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.profiles import Profile, available_profiles, load_profile
from pytest_aifactory.jobs.backends import Backend, make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.run import cancel_run_jobs, new_run_id
from pytest_aifactory.services.spec import Resources, RunningService

__all__ = ["ControlState", "RunRequest", "RunState", "run_pytest"]


class RunRequest(BaseModel):
    """Start a benchmark run."""

    suite: str = Field(description="a folder of benchmarks/ (e.g. inference, database)")
    profile: str = Field(default="local", description="a Slurm profile name")
    marker: str | None = Field(default=None, description="pytest -m expression (default: the suite's name)")
    where: Literal["local", "slurm"] = Field(default="local", description="pytest as a local process or a Slurm job")
    pushgateway: str | None = None
    loki: str | None = None


@dataclass
class RunState:
    """One run started through the API."""

    run_id: str
    suite: str
    profile: str
    where: str
    argv: list[str]
    started_at: float
    process: subprocess.Popen[bytes] | None = None
    job: Any = None
    backend: Backend | None = None
    stopped: bool = False

    def status(self) -> str:
        """running, passed, failed, interrupted, error or stopped."""
        if self.process is not None:
            code = self.process.poll()
        elif not self.job.done():
            code = None
        else:
            try:
                code = int(self.job.result())
            except Exception:  # a failed or cancelled job: submitit raises its error
                code = 3
        if code is None:
            return "running"
        if self.stopped:
            return "stopped"
        return {0: "passed", 1: "failed", 2: "interrupted"}.get(int(code), "error")


def run_pytest(argv: list[str], cwd: str) -> int:
    """Inside a Slurm job: run pytest as a child (scancel's SIGTERM reaches it and it cleans up)."""
    return subprocess.run(argv, cwd=cwd, check=False).returncode


@dataclass
class ControlState:
    """What the API knows: the project, its runs and its exploration services."""

    root: Path
    results_dir: Path
    token: str
    runs: dict[str, RunState] = field(default_factory=dict)
    services: dict[str, tuple[ServiceManager, RunningService]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def suites(self) -> list[str]:
        """Folders of ``benchmarks/`` holding test files."""
        base = self.root / "benchmarks"
        return (
            sorted(p.name for p in base.iterdir() if p.is_dir() and any(p.glob("test_*.py"))) if base.is_dir() else []
        )

    def profile(self, name: str) -> Profile:
        """A profile, or 404 naming the valid ones (422 when the file is invalid)."""
        valid = available_profiles(self.root)
        if name not in valid:
            raise HTTPException(404, f"unknown profile {name!r}; valid profiles: {', '.join(valid)}")
        try:
            return load_profile(name, self.root)
        except AifError as exc:
            raise HTTPException(422, str(exc)) from None

    def start_run(self, body: RunRequest) -> RunState:
        """Start ``pytest benchmarks/SUITE`` on a profile, locally or as a Slurm job (404 for an unknown suite)."""
        if body.suite not in self.suites():
            raise HTTPException(404, f"unknown suite {body.suite!r}; valid suites: {', '.join(self.suites())}")
        profile = self.profile(body.profile)
        run_id = new_run_id()
        argv = [
            sys.executable,
            "-m",
            "pytest",
            f"benchmarks/{body.suite}",
            "-m",
            body.marker or body.suite,
            f"--aif-profile={profile.name}",
            f"--aif-run-id={run_id}",
            f"--aif-results-dir={self.results_dir}",
            "-p",
            "no:cacheprovider",
        ]
        argv += [f"--aif-pushgateway={body.pushgateway}"] if body.pushgateway else []
        argv += [f"--aif-loki={body.loki}"] if body.loki else []
        run = RunState(run_id, body.suite, profile.name, body.where, argv, time.time())
        if body.where == "local":
            self.results_dir.mkdir(parents=True, exist_ok=True)
            log = (self.results_dir / f"control-{run_id}.log").open("wb")
            run.process = subprocess.Popen(
                argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        else:
            run.backend = make_backend(profile)
            folder = self.results_dir / "control" / run_id
            run.job = run.backend.submit_function(
                folder, "pytest-run", Resources(cpus=2, time_min=240), run_pytest, argv, str(self.root)
            )
        with self.lock:
            self.runs[run_id] = run
        return run

    def run(self, run_id: str) -> RunState:
        """A run started through the API, or 404."""
        if run_id not in self.runs:
            raise HTTPException(404, f"unknown run {run_id!r}")
        return self.runs[run_id]

    def describe(self, run: RunState) -> dict[str, Any]:
        """A run's status, jobs (and those still pending), report, and the job running pytest (where=slurm)."""
        registry = JobRegistry(self.results_dir / run.run_id)
        jobs = [{"service": r.service, "backend": r.backend, "job_id": r.job_id} for r in registry.records()]
        pending = [r.job_id for r in registry.pending()]
        report = self.results_dir / run.run_id / "report.json"
        return {
            "run_id": run.run_id,
            "suite": run.suite,
            "profile": run.profile,
            "where": run.where,
            "pytest_job_id": str(run.job.job_id) if run.job is not None else None,
            "status": run.status(),
            "started_at": run.started_at,
            "jobs": jobs,
            "jobs_pending": pending,
            "report": str(report) if report.exists() else None,
        }

    def stop_run(self, run: RunState) -> None:
        """Interrupt the run (pytest cancels its jobs), then cancel anything left (500 when that fails)."""
        run.stopped = True
        if run.process is not None and run.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGINT)
            try:
                run.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
        elif run.job is not None and run.backend is not None and not run.job.done():
            run.backend.cancel(str(run.job.job_id), Path(run.job.paths.folder))
        registry = JobRegistry(self.results_dir / run.run_id)
        profile = load_profile(run.profile, self.root)
        errors = cancel_run_jobs(registry, {profile.executor: make_backend(profile)})
        if errors:
            raise HTTPException(500, f"could not cancel: {'; '.join(errors)}")
