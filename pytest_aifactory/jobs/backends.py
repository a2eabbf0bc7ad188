"""Where service jobs run: local processes or Slurm jobs, both submitted through submitit.

A backend submits a ``LaunchPlan`` and then knows a job only by its id, so that another
process (an xdist worker, the ``aifactory cleanup`` command) can query and cancel it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import submitit
from submitit.slurm import slurm as submitit_slurm

from pytest_aifactory.core.errors import JobError, ProfileError
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.jobs.node_files import NODE_FILES, remove_left
from pytest_aifactory.jobs.processes import pid_alive, process_start, same_process, signal_process
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, PROCESS_FILE, LaunchPlan, read_json, serve, write_json_atomic
from pytest_aifactory.jobs.sealed import exported, exporting, seal
from pytest_aifactory.jobs.slurm_queue import JobStatus, SlurmQueue, run_command
from pytest_aifactory.services.spec import Resources

__all__ = ["Backend", "JobStatus", "LocalBackend", "SlurmBackend", "check_partitions", "make_backend"]


class Backend(ABC):
    """Submit, query and cancel service jobs (template method over submitit executors)."""

    name: ClassVar[str]

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.jobs: dict[str, submitit.Job[Any]] = {}  # submitted from this process

    def submit(self, plan: LaunchPlan) -> str:
        """Submit ``plan``'s service as a job; returns its id (its secrets go in the job's environment)."""
        public, secrets = seal(plan)
        with exported(secrets):
            job = self.submit_function(plan.folder, plan.spec.name, plan.spec.resources, serve, public)
        return str(job.job_id)

    def submit_function(
        self, folder: Path, name: str, resources: Resources, fn: Callable[..., Any], *args: Any
    ) -> submitit.Job[Any]:
        """Run ``fn(*args)`` as a job with ``resources`` (load shards use this too)."""
        folder.mkdir(parents=True, exist_ok=True)
        executor = self._executor(folder)
        executor.update_parameters(**self.parameters(name, resources))
        try:
            job = executor.submit(fn, *args)
        except Exception as exc:  # submitit raises several types; all mean "not submitted"
            raise JobError(f"could not submit {name!r} on {self.name}: {exc}") from exc
        self.jobs[str(job.job_id)] = job
        return job

    def cancel(self, job_id: str, folder: Path, timeout_s: float = 60.0) -> JobStatus:
        """Stop the job, then remove what it left on this node (a killed job's tmp and shared memory).

        Raises ``JobError`` if the job does not leave the queue.
        """
        status = self._stop(job_id, folder, timeout_s)
        remove_left(read_json(folder / NODE_FILES))
        return status

    def _stop(self, job_id: str, folder: Path, timeout_s: float) -> JobStatus:
        """Cancel the job and wait until it has left the queue; raises if it does not."""
        self._request_cancel(job_id, folder)
        deadline = time.monotonic() + timeout_s
        while (status := self.status(job_id, folder)).active:
            if time.monotonic() > deadline:
                raise JobError(f"{self.name} job {job_id} still {status.state} {timeout_s:.0f} s after cancel")
            time.sleep(0.1)
        return status

    def node_state(self, node: str) -> str:
        """What the scheduler says of ``node`` when it is not well (``""``: nothing to say)."""
        return ""

    def commands_run(self) -> dict[str, int]:
        """How many times each scheduler command was run by this process (none for local jobs)."""
        return {}

    def consumed_energy(self, job_id: str) -> tuple[float | None, str]:
        """The scheduler's energy count of the job so far (J), or None and why."""
        return None, f"{self.name} jobs have no scheduler energy count"

    @abstractmethod
    def _executor(self, folder: Path) -> submitit.Executor:
        """The submitit executor writing into ``folder``."""

    @abstractmethod
    def parameters(self, name: str, resources: Resources) -> dict[str, Any]:
        """Submitit parameters for a job named ``name`` asking for ``resources``."""

    @abstractmethod
    def status(self, job_id: str, folder: Path) -> JobStatus:
        """The job's state as the scheduler last said (Slurm: at most one poll interval old)."""

    @abstractmethod
    def _request_cancel(self, job_id: str, folder: Path) -> None:
        """Ask the scheduler to stop the job."""


@dataclass(frozen=True)
class _Process:
    """A local job's process or its service's: pid and recorded start time (None: not recorded)."""

    what: str
    pid: int
    start: int | None

    def ours(self) -> bool:
        """The pid is alive and still this process."""
        return same_process(self.pid, self.start)

    def stranger(self) -> str | None:
        """Why a live pid is left alone (another process has it, or its start time is unknown)."""
        if self.ours() or not pid_alive(self.pid):
            return None
        return f"{self.what} pid {self.pid} " + (
            "is now another process" if self.start is not None else "has no start time"
        )


class LocalBackend(Backend):
    """Services as local processes through submitit's LocalExecutor (job id = its pid).

    A local job is known by its pid and start time, and so is its service (the runner writes
    both in the endpoint file): a pid reused by an unrelated process is never signalled.
    """

    name = "local"

    def _executor(self, folder: Path) -> submitit.Executor:
        return submitit.LocalExecutor(folder=folder)

    def parameters(self, name: str, resources: Resources) -> dict[str, Any]:
        """The job's time limit (a local job has no other resources)."""
        return {"timeout_min": resources.time_min}

    def submit_function(
        self, folder: Path, name: str, resources: Resources, fn: Callable[..., Any], *args: Any
    ) -> submitit.Job[Any]:
        """Submit, then record the job process's start time beside it."""
        job = super().submit_function(folder, name, resources, fn, *args)
        pid = int(job.job_id)
        write_json_atomic(folder / PROCESS_FILE.format(job_id=pid), {"pid": pid, "start": process_start(pid)})
        return job

    @staticmethod
    def _processes(job_id: str, folder: Path) -> list[_Process]:
        """The job's process and, once it has started one, its service's."""
        recorded = read_json(folder / PROCESS_FILE.format(job_id=job_id)) or {}
        found = [_Process("job", int(job_id), recorded.get("start"))]
        endpoint = read_json(folder / ENDPOINT_FILE)
        if endpoint and "pid" in endpoint:
            found.append(_Process("service", int(endpoint["pid"]), endpoint.get("pid_start")))
        return found

    def status(self, job_id: str, folder: Path) -> JobStatus:
        """Active while the job process or the service it started is alive (the very processes, not their pids)."""
        job = self.jobs.get(job_id)
        if job is not None:
            job.done()  # reaps submitit's controller process once it has exited
        processes = self._processes(job_id, folder)
        for process, state in zip(processes, ("RUNNING", "COMPLETING"), strict=False):
            if process.ours():
                return JobStatus(state, active=True)
        strangers = [reason for process in processes if (reason := process.stranger())]
        skipped = f"{', '.join(strangers)}: not signalled" if strangers else ""
        exit_info = read_json(folder / "exit.json")
        code = str(exit_info["exit_code"]) if exit_info else None
        state = "COMPLETED" if code == "0" else "FAILED" if code is not None else "GONE"
        return JobStatus(state, active=False, exit_code=code, skipped=skipped)

    def _signal(self, job_id: str, folder: Path, signum: int) -> None:
        job = self._processes(job_id, folder)[0]
        signal_process(job.pid, job.start, signum)

    def _request_cancel(self, job_id: str, folder: Path) -> None:
        # SIGTERM to submitit's local controller is forwarded to the job, which stops the
        # service gracefully; SIGINT would make the controller SIGKILL the job after 1 s.
        self._signal(job_id, folder, signal.SIGTERM)

    def _stop(self, job_id: str, folder: Path, timeout_s: float) -> JobStatus:
        """Stop the job gracefully; kill it and its service's process group if it lingers."""
        try:
            return super()._stop(job_id, folder, timeout_s)
        except JobError:  # the job did not stop in time: kill it and its service's group
            self._signal(job_id, folder, signal.SIGKILL)
            for service in self._processes(job_id, folder)[1:]:
                if service.ours():  # the group is the service's (it started a new session)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(service.pid, signal.SIGKILL)
            return super()._stop(job_id, folder, 5.0)


STEP_ENVIRONMENT = "export SLURM_EXPORT_ENV=ALL"  # Slurm's advice: steps get the batch shell's environment


class SlurmBackend(Backend):
    """Services as Slurm batch jobs (sbatch through submitit; scancel by id).

    States come from the backend's ``SlurmQueue``: one squeue/sacct per poll for all its jobs.
    """

    name = "slurm"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.queue = SlurmQueue()

    def submit_function(
        self, folder: Path, name: str, resources: Resources, fn: Callable[..., Any], *args: Any
    ) -> submitit.Job[Any]:
        """Submit (one sbatch, counted), and watch the job from now on."""
        self.queue.calls["sbatch"] += 1
        job = super().submit_function(folder, name, resources, fn, *args)
        self.queue.watch(str(job.job_id))
        return job

    def _executor(self, folder: Path) -> submitit.Executor:
        return submitit.SlurmExecutor(folder=folder, python=sys.executable)

    def parameters(self, name: str, resources: Resources) -> dict[str, Any]:
        """The sbatch options from the profile's ``slurm`` section and the job's resources.

        Whatever ``--export`` the profile asks for, the job's secrets go with it; the job's step
        (submitit's ``srun``) gets the batch shell's environment whatever it is (Slurm would
        apply the job's ``--export`` to the step too: with ``NONE`` it had no ``PATH``, no
        ``SUBMITIT_EXECUTOR``, and failed).
        """
        settings, res = self.profile.slurm, resources
        additional: dict[str, Any] = dict(settings.additional)
        if "export" in additional:
            additional["export"] = exporting(str(additional["export"]))
        if settings.reservation:
            additional["reservation"] = settings.reservation
        params: dict[str, Any] = {
            "job_name": f"aif-{name}",
            "partition": res.partition or settings.partition,
            "account": settings.account,
            "qos": settings.qos,
            "time": res.time_min,
            "nodes": settings.nodes,
            "ntasks_per_node": 1,
            "cpus_per_task": max(res.cpus, settings.cpus_per_task),
            "gpus_per_node": res.gpus or settings.gpus_per_node or None,
            "mem": f"{res.mem_gb or settings.mem_gb}GB" if (res.mem_gb or settings.mem_gb) else None,
            "constraint": settings.constraint,
            "setup": [STEP_ENVIRONMENT, *settings.setup],
            "additional_parameters": additional,
            "signal_delay_s": 30,
        }
        return {k: v for k, v in params.items() if v is not None}

    def render_sbatch(self, plan: LaunchPlan) -> str:
        """The sbatch script this backend would submit for ``plan`` (nothing is submitted)."""
        command = f"{sys.executable} -u -m submitit.core._submit {plan.folder}"
        text: str = submitit_slurm._make_sbatch_string(
            command=command, folder=plan.folder, **self.parameters(plan.spec.name, plan.spec.resources)
        )
        return text

    def node_state(self, node: str) -> str:
        """``Slurm says node aif-n1 is idle* (not responding)`` unless it is up (``""``)."""
        try:
            text = self.queue.command(["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"]).strip()
        except JobError as exc:
            return f"Slurm cannot say how node {node} is: {exc}"
        state, _, why = text.partition("|")
        flags = [word for flag, word in (("*", "not responding"), ("~", "powered off")) if state.endswith(flag)]
        if not state or (not flags and state.upper().startswith(("IDLE", "MIXED", "ALLOCATED", "COMPLETING"))):
            return ""
        details = [*flags, *([why] if why and why != "none" else [])]
        return f"Slurm says node {node} is {state}" + (f" ({', '.join(details)})" if details else "")

    def commands_run(self) -> dict[str, int]:
        """sbatch, squeue, sacct and scancel calls of this process, retries included."""
        return dict(sorted(self.queue.calls.items()))

    def consumed_energy(self, job_id: str) -> tuple[float | None, str]:
        """``sacct``'s ``ConsumedEnergyRaw`` of the job (counted with the queue's commands)."""
        return self.queue.consumed_energy(job_id)

    def status(self, job_id: str, folder: Path) -> JobStatus:
        """The job's state from the queue's last poll of all jobs (polled again when that is too old)."""
        return self.queue.status(job_id)

    def _request_cancel(self, job_id: str, folder: Path) -> None:
        self.queue.command(["scancel", job_id])
        self.queue.watch(job_id)

    def _stranger(self, job_id: str, folder: Path) -> str:
        """Why the queued job ``job_id`` is not the one submitted from ``folder`` ('' when it is, or is gone)."""
        try:
            script = self.queue.command(["squeue", "-h", "-j", job_id, "-o", "%o"]).strip()
        except JobError:  # no longer known to the controller: nothing to signal
            return ""
        if not script or script == "(null)" or Path(script).parent.resolve() == folder.resolve():
            return ""
        return f"slurm job {job_id} is now another job (its script {script} is not in {folder}): not cancelled"

    def _stop(self, job_id: str, folder: Path, timeout_s: float) -> JobStatus:
        """Stop the job in the time its service asks for, then make sure it has left the queue.

        A plain ``scancel`` SIGKILLs a job Slurm's KillWait after its SIGTERM (5 s here, 30 s on
        many clusters), too soon for a service that needs longer (SeaweedFS: up to 30 s), which
        then leaves no exit record. A running job whose service has started gets SIGTERM on its
        steps first (``scancel --signal=TERM``, the batch shell spared) and the service's own
        ``stop_timeout_s`` (from its endpoint file) to stop and record its exit.

        A job id the queue now gives to another job (its script is not in ``folder``: a stale
        registry, a cluster whose ids started over) is left alone and said to be skipped.
        """
        stranger = self._stranger(job_id, folder)
        if stranger:
            return JobStatus("SKIPPED", active=False, skipped=stranger)
        endpoint = read_json(folder / ENDPOINT_FILE) or {}
        grace = float(endpoint.get("stop_timeout_s", 0))
        if grace > 0 and self.status(job_id, folder).state == "RUNNING":
            with contextlib.suppress(JobError):  # the plain scancel below still stops it
                self.queue.command(["scancel", "--signal=TERM", job_id])
                self.queue.watch(job_id)
                deadline = time.monotonic() + grace + 10
                while self.status(job_id, folder).active and time.monotonic() < deadline:
                    time.sleep(0.2)
        status = self.status(job_id, folder)
        return super()._stop(job_id, folder, timeout_s) if status.active else status


BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "slurm": SlurmBackend}


def make_backend(profile: Profile) -> Backend:
    """The backend for a profile's ``executor``."""
    return BACKENDS[profile.executor](profile)


def check_partitions(profile: Profile) -> None:
    """The partitions a Slurm profile names (its own, its services') exist on this cluster.

    Raises ``ProfileError`` naming the key, the value and the cluster's partitions. Without an
    answer from ``sinfo`` (no Slurm here) nothing is checked: the submit will say.
    """
    if profile.executor != "slurm":
        return
    named = {"slurm.partition": profile.slurm.partition}
    named |= {f"services.{name}.partition": override.partition for name, override in profile.services.items()}
    wanted = {key: value for key, value in named.items() if value}
    if not wanted:
        return
    try:
        known = set(run_command(["sinfo", "-h", "-o", "%R"]).split())
    except JobError:
        return
    bad = [f"{key} {value!r}" for key, value in wanted.items() if value not in known]
    if bad:
        raise ProfileError(
            f"profile {profile.name!r}: {', '.join(bad)}: no such partition on this cluster; "
            f"its partitions: {', '.join(sorted(known)) or 'none'}"
        )
