"""Service lifecycle through the plugin, for real, on the local profile and on Slurm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import KILL_SERVICE, ChildPytest, registry_entries, wait_for

from pytest_aifactory.core.errors import JobError, ServiceStartupError
from pytest_aifactory.core.profiles import Profile, load_profile
from pytest_aifactory.jobs.backends import JobStatus, LocalBackend, make_backend
from pytest_aifactory.jobs.manager import ServiceManager
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.runner import LaunchPlan
from pytest_aifactory.services.spec import ServiceSpec

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=["local", pytest.param("ci-slurm", marks=pytest.mark.slurm)])
def profile_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def results(pytester: pytest.Pytester) -> Path:
    return pytester.path / "results"


def _args(profile_name: str, results: Path, run_id: str) -> list[str]:
    return [
        f"--aif-profile={profile_name}",
        f"--aif-results-dir={results}",
        f"--aif-run-id={run_id}",
        "-p",
        "no:cacheprovider",
    ]


def _submitted(run_dir: Path) -> list[dict[str, str]]:
    """The run's ``submitted`` registry lines (each follows its ``intent``)."""
    return [e for e in registry_entries(run_dir) if e["event"] == "submitted"]


def _assert_all_gone(profile_name: str, run_dir: Path) -> None:
    """Every job the run submitted is recorded as stopped and the scheduler agrees."""
    submitted = {e["job_id"]: e for e in _submitted(run_dir)}
    stopped = {e["job_id"] for e in registry_entries(run_dir) if e["event"] == "stopped"}
    assert submitted, "the run submitted no job"
    assert set(submitted) == stopped
    backend = make_backend(load_profile(profile_name))
    for job_id, entry in submitted.items():
        status = backend.status(job_id, Path(entry["folder"]))
        assert not status.active, f"job {job_id} is still {status.state}"
    if profile_name == "ci-slurm":
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
        assert not set(queue) & set(submitted), f"jobs still in squeue: {queue}"


