"""The control API, for real: a server process, a run started and stopped, a service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port, http_ready, registry_entries, wait_for

from pytest_aifactory.core.profiles import load_profile
from pytest_aifactory.jobs.backends import make_backend

pytestmark = pytest.mark.timeout(300)
TOKEN = "control-test-token-123"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with one long suite, and the checkout's profiles."""
    suite = tmp_path / "benchmarks" / "mini"
    suite.mkdir(parents=True)
    (suite / "test_long.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.inference\n"
        "def test_long(synthetic_llm_service, aif_load):\n"
        "    aif_load.openai(synthetic_llm_service, prompts='synthetic:in=4,out=4', rate=5, duration_s=120)\n"
    )
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\nmarkers = []\n")
    shutil.copytree(ROOT / "slurm_profiles", tmp_path / "slurm_profiles")
    return tmp_path


@pytest.fixture
def api(project: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_aifactory.apps.cli",
            "control",
            "--port",
            str(port),
            "--root",
            str(project),
            "--results-dir",
            str(project / "res"),
        ],
        env={**os.environ, "AIF_CONTROL_TOKEN": TOKEN},
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("the control API", lambda: http_ready(f"{url}/openapi.json"))
    yield url
    process.terminate()
    process.wait(timeout=60)


def headers(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_is_required(api: str) -> None:
    assert httpx.get(f"{api}/v1/profiles").status_code == 401
    assert httpx.get(f"{api}/v1/profiles", headers=headers("wrong")).status_code == 401
    assert httpx.post(f"{api}/v1/runs", json={"suite": "mini"}).status_code == 401
    assert httpx.get(f"{api}/v1/profiles", headers=headers()).status_code == 200


def test_control_page_for_grafana_links(api: str) -> None:
    for path in ("/ui", "/ui/runs/some-run"):
        page = httpx.get(f"{api}{path}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "Start a run" in page.text
        assert '"/v1/runs/" + run.run_id + "/stop"' in page.text
        assert TOKEN not in page.text  # the token is typed in, never served


def test_openapi_and_listings(api: str) -> None:
    spec = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/runs", "/v1/runs/{run_id}/stop", "/v1/services", "/v1/profiles", "/v1/suites"} <= set(spec["paths"])
    names = {p["name"] for p in httpx.get(f"{api}/v1/profiles", headers=headers()).json()}
    assert {"local", "ci-slurm", "meluxina-gpu"} <= names
    assert httpx.get(f"{api}/v1/suites", headers=headers()).json() == [{"name": "mini", "path": "benchmarks/mini"}]


def test_unknown_suite_or_profile_names_the_valid_ones(api: str) -> None:
    response = httpx.post(f"{api}/v1/runs", json={"suite": "nope"}, headers=headers())
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown suite 'nope'; valid suites: mini"
    response = httpx.post(f"{api}/v1/runs", json={"suite": "mini", "profile": "moon"}, headers=headers())
    assert response.status_code == 404
    assert "unknown profile 'moon'; valid profiles: ci-cluster, ci-slurm, local" in response.json()["detail"]
    response = httpx.post(f"{api}/v1/services", json={"name": "mainframe"}, headers=headers())
    assert response.status_code == 404
    assert "valid services: chroma, embeddings, http" in response.json()["detail"]


def stop_once_its_service_runs(api: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    """Wait until run ``run_id`` is running with its service job, stop it, check nothing is left pending.

    Returns the run's status while it ran.
    """

    def service_up() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(f"{api}/v1/runs/{run_id}", headers=headers()).json()
        running = status["status"] == "running" and any(j["service"] == "synthetic-llm" for j in status["jobs"])
        return status if running else None

    running = wait_for("the run's service job", service_up, timeout_s=timeout_s)
    stopped = httpx.post(f"{api}/v1/runs/{run_id}/stop", headers=headers(), timeout=180).json()
    assert stopped["status"] == "stopped"
    assert stopped["jobs_pending"] == []
    return running


def test_start_watch_and_stop_a_real_run(api: str, project: Path) -> None:
    response = httpx.post(f"{api}/v1/runs", json={"suite": "mini", "marker": "inference"}, headers=headers())
    assert response.status_code == 201, response.text
    run_id = response.json()["run_id"]
    run_dir = project / "res" / run_id

    stop_once_its_service_runs(api, run_id, timeout_s=90)
    backend = make_backend(load_profile("local", project))
    for entry in registry_entries(run_dir):
        if entry["event"] == "submitted":
            assert not backend.status(entry["job_id"], Path(entry["folder"])).active
    assert (run_dir / "report.json").exists()  # the interrupted run still wrote its report
    listed = httpx.get(f"{api}/v1/runs", headers=headers()).json()
    assert [r["run_id"] for r in listed] == [run_id]


def test_start_and_stop_a_service(api: str) -> None:
    response = httpx.post(
        f"{api}/v1/services", json={"name": "http", "settings": {"index_text": "hello"}}, headers=headers(), timeout=60
    )
    assert response.status_code == 201, response.text
    service = response.json()
    assert httpx.get(f"{service['url']}index.txt").text == "hello"
    assert [s["id"] for s in httpx.get(f"{api}/v1/services", headers=headers()).json()] == [service["id"]]
    assert (
        httpx.delete(f"{api}/v1/services/{service['id']}", headers=headers(), timeout=60).json()["status"] == "stopped"
    )
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service['url']}index.txt", timeout=2)
    assert httpx.get(f"{api}/v1/services", headers=headers()).json() == []


@pytest.mark.slurm
def test_run_as_a_slurm_job_then_stop(api: str, project: Path) -> None:
    """where=slurm: pytest itself runs as a Slurm job; stopping it leaves no job in the queue."""
    response = httpx.post(
        f"{api}/v1/runs",
        json={"suite": "mini", "marker": "inference", "profile": "ci-slurm", "where": "slurm"},
        headers=headers(),
        timeout=60,
    )
    assert response.status_code == 201, response.text
    run_id = response.json()["run_id"]

    running = stop_once_its_service_runs(api, run_id, timeout_s=120)
    started = {running["pytest_job_id"], *(job["job_id"] for job in running["jobs"])}
    assert running["pytest_job_id"] is not None, running
    assert len(started) >= 2, running
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    assert not started & set(queue), f"still queued: {sorted(started & set(queue))}"  # (another run's may be)
