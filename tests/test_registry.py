"""The job registry: write-ahead intents, and cleanup that never signals a stranger."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import aifactory, wait_for

from pytest_aifactory.core.errors import JobError
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.jobs.backends import LocalBackend
from pytest_aifactory.jobs.processes import process_start
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, PROCESS_FILE, LaunchPlan
from pytest_aifactory.services.spec import Resources, ServiceSpec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process that cleanup must leave alone."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def cleanup(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return aifactory("cleanup", run_dir.name, "--results-dir", str(run_dir.parent))


def test_cleanup_never_signals_a_process_that_reused_the_pid(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    """A stale run's job and service pids now belong to an unrelated process: it is skipped, not killed."""
    run_dir, folder, pid = tmp_path / "stale", tmp_path / "stale" / "jobs" / "http-1", stranger.pid
    folder.mkdir(parents=True)
    start = process_start(pid)
    assert start is not None
    (folder / PROCESS_FILE.format(job_id=pid)).write_text(json.dumps({"pid": pid, "start": start - 100}))
    (folder / ENDPOINT_FILE).write_text(json.dumps({"host": "127.0.0.1", "pid": pid, "pid_start": start - 50}))
    with JobRegistry(run_dir).submitting("local", "http", folder) as note:
        note(str(pid))
    done = cleanup(run_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"skipped http: local job {pid}: job pid {pid} is now another process, "
        f"service pid {pid} is now another process: not signalled"
    ]
    with pytest.raises(subprocess.TimeoutExpired):  # a signal would have ended it by then
        stranger.wait(timeout=1)
    assert JobRegistry(run_dir).pending() == []


class _LostReply(LocalBackend):
    """The job starts, then the submit fails (a lost scheduler reply, a crash before the id is noted)."""

    def submit_function(self, folder: Path, name: str, resources: Resources, fn: Any, *args: Any) -> Any:
        super().submit_function(folder, name, resources, fn, *args)
        raise JobError("lost the scheduler's reply")


@pytest.fixture
def backend() -> Iterator[_LostReply]:
    """The backend; whatever job it started is stopped at the end, even if the test failed before cleanup."""
    backend = _LostReply(Profile(name="local", executor="local"))
    yield backend
    for job_id, job in backend.jobs.items():
        backend.cancel(job_id, job.paths.folder)


def test_intent_of_a_submit_that_never_returned_is_resolved_and_cancelled(tmp_path: Path, backend: _LostReply) -> None:
    run_dir, folder = tmp_path / "crashed", tmp_path / "crashed" / "jobs" / "sleeper-1"
    registry = JobRegistry(run_dir)
    plan = LaunchPlan(ServiceSpec(name="sleeper", command=("sleep", "300"), ports=()), folder)
    with pytest.raises(JobError), registry.submitting("local", "sleeper", folder) as note:
        note(backend.submit(plan))
    [record] = registry.pending()
    assert (record.backend, record.service, record.folder) == ("local", "sleeper", folder)
    pid = int(record.job_id)
    wait_for("the service to start", lambda: (folder / ENDPOINT_FILE).exists(), timeout_s=30)
    done = cleanup(run_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"cancelled sleeper: local job {pid}"]
    wait_for("the job to stop", lambda: not backend.status(record.job_id, folder).active, timeout_s=30)
    assert registry.pending() == []


def test_intent_without_any_job_is_reported_once(tmp_path: Path) -> None:
    run_dir, folder = tmp_path / "refused", tmp_path / "refused" / "jobs" / "http-1"
    with pytest.raises(JobError), JobRegistry(run_dir).submitting("slurm", "http", folder):
        raise JobError("sbatch: invalid partition")
    done = cleanup(run_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"no job id found for http: its slurm submit (folder {folder}) never returned one and the folder names none;"
        " if a job was started, check the queue for it"
    ]
    assert cleanup(run_dir).stdout.splitlines() == ["run refused: no job left to cancel"]
