"""Faults and secrets, as a sceptical operator tries them, on the local profile and on Slurm.

Planted secrets (the environment, the profile's ``env``, a Pushgateway URL password, the run's
generated S3 keys) stay out of the terminal, the job folders (pickles included) and the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from helpers import ChildPytest, aifactory, registry_entries, run_pytest, slurm_services, wait_for
from loki_receiver import LokiReceiver

from pytest_aifactory.core.errors import LoadStoppedError
from pytest_aifactory.core.profiles import load_profile
from pytest_aifactory.export.report import load_schema
from pytest_aifactory.jobs.backends import make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.node_files import NODE_FILES
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.runner import EXIT_FILE, LaunchPlan, read_json
from pytest_aifactory.jobs.sealed import SECRETS_VARIABLE, exported, exporting
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.services.spec import ServiceSpec, TcpProbe
from pytest_aifactory.workloads.runner import LoadRunner

pytestmark = pytest.mark.timeout(240)

PROFILE_SECRET = "profile-api-key-7c1e0a"
ENV_SECRET = "env-token-4d2b9f61"
URL_SECRET = "url-password-8a3c5e"
SERVICE_SECRET = "service-password-2f9d"
DIGIT_SECRET = "8675309421"  # an all-digit password: a secret all the same

_PROFILES = {
    "local": "name: faulty\nexecutor: local\n",
    "ci-slurm": (
        "name: faulty\nexecutor: slurm\nslurm:\n  partition: debug\n  time_min: 20\n  cpus_per_task: 1\n  mem_gb: 2\n"
    ),
}


@pytest.fixture(params=["local", pytest.param("ci-slurm", marks=pytest.mark.slurm)])
def profile(request: pytest.FixtureRequest, pytester: pytest.Pytester) -> Path:
    """A profile of the backend with a secret in its ``env``."""
    path = pytester.path / "faulty.yaml"
    path.write_text(_PROFILES[str(request.param)] + f"env:\n  MY_API_KEY: {PROFILE_SECRET}\n  MAX_TOKENS: '4096'\n")
    return path


# Tests that count how often a failure is printed leave out the short summary, which repeats
# each message in full where CI is set (pytest does not truncate it there).
NO_SUMMARY = "-rN"


def _run(pytester: pytest.Pytester, profile: Path, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(
        pytester.path,
        f"--aif-profile={profile}",
        "--aif-results-dir=res",
        f"--aif-run-id={run_id}",
        f"--aif-pushgateway=http://user:{URL_SECRET}@127.0.0.1:1",
        *args,
        env={"AIF_PLANTED_TOKEN": ENV_SECRET, "DB_PASSWORD": DIGIT_SECRET},
    )


LEAKY_SERVICE = f"""
import os
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

def test_leaky(aif_service):
    open("s3-secret.txt", "w").write(os.environ["AIF_S3_SECRET_KEY"])
    aif_service(ServiceSpec(
        name="leaky",
        setup=(("sh", "-c", "echo $AIF_S3_SECRET_KEY > {{workdir}}/creds.json"),),
        command=("sh", "-c",
                 'echo "key=$MY_API_KEY tok=$AIF_PLANTED_TOKEN s3=$AIF_S3_SECRET_KEY svc=$SVC_PASSWORD"'
                 ' "pin=$DB_PASSWORD" >&2; exit 3'),
        env={{"SVC_PASSWORD": "{SERVICE_SECRET}"}},
        probe=HttpProbe(),
        secret_files=("{{workdir}}/creds.json",),
    ))
