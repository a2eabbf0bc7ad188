from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _slurm_problem() -> str | None:
    for command in ("sbatch", "squeue", "sacct", "scancel"):
        if shutil.which(command) is None:
            return f"{command} is not installed"
    try:
        subprocess.run(["scontrol", "ping"], check=True, capture_output=True, timeout=20)
        subprocess.run(["sacct", "-n", "-X"], check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Slurm is not up (run .ci/slurm-up.sh): {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needs_slurm = [item for item in items if item.get_closest_marker("slurm")]
    if not needs_slurm:
        return
    problem = _slurm_problem()
    if problem is None:
        return
    # Under CI a missing cluster is a failure, never a silent skip.
    if os.environ.get("CI", "").lower() == "true":
        mark = pytest.mark.usefixtures("_slurm_required")
        for item in needs_slurm:
            item.add_marker(mark)
            item.stash[_PROBLEM] = problem
    else:
        for item in needs_slurm:
            item.add_marker(pytest.mark.skip(reason=problem))


_PROBLEM = pytest.StashKey[str]()


@pytest.fixture
def _slurm_required(request: pytest.FixtureRequest) -> None:
    pytest.fail(f"CI=true and this test needs Slurm: {request.node.stash[_PROBLEM]}", pytrace=False)
