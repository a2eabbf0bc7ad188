"""Every job a run submitted, recorded in its results folder so none is ever left behind.

``jobs.jsonl`` in the run folder is append-only and written ahead: an ``intent`` line (a
unique token, the job's folder) before a job is submitted, a ``submitted`` line with its id
once the submit returns, a ``stopped`` line when it has been seen to leave the queue. An
intent whose submit never returned (a crash, an error after the job had started) is resolved
through the job's folder, where submitit and the runner write the job id; one that cannot be
resolved is reported. Whatever is submitted and not stopped is cancelled at the end of the
run, or later by ``aifactory cleanup RUN_ID``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pytest_aifactory.core.errors import JobError
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, read_json

__all__ = ["JobIntent", "JobRecord", "JobRegistry", "job_ids_in"]

REGISTRY_FILE = "jobs.jsonl"
# submitit's files ({id}_submitted.pkl, {id}_submission.sh, {id}_{task}_log.out) and the local backend's
_JOB_FILE = re.compile(r"^(\d+)_(?:submitted\.pkl|submission\.sh|process\.json|\d+_log\.(?:out|err))$")


@dataclass(frozen=True)
class JobRecord:
    """One submitted job: enough to find and cancel it from any process."""

    backend: str
    job_id: str
    service: str
    folder: Path


@dataclass(frozen=True)
class JobIntent:
    """A submit that never returned a job id, and whose folder names none."""

    token: str
    backend: str
    service: str
    folder: Path

    def describe(self) -> str:
        """For cleanup's report."""
        return (
            f"no job id found for {self.service}: its {self.backend} submit (folder {self.folder}) never returned one"
            " and the folder names none; if a job was started, check the queue for it"
        )


def job_ids_in(folder: Path) -> list[str]:
    """The job ids the folder's files name (submitit's files, the runner's endpoint)."""
    try:
        names = [path.name for path in folder.iterdir()]
    except OSError:
        return []
    found = {match.group(1) for name in names if (match := _JOB_FILE.match(name))}
    endpoint = read_json(folder / ENDPOINT_FILE)
    if endpoint and "job_id" in endpoint:
        found.add(str(endpoint["job_id"]))
    return sorted(found)


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

    @contextlib.contextmanager
    def submitting(self, backend: str, service: str, folder: Path) -> Iterator[Callable[[str], JobRecord]]:
        """Around a submit: records the intent first; call the ``note`` it yields with the job id.

        An exception leaves the intent in place: the job may have started all the same.
        """
        token = uuid.uuid4().hex
        where = {"backend": backend, "service": service, "folder": str(folder)}
        self._append({"event": "intent", "token": token, **where, "at": time.time()})

        def note(job_id: str) -> JobRecord:
            self._append({"event": "submitted", "token": token, "job_id": job_id, **where, "at": time.time()})
            return JobRecord(backend, job_id, service, folder)

        yield note

    def stopped(self, record: JobRecord) -> None:
        """Record that a job has left the queue."""
        self._append({"event": "stopped", "backend": record.backend, "job_id": record.job_id, "at": time.time()})

    def records(self) -> list[JobRecord]:
        """Every job ever submitted by the run (intents resolved), oldest first."""
        return [rec for rec, _ in self._scan()[0]]

    def pending(self) -> list[JobRecord]:
        """Jobs submitted (intents resolved) and not yet seen to stop."""
        return [rec for rec, stopped in self._scan()[0] if not stopped]

    def unresolved(self) -> list[JobIntent]:
        """Intents whose job id is nowhere to be found (not reported yet)."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[tuple[JobRecord, bool]], list[JobIntent]]:
        if not self.path.exists():
            return [], []
        jobs: dict[tuple[str, str], JobRecord] = {}
        stopped: set[tuple[str, str]] = set()
        intents: dict[str, JobIntent] = {}
        settled: set[str] = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry["event"] == "intent":
                intents[entry["token"]] = JobIntent(
                    entry["token"], entry["backend"], entry["service"], Path(entry["folder"])
                )
            elif entry["event"] == "reported":
                settled.add(entry["token"])
            elif entry["event"] == "submitted":
                settled.add(entry.get("token", ""))
                record = JobRecord(entry["backend"], entry["job_id"], entry["service"], Path(entry["folder"]))
                jobs[(record.backend, record.job_id)] = record
            else:
                stopped.add((entry["backend"], entry["job_id"]))
        unresolved = []
        for token, intent in intents.items():
            found = [] if token in settled else job_ids_in(intent.folder)
            for job_id in found:
                jobs.setdefault(
                    (intent.backend, job_id), JobRecord(intent.backend, job_id, intent.service, intent.folder)
                )
            if token not in settled and not found:
                unresolved.append(intent)
        return [(rec, key in stopped) for key, rec in jobs.items()], unresolved

    def cancel_pending(self, cancel: Callable[[JobRecord], str]) -> tuple[list[str], list[str]]:
        """Cancel every pending job with ``cancel`` (which says what it did); report unresolved intents.

        Returns (what was done, errors).
        """
        done, errors = [], []
        for record in self.pending():
            try:
                done.append(cancel(record))
            except JobError as exc:
                errors.append(f"{record.service} ({record.backend} job {record.job_id}): {exc}")
            else:
                self.stopped(record)
        for intent in self.unresolved():
            done.append(intent.describe())
            self._append({"event": "reported", "token": intent.token, "at": time.time()})
        return done, errors