"""


@pytest.fixture
def loki() -> Iterator[LokiReceiver]:
    receiver = LokiReceiver()
    yield receiver
    receiver.close()


def test_secrets_stay_out_of_the_terminal_job_folders_loki_and_report(
    pytester: pytest.Pytester, profile: Path, loki: LokiReceiver
) -> None:
    """A failing service prints its secrets: its log tail is shown masked, and no file of ours holds one."""
    pytester.makepyfile(LEAKY_SERVICE)
    done = _run(pytester, profile, "leaky", f"--aif-loki={loki.url}")
    assert done.returncode == 1, done.stdout[-3000:]
    s3_secret = (pytester.path / "s3-secret.txt").read_text()
    secrets = [PROFILE_SECRET, ENV_SECRET, URL_SECRET, SERVICE_SECRET, DIGIT_SECRET, s3_secret]
    assert "key=*** tok=*** s3=*** svc=*** pin=***" in done.stdout
    assert [s for s in secrets if s in done.stdout + done.stderr] == []
    run_dir = pytester.path / "res" / "leaky"
    (job_folder,) = (run_dir / "jobs").iterdir()
    assert (job_folder / "work").is_dir()  # the setup step ran, and its credentials file is gone
    assert not (job_folder / "work" / "creds.json").exists()
    assert list(job_folder.glob("*_submitted.pkl"))
    ours = [p for p in run_dir.rglob("*") if p.is_file() and p.name not in ("service.err", "service.out")]
    leaks = [(p.name, s) for p in ours for s in secrets if s.encode() in p.read_bytes()]
    assert leaks == []
    assert loki.errors == []
    assert "key=*** tok=*** s3=*** svc=*** pin=***" in [line["line"] for line in loki.lines]  # from the job's forwarder
    assert [s for s in secrets if s in json.dumps(loki.lines)] == []


DYING_SERVICE = """
import json, os, signal, time
import pytest

@pytest.mark.slo("error_rate <= 1")
def test_dies_mid_load(synthetic_llm_service, aif_load):
    pid = json.loads((synthetic_llm_service.folder / "endpoint.json").read_text())["pid"]
    shown, killed = aif_load.progress, []

    def progress(label):
        show = shown(label) if shown else None

        def update(snapshot):
            if snapshot.done >= 10 and not killed:  # the fault: the service dies mid-load
                os.kill(pid, signal.SIGKILL)
                killed.append(time.monotonic())
            if show:
                show(snapshot)

        return update

    aif_load.progress = progress
    try:
        aif_load.openai(synthetic_llm_service, rate=20, duration_s=60, prompts="synthetic:in=4,out=8")
    finally:
        open("elapsed.txt", "w").write(str(time.monotonic() - killed[0]))
"""


def test_a_dead_service_stops_its_load_and_fails_once(pytester: pytest.Pytester, profile: Path) -> None:
    """Killed mid-load (60 s planned): the load ends within seconds, what it measured is judged and reported."""
    pytester.makepyfile(DYING_SERVICE)
    done = _run(pytester, profile, "dying", NO_SUMMARY)
    assert done.returncode == 1, done.stdout[-3000:]
    assert float((pytester.path / "elapsed.txt").read_text()) < 10
    assert done.stdout.count("service 'synthetic-llm' died while it was in use") == 1, done.stdout[-3000:]
    assert "During handling of the above exception" not in done.stdout
    assert "LoadStoppedError" not in done.stdout
    report = json.loads((pytester.path / "res" / "dying" / "report.json").read_text())
    (test,) = report["tests"]
    assert test["outcome"] == "failed"
    (result,) = test["results"]
    assert result["metrics"]["completed"] > 0
    assert [v["slo"] for v in test["slo"]] == ["error_rate <= 1"]


BAD_LOADS = """
import pytest

PLANS = {
    "rate": dict(rate=-5, count=10), "count": dict(concurrency=2, count=-5), "warmup": dict(rate=5, count=5, warmup=-3),
    "both": dict(rate=5, count=5, duration_s=3), "nan": dict(rate=float("nan"), duration_s=1),
}

@pytest.mark.parametrize("name", list(PLANS))
def test_bad_plan(aif_load, name):
    aif_load.openai("http://127.0.0.1:1", nodes=2, **PLANS[name])  # known when the body runs

