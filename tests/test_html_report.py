"""The HTML report: a real local run (inference + vectors) drawn in headless Chromium, findings, old reports."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from browser import chromium, render
from helpers import run_pytest

from pytest_aifactory.apps import cli
from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.records import Chunk, RequestRecord
from pytest_aifactory.core.series import MAX_WINDOWS, compact_series
from pytest_aifactory.export.html import render_html
from pytest_aifactory.export.report import load_schema, read_report
from pytest_aifactory.jobs.telemetry import resource_series

pytestmark = pytest.mark.timeout(300)

README_SCREENSHOT = Path(__file__).parents[1] / "docs" / "report.png"

# Two synthetic LLM servers, one planted 2x slower (first token and every token after it), each
# swept over three rates, a FAISS search, and a server with two slots driven past its capacity
# (it queues): a real run of an inference and a data family. The LLM servers serve vLLM's
# /metrics families (metrics=True), so the report draws the server's view beside the client's.
SUITE = """
import pytest
from pytest_aifactory.workloads.vectors.datasets import VectorDataset
from pytest_aifactory.workloads.vectors.stores.faiss import FaissStore

SPEED = {"fast": {"ttft_ms": 40, "itl_ms": 10}, "slow": {"ttft_ms": 80, "itl_ms": 20}}

@pytest.mark.inference
@pytest.mark.slo("p99_ttft_ms <= 300", "error_rate <= 0.01")
@pytest.mark.parametrize("speed", ["fast", "slow"])
def test_llm(aif_service, aif_load, speed):
    server = aif_service("synthetic-llm", metrics=True, **SPEED[speed])
    aif_load.sweep("rate", [20, 40, 80], aif_load.openai, server, prompts="synthetic:in=16,out=16", count=16)

@pytest.mark.vectordb
@pytest.mark.slo("p99_latency_ms <= 100", "recall_at_10 >= 0.9")
def test_vectors(aif_load, tmp_path):
    data = VectorDataset("random", count=2000, dim=16, queries=50)
    aif_load.vector_search(FaissStore(index_type="Flat"), data, k=10, rate=50, count=60, cache_dir=tmp_path)

@pytest.mark.inference
def test_queue(aif_service, aif_load):
    server = aif_service("slotted-llm", slots=2, service_ms=50, metrics=True)  # 40 req/s at most
    aif_load.sweep("rate", [20, 80], aif_load.openai, server, prompts="synthetic:in=16,out=16", count=120)
"""


def _findings(page: str) -> list[str]:
    top = page[page.index("<h2>Findings</h2>") : page.index("</ul>", page.index("<h2>Findings</h2>"))]
    return [html.unescape(re.sub(r"<[^>]+>", "", item)) for item in re.findall(r"<li>(.*?)</li>", top)]


def _plant_empty(page: str, *emptied: str) -> str:
    """The page with these figures' traces emptied, as a rendering bug would leave them."""
    start = page.index("<script type='application/json' id='aif-figures'>")
    head, rest = page[:start], page[start:]
    opening, tail = rest.split(">", 1)
    data, after = tail.split("</script>", 1)
    figures = json.loads(data)
    for entry in figures:
        if entry["id"] in emptied:
            for trace in entry["data"]:
                trace["x"], trace["y"] = [], []
    return f"{head}{opening}>{json.dumps(figures)}</script>{after}"


