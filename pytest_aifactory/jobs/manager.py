"""Start services as jobs, wait until they can serve, notice when they die, always stop them."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from pytest_aifactory.core.errors import JobError, ServiceDiedError, ServiceStartupError
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.jobs.backends import Backend, JobStatus
from pytest_aifactory.jobs.listening import LISTENING_FILE, loopback_only
from pytest_aifactory.jobs.registry import JobRecord, JobRegistry
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, EXIT_FILE, LaunchPlan, Owner, read_json, tail
from pytest_aifactory.jobs.telemetry import Telemetry
from pytest_aifactory.services.probes import check_ready
from pytest_aifactory.services.spec import RunningService, ServiceSpec

__all__ = ["ServiceManager", "failure_report"]

_LOG_LINES = 20
_WAIT_LINE_S = 30.0  # a waiting service's progress line, at most this often unless its reason changes


def failure_report(
    service: str, headline: str, status: JobStatus, backend: str, job_id: str, folder: Path, redactor: Redactor
) -> str:
    """A failure message: the job's state and exit code, and the last lines of its logs, secrets masked."""
    exit_info = read_json(folder / EXIT_FILE)
    lines = [
        f"service {service!r} {headline}: {status.describe()} ({backend} job {job_id}, folder {folder})",
    ]
    if exit_info:
        lines.append(f"service process: exit code {exit_info['exit_code']}, {exit_info['reason']}")
    for label, path in (
        ("service stderr", folder / "service.err"),
        ("service stdout", folder / "service.out"),
        ("job stderr", folder / f"{job_id}_0_log.err"),
    ):
        text = tail(path, _LOG_LINES)
        if text.strip():
            lines += [f"--- {label} (last {_LOG_LINES} lines of {path}) ---", text]
    return redactor.text("\n".join(lines))


