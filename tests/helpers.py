"""Shared helpers of the plugin's own tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from pytest_aifactory.core.profiles import load_profile
from pytest_aifactory.jobs.backends import make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.registry import JobRegistry

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 60.0, explain: Callable[[], str] = str) -> T:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` (and ``explain()``) at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{explain()}")
        time.sleep(0.05)


def slurm_services(run_dir: Path) -> ServiceManager:
    """Services as jobs on the ``ci-slurm`` cluster, recorded in ``run_dir``, stopped by nobody but the test."""
    profile = load_profile("ci-slurm")
    return ServiceManager(profile, make_backend(profile), JobRegistry(run_dir), owner=None)


# The child pytest's entry point. SIGINT must not stay ignored: a shell without job control
# starts background commands with SIGINT ignored, that is inherited across exec, and Python
# then installs no KeyboardInterrupt handler. The child restores it itself: a ``preexec_fn``
# would run Python in the forked copy of this process before exec, where a library's fork
# handler can abort it (grpc's, left by a client of an earlier test: "epoll_wait error: Bad
# file descriptor", exit -6, seen in CI).
_CHILD_MAIN = (
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.console_main())"
)


def registry_entries(run_dir: Path) -> list[dict[str, str]]:
    """The lines of a run's jobs.jsonl."""
    path = run_dir / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class ChildPytest:
    """A pytest run in a child process that a test interrupts or kills; its output goes to a file.

    A file, not a pipe: a child that writes more than a pipe holds while nobody reads would
    block, and a pipe left open when a test fails leaks into a later test's garbage collection.
    """

    def __init__(self, cwd: Path, *args: str) -> None:
        self.log = cwd / "child-pytest.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, "-p", "no:cacheprovider", *args],
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        """What the child printed so far."""
        return self.log.read_text(errors="replace")

    def _explain(self) -> str:
        return f"; the child pytest's output:\n{self.output()[-6000:]}"

    def wait_for(self, what: str, check: Callable[[], T | None], timeout_s: float = 60.0) -> T:
        """``wait_for`` while the child runs: failing, with its output, at the deadline or when it ends first."""

        def running_check() -> T | None:
            ended = self.process.poll() is not None  # before the check: what it sees came before the end
            value = check()
            if not value and ended:
                raise AssertionError(
                    f"the child pytest ended (exit {self.process.returncode}) before {what}{self._explain()}"
                )
            return value

        return wait_for(what, running_check, timeout_s, self._explain)

    def interrupt(self, timeout_s: float) -> str:
        """SIGINT, as Ctrl-C does; its whole output once it has ended."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the child pytest did not end within {timeout_s} s of SIGINT{self._explain()}"
            ) from None
        return self.output()

    def kill(self) -> None:
        """SIGKILL (nothing if it has ended) and reap it."""
        self.process.kill()
        self.process.wait(timeout=30)


def aifactory(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``aifactory`` command (as ``python -m pytest_aifactory.apps.cli``)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_aifactory.apps.cli", *args], capture_output=True, text=True, check=False
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ready(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_pytest(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run pytest as a user would (a new process, no cache) in ``cwd``, with extra ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


# A module for pytester projects: ``pytester.makepyfile(service_killer=KILL_SERVICE)``.
KILL_SERVICE = """
import json, os, signal, time


def kill_and_wait(service):
    \"\"\"SIGKILL the service's process and wait until its job has recorded the exit.\"\"\"
    pid = json.loads((service.folder / "endpoint.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (service.folder / "exit.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
"""


def log_slurm_calls(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Wrappers of sbatch, squeue, sacct and scancel first on PATH, each logging its call to the returned file."""
    log, bin_dir = folder / "slurm-calls.log", folder / "slurm-bin"
    bin_dir.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scancel"):
        real = shutil.which(name)
        assert real is not None, f"{name} is not installed: run .ci/slurm-up.sh"
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


THREE_SERVICES = """
import time

def test_three_services(aif_service):
    services = [aif_service("http", index_text=f"n{i}") for i in range(3)]
    time.sleep(3)  # the services in use: the queue is polled meanwhile only by the checks after the test
"""
