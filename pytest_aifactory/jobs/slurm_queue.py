"""Slurm's view of every job a process watches, from one ``squeue`` (and one ``sacct``) per poll.

Asking about each job on each check costs the controller one RPC per job per poll. As
submitit's watcher does, ``SlurmQueue`` asks once for all the jobs it watches that have not
finished, and backs off while nothing changes (a submit or a cancel brings the pace back up).
As ReFrame does, a failing ``squeue``/``sacct`` (a busy controller times out) is retried a set
number of times before it is an error, and a job pending on a reason that cannot resolve is
flagged ``hopeless`` so that the caller cancels it with that reason.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from pytest_aifactory.core.errors import JobError

__all__ = [
    "ACTIVE_SLURM_STATES",
    "ENERGY_SACCT_TIMEOUT_S",
    "HOPELESS_REASONS",
    "LIMIT_REASONS",
    "JobStatus",
    "SlurmQueue",
    "for_how_long",
    "parse_consumed_energy",
    "run_command",
]

ACTIVE_SLURM_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED"}
)
# Pending reasons that no amount of waiting resolves: the request does not fit the partition,
# account or QoS, or names nodes that are not available.
HOPELESS_REASONS = {
    "PartitionConfig": "the request does not fit the partition's configuration",
    "PartitionTimeLimit": "the time limit is above the partition's",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "BadConstraints": "the constraints cannot be met by any node",
    "ReqNodeNotAvail": "a required node is down, drained or reserved",
    "NodeDown": "a required node is down",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QoS is not valid",
    "QOSJobLimit": "the QoS allows no such job",
    "FrontEndDown": "no front end node is available",
}
# Reasons that resolve when other jobs end, hopeless only once a job has waited on them too long.
LIMIT_REASONS = frozenset(
    {
        "QOSMaxJobsPerUserLimit",
        "QOSMaxSubmitJobPerUserLimit",
        "QOSMaxNodePerUserLimit",
        "AssocMaxJobsLimit",
        "AssocGrpJobsLimit",
        "AssocGrpNodeLimit",
        "QOSGrpNodeLimit",
    }
)
_NOT_KNOWN = "Invalid job id specified"  # squeue's error when none of the ids is in the controller


def for_how_long(seconds: float) -> str:
    """``40 s``, ``12 min``, ``2 h 5 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@dataclass(frozen=True)
class JobStatus:
    """A job's scheduler state; ``active`` while it is queued or running; ``skipped``: what was left alone.

    A pending job has its ``reason`` and how long it has waited (``pending_s``); ``hopeless`` says
    why that reason will not resolve; ``nodes`` are where a started job runs.
    """

    state: str
    active: bool
    exit_code: str | None = None
    skipped: str = ""
    reason: str = ""
    pending_s: float | None = None
    hopeless: str = ""
    nodes: str = ""

    def waiting(self) -> str:
        """``PENDING (Resources) for 12 min`` (the state alone when the reason or age is unknown)."""
        words = self.state + (f" ({self.reason})" if self.reason else "")
        return words + (f" for {for_how_long(self.pending_s)}" if self.pending_s is not None else "")

    def describe(self) -> str:
        """``job state FAILED, exit code 1:0`` for messages."""
        state = self.waiting() if self.state == "PENDING" else self.state
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        skipped = f" ({self.skipped})" if self.skipped else ""
        return f"job state {state}{code}{skipped}"