@dataclass
class ServiceManager:
    """Launches ``ServiceSpec``s on a backend and keeps track of what it started.

    ``shared()`` starts a service once per run, even across pytest-xdist workers: the first
    process to ask launches it under a file lock and publishes its endpoint; the others attach.
    """

    profile: Profile
    backend: Backend
    registry: JobRegistry
    owner: Owner | None
    keep: bool = False
    telemetry: Telemetry | None = None
    on_event: Callable[[str, str, str], None] | None = None
    on_progress: Callable[[str], None] | None = None
    started: list[RunningService] = field(default_factory=list)

    def _event(self, service: str, message: str, level: str = "info") -> None:
        if self.on_event is not None:
            self.on_event(service, message, level)

    @property
    def run_dir(self) -> Path:
        """The run's results folder."""
        return self.registry.run_dir

    def _job_root(self) -> Path:
        return Path(self.profile.job_dir) / self.run_dir.name if self.profile.job_dir else self.run_dir / "jobs"

    def launch(self, spec: ServiceSpec) -> RunningService:
        """Start a private instance of ``spec``: ``close()`` (or ``stop()``) stops it."""
        service = self._start(spec)
        self.started.append(service)
        return service

    def _start(self, spec: ServiceSpec) -> RunningService:
        """Submit ``spec`` and wait until its probe passes; a failed start is cancelled and raised."""
        missing = [source for source in spec.env_from.values() if source not in os.environ]
        if missing:
            raise ServiceStartupError(
                f"service {spec.name!r} needs environment variable(s) {', '.join(missing)}: set them before the run"
            )
        folder = self._job_root() / f"{spec.name}-{uuid.uuid4().hex[:8]}"
        plan = LaunchPlan(
            spec=spec,
            folder=folder,
            host_mode=self.profile.service_host,
            container=self.profile.container,
            env=tuple(self.profile.env.items()),
            owner=None if self.keep else self.owner,
            telemetry=self.telemetry,
            cache_dir=(Path(self.profile.job_dir) if self.profile.job_dir else self.run_dir.parent) / "cache",
        )
        with self.registry.submitting(self.backend.name, spec.name, folder) as note:
            record = note(self.backend.submit(plan))
        self._event(spec.name, f"service {spec.name} submitted as {self.backend.name} job {record.job_id}")
        try:
            service = self._wait_ready(spec, record)
        except BaseException as exc:
            self._event(
                spec.name,
                f"service {spec.name} failed to start: {(str(exc) or type(exc).__name__).splitlines()[0]}",
                "error",
            )
            try:
                self._cancel(record)
            except JobError as cancel_exc:
                also = f"cancelling its job failed too: {cancel_exc}"
                if not isinstance(exc, Exception):  # an interrupt stays an interrupt
                    exc.add_note(also)
                    raise exc from None
                raise ServiceStartupError(f"{exc}\n{also}") from exc
            raise
        self._event(spec.name, f"service {spec.name} ready: {service.describe()}")
        return service

    def _running(self, spec: ServiceSpec, record: JobRecord, endpoint: dict[str, object]) -> RunningService:
        return RunningService(
            name=spec.name,
            host=str(endpoint["host"]),
            ports={str(k): int(v) for k, v in dict(endpoint["ports"]).items()},  # type: ignore[call-overload]
            backend=record.backend,
            job_id=record.job_id,
            node=str(endpoint["node"]),
            folder=record.folder,
            stdout=record.folder / "service.out",
            stderr=record.folder / "service.err",
            spec=spec,
        )

    def _wait_ready(self, spec: ServiceSpec, record: JobRecord) -> RunningService:
        started = time.monotonic()
        deadline = started + spec.readiness_timeout_s
        interval, reason, shown = 0.05, "job not started yet", ("", -_WAIT_LINE_S)
        while True:
            status = self.backend.status(record.job_id, record.folder)
            endpoint = read_json(record.folder / ENDPOINT_FILE)
            if not status.active:
                raise ServiceStartupError(self._failure(spec, "exited before it was ready", status, record))
            if status.hopeless:
                headline = (
                    f"cannot start: its job is {status.waiting()}, which will not resolve ({status.hopeless});"
                    " the job is cancelled"
                )
                raise ServiceStartupError(self._failure(spec, headline, status, record))
            if endpoint is not None:
                service = self._running(spec, record, endpoint)
                reason = check_ready(spec.probe, service) or ""
                if not reason:
                    return service
                self._refuse_loopback_only(service, reason, status, record)
            elif status.state == "PENDING":
                reason = f"job {status.waiting()}"
                if status.reason != shown[0] or time.monotonic() - shown[1] >= _WAIT_LINE_S:
                    shown = (status.reason, time.monotonic())
                    self._progress(spec.name, f"service {spec.name} waiting in the queue: {status.waiting()}")
            if time.monotonic() > deadline:
                headline = f"was not ready within {spec.readiness_timeout_s:g} s (last probe: {reason})"
                raise ServiceStartupError(self._failure(spec, headline, status, record))
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def _failure(self, spec: ServiceSpec, headline: str, status: JobStatus, record: JobRecord) -> str:
        """``failure_report`` masking the secrets of the environment, the profile's and the service's env."""
        given = {target: os.environ.get(source, "") for target, source in spec.env_from.items()}
        redactor = Redactor(named={**self.profile.env, **spec.env, **given})
        return failure_report(spec.name, headline, status, record.backend, record.job_id, record.folder, redactor)

    def is_alive(self, service: RunningService) -> bool:
        """True while the service's job is active and its process has not exited."""
        return self.backend.status(service.job_id, service.folder).active and not (service.folder / EXIT_FILE).exists()

    def _refuse_loopback_only(self, service: RunningService, reason: str, status: JobStatus, record: JobRecord) -> None:
        """A service on a node's address that listens on 127.0.0.1 only can never be reached from elsewhere."""
        seen = read_json(record.folder / LISTENING_FILE)
        if service.host == "127.0.0.1" or seen is None:
            return
        sockets = [(str(address), int(port)) for address, port in seen["sockets"]]
        for name, port in service.ports.items():
            if local := loopback_only(sockets, port):
                headline = (
                    f"listens on {', '.join(local)} only, on node {service.node}: it cannot be reached from other"
                    f" nodes (the login node, client jobs) at {service.host}:{port} (port {name!r});"
                    f" bind it to {{host}} in the spec (last probe: {reason})"
                )
                raise ServiceStartupError(self._failure(service.spec, headline, status, record))

    def _progress(self, service: str, line: str) -> None:
        """A line for the terminal while a service waits, also sent as an event."""
        self._event(service, line)
        if self.on_progress is not None:
            self.on_progress(f"[aifactory] {line}")

    def check_alive(self, service: RunningService, probe: bool = False) -> None:
        """Raise ``ServiceDiedError`` (with state, exit code and logs) if ``service`` is gone.

        With ``probe`` (a test failed), a service whose job still runs must also pass its probe:
        one that no longer answers is reported with its node and what the scheduler says of it.
        """
        status = self.backend.status(service.job_id, service.folder)
        exit_info = read_json(service.folder / EXIT_FILE)
        if status.active and exit_info is None:
            reason = check_ready(service.spec.probe, service) if probe else None
            if reason is None:
                return
            node = self.backend.node_state(service.node)
            headline = f"on node {service.node} ({service.host}) stopped answering ({reason})" + (
                f"; {node}" if node else ""
            )
        else:
            headline = "died while it was in use"
        self._event(service.name, f"service {service.name} {headline}: {status.describe()}", "error")
        raise ServiceDiedError(self._failure(service.spec, headline, status, self._record(service)))

    @staticmethod
    def _record(service: RunningService) -> JobRecord:
        return JobRecord(service.backend, service.job_id, service.name, service.folder)

    def _cancel(self, record: JobRecord) -> None:
        self.backend.cancel(record.job_id, record.folder)
        self.registry.stopped(record)
        self._event(record.service, f"service {record.service} stopped ({record.backend} job {record.job_id})")

    def stop(self, service: RunningService) -> None:
        """Cancel the service's job and wait until it has left the queue (unless kept)."""
        if service in self.started:
            self.started.remove(service)
        if not self.keep:
            self._cancel(self._record(service))

    def shared(self, spec: ServiceSpec) -> RunningService:
        """The run's one instance of ``spec``: attach to it, or launch it if nobody has.

        Shared services stop with the run (``JobRegistry.cancel_pending`` at session end).
        """
        digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
        state = self.run_dir / "services" / f"{spec.name}-{digest}.json"
        state.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(state) + ".lock"):
            known = read_json(state)
            if known is not None:
                record = JobRecord(str(known["backend"]), str(known["job_id"]), spec.name, Path(known["folder"]))
                service = self._running(spec, record, known)
                if (
                    self.backend.status(record.job_id, record.folder).active
                    and check_ready(spec.probe, service) is None
                ):
                    return service
            service = self._start(spec)
            state.write_text(json.dumps(service.to_json()), encoding="utf-8")
            return service

    def close(self) -> list[str]:
        """Stop everything this manager started; returns the errors (empty when all stopped)."""
        errors = []
        for service in list(self.started):
            try:
                self.stop(service)
            except JobError as exc:
                errors.append(f"{service.describe()}: {exc}")
        return errors
