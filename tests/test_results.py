"""Results: JSON report (schema, interruption, secrets), Pushgateway live and final pushes seen
by a real Prometheus, spooling when the gateway is down, and the compare command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from helpers import aifactory, free_port, http_ready, run_pytest, wait_for

from pytest_aifactory.apps.dashboards.build import build_dashboards
from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.export.report import load_schema
from pytest_aifactory.services.observability import prometheus
from pytest_aifactory.services.spec import RunningService

pytestmark = pytest.mark.timeout(300)

SECRET = "s3cr3t-planted-value-42"

LOAD_TEST = """
import pytest

@pytest.mark.inference
@pytest.mark.slo("error_rate == 0", "p99_ttft_ms <= 5000")
def test_stream(synthetic_llm_service, aif_load):
    aif_load.sweep("rate", [20, 40], aif_load.openai, synthetic_llm_service,
                   prompts="synthetic:in=4,out=8", duration_s={duration})
"""


def run(pytester: pytest.Pytester, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_pytest(pytester.path, *args, env=env)


def test_report_validates_and_keeps_secrets_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LOAD_TEST.format(duration=1))
    profile = pytester.path / "p.yaml"
    profile.write_text(f"name: p\nexecutor: local\nenv:\n  MY_API_TOKEN: {SECRET}-profile\n")
    done = run(
        pytester,
        f"--aif-profile={profile}",
        "--aif-run-id=rep",
        "--aif-results-dir=res",
        f"--aif-pushgateway=http://user:{SECRET}@127.0.0.1:1",
        env={"AIF_TEST_TOKEN": SECRET},
    )
    assert done.returncode == 0, done.stdout[-3000:]
    path = pytester.path / "res" / "rep" / "report.json"
    text = path.read_text()
    report = json.loads(text)
    jsonschema.validate(report, load_schema())
    assert SECRET not in text
    assert "user:***@127.0.0.1:1" in text  # the command line is kept, the password masked
    assert report["status"] == "passed"
    assert report["provenance"]["profile"]["name"] == "p"
    assert report["provenance"]["packages"]["pytest-aifactory"]
    (test,) = report["tests"]
    assert test["outcome"] == "passed"
    assert [r["label"] for r in test["results"]] == ["rate=20", "rate=40"]
    assert {v["slo"] for v in test["slo"]} == {"error_rate == 0", "p99_ttft_ms <= 5000"}
    assert report["jobs"][0]["service"] == "synthetic-llm"
    assert report["jobs"][0]["stopped"] is True
    spooled = list((pytester.path / "res" / "rep" / "spool" / "pushgateway").glob("*.json"))
    assert spooled, "the unreachable gateway's pushes were not spooled"
    assert all(SECRET not in f.read_text() for f in spooled)
    assert "Pushgateway deliveries that failed" in done.stdout


def test_compare_command(tmp_path: Path) -> None:
    def report(run_id: str, tps: float, p99: float) -> Path:
        data = {
            "run_id": run_id,
            "tests": [
                {
                    "nodeid": "b.py::test_x",
                    "results": [
                        {"label": "rate=8", "metrics": {"request_s": tps, "p99_ttft_ms": p99, "error_rate": 0.0}}
                    ],
                }
            ],
        }
        path = tmp_path / f"{run_id}.json"
        path.write_text(json.dumps(data))
        return path

    a, b, c = report("a", 100.0, 200.0), report("b", 99.0, 205.0), report("c", 80.0, 300.0)
    ok = subprocess.run(
        [sys.executable, "-m", "pytest_aifactory.apps.cli", "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout
    assert "request_s" in ok.stdout
    assert "-1.0%" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_aifactory.apps.cli", "compare", str(a), str(c), "--margin", "10"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stdout.count("REGRESSION") == 2
    assert "2 regression(s) beyond the 10 % margin and the noise:" in bad.stdout


def run_pushing_live(
    pytester: pytest.Pytester, gateway: RunningService, aif_service: Any, suite: str, run_id: str
) -> Callable[[str], list[dict[str, Any]]]:
    """Run ``suite`` pushing to ``gateway`` every 0.5 s, scraped every second by a real Prometheus;
    returns a range query over the run's time (series at 0.5-s steps)."""
    prometheus = aif_service("prometheus", pushgateway=f"{gateway.host}:{gateway.port}", scrape_interval="1s")
    pytester.makepyfile(suite)
    started = time.time()
    pushing = (f"--aif-pushgateway={gateway.url()}", "--aif-pushgateway-interval=0.5")
    done = run(pytester, f"--aif-run-id={run_id}", "--aif-results-dir=res", *pushing)
    assert done.returncode == 0, done.stdout[-3000:]

    def query_range(expr: str) -> list[dict[str, Any]]:
        response = httpx.get(
            prometheus.url("/api/v1/query_range"),
            params={"query": expr, "start": started, "end": time.time(), "step": "0.5"},
        )
        return list(response.json()["data"]["result"])

    return query_range


