"""One run of the suite: its id, results folder, profile, job registry and services."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.jobs.backends import BACKENDS, Backend, make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.registry import JobRecord, JobRegistry
from pytest_aifactory.jobs.runner import Owner

__all__ = ["RunContext", "cancel_run_jobs", "cleanup_run", "new_run_id", "parse_run_id"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def new_run_id() -> str:
    """A unique, sortable run id: ``20261122-071500-3fa9c1``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def parse_run_id(value: str) -> str:
    """Accept a run id made of letters, digits, '.', '_' and '-' (it names a folder)."""
    if not _RUN_ID.match(value):
        raise ValueError(
            f"invalid run id {value!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


@dataclass
class RunContext:
    """Everything the fixtures of one run share; built once per process."""

    run_id: str
    run_dir: Path
    profile: Profile
    backend: Backend
    registry: JobRegistry
    services: ServiceManager

    @classmethod
    def create(cls, run_id: str, results_dir: Path, profile: Profile, owner_pid: int | None, keep: bool) -> RunContext:
        """Set up the run folder and the service manager (``owner_pid``: the process the jobs die with)."""
        run_dir = results_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        backend = make_backend(profile)
        registry = JobRegistry(run_dir)
        owner = Owner(socket.gethostname(), owner_pid or os.getpid())
        manager = ServiceManager(profile=profile, backend=backend, registry=registry, owner=owner, keep=keep)
        return cls(run_id, run_dir, profile, backend, registry, manager)


def every_backend() -> dict[str, Backend]:
    """One backend of each kind: cleanup knows a job by its backend, id and folder, no profile needed."""
    return {name: cls(Profile(name=f"cleanup-{name}", executor=name)) for name, cls in BACKENDS.items()}  # type: ignore[arg-type]


def cleanup_run(registry: JobRegistry, backends: dict[str, Backend]) -> tuple[list[str], list[str]]:
    """Cancel every job of the run that has not stopped: (what was done, errors).

    A local job whose pid now belongs to another process is left alone and said to be skipped.
    """

    def cancel(record: JobRecord) -> str:
        status = backends[record.backend].cancel(record.job_id, record.folder)
        what = f"{record.service}: {record.backend} job {record.job_id}"
        return f"skipped {what}: {status.skipped}" if status.skipped else f"cancelled {what}"

    return registry.cancel_pending(cancel)


def cancel_run_jobs(registry: JobRegistry, backends: dict[str, Backend]) -> list[str]:
    """Cancel every job of the run that has not stopped; returns the errors."""
    return cleanup_run(registry, backends)[1]
