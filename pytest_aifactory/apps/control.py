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
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from pytest_aifactory.apps.run_state import ControlState, RunRequest
from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.profiles import available_profiles, load_profile
from pytest_aifactory.jobs.backends import make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.services.catalog import build_spec, service_names

__all__ = ["create_app", "serve"]

TOKEN_ENV = "AIF_CONTROL_TOKEN"


class ServiceRequest(BaseModel):
    """Start a long-lived service for exploration."""

    name: str
    profile: str = "local"
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)


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
        run = state.start_run(body)
        return {
            "run_id": run.run_id,
            "status": "running",
            "argv": run.argv,
            "status_url": f"{request.base_url}v1/runs/{run.run_id}",
        }

    @app.get("/v1/runs", dependencies=guard)
    def list_runs() -> list[dict[str, Any]]:
        """Every run started through this API."""
        return [state.describe(run) for run in state.runs.values()]

    @app.get("/v1/runs/{run_id}", dependencies=guard)
    def get_run(run_id: str) -> dict[str, Any]:
        """A run's status, jobs and report path."""
        return state.describe(state.run(run_id))

    @app.post("/v1/runs/{run_id}/stop", dependencies=guard)
    def stop_run(run_id: str) -> dict[str, Any]:
        """Interrupt the run (pytest cancels its jobs), then cancel anything left."""
        run = state.run(run_id)
        state.stop_run(run)
        return state.describe(run)

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
