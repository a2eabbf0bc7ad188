"""Dashboards as code, the dashboard/exporter contract, provisioning and the stack's configuration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pytest_aifactory.apps.dashboards.build import build_dashboards, render
from pytest_aifactory.apps.dashboards.contract import contract_problems
from pytest_aifactory.apps.dashboards.panels import DATASOURCES

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"


def provisioned_uids() -> set[str]:
    data = yaml.safe_load((GRAFANA / "provisioning/datasources/aifactory.yaml").read_text())
    return {source["uid"] for source in data["datasources"]}


def test_committed_dashboards_are_what_the_code_generates() -> None:
    boards = build_dashboards()
    committed = {p.stem for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == set(boards)
    for name, board in boards.items():
        text = (GRAFANA / "dashboards" / f"{name}.json").read_text()
        assert text == render(board), (
            f"grafana/dashboards/{name}.json is stale: run python -m pytest_aifactory.apps.dashboards"
        )


def test_dashboards_have_the_variables_and_panels_users_need() -> None:
    boards = build_dashboards()
    for name, board in boards.items():
        variables = {v["name"] for v in board["templating"]["list"]}
        assert {"run_id", "test"} <= variables, name
        assert board["uid"].startswith("aif-")
    live = {p["title"] for p in boards["live-run"]["panels"]}
    assert {
        "Offered vs achieved rate",
        "TTFT",
        "Error ratio",
        "SLOs held (1) / breached (0) / inconclusive (-1)",
        "Service memory",
        "Logs of the run and its services",
    } <= live
    assert any(p["type"] == "logs" for p in boards["logs"]["panels"])
    assert {v["name"] for v in boards["logs"]["templating"]["list"]} >= {"level"}


def test_contract_holds_for_shipped_dashboards() -> None:
    assert provisioned_uids() == set(DATASOURCES.values())
    assert contract_problems(build_dashboards(), provisioned_uids()) == []


def test_slo_panels_link_to_the_run_and_the_control_page() -> None:
    boards = build_dashboards()
    live_title = "SLOs held (1) / breached (0) / inconclusive (-1)"
    for name, title in (("live-run", live_title), ("trends", "SLO verdicts of the selected runs")):
        panel = next(p for p in boards[name]["panels"] if p["title"] == title)
        urls = [link["url"] for link in panel["fieldConfig"]["defaults"]["links"]]
        assert "/d/aif-live?var-run_id=${__field.labels.run_id}&${__url_time_range}" in urls
        assert "${control_url}/ui/runs/${__field.labels.run_id}" in urls
    assert any(link["url"] == "${control_url}/ui" for link in boards["live-run"]["links"])


def test_contract_catches_a_planted_metric_label_and_datasource() -> None:
    boards = build_dashboards()
    panel = boards["live-run"]["panels"][1]
    panel["targets"][0]["expr"] = 'aifactory_made_up_seconds{run_id=~"$run_id", colour="red"}'
    boards["trends"]["panels"][0]["datasource"] = {"type": "prometheus", "uid": "not-provisioned"}
    slo_panel = next(p for p in boards["live-run"]["panels"] if p["type"] == "stat")
    slo_panel["fieldConfig"]["defaults"]["links"][0]["url"] = "/d/x?var-run=${__field.labels.runid}"
    problems = contract_problems(boards, provisioned_uids())
    assert (
        "live-run: 'Offered vs achieved rate' queries 'aifactory_made_up_seconds', which no exporter emits" in problems
    )
    assert "live-run: 'Offered vs achieved rate' uses label 'colour', which no exporter sets" in problems
    assert any("uses datasource uid 'not-provisioned'" in p for p in problems)
    link = "data link of 'SLOs held (1) / breached (0) / inconclusive (-1)' uses label 'runid'"
    assert any(link in p for p in problems)


def test_dashboard_provider_points_where_the_stack_mounts_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/aifactory.yaml").read_text())
    (entry,) = provider["providers"]
    assert provider["apiVersion"] == 1
    assert entry["type"] == "file"
    path = entry["options"]["path"]
    compose = yaml.safe_load((GRAFANA / "stack/docker-compose.yml").read_text())
    assert f"../dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/aifactory.yaml").read_text())
    assert datasources["apiVersion"] == 1
    assert all({"name", "uid", "type", "url", "access"} <= set(s) for s in datasources["datasources"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package")
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    done = subprocess.run(
        ["promtool", "check", "config", str(GRAFANA / "stack/prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((GRAFANA / "stack/prometheus.yml").read_text())
    gateway_jobs = [job for job in config["scrape_configs"] if job["job_name"] == "pushgateway"]
    assert gateway_jobs[0]["honor_labels"] is True


def _images() -> list[tuple[str, str]]:
    found = []
    compose = yaml.safe_load((GRAFANA / "stack/docker-compose.yml").read_text())
    found += [(f"compose:{name}", svc["image"]) for name, svc in compose["services"].items()]
    for doc in yaml.safe_load_all((GRAFANA / "stack/k8s/stack.yaml").read_text()):
        if doc["kind"] == "Deployment":
            found += [(f"k8s:{c['name']}", c["image"]) for c in doc["spec"]["template"]["spec"]["containers"]]
    found += [
        ("apptainer", m) for m in re.findall(r"docker://(\S+)", (GRAFANA / "stack/apptainer/stack.sbatch").read_text())
    ]
    return found


def test_every_image_is_pinned_and_the_same_everywhere() -> None:
    images = _images()
    assert len(images) >= 12
    for where, image in images:
        assert re.match(r"^[\w./-]+:v?\d+\.\d+\.\d+", image), f"{where}: {image} is not pinned to a version"
    by_repo: dict[str, set[str]] = {}
    for _, image in images:
        repo, tag = image.rsplit(":", 1)
        by_repo.setdefault(repo, set()).add(tag)
    assert all(len(tags) == 1 for tags in by_repo.values()), by_repo


def test_services_restart_and_kustomize_files_exist() -> None:
    compose = yaml.safe_load((GRAFANA / "stack/docker-compose.yml").read_text())
    assert {svc["restart"] for svc in compose["services"].values()} == {"unless-stopped"}
    kinds = [doc["kind"] for doc in yaml.safe_load_all((GRAFANA / "stack/k8s/stack.yaml").read_text())]
    assert kinds.count("Deployment") == 4
    assert kinds.count("Service") == 4
    for doc in yaml.safe_load_all((GRAFANA / "stack/k8s/stack.yaml").read_text()):
        if doc["kind"] == "Deployment":
            assert doc["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (GRAFANA / file).is_file(), file
    dashboards = next(g for g in kustomization["configMapGenerator"] if g["name"] == "grafana-dashboards")
    assert {Path(f).stem for f in dashboards["files"]} == set(build_dashboards())


def test_apptainer_recipe_is_valid_bash() -> None:
    done = subprocess.run(
        ["bash", "-n", str(GRAFANA / "stack/apptainer/stack.sbatch")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_ci_workflows_run_the_suite_with_gates() -> None:
    gha = yaml.safe_load((ROOT / ".github/workflows/meluxina-benchmarks.yml").read_text())
    job = gha["jobs"]["benchmark"]
    assert job["runs-on"] == ["self-hosted", "meluxina", "login"]
    script = json.dumps(job["steps"])
    for needle in (
        "--aif-profile",
        "--benchmark-autosave",
        "--benchmark-compare-fail",
        "--aif-baseline",
        "compare",
        "bin/aifactory cleanup",
    ):
        assert needle in script, needle
    gitlab = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    text = json.dumps(gitlab["meluxina-benchmarks"])
    assert "--benchmark-compare-fail" in text
    assert 'bin/aifactory\\" compare' in text
