"""The plugin as others get it: the sdist and the wheel built from it, installed (not editable) with
its dependencies into a fresh virtualenv, used from folders outside this checkout.

Selected with ``-m packaging``; about a minute with a warm pip cache (it needs the index otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PROFILES = sorted(p.name for p in (ROOT / "slurm_profiles").glob("*.yaml"))
# What a checkout holds besides the sources: never part of a build.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "aif-results", ".benchmarks", "__pycache__", ".*_cache"
)


@dataclass(frozen=True)
class Venv:
    """A fresh virtualenv with the wheel installed, and how to run its commands."""

    path: Path
    env: dict[str, str]

    def run(self, cwd: Path, *argv: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` (a command of the virtualenv's ``bin/``) run in ``cwd``."""
        command = [str(self.path / "bin" / argv[0]), *argv[1:]]
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)


def _clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without what ties it to this checkout or to the running pytest."""
    dropped = ("PYTEST_", "AIF_", "PYTHON", "VIRTUAL_ENV", "PIP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _check(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, from a copy of this checkout (which stays untouched)."""
    base = tmp_path_factory.mktemp("dist")
    source = base / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCES)
    _check(
        subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(base / "out"), str(source)],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    )
    return base / "out"


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv (no system site-packages) with the wheel and its base dependencies."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", str(path)], capture_output=True, text=True, check=False))
    installed = Venv(path, _clean_env(path))
    (wheel,) = dist.glob("*.whl")
    _check(installed.run(path, "python", "-m", "pip", "install", "-q", str(wheel)))
    return installed


def test_the_sdist_and_the_wheel_carry_the_profiles(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = sorted(Path(n).name for n in archive.namelist() if n.startswith("pytest_aifactory/slurm_profiles/"))
    assert in_wheel == PROFILES
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/pytest_aifactory/slurm_profiles/" in m.name]
    assert sorted(Path(m.name).name for m in members) == PROFILES
    assert all(m.isfile() for m in members)  # files, not the checkout's symlink


def test_the_installed_package_is_the_wheel_not_this_checkout(venv: Venv, tmp_path: Path) -> None:
    done = _check(venv.run(tmp_path, "python", "-c", "import pytest_aifactory; print(pytest_aifactory.__file__)"))
    assert Path(done.stdout.strip()).is_relative_to(venv.path)
    assert "aifactory-0.1.0" in _check(venv.run(tmp_path, "python", "-m", "pytest", "-VV")).stdout


# Records, at the end of the run, what the plugin must not have changed.
_OBSERVER = """
import atexit, json, os, signal

_BEFORE = {}

def _state():
    return dict(sigterm=repr(signal.getsignal(signal.SIGTERM)), env=dict(os.environ), atexit=atexit._ncallbacks())

def pytest_configure(config):
    _BEFORE.update(_state())

def pytest_unconfigure(config):
    with open(os.environ["OBSERVED"], "w") as handle:
        json.dump({"before": _BEFORE, "after": _state()}, handle)
"""


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args", [[], ["--collect-only"], ["--markers"], ["--help"], ["--version"]])
def test_an_ordinary_project_is_left_as_it_was(venv: Venv, tmp_path: Path, args: list[str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(_OBSERVER)
    (project / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
    observed = tmp_path / "observed.json"
    before = _tree(project)
    done = venv.run(
        project, "python", "-m", "pytest", "-p", "no:cacheprovider", *args, extra_env={"OBSERVED": str(observed)}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _tree(project) == before
    if args in (["--help"], ["--version"]):
        return  # conftests are not configured
    if not args:
        assert "1 passed" in done.stdout
    state = json.loads(observed.read_text())
    assert state["after"] == state["before"]


def test_the_plugin_markers_work_with_strict_markers(venv: Venv, tmp_path: Path) -> None:
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n\n@pytest.mark.inference\n@pytest.mark.slurm\ndef test_marked():\n    pass\n"
    )
    collected = venv.run(tmp_path, "python", "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers", "--co")
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_marked.py"]
    ran = venv.run(tmp_path, "python", "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers")
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "1 passed" in ran.stdout


_BENCHMARK = """
import pytest


@pytest.mark.inference
@pytest.mark.slo("error_rate == 0")
def test_my_service(synthetic_llm_service, aif_load):
    result = aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, count=20)
    assert result.completed == 20
"""


def test_a_users_benchmark_runs_and_keeps_its_results_in_its_folder(venv: Venv, tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(_BENCHMARK)
    done = venv.run(
        tmp_path, "python", "-m", "pytest", "-p", "no:cacheprovider", "--aif-profile", "local", "--aif-run-id=mine"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
    report = json.loads((tmp_path / "aif-results" / "mine" / "report.json").read_text())
    assert report["status"] == "passed"
    assert Path(report["provenance"]["profile"]["source"]).is_relative_to(venv.path)  # the packaged profile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aif-results", "test_mine.py"]


def test_profiles_are_listed_with_their_source_and_meluxina_renders(venv: Venv, tmp_path: Path) -> None:
    listed = _check(venv.run(tmp_path, "aifactory", "profiles"))
    lines = listed.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [Path(p).stem for p in PROFILES]
    packaged = str(venv.path / "lib")
    assert all(f"[packaged: {packaged}" in line and "/pytest_aifactory/slurm_profiles/" in line for line in lines)

    rendered = _check(venv.run(tmp_path, "aifactory", "render", "meluxina-cpu", "s3"))
    assert "#SBATCH --partition=cpu" in rendered.stdout
    assert "docker://minio/minio:" in rendered.stdout
    assert list(tmp_path.iterdir()) == []

    _check(venv.run(tmp_path, "aifactory", "profiles", "--copy", "meluxina-cpu", "slurm_profiles"))
    again = _check(venv.run(tmp_path, "aifactory", "profiles")).stdout
    assert "meluxina-cpu: slurm: MeluXina CPU partition" in again
    assert "[project: slurm_profiles/meluxina-cpu.yaml]" in again