def test_launch_ready_endpoint_and_teardown(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_uses_http(http_service, aif_profile):
            assert http_service.host == "127.0.0.1"
            assert http_service.job_id and http_service.node
            assert (http_service.folder / "endpoint.json").exists()
            response = httpx.get(http_service.url("/index.txt"))
            assert response.status_code == 200
            assert response.text == "pytest-aifactory http service\\n"

        def test_private_service_with_override(aif_service):
            service = aif_service("http", index_text="private")
            assert httpx.get(service.url("index.txt")).text == "private"
        """
    )
    result = pytester.runpytest_subprocess(*_args(profile_name, results, "launch"))
    result.assert_outcomes(passed=2)
    _assert_all_gone(profile_name, results / "launch")


def test_startup_failure_reports_state_and_stderr(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    pytester.makepyfile(
        """
        from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

        def test_broken(aif_service):
            aif_service(ServiceSpec(
                name="broken",
                command=("sh", "-c", "echo starting; echo boom-marker-42 >&2; exit 3"),
                probe=HttpProbe(),
            ))
        """
    )
    result = pytester.runpytest_subprocess(*_args(profile_name, results, "broken"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*service 'broken' exited before it was ready: job state *",
            "*service process: exit code 3, exited*",
            "*--- service stderr*",
            "*boom-marker-42*",
        ]
    )
    _assert_all_gone(profile_name, results / "broken")


def test_startup_timeout_names_last_probe(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    pytester.makepyfile(
        """
        from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

        def test_never_ready(aif_service):
            aif_service(ServiceSpec(
                name="sleeper",
                command=("sleep", "600"),
                probe=HttpProbe(path="/health"),
                readiness_timeout_s=3,
            ))
        """
    )
    result = pytester.runpytest_subprocess(*_args(profile_name, results, "timeout"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*service 'sleeper' was not ready within 3 s (last probe: GET http://127.0.0.1:*/health*"]
    )
    _assert_all_gone(profile_name, results / "timeout")


def test_service_death_fails_the_test(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    pytester.makepyfile(service_killer=KILL_SERVICE)
    pytester.makepyfile(
        """
        from service_killer import kill_and_wait

        def test_service_dies(aif_service):
            service = aif_service("http")
            kill_and_wait(service)

        def test_next_one_passes():
            pass
        """
    )
    result = pytester.runpytest_subprocess(*_args(profile_name, results, "death"))
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*service 'http' died while it was in use: job state *", "*exit code -9*"])
    _assert_all_gone(profile_name, results / "death")


def test_sigint_leaves_no_job_behind(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    marker = pytester.path / "started.json"
    pytester.makepyfile(
        f"""
        import json, time

        def test_long(http_service):
            open({str(marker)!r}, "w").write(json.dumps({{"job_id": http_service.job_id}}))
            time.sleep(120)
        """
    )
    child = ChildPytest(pytester.path, *_args(profile_name, results, "sigint"))
    try:
        child.wait_for("the service to start", marker.exists, timeout_s=90)
        output = child.interrupt(timeout_s=90)
    finally:
        child.kill()
    assert "KeyboardInterrupt" in output
    job_id = json.loads(marker.read_text())["job_id"]
    assert any(e.get("job_id") == job_id for e in registry_entries(results / "sigint"))
    _assert_all_gone(profile_name, results / "sigint")


def test_xdist_starts_shared_service_once(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    seen = pytester.path / "seen"
    seen.mkdir()
    pytester.makepyfile(
        f"""
        import os
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_shared(http_service, n):
            path = os.path.join({str(seen)!r}, f"{{n}}-{{os.environ['PYTEST_XDIST_WORKER']}}")
            open(path, "w").write(http_service.job_id)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", *_args(profile_name, results, "xdist"))
    result.assert_outcomes(passed=6)
    workers = {p.name.split("-")[1] for p in seen.iterdir()}
    job_ids = {p.read_text() for p in seen.iterdir()}
    assert workers == {"gw0", "gw1"}
    assert len(job_ids) == 1
    submitted = _submitted(results / "xdist")
    assert len(submitted) == 1
    _assert_all_gone(profile_name, results / "xdist")


def test_keep_services_then_cleanup_command(pytester: pytest.Pytester, profile_name: str, results: Path) -> None:
    pytester.makepyfile(
        """
        def test_start(http_service):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--aif-keep-services", *_args(profile_name, results, "kept"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*services left running*", "http: * job *", "*aifactory cleanup kept*"])
    entry = _submitted(results / "kept")[0]
    backend = make_backend(load_profile(profile_name))
    assert backend.status(entry["job_id"], Path(entry["folder"])).active
    cleanup = subprocess.run(
        [sys.executable, "-m", "pytest_aifactory.apps.cli", "cleanup", "kept", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    assert f"cancelled http: {backend.name} job {entry['job_id']}" in cleanup.stdout
    _assert_all_gone(profile_name, results / "kept")


def test_killed_run_local_service_stops_with_owner(pytester: pytest.Pytester, results: Path) -> None:
    """A SIGKILLed pytest cannot clean up: the local service notices its owner is gone."""
    marker = pytester.path / "started.json"
    pytester.makepyfile(
        f"""
        import json, time

        def test_long(http_service):
            open({str(marker)!r}, "w").write(json.dumps({{"job_id": http_service.job_id}}))
            time.sleep(120)
        """
    )
    child = ChildPytest(pytester.path, *_args("local", results, "killed"))
    try:
        child.wait_for("the service to start", marker.exists, timeout_s=90)
    finally:
        child.kill()
    entry = _submitted(results / "killed")[0]
    backend = make_backend(load_profile("local"))
    wait_for("the orphaned service to stop", lambda: not backend.status(entry["job_id"], Path(entry["folder"])).active)
    exit_info = json.loads((Path(entry["folder"]) / "exit.json").read_text())
    assert "owner process" in exit_info["reason"]


def test_service_in_a_container_with_binds(
    pytester: pytest.Pytester, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup and start go through the profile's container runtime (a stand-in that checks binds)."""
    log = pytester.path / "apptainer.jsonl"
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    bin_dir = pytester.mkdir("bin")
    (bin_dir / "apptainer").symlink_to(Path(__file__).resolve().parent / "fake_apptainer")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    profile = pytester.path / "boxed.yaml"
    profile.write_text(
        "name: boxed\nexecutor: local\ncontainer: {runtime: apptainer, binds: [/tmp], options: [--writable-tmpfs]}\n"
    )
    pytester.makepyfile(
        """
        import httpx
        from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

        def test_boxed(aif_service):
            spec = ServiceSpec(
                name="boxed",
                image="docker://python:3.11-slim",
                setup=(("sh", "-c", "echo boxed > {workdir}/state/index.txt"),),
                command=("{python}", "-m", "http.server", "-b", "{host}", "-d", "{workdir}/state", "{ports.http}"),
                binds=("{workdir}/state:/srv/state",),
                probe=HttpProbe(path="/index.txt"),
            )
            assert httpx.get(aif_service(spec).url("index.txt")).text == "boxed\\n"
        """
    )
    result = pytester.runpytest_subprocess(*_args(str(profile), results, "boxed"))
    result.assert_outcomes(passed=1)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call["argv"][0] for call in calls] == ["sh", sys.executable]
    for call in calls:
        assert call["image"] == "docker://python:3.11-slim"
        assert call["options"] == ["--writable-tmpfs"]
        assert call["binds"][0] == "/tmp"
        assert call["binds"][1].endswith("/work/state:/srv/state")


class _CancelFails(LocalBackend):
    """A job that dies at once and then cannot be cancelled."""

    def submit(self, plan: LaunchPlan) -> str:
        return "4242"

    def status(self, job_id: str, folder: Path) -> JobStatus:
        return JobStatus("FAILED", active=False, exit_code="1")

    def cancel(self, job_id: str, folder: Path, timeout_s: float = 60.0) -> JobStatus:
        raise JobError("scancel: controller unreachable")


def test_failed_cancel_keeps_the_startup_error_first(tmp_path: Path) -> None:
    profile = Profile(name="stub", executor="local")
    manager = ServiceManager(profile, _CancelFails(profile), JobRegistry(tmp_path), owner=None)
    with pytest.raises(ServiceStartupError) as failure:
        manager.launch(ServiceSpec(name="doomed", command=("false",)))
    message = str(failure.value)
    assert message.startswith("service 'doomed' exited before it was ready: job state FAILED, exit code 1")
    assert message.splitlines()[-1] == "cancelling its job failed too: scancel: controller unreachable"
