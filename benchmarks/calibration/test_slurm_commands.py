"""How many Slurm commands a benchmark run issues: a run of three services on the CI cluster.

Every sbatch, squeue, sacct and scancel goes through a wrapper on PATH that logs it (the
wrappers of ``tests/test_slurm_queue.py``, which checks the polling's shape on the same run).
Needs the single-node Slurm of ``.ci/slurm-up.sh``.
Run: ``pytest benchmarks/calibration/test_slurm_commands.py -m calibration -s [--readme-figures]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.append(str(Path(__file__).parents[2] / "tests"))
from helpers import THREE_SERVICES, log_slurm_calls, run_pytest


def test_slurm_commands_of_a_run(pytester, monkeypatch, readme_figures):
    load_average = os.getloadavg()[0]
    log = log_slurm_calls(pytester.path, monkeypatch)
    pytester.makepyfile(THREE_SERVICES)
    done = run_pytest(pytester.path, "--aif-profile=ci-slurm", "--aif-results-dir=res")
    assert done.returncode == 0, done.stdout[-3000:]
    counts = Counter(line.split(" ", 1)[0] for line in log.read_text().splitlines())
    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    command = "pytest benchmarks/calibration/test_slurm_commands.py -m calibration -s --readme-figures"
    figures = (
        f"{readme_figures.provenance(command, load_average)} {slurm}.\n\n"
        f"A run of three services on `ci-slurm` (each held 3 s, then cancelled): "
        + ", ".join(f"`{name} {counts[name]}`" for name in ("sbatch", "squeue", "sacct", "scancel"))
        + " (three of the squeue calls are the cancel's identity check of each job)."
    )
    print(f"\n{figures}")
    readme_figures.publish("slurm-commands", figures)
    assert counts["sbatch"] == counts["scancel"] == 3