@pytest.fixture
def gateway(aif_service):  # type: ignore[no-untyped-def]
    return aif_service("pushgateway")


def test_prometheus_is_ready_once_it_has_scraped_the_gateway(gateway, aif_service) -> None:  # type: ignore[no-untyped-def]
    """Prometheus scrapes a target first seconds after ``/-/ready``: a run started then lost its first
    figures (a live point of 5 s showed one value). Its fixture returns only after that first scrape."""
    prometheus = aif_service("prometheus", pushgateway=f"{gateway.host}:{gateway.port}", scrape_interval="1s")
    query = httpx.get(prometheus.url("/api/v1/query"), params={"query": 'up{job="pushgateway"}'})
    assert [float(series["value"][1]) for series in query.json()["data"]["result"]] == [1.0]


def test_prometheus_settings_are_checked_and_its_wait_follows_its_interval() -> None:
    with pytest.raises(ServiceConfigError, match=r"settings.pushgateway is empty; valid: the host:port it scrapes"):
        prometheus({"pushgateway": "", "scrape_interval": "1s"})
    with pytest.raises(ServiceConfigError, match=r"settings.scrape_interval is '1 min'; valid: a Prometheus duration"):
        prometheus({"pushgateway": "127.0.0.1:9091", "scrape_interval": "1 min"})
    assert prometheus({"pushgateway": "127.0.0.1:9091", "scrape_interval": "1m30s"}).readiness_timeout_s == 30 + 180


def test_live_and_final_metrics_reach_prometheus(pytester: pytest.Pytester, gateway, aif_service) -> None:  # type: ignore[no-untyped-def]
    query_range = run_pushing_live(pytester, gateway, aif_service, LOAD_TEST.format(duration=4), "live1")
    # Live: while the load ran, Prometheus scraped growing request counts from the gateway.
    live = wait_for(
        "live series in Prometheus",
        lambda: query_range('aifactory_live_requests_done_total{run_id="live1",job="aifactory"}'),
    )
    values = sorted({float(v[1]) for series in live for v in series["values"]})
    assert len(values) >= 3, f"expected several live values, got {values}"
    assert live[0]["metric"]["test"] == "test_stream"
    # Final: per point latency quantiles and the SLO verdicts.
    final = wait_for(
        "final series in Prometheus",
        lambda: query_range('aifactory_latency_seconds{run_id="live1",kind="ttft",quantile="0.99"}'),
    )
    assert {s["metric"]["point"] for s in final} == {"rate=20", "rate=40"}
    slo = query_range('aifactory_slo_passed{run_id="live1"}')
    assert {s["metric"]["slo"] for s in slo} == {"error_rate == 0", "p99_ttft_ms <= 5000"}


SERVER_LOAD_TEST = """
import pytest

@pytest.mark.inference
def test_served(aif_service, aif_load):
    server = aif_service("synthetic-llm", ttft_ms=60, metrics=True)  # vLLM's /metrics families
    aif_load.openai(server, prompts="synthetic:in=4,out=8", rate=20, duration_s=5, label="rate=20")
"""