def test_bad_var(aif_vars):
    aif_vars("vec_dataset", "clustered", choices=("random", "clustered"))

def test_var_of_another_kind(aif_vars):
    aif_vars("llm_rates", [1, 2])
"""


def test_bad_load_parameters_are_one_paragraph_before_any_job(pytester: pytest.Pytester) -> None:
    """Each bad value is named with what is accepted, without a traceback, and no load job is submitted."""
    pytester.makepyfile(BAD_LOADS)
    profile = pytester.path / "p.yaml"
    profile.write_text("name: p\nexecutor: local\nvars:\n  vec_dataset: nope\n  llm_rates: 4\n")
    done = run_pytest(
        pytester.path, f"--aif-profile={profile}", "--aif-run-id=bad", "--aif-results-dir=res", NO_SUMMARY
    )
    assert done.returncode == 1, done.stdout[-3000:]
    for message in (
        "bad load parameters: rate=-5: expected a number of requests/s > 0",
        "bad load parameters: count=-5: expected a whole number of requests >= 1",
        "bad load parameters: warmup=-3: expected a whole number of requests >= 0",
        "bad load parameters: give exactly one of count and duration_s",
        "bad load parameters: rate=nan: expected a number of requests/s > 0",
        f"profile 'p' ({profile}): vars.vec_dataset = 'nope': expected one of random, clustered",
        f"profile 'p' ({profile}): vars.llm_rates = 4: expected a list, as the default [1, 2] is",
    ):
        assert done.stdout.count(message) == 1, message
    assert "Traceback" not in done.stdout
    assert "Error" not in done.stdout  # no exception type: a message, not a traceback
    assert not (pytester.path / "res" / "bad" / "jobs.jsonl").exists()


# A test of a real service with a bad argument written in its body (line 6), one module each.
LITERAL_MISTAKE = """import pytest


@pytest.mark.parametrize("clients", [2, 0])
def test_it(synthetic_llm_service, aif_load, clients):
    aif_load.openai(synthetic_llm_service, {})
"""
UNKNOWN_DATASET = """from pytest_aifactory.workloads.vectors.datasets import VectorDataset


def test_it(aif_vector_store, aif_load, tmp_path):
    dataset = VectorDataset("sift1m", count=100, dim=8)
    aif_load.vector_search(aif_vector_store("chroma"), dataset, cache_dir=tmp_path, concurrency=1, count=10)
"""
LITERAL_ARGUMENTS = {
    "test_rate": ("rate=-5, count=10", "rate=-5: expected a number of requests/s > 0"),
    "test_count": ("concurrency=1, count=-5", "count=-5: expected a whole number of requests >= 1"),
    "test_warmup": ("rate=5, count=5, warmup=-3", "warmup=-3: expected a whole number of requests >= 0, or 'auto'"),
    "test_concurrency": ("concurrency=clients, count=5", "concurrency=0: expected a whole number >= 1"),
    "test_prompts": ("rate=5, count=5, prompts='bogus:x'", "unknown prompt source 'bogus:x'; use synthetic:in=N"),
}


def test_a_bad_literal_load_argument_is_a_usage_error_before_any_service_starts(pytester: pytest.Pytester) -> None:
    """Found when the test is collected: file, line, argument and what is accepted; no job, no results folder.

    The same values given as variables are found when the load runs (after the service
    started), in the same words.
    """
    for module, (arguments, _) in LITERAL_ARGUMENTS.items():
        (pytester.path / f"{module}.py").write_text(LITERAL_MISTAKE.format(arguments))
    pytester.makepyfile(test_dataset=UNKNOWN_DATASET)
    done = run_pytest(pytester.path, "--aif-profile=local", "--aif-results-dir=res", NO_SUMMARY)
    assert done.returncode == 2, done.stdout[-3000:]  # interrupted: errors during collection
    for module, (_, message) in LITERAL_ARGUMENTS.items():
        assert done.stdout.count(f"{module}.py:6: aif_load.openai: {message}") == 1, (message, done.stdout[-3000:])
    unknown = "VectorDataset: unknown dataset 'sift1m'; valid datasets: random, clustered, digits, embedded"
    assert done.stdout.count(f"test_dataset.py:5: {unknown}") == 1
    assert "Traceback" not in done.stdout
    assert not (pytester.path / "res").exists()  # no run, so no job: nothing was started

    for module in [*LITERAL_ARGUMENTS, "test_dataset"]:
        (pytester.path / f"{module}.py").unlink()
    pytester.makepyfile(
        test_later="""
