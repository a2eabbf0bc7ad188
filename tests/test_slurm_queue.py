"""Polling Slurm: one squeue/sacct per poll for every job, back-off, retries, hopeless reasons."""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import THREE_SERVICES, log_slurm_calls, run_pytest

from pytest_aifactory.core.errors import JobError
from pytest_aifactory.jobs.slurm_queue import JobStatus, SlurmQueue


class FakeSlurm:
    """Answers squeue and sacct from a table of jobs, and records every call."""

    def __init__(self, squeue: dict[str, str], sacct: dict[str, str] | None = None) -> None:
        self.squeue, self.sacct = squeue, sacct or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        ids = argv[argv.index("-j") + 1].split(",")
        table = self.squeue if argv[0] == "squeue" else self.sacct
        rows = [f"{job_id}|{table[job_id]}" for job_id in ids if job_id in table]
        if argv[0] == "squeue" and not rows:
            raise JobError("squeue exited with 1: slurm_load_jobs error: Invalid job id specified")
        return "\n".join(rows)


def _ago(seconds: float) -> str:
    return (datetime.now() - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def test_one_squeue_per_poll_for_every_job() -> None:
    fake = FakeSlurm({job: f"RUNNING|None|{_ago(5)}|aif-n1" for job in ("11", "12", "13")})
    queue = SlurmQueue(runner=fake, min_interval_s=60)
    for job in ("11", "12", "13"):
        queue.watch(job)
    assert [queue.status(job).state for job in ("11", "12", "13")] == ["RUNNING"] * 3
    assert queue.status("12").nodes == "aif-n1"
    assert fake.calls == [["squeue", "-h", "-t", "all", "-j", "11,12,13", "-o", "%i|%T|%r|%V|%N"]]
    assert queue.calls == {"squeue": 1}


def test_finished_jobs_get_one_sacct_and_are_not_polled_again() -> None:
    fake = FakeSlurm({"21": "RUNNING|None||aif-n2"}, {"22": "COMPLETED|0:0", "23": "CANCELLED by 0|0:15"})
    queue = SlurmQueue(runner=fake, min_interval_s=0)
    for job in ("21", "22", "23"):
        queue.watch(job)
    assert queue.status("22") == JobStatus("COMPLETED", active=False, exit_code="0:0")
    assert queue.status("23").state == "CANCELLED"
    assert [call[0] for call in fake.calls] == ["squeue", "sacct"]
    assert fake.calls[1][fake.calls[1].index("-j") + 1] == "22,23"
    queue.status("21")
    assert fake.calls[-1][fake.calls[-1].index("-j") + 1] == "21"  # the finished ones are left out


def test_polls_back_off_while_nothing_changes_and_speed_up_on_change() -> None:
    fake = FakeSlurm({"31": f"PENDING|Priority|{_ago(1)}|"})
    queue = SlurmQueue(runner=fake, min_interval_s=0.5, max_interval_s=2.0)
    queue.watch("31")
    intervals = []
    for _ in range(6):
        queue.poll()
        intervals.append(queue.interval_s)
    assert intervals[0] == 0.5  # the first answer is a change
    assert intervals[1:4] == [0.75, 1.125, 1.6875]
    assert intervals[-1] == 2.0
    fake.squeue["31"] = "RUNNING|None||aif-n3"
    queue.poll()
    assert queue.interval_s == 0.5


def _fake_command(tmp_path: Path, name: str, failures: int) -> Path:
    """A ``name`` script that fails (as a busy controller does) ``failures`` times, then answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "$*" >> {tmp_path}/calls
            n=$(cat {tmp_path}/count 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/count
            if [ "$n" -lt {failures} ]; then
              echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1
            fi
            echo "41|RUNNING|None|2026-01-01T00:00:00|aif-n1"
            """
        )
    )
    script.chmod(0o755)
    return bin_dir


def test_a_squeue_that_fails_twice_is_survived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_command(tmp_path, 'squeue', 2)}{os.pathsep}{os.environ['PATH']}")
    queue = SlurmQueue(attempts=3, retry_delay_s=0.01)
    assert queue.status("41").state == "RUNNING"
    assert queue.calls == {"squeue": 3}


def test_a_squeue_that_keeps_failing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_command(tmp_path, 'squeue', 3)}{os.pathsep}{os.environ['PATH']}")
    queue = SlurmQueue(attempts=3, retry_delay_s=0.01)
    with pytest.raises(JobError, match=r"^squeue failed 3 times in a row, giving up: squeue .* exited with 1: ") as e:
        queue.status("41")
    assert str(e.value).endswith("Socket timed out on send/recv operation")
    assert len((tmp_path / "calls").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("reason", "waited_s", "hopeless"),
    [
        ("PartitionTimeLimit", 1, "the time limit is above the partition's"),
        ("ReqNodeNotAvail, UnavailableNodes:aif-n2", 1, "a required node is down, drained or reserved"),
        ("QOSMaxJobsPerUserLimit", 30, ""),
        ("QOSMaxJobsPerUserLimit", 700, "a limit of the account or QoS, for longer than 10 min"),
        ("Resources", 5000, ""),
    ],
)
def test_pending_reasons(reason: str, waited_s: float, hopeless: str) -> None:
    queue = SlurmQueue(runner=FakeSlurm({"51": f"PENDING|{reason}|{_ago(waited_s)}|"}))
    status = queue.status("51")
    assert status.hopeless == hopeless
    assert status.reason == reason.split(",")[0]
    assert status.pending_s is not None
    assert abs(status.pending_s - waited_s) < 5


def test_pending_state_reads_with_its_reason_and_age() -> None:
    status = JobStatus("PENDING", active=True, reason="Resources", pending_s=12 * 60 + 5)
    assert status.waiting() == "PENDING (Resources) for 12 min"
    assert status.describe() == "job state PENDING (Resources) for 12 min"
    assert JobStatus("PENDING", True, reason="Priority", pending_s=3 * 3600 + 60).waiting() == (
        "PENDING (Priority) for 3 h 1 min"
    )


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_a_run_polls_all_its_jobs_in_one_call(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Slurm command of a run on the real cluster, through wrappers on PATH that log each call."""
    log = log_slurm_calls(pytester.path, monkeypatch)
    pytester.makepyfile(THREE_SERVICES)
    done = run_pytest(pytester.path, "--aif-profile=ci-slurm", "--aif-results-dir=res")
    assert done.returncode == 0, done.stdout[-3000:]
    calls = [line.split(" ", 1) for line in log.read_text().splitlines()]
    counts = Counter(name for name, _ in calls)
    assert f"sbatch {counts['sbatch']}" in done.stdout  # the run's own count agrees with the wrappers'
    assert f"squeue {counts['squeue']}" in done.stdout
    assert counts["sbatch"] == counts["scancel"] == 3
    first_cancel = next(i for i, (name, _) in enumerate(calls) if name == "scancel")
    last_submit = max(i for i, (name, _) in enumerate(calls) if name == "sbatch")
    # Polls ask for every job's state; a cancel first asks one job's script (its identity check).
    between = [args for name, args in calls[last_submit:first_cancel] if name == "squeue" and "-o %o" not in args]
    assert between, "no poll while the three services ran"
    assert all(len(args.split(" -j ")[1].split()[0].split(",")) == 3 for args in between), between
    assert counts["squeue"] < 40, counts  # one per poll, with back-off: not one per job per check
