"""The import-layer contracts of pyproject.toml hold, and a planted back-import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "pytest_aifactory", tmp_path / "pytest_aifactory", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers(package_copy: Path) -> None:
    result = _lint(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("core/errors.py", "from pytest_aifactory.jobs import registry as _registry  # noqa: F401\n"),
        ("services/spec.py", "from pytest_aifactory.workloads import sql as _sql  # noqa: F401\n"),
        ("load/engine.py", "import pytest as _pytest  # noqa: F401\n"),
    ],
)
def test_a_planted_back_import_breaks_a_contract(package_copy: Path, module: str, planted: str) -> None:
    path = package_copy / "pytest_aifactory" / module
    path.write_text(path.read_text() + "\n" + planted)
    result = _lint(package_copy)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
