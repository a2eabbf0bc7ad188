"""How big is the report of a long run, and how long does its HTML page take to open?

A 10-minute open-loop load at 100 req/s of 32-token streams (60,000 synthetic records, every
timestamp set) becomes one result of a JSON report; its HTML page is opened in headless
Chromium until every plot is drawn. Prints the sizes and the seconds, with the date, machine
and versions, and holds them to the bounds the README states.
Run: ``pytest benchmarks/calibration/test_report_size.py -m calibration -s`` (``--readme-figures``
writes the line into README.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from pytest_aifactory.core.metrics import summarize
from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.core.records import Chunk, RequestRecord
from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.core.series import compact_series
from pytest_aifactory.export.html import write_html
from pytest_aifactory.export.report import RunReport
from pytest_aifactory.jobs.registry import JobRegistry

sys.path.append(str(Path(__file__).parents[2] / "tests"))
from browser import chromium, render

RATE, MINUTES, TOKENS = 100, 10, 32
JSON_BOUND, HTML_BOUND, OPEN_BOUND_S = 256 * 1024, 6 * 2**20, 10.0


def _records() -> list[RequestRecord]:
    records = []
    for i in range(RATE * MINUTES * 60):
        at = i / RATE
        first = at + 0.04 + 0.01 * (i % 7)
        chunks = [Chunk(first + 0.008 * k, 1) for k in range(TOKENS)]
        records.append(
            RequestRecord(
                i,
                at,
                sent=at + 0.0005,
                first_token=first,
                end=chunks[-1].at,
                chunks=chunks,
                input_tokens=128,
                output_tokens=TOKENS,
            )
        )
    return records


def test_report_of_a_ten_minute_run(tmp_path: Path, readme_figures) -> None:
    load_average = os.getloadavg()[0]
    records = _records()
    result = summarize(records, "rate=100", "open", {"rate": RATE})
    started = time.perf_counter()
    data = {**result.to_json(), "series": compact_series(records, time.time())}
    series_s = time.perf_counter() - started
    report = RunReport(
        tmp_path / "report.json",
        "size",
        Profile(name="local", executor="local"),
        JobRegistry(tmp_path),
        tmp_path,
        Redactor(),
    )
    report.add_result("t.py::test_llm", data)
    path = report.write(status="passed", exit_status=0)
    page = write_html([json.loads(path.read_text())], tmp_path / "report.html")
    with chromium() as browser:
        rendered = render(browser, page)
    json_size, html_size = path.stat().st_size, page.stat().st_size
    command = "pytest benchmarks/calibration/test_report_size.py -m calibration -s --readme-figures"
    figures = (
        f"{readme_figures.provenance(command, load_average, ('plotly',))}\n\n"
        f"Chromium headless: {len(records)} records ({MINUTES} min at {RATE} req/s, {TOKENS} tokens each) -> "
        f"JSON report {json_size / 1024:.0f} KiB, HTML {html_size / 2**20:.2f} MiB "
        f"({(html_size - json_size) / 2**20:.2f} MiB of it Plotly and page), series computed in {series_s:.2f} s, "
        f"page drawn in {rendered.seconds:.2f} s with {len(rendered.points)} plots."
    )
    print(f"\n{figures}")
    readme_figures.publish("report-size", figures)
    assert rendered.errors == []
    assert json_size < JSON_BOUND
    assert html_size < HTML_BOUND
    assert rendered.seconds < OPEN_BOUND_S