def test_live_server_metrics_reach_the_dashboards_queries(pytester: pytest.Pytester, gateway, aif_service) -> None:  # type: ignore[no-untyped-def]
    """The server's /metrics, scraped while the point runs, reach Prometheus through the live push,
    where the live dashboard's server panels find them."""
    query_range = run_pushing_live(pytester, gateway, aif_service, SERVER_LOAD_TEST, "srv1")
    finished = wait_for(
        "the server's live counts in Prometheus",
        lambda: query_range('aifactory_live_server_requests_done_total{run_id="srv1"}'),
    )
    counts = sorted({float(v[1]) for series in finished for v in series["values"]})
    assert len(counts) >= 2, counts  # several live pushes while the point ran, its count growing
    assert counts[-1] <= 20 * 5 + 10, counts
    ttft = query_range('aifactory_live_server_latency_seconds{run_id="srv1",kind="ttft",quantile="0.5"}')
    assert ttft, "no live server TTFT"
    assert all(0.05 <= float(v[1]) <= 0.1 for v in ttft[0]["values"]), ttft  # 60 ms, in vLLM's 0.06-0.08 s bucket
    # Every query of the live dashboard's server panels, with this run and test, draws series,
    # but those of figures the stand-in does not have (KV cache, prefix cache, preemptions).
    absent = ("kv_cache", "prefix_cache", "preemptions")
    board = build_dashboards()["live-run"]
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$run_id", "srv1").replace("$test", "test_served")
            if "live_server" in expr and not any(a in expr for a in absent):
                assert query_range(expr), f"{panel['title']!r}: {expr} draws nothing"


@pytest.fixture
def doomed_gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Pushgateway started outside the plugin, because the test kills it on purpose."""
    port = free_port()
    process = subprocess.Popen(
        ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("the pushgateway", lambda: http_ready(f"{url}/-/ready"))
    yield process.pid, url
    process.kill()
    process.wait()


def test_gateway_down_mid_run_then_resend(pytester: pytest.Pytester, doomed_gateway, aif_service) -> None:  # type: ignore[no-untyped-def]
    pid, url = doomed_gateway
    pytester.makepyfile(
        f"""
        import os, signal, httpx, time

        def test_first(synthetic_llm_service, aif_load):
            aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, count=20)

        def test_gateway_dies():
            os.kill({pid}, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get("{url}/-/ready", timeout=1)
                except httpx.HTTPError:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)

        def test_after(synthetic_llm_service, aif_load):
            aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, count=20)
        """
    )
    done = run(pytester, "--aif-run-id=down", "--aif-results-dir=res", f"--aif-pushgateway={url}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "group(s) still spooled" in done.stdout
    spool = list((pytester.path / "res" / "down" / "spool" / "pushgateway").glob("*.json"))
    # test_after's group (test_first's was delivered), and the service monitor's latest sample
    assert 1 <= len(spool) <= 2
    second = aif_service("pushgateway")
    resend = aifactory("resend", "down", "--results-dir", str(pytester.path / "res"), "--pushgateway", second.url())
    assert resend.returncode == 0, resend.stdout + resend.stderr
    assert f"sent {len(spool)} spooled push(es)" in resend.stdout
    metrics = httpx.get(second.url("/metrics")).text
    assert 'run_id="down",test="test_after"' in metrics
    assert "aifactory_latency_seconds" in metrics
    assert not list((pytester.path / "res" / "down" / "spool" / "pushgateway").glob("*.json"))


def test_pushgateway_basic_auth_and_spool_on_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Basic auth is sent as configured; a refused push (401) is spooled, never lost."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from prometheus_client import CollectorRegistry, Gauge

    from pytest_aifactory.core.secrets import Redactor
    from pytest_aifactory.delivery.pushgateway import GatewayTarget, Pushgateway

    seen: list[tuple[str, str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append((self.path, self.headers.get("Authorization", ""), body))
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"bench:right-pw").decode()
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry = CollectorRegistry()
    Gauge("aifactory_error_ratio", "x", ["point"], registry=registry).labels("p").set(0.5)
    try:
        target = GatewayTarget(url=f"http://127.0.0.1:{server.server_address[1]}", username="bench")
        monkeypatch.setenv("AIF_PUSHGATEWAY_PASSWORD", "right-pw")
        gateway = Pushgateway(target, "auth", tmp_path / "spool", Redactor())
        assert gateway.push("test_x", registry)
        path, auth, body = seen[-1]
        assert path == "/metrics/job/aifactory/run_id@base64/YXV0aA/test@base64/dGVzdF94"
        assert auth.startswith("Basic ")
        assert 'aifactory_error_ratio{point="p"} 0.5' in body
        assert "right-pw" not in body
        monkeypatch.setenv("AIF_PUSHGATEWAY_PASSWORD", "wrong-pw")
        assert not gateway.push("test_y", registry)
        assert len(gateway.spooled()) == 1
        assert "HTTP 401" in gateway.failures[-1]
    finally:
        server.shutdown()
        server.server_close()