from pytest_aifactory.workloads.vectors.datasets import VectorDataset

def test_rate(synthetic_llm_service, aif_load):
    rate = -5
    aif_load.openai(synthetic_llm_service, rate=rate, count=10)

def test_count(synthetic_llm_service, aif_load):
    plan = dict(concurrency=1, count=-5)
    aif_load.openai(synthetic_llm_service, **plan)

def test_dataset(aif_load):
    name = "sift1m"
    VectorDataset(name, count=100, dim=8)
"""
    )
    done = run_pytest(pytester.path, "--aif-profile=local", "--aif-results-dir=res", "--aif-run-id=later", NO_SUMMARY)
    assert done.returncode == 1, done.stdout[-3000:]
    for module in ("test_rate", "test_count"):
        message = LITERAL_ARGUMENTS[module][1]
        assert done.stdout.count(f"bad load parameters: {message}") == 1, message
    assert done.stdout.count(unknown.removeprefix("VectorDataset: ")) == 1
    assert "Traceback" not in done.stdout
    assert [e["service"] for e in registry_entries(pytester.path / "res" / "later") if e["event"] == "submitted"] == [
        "synthetic-llm"
    ]


def test_bad_setting_in_the_ini_leaves_no_results_folder(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naif_pushgateway = not-a-url\n")
    pytester.makepyfile("def test_x(aif_run):\n    pass\n")
    done = run_pytest(pytester.path)
    assert done.returncode == 4
    assert "ini aif_pushgateway (twin of --aif-pushgateway: expected an http:// or https:// URL, got 'not-a-url')" in (
        done.stderr
    )
    assert not (pytester.path / "aif-results").exists()


@pytest.mark.slurm
def test_unknown_partition_is_a_usage_error_before_any_job(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(http_service):\n    pass\n")
    profile = pytester.path / "p.yaml"
    profile.write_text(_PROFILES["ci-slurm"].replace("partition: debug", "partition: nope"))
    done = run_pytest(pytester.path, f"--aif-profile={profile}", "--aif-results-dir=res")
    assert done.returncode == 4, done.stdout[-3000:]
    assert "--aif-profile: profile 'faulty': slurm.partition 'nope': no such partition on this cluster" in done.stderr
    assert not (pytester.path / "res").exists()


TWO_LOADS = """
def test_two_loads(synthetic_llm_service, aif_load):
    aif_load.openai(synthetic_llm_service, rate=20, duration_s=1, prompts="synthetic:in=4,out=8", label="short")
    aif_load.openai(synthetic_llm_service, rate=20, duration_s=60, prompts="synthetic:in=4,out=8", label="long")
"""


def _start(pytester: pytest.Pytester, run_id: str, *args: str) -> ChildPytest:
    return ChildPytest(pytester.path, f"--aif-run-id={run_id}", "--aif-results-dir=res", *args)


def _report(pytester: pytest.Pytester, run_id: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads((pytester.path / "res" / run_id / "report.json").read_text()))
    except (OSError, ValueError):
        return None


def _valid_report(pytester: pytest.Pytester, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's report, valid against the schema, and its one test."""
    report = _report(pytester, run_id)
    assert report is not None
    jsonschema.validate(report, load_schema())
    (test,) = report["tests"]
    return report, test


