"""Logs to Loki (checked by a faithful receiver) and the resource monitor in service jobs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import aifactory, run_pytest, wait_for
from loki_receiver import LokiReceiver

from pytest_aifactory.jobs.telemetry import Telemetry, TelemetryThreads

pytestmark = pytest.mark.timeout(300)

TOKEN = "planted-token-value-9f8e7d"

SUITE = """
import pytest
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

NOISY = ServiceSpec(
    name="noisy",
    command=("sh", "-c", "echo token is $AIF_PLANTED_TOKEN; echo something WARNING-ish >&2; "
             "exec python3 -m http.server {ports.http} --bind {host}"),
    probe=HttpProbe(path="/"),
)

@pytest.mark.slo("error_rate == 0", "p99_ttft_ms <= 0.0001")
def test_with_services(aif_service, synthetic_llm_service, aif_load):
    aif_service(NOISY)
    aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, count=10)
"""


@pytest.fixture
def loki() -> Iterator[LokiReceiver]:
    receiver = LokiReceiver()
    yield receiver
    receiver.close()


def run(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(pytester.path, "--aif-results-dir=res", *args, env={"AIF_PLANTED_TOKEN": TOKEN})


def test_run_events_and_service_logs_reach_loki(pytester: pytest.Pytester, loki: LokiReceiver) -> None:
    pytester.makepyfile(SUITE)
    done = run(pytester, "--aif-run-id=logs", f"--aif-loki={loki.url}")
    assert done.returncode == 1, done.stdout[-3000:]  # the impossible SLO
    assert loki.errors == []
    assert loki.lines, "nothing reached Loki"
    assert all(set(line["labels"]) == {"job", "run_id", "service", "level", "source"} for line in loki.lines)
    assert {line["labels"]["run_id"] for line in loki.lines} == {"logs"}
    text = [line["line"] for line in loki.lines]
    assert any(t == "run logs started on profile local" for t in text)
    assert any(t.startswith("test started: ") for t in text)
    assert any(t.startswith("SLO breached: p99_ttft=") for t in text)
    assert any(t.startswith("run logs finished: failed") for t in text)
    noisy = [line for line in loki.lines if line["labels"]["service"] == "noisy"]
    assert any(line["line"].startswith("service noisy ready") for line in noisy)
    assert any(line["line"].startswith("service noisy stopped") for line in noisy)
    forwarded = [line for line in noisy if line["metadata"].get("stream") == "stdout"]
    assert any(line["line"] == "token is ***" for line in forwarded), [line["line"] for line in noisy]
    assert any(line["labels"]["level"] == "warning" and line["metadata"]["stream"] == "stderr" for line in noisy)
    assert all(TOKEN not in line["line"] and TOKEN not in str(line["metadata"]) for line in loki.lines)
    slo_lines = [line for line in loki.lines if line["metadata"].get("event") == "slo"]
    assert all(line["metadata"]["test"].endswith("::test_with_services") for line in slo_lines)


def test_loki_down_spools_then_resend(pytester: pytest.Pytester, loki: LokiReceiver) -> None:
    pytester.makepyfile(SUITE.replace("p99_ttft_ms <= 0.0001", "p99_ttft_ms <= 10000"))
    loki.up = False
    done = run(pytester, "--aif-run-id=down", f"--aif-loki={loki.url}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Loki deliveries that failed" in done.stdout
    assert loki.lines == []
    spool = list((pytester.path / "res" / "down" / "spool" / "loki").glob("*.json"))
    assert spool
    loki.up = True
    resend = aifactory("resend", "down", "--results-dir", str(pytester.path / "res"), "--loki", loki.url)
    assert resend.returncode == 0, resend.stdout + resend.stderr
    assert loki.errors == []
    assert any(line["line"] == "run down finished: passed" for line in loki.lines)
    assert not list((pytester.path / "res" / "down" / "spool" / "loki").glob("*.json"))


def test_monitor_pushes_service_resources(pytester: pytest.Pytester, aif_service) -> None:  # type: ignore[no-untyped-def]
    gateway = aif_service("pushgateway")
    pytester.makepyfile(
        """
        import time, httpx

        def test_hold(http_service):
            deadline = time.monotonic() + 60
            while "aifactory_service_memory_bytes" not in httpx.get("{}/metrics").text:
                assert time.monotonic() < deadline, "no resource sample reached the gateway"
                time.sleep(0.2)
        """.format(gateway.url().rstrip("/"))
    )
    done = run(pytester, "--aif-run-id=mon", f"--aif-pushgateway={gateway.url()}", "--aif-pushgateway-interval=0.5")
    assert done.returncode == 0, done.stdout[-3000:]
    metrics = httpx.get(gateway.url("/metrics")).text
    series = [line for line in metrics.splitlines() if line.startswith("aifactory_service_memory_bytes{")]
    assert series
    assert 'service="http"' in series[0]
    assert 'run_id="mon"' in series[0]
    assert "node=" in series[0]
    assert "job_id=" in series[0]
    assert float(series[0].rsplit(" ", 1)[1]) > 1_000_000  # a Python http.server's resident memory
    wait_for("node metrics", lambda: "aifactory_node_cpu_utilization_ratio" in metrics)


def test_forwarder_masks_the_profile_env_and_run_s3_keys(
    tmp_path: Path, loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job-side forwarder knows the secrets of the service's env, not only of its own environment."""
    monkeypatch.delenv("AIF_S3_SECRET_KEY", raising=False)
    s3_secret, profile_token = "generated-s3-secret-0c1d2e", "profile-hf-token-3a4b5c"
    log = tmp_path / "service.out"
    log.write_text(f"hf {profile_token} s3 {s3_secret} max_tokens 4096\n")
    env = {"HF_TOKEN": profile_token, "AIF_S3_SECRET_KEY": s3_secret, "MAX_TOKENS": "4096"}
    threads = TelemetryThreads(
        Telemetry("fwd", tmp_path / "spool", loki_url=loki.url), "svc", "77", os.getpid(), {"stdout": log}, env
    )
    threads.stop()
    assert loki.errors == []
    assert [line["line"] for line in loki.lines] == ["hf *** s3 *** max_tokens 4096"]
