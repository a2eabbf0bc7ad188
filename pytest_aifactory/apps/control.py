"""``aifactory control``: a small HTTP API to start and stop benchmark runs and services.

For a login node or a CI runner, behind a bearer token (``AIF_CONTROL_TOKEN``). A run is
``pytest benchmarks/SUITE -m MARKERS --aif-profile PROFILE`` started as a local process or as
a Slurm job (through submitit); stopping a run interrupts pytest, which cancels every job
it started, then cancels whatever its job registry still lists. Long-lived services for
exploration are started with the same service manager the fixtures use. The OpenAPI
description is at ``/openapi.json`` (interactive at ``/docs``); ``/ui`` is a small page the
Grafana dashboards link to (start a run, watch and stop runs), whose calls carry the token the
user types in.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.profiles import Profile, available_profiles, load_profile
from pytest_aifactory.jobs.backends import Backend, make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.run import cancel_run_jobs, new_run_id
from pytest_aifactory.services.catalog import build_spec, service_names
from pytest_aifactory.services.spec import Resources, RunningService

__all__ = ["ControlState", "create_app", "run_pytest"]

TOKEN_ENV = "AIF_CONTROL_TOKEN"


class RunRequest(BaseModel):
    """Start a benchmark run."""

    suite: str = Field(description="a folder of benchmarks/ (e.g. inference, database)")
    profile: str = Field(default="local", description="a Slurm profile name")
    marker: str | None = Field(default=None, description="pytest -m expression (default: the suite's name)")
    where: Literal["local", "slurm"] = Field(default="local", description="pytest as a local process or a Slurm job")
    pushgateway: str | None = None
    loki: str | None = None


class ServiceRequest(BaseModel):
    """Start a long-lived service for exploration."""

    name: str
    profile: str = "local"
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)


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


def create_app(state: ControlState) -> FastAPI:
    """The FastAPI application over ``state``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for manager, service in list(state.services.values()):  # nothing outlives the API
            manager.stop(service)

    app = FastAPI(title="pytest-aifactory control API", version="1", description=__doc__, lifespan=lifespan)
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if credentials is None or not secrets.compare_digest(credentials.credentials, state.token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    guard = [Depends(authorized)]
    page = (Path(__file__).parent / "static" / "control.html").read_text(encoding="utf-8")

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def ui() -> str:
        """The page Grafana's links open: start runs, watch and stop them (the token is typed in)."""
        return page

    @app.get("/ui/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def ui_run(run_id: str) -> str:
        """The same page, showing one run."""
        return page

    @app.get("/v1/profiles", dependencies=guard)
    def profiles() -> list[dict[str, str]]:
        """Every valid profile."""
        found = []
        for name in available_profiles(state.root):
            with contextlib.suppress(AifError):
                profile = load_profile(name, state.root)
                found.append({"name": name, "executor": profile.executor, "description": profile.description})
        return found

    @app.get("/v1/suites", dependencies=guard)
    def suites() -> list[dict[str, str]]:
        """Benchmark suites (folders of benchmarks/)."""
        return [{"name": s, "path": f"benchmarks/{s}"} for s in state.suites()]

    @app.post("/v1/runs", status_code=201, dependencies=guard)
    def start_run(body: RunRequest, request: Request) -> dict[str, Any]:
        """Start ``pytest benchmarks/SUITE`` on a profile; returns the run id."""
        if body.suite not in state.suites():
            raise HTTPException(404, f"unknown suite {body.suite!r}; valid suites: {', '.join(state.suites())}")
        profile = state.profile(body.profile)
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
            f"--aif-results-dir={state.results_dir}",
            "-p",
            "no:cacheprovider",
        ]
        argv += [f"--aif-pushgateway={body.pushgateway}"] if body.pushgateway else []
        argv += [f"--aif-loki={body.loki}"] if body.loki else []
        run = RunState(run_id, body.suite, profile.name, body.where, argv, time.time())
        if body.where == "local":
            state.results_dir.mkdir(parents=True, exist_ok=True)
            log = (state.results_dir / f"control-{run_id}.log").open("wb")
            run.process = subprocess.Popen(
                argv, cwd=state.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        else:
            run.backend = make_backend(profile)
            folder = state.results_dir / "control" / run_id
            run.job = run.backend.submit_function(
                folder, "pytest-run", Resources(cpus=2, time_min=240), run_pytest, argv, str(state.root)
            )
        with state.lock:
            state.runs[run_id] = run
        return {
            "run_id": run_id,
            "status": "running",
            "argv": argv,
            "status_url": f"{request.base_url}v1/runs/{run_id}",
        }

    def _run(run_id: str) -> RunState:
        if run_id not in state.runs:
            raise HTTPException(404, f"unknown run {run_id!r}")
        return state.runs[run_id]

    def _describe(run: RunState) -> dict[str, Any]:
        registry = JobRegistry(state.results_dir / run.run_id)
        jobs = [{"service": r.service, "backend": r.backend, "job_id": r.job_id} for r in registry.records()]
        pending = [r.job_id for r in registry.pending()]
        report = state.results_dir / run.run_id / "report.json"
        return {
            "run_id": run.run_id,
            "suite": run.suite,
            "profile": run.profile,
            "where": run.where,
            "status": run.status(),
            "started_at": run.started_at,
            "jobs": jobs,
            "jobs_pending": pending,
            "report": str(report) if report.exists() else None,
        }

    @app.get("/v1/runs", dependencies=guard)
    def list_runs() -> list[dict[str, Any]]:
        """Every run started through this API."""
        return [_describe(run) for run in state.runs.values()]

    @app.get("/v1/runs/{run_id}", dependencies=guard)
    def get_run(run_id: str) -> dict[str, Any]:
        """A run's status, jobs and report path."""
        return _describe(_run(run_id))

    @app.post("/v1/runs/{run_id}/stop", dependencies=guard)
    def stop_run(run_id: str) -> dict[str, Any]:
        """Interrupt the run (pytest cancels its jobs), then cancel anything left."""
        run = _run(run_id)
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
        registry = JobRegistry(state.results_dir / run_id)
        profile = load_profile(run.profile, state.root)
        errors = cancel_run_jobs(registry, {profile.executor: make_backend(profile)})
        if errors:
            raise HTTPException(500, f"could not cancel: {'; '.join(errors)}")
        return _describe(run)

    @app.post("/v1/services", status_code=201, dependencies=guard)
    def start_service(body: ServiceRequest) -> dict[str, Any]:
        """Start a long-lived service (kept until stopped through the API)."""
        profile = state.profile(body.profile)
        if body.name not in service_names():
            raise HTTPException(404, f"unknown service {body.name!r}; valid services: {', '.join(service_names())}")
        try:
            spec = build_spec(body.name, profile, **body.settings)
        except AifError as exc:
            raise HTTPException(422, str(exc)) from None
        registry = JobRegistry(state.results_dir / "control-services")
        manager = ServiceManager(
            profile=profile, backend=make_backend(profile), registry=registry, owner=None, keep=False
        )
        try:
            service = manager.launch(spec)
        except AifError as exc:
            raise HTTPException(502, str(exc)) from None
        service_id = uuid.uuid4().hex[:10]
        with state.lock:
            state.services[service_id] = (manager, service)
        return {"id": service_id, **service.to_json(), "url": service.url()}

    @app.get("/v1/services", dependencies=guard)
    def list_services() -> list[dict[str, Any]]:
        """Services started through the API."""
        return [{"id": sid, **svc.to_json()} for sid, (_, svc) in state.services.items()]

    @app.delete("/v1/services/{service_id}", dependencies=guard)
    def stop_service(service_id: str) -> dict[str, str]:
        """Cancel a service's job and wait until it has left the queue."""
        if service_id not in state.services:
            raise HTTPException(404, f"unknown service id {service_id!r}")
        manager, service = state.services.pop(service_id)
        manager.stop(service)
        return {"id": service_id, "status": "stopped"}

    return app


def serve(host: str, port: int, root: Path, results_dir: Path) -> int:
    """Run the API (blocking); the token comes from ``AIF_CONTROL_TOKEN``."""
    import uvicorn

    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"aifactory control: set {TOKEN_ENV} to the bearer token clients must send", file=sys.stderr)
        return 2
    state = ControlState(root=root.resolve(), results_dir=results_dir.resolve(), token=token)
    uvicorn.run(create_app(state), host=host, port=port, log_level="warning")
    return 0
