"""Every job a run submitted, recorded in its results folder so none is ever left behind.

``jobs.jsonl`` in the run folder is append-only: one ``submitted`` line per job, one
``stopped`` line when it has been seen to leave the queue. Whatever is submitted and not
stopped is cancelled at the end of the run, or later by ``aifactory cleanup RUN_ID``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pytest_aifactory.core.errors import JobError

__all__ = ["JobRecord", "JobRegistry"]

REGISTRY_FILE = "jobs.jsonl"


@dataclass(frozen=True)
class JobRecord:
    """One submitted job: enough to find and cancel it from any process."""

    backend: str
    job_id: str
    service: str
    folder: Path


class JobRegistry:
    """The job list of one run (safe for several processes: writes take a file lock)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / REGISTRY_FILE
        self._lock = FileLock(str(self.path) + ".lock")

    def _append(self, entry: dict[str, str | float]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()

    def submitted(self, record: JobRecord) -> None:
        """Record a job the moment it is submitted."""
        self._append(
            {
                "event": "submitted",
                "backend": record.backend,
                "job_id": record.job_id,
                "service": record.service,
                "folder": str(record.folder),
                "at": time.time(),
            }
        )

    def stopped(self, record: JobRecord) -> None:
        """Record that a job has left the queue."""
        self._append({"event": "stopped", "backend": record.backend, "job_id": record.job_id, "at": time.time()})

    def records(self) -> list[JobRecord]:
        """Every job ever submitted by the run, oldest first."""
        return [rec for rec, _ in self._scan()]

    def pending(self) -> list[JobRecord]:
        """Jobs submitted and not yet seen to stop."""
        return [rec for rec, stopped in self._scan() if not stopped]

    def _scan(self) -> list[tuple[JobRecord, bool]]:
        if not self.path.exists():
            return []
        jobs: dict[tuple[str, str], JobRecord] = {}
        stopped: set[tuple[str, str]] = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            key = (entry["backend"], entry["job_id"])
            if entry["event"] == "submitted":
                jobs[key] = JobRecord(entry["backend"], entry["job_id"], entry["service"], Path(entry["folder"]))
            else:
                stopped.add(key)
        return [(rec, key in stopped) for key, rec in jobs.items()]

    def cancel_pending(self, cancel: Callable[[JobRecord], None]) -> list[str]:
        """Cancel every pending job with ``cancel``; returns the errors (empty when all went)."""
        errors = []
        for record in self.pending():
            try:
                cancel(record)
            except JobError as exc:
                errors.append(f"{record.service} ({record.backend} job {record.job_id}): {exc}")
            else:
                self.stopped(record)
        return errors
