"""The owner watchdog: a small process beside a run that cancels the run's jobs once the run is gone.

A job stops by itself when it sees its owner gone (``runner.Owner``), but only once it runs,
and only on the owner's host: a job still pending in the Slurm queue, or one on another node,
whose pytest was SIGKILLed would stay until ``aifactory cleanup``. The watchdog is started
with the run (``start_watchdog``), in its own session so that a Ctrl-C of the run does not
reach it; it polls the owner (pid and start time) every second and, once the owner is gone,
cancels whatever the run's registry says has not stopped (after a normal end: nothing), then
exits. What it did goes to ``watchdog.log`` in the run folder.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_aifactory.jobs.processes import process_start, same_process
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.run import cleanup_run, every_backend

__all__ = ["main", "start_watchdog"]

LOG_FILE = "watchdog.log"


def start_watchdog(run_dir: Path, owner_pid: int) -> subprocess.Popen[bytes]:
    """Start the watchdog of the run in ``run_dir`` whose jobs die with ``owner_pid``."""
    log = (run_dir / LOG_FILE).open("ab")
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "pytest_aifactory.jobs.watchdog", str(run_dir), str(owner_pid)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def main(argv: Sequence[str]) -> int:
    """``python -m pytest_aifactory.jobs.watchdog RUN_DIR OWNER_PID``."""
    run_dir, owner_pid = Path(argv[0]), int(argv[1])
    start = process_start(owner_pid)
    while same_process(owner_pid, start):
        time.sleep(1.0)
    done, errors = cleanup_run(JobRegistry(run_dir), every_backend())
    for line in done:
        print(f"watchdog: owner {owner_pid} gone: {line}", flush=True)
    for line in errors:
        print(f"watchdog: owner {owner_pid} gone: could not cancel {line}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