def test_sigkill_leaves_a_report_with_the_results_so_far(pytester: pytest.Pytester) -> None:
    """The report is written at the start and as each result arrives: a SIGKILL loses only the load under way."""
    pytester.makepyfile(TWO_LOADS)
    child = _start(pytester, "killed")
    try:
        child.wait_for("the report at the start", lambda: _report(pytester, "killed"), timeout_s=60)
        first = child.wait_for(
            "the first result in the report",
            lambda: (r := _report(pytester, "killed")) and r["tests"] and r["tests"][0]["results"] and r,
            timeout_s=90,
        )
    finally:
        child.kill()
        aifactory("cleanup", "killed", "--results-dir", str(pytester.path / "res"))
    report, test = _valid_report(pytester, "killed")
    assert report["status"] == "running"
    assert test["outcome"] == "running"
    assert [r["label"] for r in test["results"]] == ["short"] == [r["label"] for r in first["tests"][0]["results"]]
    assert test["results"][0]["metrics"]["completed"] > 0


@pytest.fixture
def gateway(aif_service: Any) -> Any:
    return aif_service("pushgateway")


def test_sigint_keeps_the_partial_result_and_deletes_the_live_gauges(pytester: pytest.Pytester, gateway: Any) -> None:
    """Interrupted mid-load: the test is marked interrupted with what it measured; its live group is gone."""
    pytester.makepyfile(TWO_LOADS)
    child = _start(pytester, "intr", f"--aif-pushgateway={gateway.url()}", "--aif-pushgateway-interval=0.3")

    def live() -> bool:
        lines = httpx.get(gateway.url("/metrics"), timeout=5).text.splitlines()
        done = [line for line in lines if line.startswith("aifactory_live_requests_done_total{") and "long" in line]
        return bool(done) and float(done[0].rsplit(" ", 1)[1]) > 0

    try:
        child.wait_for("the long load's live figures", live, timeout_s=90)
        child.interrupt(timeout_s=120)
    finally:
        child.kill()
    report, test = _valid_report(pytester, "intr")
    assert report["status"] == "interrupted"
    assert test["outcome"] == "interrupted"
    assert [r["label"] for r in test["results"]] == ["short", "long"]
    assert test["results"][1]["config"]["interrupted"] is True
    assert test["results"][1]["metrics"]["completed"] > 0
    assert "aifactory_live_" not in httpx.get(gateway.url("/metrics"), timeout=5).text
    assert all(job["stopped"] for job in report["jobs"])


@pytest.mark.slurm
def test_a_slow_stopping_service_gets_its_stop_time_under_slurm(tmp_path: Path) -> None:
    """Slurm's KillWait (5 s here) is shorter than this service's stop (8 s): it still stops cleanly, with a record."""
    manager = slurm_services(tmp_path / "run")
    slow = ServiceSpec(
        name="slow-stop",
        command=("sh", "-c", 'trap "sleep 8; echo stopped-cleanly; exit 0" TERM; while true; do sleep 0.2; done'),
        ports=(),
        stop_timeout_s=20,
    )
    service = manager.launch(slow)
    manager.stop(service)
    exit_record = json.loads((service.folder / EXIT_FILE).read_text())
    assert exit_record["exit_code"] == 0
    assert exit_record["reason"] == "stopped by signal SIGTERM"
    assert "stopped-cleanly" in (service.folder / "service.out").read_text()


@pytest.mark.slurm
def test_a_service_that_dies_at_once_on_sigterm_is_stopped_not_failed_under_slurm(tmp_path: Path) -> None:
    """scancel signals the whole step: a service may die of the SIGTERM before the job's loop sees its own."""
    manager = slurm_services(tmp_path / "run")
    quick = ServiceSpec(name="quick-stop", command=("sleep", "600"), ports=())  # dies of SIGTERM at once
    service = manager.launch(quick)
    manager.stop(service)
    exit_record = json.loads((service.folder / EXIT_FILE).read_text())
    assert exit_record["reason"] == "stopped by signal SIGTERM", exit_record
    state = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", service.job_id], capture_output=True, text=True, check=True
    )
    assert "FAILED" not in state.stdout, state.stdout


