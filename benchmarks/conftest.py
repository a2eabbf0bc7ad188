"""Shared by the suites: README figures written by the benchmark that measured them, never by hand.

A figure block in README.md sits between ``<!-- figures: NAME -->`` and
``<!-- end of figures: NAME -->``. A benchmark run with ``--readme-figures`` replaces its block
with what it printed, headed by the date, the machine, its load average and the versions, so
every figure there says where it came from. Without the option the block is left alone.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pytest_aifactory.export.report import cpu_model, git_state

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- figures: {name} -->", f"<!-- end of figures: {name} -->"


def _commit() -> str:
    """The checkout's commit, ``(dirty)`` when a tracked file other than the README (which this writes) changed."""
    state = git_state(ROOT, ignore=("README.md",))
    return f"{(state['commit'] or 'unknown')[:10]}{' (dirty)' if state['dirty'] else ''}"


def provenance(command: str, load_average: float, packages: tuple[str, ...] = ()) -> str:
    """One line: when, by which command, on which machine (and how busy it was), with which versions."""
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("pytest-aifactory", *packages))
    return (
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `{command}` on "
        f"{socket.gethostname()} ({cpu_model()}, {os.cpu_count()} cores, load average {load_average:.1f} at the "
        f"start), {platform.system()} {platform.release()}, Python {sys.version.split()[0]}, {versions}, "
        f"commit {_commit()}. Do not edit by hand."
    )


def write_block(name: str, text: str, readme: Path = README) -> None:
    """Replace the README's figure block ``name`` with ``text``."""
    begin, end = _markers(name)
    content = readme.read_text(encoding="utf-8")
    if begin not in content or end not in content:
        raise RuntimeError(f"{readme} has no figure block {name!r}: add the lines {begin} and {end}")
    head, rest = content.split(begin, 1)
    readme.write_text(f"{head}{begin}\n{text.strip()}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--readme-figures",
        action="store_true",
        default=False,
        help="Write each benchmark's figures into its block of README.md (run on a quiet machine)",
    )


class ReadmeFigures:
    """What a benchmark uses to head its figures and to put them into the README."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.provenance = provenance

    def publish(self, name: str, text: str) -> None:
        """Write ``text`` into the README's block ``name`` when the run was given ``--readme-figures``."""
        if self.enabled:
            write_block(name, text)


@pytest.fixture
def readme_figures(request: pytest.FixtureRequest) -> ReadmeFigures:
    return ReadmeFigures(bool(request.config.getoption("readme_figures")))