def run_command(argv: Sequence[str], timeout_s: float = 60.0) -> str:
    """Run a Slurm command; its stdout, or ``JobError`` with its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JobError(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise JobError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


ENERGY_SACCT_TIMEOUT_S = 5.0
_NO_VAL64_FLOOR = 2.0**63  # Slurm's NO_VAL64 (2**64 - 2) and INFINITE64 markers, never a reading


def parse_consumed_energy(text: str, job_id: str) -> tuple[float | None, str]:
    """``sacct -n -X -P -o ConsumedEnergyRaw``'s answer as joules, or None and why.

    Where the site's ``AcctGatherEnergyType`` is ``acct_gather_energy/none`` Slurm answers 0 or
    nothing, and where a node's reading failed, ``NO_VAL64`` (18446744073709551614): that is no
    measurement, not 0 J (nor 18 EJ).
    """
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    try:
        joules = float(value)
    except ValueError:
        joules = 0.0
    if joules >= _NO_VAL64_FLOOR:
        return None, f"sacct gives no ConsumedEnergy for job {job_id} ({value}: Slurm's NO_VAL, no reading)"
    if joules <= 0:
        return None, (
            f"sacct gives no ConsumedEnergy for job {job_id} ({value or 'empty'}): "
            "the site's AcctGatherEnergyType measures none"
        )
    return joules, ""


def _submitted_ago(text: str, now: float) -> float | None:
    try:
        return max(0.0, now - datetime.fromisoformat(text).timestamp())
    except ValueError:
        return None


@dataclass
class SlurmQueue:
    """The state of every job watched by this process, refreshed together (see the module doc).

    ``status(job_id)`` answers from the last poll while it is younger than the current interval
    (``min_interval_s``, growing by half while nothing changes, up to ``max_interval_s``).
    ``calls`` counts every Slurm command run through ``command``.
    """

    min_interval_s: float = 0.5
    max_interval_s: float = 5.0
    attempts: int = 3
    retry_delay_s: float = 1.0
    limit_wait_s: float = 600.0
    runner: Callable[..., str] = run_command  # (argv, timeout_s=...) -> stdout, as ``run_command``
    calls: Counter[str] = field(default_factory=Counter)
    _known: dict[str, JobStatus | None] = field(default_factory=dict)
    _polled_at: float = float("-inf")
    _interval_s: float = 0.0

    def __post_init__(self) -> None:
        self._interval_s = self.min_interval_s

    @property
    def interval_s(self) -> float:
        """How long the last poll's answers are used before the next poll."""
        return self._interval_s

    def command(self, argv: Sequence[str], retry: bool = False, timeout_s: float | None = None) -> str:
        """Run a Slurm command (counted); with ``retry``, a failure is tried again ``attempts`` times in all.

        ``timeout_s`` shortens the runner's own time limit (60 s) for a read that must not hold anything up.
        """
        tries = self.attempts if retry else 1
        for attempt in range(1, tries + 1):
            self.calls[argv[0]] += 1
            try:
                return self.runner(argv) if timeout_s is None else self.runner(argv, timeout_s=timeout_s)
            except JobError as exc:
                if _NOT_KNOWN in str(exc) or attempt == tries:
                    if attempt > 1:
                        raise JobError(f"{argv[0]} failed {attempt} times in a row, giving up: {exc}") from exc
                    raise
                time.sleep(self.retry_delay_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def watch(self, job_id: str) -> None:
        """Include a job in the polls from now on, and poll soon (it was just submitted or cancelled)."""
        self._known.setdefault(job_id, None)
        self._interval_s = self.min_interval_s

    def status(self, job_id: str) -> JobStatus:
        """The job's state as of the last poll, polling all watched jobs first if that one is too old."""
        if job_id not in self._known:
            self.watch(job_id)
        known = self._known[job_id]
        if known is None or (known.active and time.monotonic() - self._polled_at >= self._interval_s):
            self.poll()
        found = self._known[job_id]
        assert found is not None
        return found

    def poll(self) -> None:
        """One ``squeue`` for every watched job not known to be finished, one ``sacct`` for those it lacks."""
        ids = [job_id for job_id, known in self._known.items() if known is None or known.active]
        if not ids:
            return
        now = time.time()
        queued = self._squeue(ids, now)
        gone = [job_id for job_id in ids if job_id not in queued or not queued[job_id].active]
        finished = self._sacct(gone) if gone else {}
        changed = False
        for job_id in ids:
            new, old = self._merge(queued.get(job_id), finished.get(job_id)), self._known[job_id]
            changed |= old is None or replace(new, pending_s=None) != replace(old, pending_s=None)
            self._known[job_id] = new
        self._polled_at = time.monotonic()
        self._interval_s = self.min_interval_s if changed else min(self._interval_s * 1.5, self.max_interval_s)

    def _squeue(self, ids: list[str], now: float) -> dict[str, JobStatus]:
        try:
            text = self.command(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r|%V|%N"], True)
        except JobError as exc:
            if _NOT_KNOWN in str(exc):
                return {}
            raise
        found = {}
        for line in text.splitlines():
            job_id, state, reason, submitted, nodes = [*line.split("|"), "", "", "", ""][:5]
            if state != "PENDING":
                found[job_id] = JobStatus(state, state in ACTIVE_SLURM_STATES, nodes=nodes)
                continue
            reason = reason.split(",")[0].strip() if reason not in ("", "None") else ""
            waited = _submitted_ago(submitted, now)
            found[job_id] = JobStatus(
                state, True, reason=reason, pending_s=waited, hopeless=self._hopeless(reason, waited)
            )
        return found

    def _hopeless(self, reason: str, waited: float | None) -> str:
        if reason in HOPELESS_REASONS:
            return HOPELESS_REASONS[reason]
        if reason in LIMIT_REASONS and waited is not None and waited > self.limit_wait_s:
            return f"a limit of the account or QoS, for longer than {for_how_long(self.limit_wait_s)}"
        return ""

    def _sacct(self, ids: list[str]) -> dict[str, JobStatus]:
        text = self.command(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", "JobIDRaw,State,ExitCode"], True)
        found = {}
        for line in text.splitlines():
            job_id, state, code = [*line.split("|"), "", ""][:3]
            state = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0"
            found[job_id] = JobStatus(state, state in ACTIVE_SLURM_STATES, exit_code=code or None)
        return found

    def consumed_energy(self, job_id: str) -> tuple[float | None, str]:
        """The job's ``ConsumedEnergyRaw`` (J) so far, or None and why (no energy plugin, sacct failing).

        Read beside a load: one try, ``ENERGY_SACCT_TIMEOUT_S`` at most (a failure is "not available").
        """
        argv = ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "ConsumedEnergyRaw"]
        try:
            text = self.command(argv, timeout_s=ENERGY_SACCT_TIMEOUT_S)
        except JobError as exc:
            return None, str(exc)
        return parse_consumed_energy(text, job_id)

    @staticmethod
    def _merge(queued: JobStatus | None, finished: JobStatus | None) -> JobStatus:
        """The live state from squeue; from sacct the exit code, and the state once the controller forgot the job.

        sacct lags behind the controller: a job squeue says has ended may still be RUNNING there.
        """
        if queued is not None and queued.active:
            return queued
        if queued is not None:
            code = finished.exit_code if finished is not None and not finished.active else None
            return replace(queued, exit_code=code)
        if finished is not None:
            return finished
        return JobStatus("UNKNOWN", active=False)