@pytest.mark.parametrize(
    ("export", "passed"),
    [
        ("ALL", "ALL"),
        ("ALL,FOO", "ALL,FOO"),
        ("NONE", SECRETS_VARIABLE),
        ("HOME,PATH", f"HOME,PATH,{SECRETS_VARIABLE}"),
    ],
)
def test_every_export_of_a_profile_passes_the_job_secrets(
    export: str, passed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch's ``--export`` (from the profile or ``SBATCH_EXPORT``) names the secrets variable, never its value."""
    assert exporting(export) == passed
    monkeypatch.setenv("SBATCH_EXPORT", export)
    with exported({"env": {"X_TOKEN": SERVICE_SECRET}}):
        assert os.environ["SBATCH_EXPORT"] == passed
    assert os.environ["SBATCH_EXPORT"] == export
    assert SECRETS_VARIABLE not in os.environ


@pytest.mark.slurm
def test_a_profile_exporting_nothing_still_gives_the_job_its_secrets(tmp_path: Path) -> None:
    """``export: NONE`` (sbatch --export=NONE) kept AIF_JOB_SECRETS from the job: its service had no password."""
    base = load_profile("ci-slurm")
    profile = dataclasses.replace(base, slurm=dataclasses.replace(base.slurm, additional={"export": "NONE"}))
    manager = ServiceManager(profile, make_backend(profile), JobRegistry(tmp_path / "run"), owner=None)
    told = tmp_path / "told.txt"
    spec = ServiceSpec(
        name="told",
        command=("sh", "-c", f'echo "password=$SVC_PASSWORD" > {told}.part; mv {told}.part {told}; sleep 600'),
        env={"SVC_PASSWORD": SERVICE_SECRET},
        ports=(),
    )
    service = manager.launch(spec)
    try:
        wait_for("the service's note", told.exists)
    finally:
        manager.stop(service)
    assert told.read_text() == f"password={SERVICE_SECRET}\n"
    (script,) = service.folder.glob("*_submission.sh")
    assert f"#SBATCH --export={SECRETS_VARIABLE}\n" in script.read_text()
    files = [p for p in service.folder.rglob("*") if p.is_file() and p.name not in ("service.out", "service.err")]
    assert any(p.name.endswith("_submitted.pkl") for p in files)
    assert [p.name for p in files if SERVICE_SECRET.encode() in p.read_bytes()] == []


# A service that keeps what vLLM keeps outside its job folder, a Unix socket in {tmp} and a
# POSIX shared-memory segment (/dev/shm/psm_*, with Python's resource tracker beside it), and
# is slower to stop than Slurm's KillWait (5 s here): it ignores SIGTERM.
_LEAVES_NODE_FILES = """
import signal, socket, sys
from multiprocessing import shared_memory
signal.signal(signal.SIGTERM, signal.SIG_IGN)
tmp, host, port = sys.argv[1:]
segment = shared_memory.SharedMemory(create=True, size=4096)
ipc = socket.socket(socket.AF_UNIX)
ipc.bind(tmp + "/ipc.sock")
print("node files:", segment.name, tmp, flush=True)
server = socket.create_server((host, int(port)))
while True:
    server.accept()[0].close()
"""


@pytest.mark.slurm
def test_a_killed_slurm_job_leaves_nothing_in_tmp_or_shared_memory(tmp_path: Path) -> None:
    """A plain scancel SIGKILLs a job KillWait after its SIGTERM, before the job has cleaned up: stopping it does."""
    manager = slurm_services(tmp_path / "run")
    spec = ServiceSpec(
        name="node-files",
        command=("python", "-c", _LEAVES_NODE_FILES, "{tmp}", "{host}", "{ports.http}"),
        probe=TcpProbe(),
    )
    service = manager.launch(spec)
    try:
        said = (service.folder / "service.out").read_text().splitlines()
        _, _, segment, tmp = next(line for line in said if line.startswith("node files: ")).split()
        left = [Path(tmp), Path("/dev/shm") / segment]
        wait_for(  # the job looks at what its service maps once a second
            "the job's record of its shared memory",
            lambda: str(left[1]) in (read_json(service.folder / NODE_FILES) or {}).get("paths", {}),
        )
        subprocess.run(["scancel", service.job_id], check=True)  # as a user or a time limit does
        wait_for(
            "the killed job to leave the queue",
            lambda: not manager.backend.status(service.job_id, service.folder).active,
        )
        assert all(path.exists() for path in left), "the kill let the job clean up: nothing is tested"
        manager.stop(service)
        assert [path for path in left if path.exists()] == []
    finally:
        manager.close()  # the job of a failed check


@pytest.mark.slurm
def test_the_pending_job_of_a_sigkilled_run_is_cancelled(pytester: pytest.Pytester) -> None:
    """The owner watchdog cancels what a SIGKILLed run left in the queue, pending jobs included."""
    profile = pytester.path / "p.yaml"
    profile.write_text(_PROFILES["ci-slurm"] + "  additional:\n    begin: now+3600\n")  # pending for an hour
    pytester.makepyfile("def test_x(http_service):\n    pass\n")
    child = _start(pytester, "orphan", f"--aif-profile={profile}")
    run_dir = pytester.path / "res" / "orphan"
    try:
        (entry,) = child.wait_for(
            "the submit", lambda: [e for e in registry_entries(run_dir) if e["event"] == "submitted"]
        )
    finally:
        child.kill()

    def queued() -> list[str]:
        listing = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
        return listing.stdout.split()

    log = run_dir / "watchdog.log"
    try:
        wait_for("the watchdog's cancel", lambda: f"cancelled http: slurm job {entry['job_id']}" in log.read_text())
    finally:
        subprocess.run(["scancel", entry["job_id"]], check=False)
    assert entry["job_id"] not in queued()


@pytest.mark.slurm
def test_cleanup_leaves_alone_a_slurm_job_that_is_not_the_recorded_one(tmp_path: Path) -> None:
    """A stale registry names a job id that the queue now gives to another job: it is skipped, not cancelled."""
    backend = make_backend(load_profile("ci-slurm"))
    other = tmp_path / "other-job"
    job_id = backend.submit(LaunchPlan(ServiceSpec(name="other", command=("sleep", "120"), ports=()), other))
    run_dir = tmp_path / "stale"
    try:
        with JobRegistry(run_dir).submitting("slurm", "http", run_dir / "jobs" / "http-1") as note:
            note(job_id)
        done = aifactory("cleanup", "stale", "--results-dir", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"skipped http: slurm job {job_id}: slurm job {job_id} is now another job")
        assert backend.status(job_id, other).active
    finally:
        backend.cancel(job_id, other)


def test_a_stop_signal_ends_a_load_spread_over_worker_processes(synthetic_llm_service: Any) -> None:
    """The stop event reaches worker processes too: a 60 s load ends soon after it is set, its records kept."""
    stop, stopped_at = threading.Event(), []

    def progress(label: str) -> Callable[[Progress], None]:
        def update(snapshot: Progress) -> None:
            if snapshot.done >= 10 and not stop.is_set():  # the fault: the service is known dead now
                stopped_at.append(time.monotonic())
                stop.set()

        return update

    runner = LoadRunner(stop=stop, progress=progress)
    with pytest.raises(LoadStoppedError):
        runner.openai(synthetic_llm_service, rate=20, duration_s=60, prompts="synthetic:in=4,out=8", workers=2)
    assert time.monotonic() - stopped_at[0] < 5
    (result,) = runner.results
    assert result.metrics()["completed"] > 0