def test_report_of_a_real_run_draws_every_plot_in_chromium(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    done = run_pytest(
        pytester.path,
        "--aif-run-id=html",
        "--aif-results-dir=res",
        "--aif-html=res/html/report.html",
        "--aif-pushgateway-interval=0.25",  # the monitor's sampling interval
    )
    assert done.returncode == 0, done.stdout[-3000:]
    run_dir = pytester.path / "res" / "html"
    report = read_report(run_dir / "report.json")
    jsonschema.validate(report, load_schema())
    assert report["schema_version"] == 3
    assert all(job["resources"] for job in report["jobs"]), "the monitor's samples are missing from the report"
    page_file = run_dir / "report.html"
    page = page_file.read_text(encoding="utf-8")
    assert "https://" not in page.split("<script>", 1)[0], "the page must not load anything from the network"

    rebuilt = run_dir / "rebuilt.html"  # from the JSON alone
    assert cli.main(["report", "html", "--results-dir", str(pytester.path / "res"), "-o", str(rebuilt)]) == 0
    assert rebuilt.read_text(encoding="utf-8") == page
    planted = run_dir / "planted.html"
    planted.write_text(_plant_empty(page, "fig-0-cdf-ttft", "fig-0-server-vs-client"), encoding="utf-8")

    with chromium() as browser:
        drawn = render(browser, page_file, screenshot=run_dir / "report.png")
        broken = render(browser, planted)
    assert drawn.errors == []
    kinds = {"sweep", "cdf-ttft", "cdf-itl", "cdf-latency", "rates", "latency-time", "resources", "p50_latency_ms"}
    kinds |= {"server-vs-client", "server-time", "server-gauges"}  # the server's view (its /metrics)
    assert {k for k in kinds if any(f.endswith(k) for f in drawn.points)} == kinds, sorted(drawn.points)
    assert sorted(drawn.points) == sorted(drawn.declared)
    assert [f for f, n in drawn.points.items() if n == 0] == []
    assert sorted(f for f, n in broken.points.items() if n == 0) == ["fig-0-cdf-ttft", "fig-0-server-vs-client"]
    assert (run_dir / "report.png").stat().st_size > 10_000
    if os.environ.get("AIF_UPDATE_SCREENSHOT"):
        shutil.copyfile(run_dir / "report.png", README_SCREENSHOT)

    findings = _findings(page)
    planted_2x = [f for f in findings if f.startswith("slow against fast: p50_latency_ms")]
    assert len(planted_2x) == 1, findings
    factors = [float(x) for x in re.findall(r"(\d+\.\d)x slower", planted_2x[0])]
    assert factors, planted_2x
    assert all(1.7 <= x <= 2.3 for x in factors), planted_2x  # 2x the server time, plus the client's own
    for test in ("test_llm[fast]", "test_llm[slow]", "test_queue"):  # the client's clock starts first
        assert [f for f in findings if f.startswith(f"{test}: client TTFT exceeds the server's own")], findings
    assert [f for f in findings if f.startswith("test_llm[fast]: the server never queued a request")], findings
    (queue,) = [f for f in findings if f.startswith("test_queue: the server's mean queue time is")]
    assert "(point rate=80)" in queue, queue
    assert queue.endswith(": the server queues requests.") or "the server queues requests. (figure" in queue, queue
    vectors = [f for f in findings if f.startswith("test_vectors")]
    assert vectors
    assert not [f for f in vectors if re.search("ttft|itl|tok", f, re.IGNORECASE)], vectors
    assert not [f for f in findings if "recall" in f and f.startswith(("test_llm", "slow"))], findings


def _report(run_id: str, tests: list[dict[str, Any]], version: int = 1, vllm: str = "0.6.0") -> dict[str, Any]:
    profile = {
        "name": "local",
        "source": "x",
        "executor": "local",
        "partition": None,
        "account": None,
        "qos": None,
        "container_runtime": None,
        "images": {},
    }
    return {
        "schema_version": version,
        "run_id": run_id,
        "started_at": 1.0e9,
        "ended_at": 1.0e9 + 60,
        "status": "passed",
        "exit_status": 0,
        "provenance": {
            "git": {"commit": None, "dirty": None},
            "command_line": ["pytest"],
            "cwd": "/",
            "host": "h",
            "python": "3.11",
            "platform": "linux",
            "cpu_model": "cpu",
            "cpu_count": 2,
            "gpus": [],
            "packages": {"vllm": vllm},
            "profile": profile,
        },
        "jobs": [{"service": "s", "backend": "local", "job_id": "1", "node": None, "folder": "/", "stopped": True}],
        "nodes": [],
        "seeds": [],
        "tests": tests,
    }


def _test(nodeid: str, markers: list[str], points: list[dict[str, Any]]) -> dict[str, Any]:
    results = [
        {
            "label": f"rate={p['rate']}",
            "mode": "open",
            "config": {"rate": p["rate"]},
            "error_samples": [],
            "metrics": {k: v for k, v in p.items() if k != "rate"},
        }
        for p in points
    ]
    return {
        "nodeid": nodeid,
        "markers": markers,
        "outcome": "passed",
        "duration_s": 1.0,
        "error": None,
        "results": results,
        "slo": [],
    }


def test_version_1_and_2_reports_still_render_and_unknown_versions_are_refused(tmp_path: Path) -> None:
    points = [
        {"rate": r, "request_s": r, "p50_latency_ms": 1.0, "p99_latency_ms": p99}
        for r, p99 in ((10, 2.0), (20, 2.2), (40, 2.5), (80, 30.0))
    ]
    old = _report("old", [_test("t.py::test_x", ["database"], points)])
    jsonschema.validate(old, load_schema())
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    page = render_html([read_report(path)])
    assert "fig-0-sweep" in page
    assert "cdf" not in page.split("id='aif-figures'>", 1)[1]  # no series in version 1: no CDF drawn
    assert any("turns upward at 40 req/s" in f for f in _findings(page)), _findings(page)
    path.write_text(json.dumps({**old, "schema_version": 2}))  # version 2: without the server's series
    assert "fig-0-sweep" in render_html([read_report(path)])
    path.write_text(json.dumps({**old, "schema_version": 99}))
    with pytest.raises(AifError, match=r"schema_version 99; this version reads \[1, 2, 3\]"):
        read_report(path)


def _llm_points(slower: float) -> list[dict[str, Any]]:
    return [
        {
            "rate": rate,
            "request_s": rate * 0.99,
            "offered_rate": rate,
            "achieved_rate": achieved,
            "p99_lag_ms": lag,
            "p50_ttft_ms": ttft * slower,
            "p99_ttft_ms": ttft * 1.5 * slower,
            "p50_itl_ms": 10.0 * slower,
            "p50_latency_ms": (ttft + 300) * slower,
            "p99_latency_ms": (ttft + 400) * slower,
        }
        for rate, achieved, lag, ttft in ((8, 8.0, 1.0, 50.0), (16, 16.0, 1.5, 90.0), (32, 24.0, 40.0, 200.0))
    ]


def test_findings_of_a_sweep_and_of_two_runs_say_what_the_data_shows(tmp_path: Path) -> None:
    vectors = _test(
        "t.py::test_search",
        ["vectordb"],
        [{"rate": 50, "request_s": 49.0, "p99_latency_ms": 3.0, "recall_at_10": 0.97}],
    )
    before = _report("before", [_test("t.py::test_llm", ["inference"], _llm_points(1.0)), vectors])
    after = _report("after", [_test("t.py::test_llm", ["inference"], _llm_points(2.0)), vectors], vllm="0.7.0")
    monitor = tmp_path / "monitor.jsonl"
    monitor.write_text(
        "".join(
            json.dumps(
                {"t": 1.0e9 + t, "cpu_s": t * 0.5, "rss": 2**30, "node_cpu": 0.4, "gpus": {"0": [0.8, 1024.0, 250.0]}}
            )
            + "\n"
            for t in range(5)
        )
    )
    before["jobs"][0]["resources"] = resource_series(monitor)
    answer = {
        "label": "capacity",
        "mode": "open",
        "config": {},
        "error_samples": [],
        "role": "capacity",
        "notes": ["capacity 16 req/s"],
        "metrics": {"capacity_rate": 16.0, "request_s": 15.8},
    }
    before["tests"][0]["results"].append(answer)
    page = render_html([before, after])
    findings = _findings(page)
    assert any("TTFT p50 grows 4.0x from rate=8 to rate=32 while ITL p50 stays flat (1.00x)" in f for f in findings), (
        findings
    )
    assert any(
        "rate=32]: the achieved rate fell short of the offered one (24 req/s of 32 req/s, schedule lag p99 40 ms)" in f
        for f in findings
    ), findings
    capacity = "before: test_llm: capacity search found capacity_rate = 16 (capacity 16 req/s)."
    assert any(f.startswith(capacity) for f in findings)
    assert not [f for f in findings if "[capacity]" in f]  # the answer is not one more point
    (latency,) = [f for f in findings if f.startswith("after against before: p50_latency_ms")]
    assert "2.0x slower" in latency
    assert any("not the same in: vllm version: 0.6.0 vs 0.7.0" in f for f in findings), findings
    assert not [f for f in findings if "test_search" in f and re.search("ttft|itl|tok", f, re.IGNORECASE)]
    assert not [f for f in findings if "test_llm" in f and "recall" in f]
    declared = json.loads(page.split("id='aif-figures'>", 1)[1].split("</script>", 1)[0])
    ids = [f["id"] for f in declared]
    assert len(ids) == len(set(ids))
    assert {"r0-fig-run-resources", "r0-fig-run-gpus"} <= set(ids)
    assert "fig-runs-p50_latency_ms" in ids


def test_the_servers_own_view_is_drawn_and_written_where_measured() -> None:
    points = _llm_points(1.0)
    for point, queue in zip(points, (2.0, 10.0, 150.0), strict=True):  # the server's /metrics figures
        point.update(
            server_p50_ttft_ms=point["p50_ttft_ms"] - 4.0,
            server_p99_ttft_ms=point["p99_ttft_ms"] - 4.0,
            mean_ttft_ms=point["p50_ttft_ms"] + 1.0,
            server_mean_ttft_ms=point["p50_ttft_ms"] - 3.0,
            server_mean_queue_ms=queue,
            server_mean_prefill_ms=5.0,
        )
    served = _test("t.py::test_llm", ["inference"], points)
    served["results"][2]["server_series"] = {
        "started_at": 1.0e9,
        "t": [0.0, 1.0, 2.0],
        "running": [0.0, 16.0, 16.0],
        "waiting": [0.0, 4.0, 9.0],
        "kv_cache_usage": [0.0, 0.4, 0.5],
    }
    report = _report("srv", [served, _test("t.py::test_plain", ["inference"], _llm_points(1.0))])
    report["schema_version"] = 3
    jsonschema.validate(report, load_schema())
    page = render_html([report])
    ids = [f["id"] for f in json.loads(page.split("id='aif-figures'>", 1)[1].split("</script>", 1)[0])]
    assert {"fig-0-server-vs-client", "fig-0-server-time", "fig-0-server-gauges"} <= set(ids)
    assert not [i for i in ids if i.startswith("fig-1-server")]  # no server figures without them
    findings = _findings(page)
    (overhead,) = [f for f in findings if "client TTFT exceeds the server's own" in f]
    assert overhead.startswith(
        "test_llm: client TTFT exceeds the server's own (mean, its /metrics) by rate=8: 4 ms (51 ms against 47 ms); "
    )
    assert 'figure "test_llm: client vs server' in overhead
    (queue,) = [f for f in findings if "queue time" in f]
    assert "is 76% of its mean TTFT at 31.7 req/s (point rate=32) (150 ms of 197 ms" in queue, queue
    assert ': the server queues requests. (figure "test_llm: where the server' in queue
    assert not [f for f in findings if f.startswith("test_plain") and "server's" in f]


def test_runs_differing_only_in_when_their_clock_started_are_comparable() -> None:
    runs = []
    for run_id, zero in (("before", 1119.2), ("after", 1126.5)):
        test = _test("t.py::test_llm", ["inference"], _llm_points(1.0))
        for result in test["results"]:
            result["config"]["clock_zero_monotonic_s"] = zero + result["config"]["rate"]
        runs.append(_report(run_id, [test]))
    findings = _findings(render_html(runs))
    comparable = "runs after against before: same provenance and load configuration: the figures are comparable."
    assert comparable in findings, findings
    assert not [f for f in findings if "clock_zero" in f]


def test_runs_differing_only_in_their_energy_bookkeeping_are_comparable() -> None:
    """Two real runs' energy window, source and reasons (with each run's job id) differ every time."""
    runs = []
    for run_id, job, source, window in (("before", "1041", "rapl", 2.113), ("after", "1057", "not available", 2.087)):
        test = _test("t.py::test_llm", ["inference"], _llm_points(1.0))
        for result in test["results"]:
            result["config"].update(
                energy_source=source,
                energy_window_s=window,
                energy_not_available={
                    "nvml": "pynvml is not installed (nvidia-ml-py)",
                    "sacct": f"sacct gives no ConsumedEnergy for job {job} (empty): the site's AcctGatherEnergyType "
                    "measures none",
                },
            )
        runs.append(_report(run_id, [test]))
    for run in runs:
        jsonschema.validate(run, load_schema())
    findings = _findings(render_html(runs))
    comparable = "runs after against before: same provenance and load configuration: the figures are comparable."
    assert comparable in findings, findings
    assert not [f for f in findings if "energy_" in f], findings


def test_each_finding_is_written_once_on_the_page() -> None:
    before = _report("before", [_test("t.py::test_llm", ["inference"], _llm_points(1.0))])
    after = _report("after", [_test("t.py::test_llm", ["inference"], _llm_points(2.0))])
    for reports in ([before], [before, after]):
        page = render_html(reports)
        findings = _findings(page)
        assert findings
        items = [html.unescape(re.sub(r"<[^>]+>", "", i)) for i in re.findall(r"<li>(.*?)</li>", page)]
        assert [f for f in findings if items.count(f) != 1] == []


def _stream(index: int, at: float, tokens: int = 4) -> RequestRecord:
    chunks = [Chunk(at + 0.05 + 0.01 * k, 1) for k in range(tokens)]
    return RequestRecord(index, at, sent=at + 0.002, first_token=chunks[0].at, end=chunks[-1].at, chunks=chunks)


def test_series_stay_bounded_and_count_what_happened() -> None:
    records = [_stream(i, i * 1.0) for i in range(1200)]  # 20 minutes at 1 req/s: 2-s windows
    records[100].error, records[100].end = "boom", None
    series = compact_series(records, started_at=1000.0)
    assert series is not None
    timeline = series["timeline"]
    assert series["window_s"] == 2.0
    assert len(timeline["t"]) == MAX_WINDOWS
    assert set(timeline["offered"]) == {1.0}
    assert timeline["errors"][50] == 0.5  # one error in the 2-s window at 100 s
    assert max(timeline["in_flight"]) <= 1
    assert series["started_at"] == 1000.0
    assert series["cdf"]["ttft"][0] == pytest.approx(50.0)
    assert series["cdf"]["itl"][-1] == pytest.approx(10.0)
    assert len(json.dumps(series)) < 40_000
    assert compact_series([RequestRecord(0, 0.0, warmup=True)]) is None


def _figure_titles(page: str) -> dict[str, str]:
    declared = json.loads(page.split("id='aif-figures'>", 1)[1].split("</script>", 1)[0])
    return {f["id"]: f["title"] for f in declared}


def test_a_load_shorter_than_two_windows_draws_no_timeline() -> None:
    # 5 requests in 0.5 s: one window, a single point per line, which Plotly draws as an empty plot
    short = _test("t.py::test_short", ["inference"], [{"rate": 10, "request_s": 10.0, "p99_latency_ms": 60.0}])
    short["results"][0]["series"] = compact_series([_stream(i, 1000.0 + 0.1 * i) for i in range(5)])
    long = _test("t.py::test_long", ["inference"], [{"rate": 2, "request_s": 2.0, "p99_latency_ms": 60.0}])
    long["results"][0]["series"] = compact_series([_stream(i, 1000.0 + 0.5 * i) for i in range(5)])
    assert len(short["results"][0]["series"]["timeline"]["t"]) == 1
    ids = set(_figure_titles(render_html([_report("short", [short, long], version=3)])))
    assert not {"fig-0-rates", "fig-0-latency-time"} & ids, sorted(ids)
    assert {"fig-1-rates", "fig-1-latency-time", "fig-0-cdf-latency"} <= ids, sorted(ids)


def test_an_unmarked_sql_test_plots_its_operation_latency() -> None:
    # every load computes goodput: it used to make an unmarked SQL test an LLM one ("end-to-end latency")
    metrics = {"rate": 10, "request_s": 10.0, "p99_latency_ms": 3.0, "goodput_s": 10.0, "goodput_fraction": 1.0}
    sql = _test("t.py::test_select", [], [metrics])
    sql["results"][0]["series"] = compact_series(
        [RequestRecord(i, 1000.0 + i, sent=1000.0 + i, end=1000.003 + i) for i in range(5)]
    )
    titles = _figure_titles(render_html([_report("sql", [sql], version=3)]))
    assert titles["fig-0-cdf-latency"] == "test_select: distribution of the operation latency (CDF)", titles
