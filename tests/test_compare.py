"""``aifactory compare``: each test on its family's key metrics, in the right better direction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_aifactory.apps.cli import main
from pytest_aifactory.core.metric_table import FAMILIES, METRICS, TABLE, Family
from pytest_aifactory.export.compare import compare_reports, families_of, key_metrics
from pytest_aifactory.export.comparisons import Side, SideBySide
from pytest_aifactory.export.findings import comparison_findings


def report(run_id: str, tests: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts of a run report (``export.report``) that compare reads."""
    return {"schema_version": 1, "run_id": run_id, "tests": tests}


def entry(nodeid: str, metrics: Mapping[str, float | None], markers: list[str], label: str = "") -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "markers": markers,
        "outcome": "passed",
        "duration_s": 1.0,
        "results": [{"label": label, "mode": "open", "config": {}, "metrics": metrics, "error_samples": []}],
        "slo": [],
        "error": None,
    }


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / f"{data['run_id']}.json"
    path.write_text(json.dumps(data))
    return str(path)


def lines_by_metric(out: str) -> dict[str, list[str]]:
    """The table's cells by metric name (test, point, metric, better, old, new, change[, verdict])."""
    rows = [line.split() for line in out.splitlines() if line.startswith("test_")]
    return {cells[1] if cells[1] in METRICS else cells[2]: cells for cells in rows}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("factor", [1.5, 0.5])
def test_every_key_metric_of_the_family_in_its_direction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], family: Family, factor: float
) -> None:
    everything = {metric.name: 100.0 for metric in TABLE}  # a report may carry other families' figures too
    old = report("old", [entry(f"b/test_{family}.py::test_{family}", everything, [family])])
    new = report(
        "new", [entry(f"b/test_{family}.py::test_{family}", {k: v * factor for k, v in everything.items()}, [family])]
    )
    status = main(["compare", write(tmp_path, old), write(tmp_path, new), "--margin", "10"])
    out = capsys.readouterr().out
    shown = lines_by_metric(out)
    expected = {m.name for m in TABLE if m.compare and (family in m.families)}
    assert set(shown) == expected, out
    assert all(METRICS[name].families == FAMILIES or METRICS[name].families == (family,) for name in shown)
    for name, cells in shown.items():
        better = METRICS[name].better
        assert better in cells
        rose = factor > 1
        verdict = "improved" if rose == (better == "higher") else "REGRESSION"
        assert cells[-1] == verdict, f"{name} ({better} is better) went x{factor}: {cells}"
    regressions = sum(cells[-1] == "REGRESSION" for cells in shown.values())
    assert status == (1 if regressions else 0)
    assert (
        f"{regressions} regression(s) beyond the 10 % margin and the noise" in out
        if regressions
        else ("regression(s)" not in out)
    )


def test_within_the_margin_is_neither(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = report("a", [entry("t.py::test_s3", {"mib_s": 100.0, "p99_latency_ms": 10.0}, ["objectstore"])])
    new = report("b", [entry("t.py::test_s3", {"mib_s": 97.0, "p99_latency_ms": 10.4}, ["objectstore"])])
    assert main(["compare", write(tmp_path, old), write(tmp_path, new)]) == 0
    shown = lines_by_metric(capsys.readouterr().out)
    assert shown["mib_s"][-1] == "-3.0%"
    assert shown["p99_latency_ms"][-1] == "+4.0%"


def test_tests_in_only_one_run_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = entry("t.py::test_pg", {"request_s": 10.0}, ["database"])
    old = report("a", [both, entry("t.py::test_gone", {"request_s": 1.0}, ["database"], "rate=5")])
    new = report("b", [both, entry("t.py::test_new", {"request_s": 1.0}, ["database"])])
    assert main(["compare", write(tmp_path, old), write(tmp_path, new)]) == 0
    out = capsys.readouterr().out
    assert "only in a:\n  t.py::test_gone [rate=5]" in out
    assert "only in b:\n  t.py::test_new" in out


def test_no_common_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = report("a", [entry("t.py::test_x", {"request_s": 10.0}, [])])
    new = report("b", [entry("t.py::test_y", {"request_s": 10.0}, [])])
    assert main(["compare", write(tmp_path, old), write(tmp_path, new)]) == 2
    out = capsys.readouterr().out
    assert "no test point appears in both reports" in out
    assert "only in a:\n  t.py::test_x" in out


def test_s3_report_needs_no_workload_import() -> None:
    # the CLI used to raise KeyError: 'mib_s' (the metric was registered by importing workloads.s3)
    old = report("a", [entry("t.py::test_put", {"mib_s": 100.0}, ["objectstore"])])
    new = report("b", [entry("t.py::test_put", {"mib_s": 50.0}, ["objectstore"])])
    (change,) = compare_reports(old, new, 0.1)
    assert (change.metric, change.regression) == ("mib_s", True)


@pytest.mark.parametrize(
    ("metrics", "families"),
    [
        ({"p99_ttft_ms": 12.0, "output_tok_s": 50.0, "mib_s": None}, ("inference",)),
        ({"p99_ttft_ms": None, "output_tok_s": 0.0, "mib_s": 80.0}, ("objectstore",)),
        ({"output_tok_s": 0.0, "recall_at_10": 0.9}, ("vectordb",)),
        ({"iops": 1000.0}, ("filestorage",)),
        ({"request_s": 5.0, "output_tok_s": 0.0}, ()),
        # a SQL test: every load computes goodput (all requests are good without a per-request SLO)
        ({"request_s": 5.0, "output_tok_s": 0.0, "goodput_s": 5.0, "goodput_fraction": 1.0}, ()),
    ],
)
def test_unmarked_tests_get_the_family_their_figures_show(
    metrics: dict[str, float | None], families: tuple[Family, ...]
) -> None:
    assert families_of(entry("t.py::test", metrics, [])) == families


def test_unmarked_generic_test_is_compared_on_the_common_metrics() -> None:
    common = {"error_rate", "request_s", "p50_latency_ms", "p99_latency_ms", "capacity_rate", "capacity_concurrency"}
    assert {m.name for m in key_metrics(())} == common


def test_a_duration_below_the_noise_floor_is_not_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a flat FAISS index builds in microseconds: +57 % of that is timer noise, not a regression
    old = report("a", [entry("t.py::test_faiss", {"index_build_s": 4.777e-06, "recall_at_10": 1.0}, ["vectordb"])])
    new = report("b", [entry("t.py::test_faiss", {"index_build_s": 7.492e-06, "recall_at_10": 1.0}, ["vectordb"])])
    assert main(["compare", write(tmp_path, old), write(tmp_path, new)]) == 0
    out = capsys.readouterr().out
    assert "below the 1 ms noise floor" in out, out
    assert "REGRESSION" not in out, out
    (change,) = [c for c in compare_reports(old, new, 0.05) if c.metric == "index_build_s"]
    assert not change.regression
    assert "below the 1 ms noise floor: not judged" in change.message()
    slower = report("c", [entry("t.py::test_faiss", {"index_build_s": 0.0015, "recall_at_10": 1.0}, ["vectordb"])])
    (change,) = [c for c in compare_reports(old, slower, 0.05) if c.metric == "index_build_s"]
    assert change.regression  # past the floor in one run: judged


def _capacity(run_id: str, rate: float, lower_bound: bool, below: float | None = None) -> dict[str, Any]:
    data = report(run_id, [entry("t.py::test_capacity", {"capacity_rate": rate}, ["inference"], label="capacity")])
    result = data["tests"][0]["results"][0]
    if lower_bound:  # the search stopped on its budget before any probe breached
        result["lower_bounds"] = {"capacity_rate": "the time budget ran out before any breach"}
    if below is not None:  # ... or after one: the breached end of its bracket
        result["upper_bounds"] = {"capacity_rate": below}
    return data


@pytest.mark.parametrize(
    ("old", "new", "regression", "improvement", "which"),
    [
        ((20, False), (8, True), False, False, "new"),  # at least 8 may still be 20 or more: not a regression
        ((20, False), (30, True), False, True, "new"),  # at least 30 is more than 20 whatever the truth
        ((20, True), (8, False), True, False, "old"),  # at least 20 before, 8 now: a regression
        ((20, True), (30, False), False, False, "old"),  # the old one may have been 40
        ((20, True), (8, True), False, False, "both"),
        ((20, False), (8, False), True, False, ""),  # both exact: as any metric
        ((20, False), (8, True, 12), True, False, "new"),  # 8 or more but under 12: below 20 whatever the truth
        ((20, False), (8, True, 25), False, False, "new"),  # under 25 may still be 20 or more
        ((20, True, 25), (30, False), False, True, "old"),  # under 25 before, 30 now: an improvement
        ((20, True, 32), (30, False), False, False, "old"),  # the old one may have been 31
    ],
)
def test_a_capacity_known_only_as_a_lower_bound_decides_only_what_it_can(
    old: tuple[Any, ...], new: tuple[Any, ...], regression: bool, improvement: bool, which: str
) -> None:
    (change,) = [
        c for c in compare_reports(_capacity("a", *old), _capacity("b", *new), 0.05) if c.metric == "capacity_rate"
    ]
    assert (change.regression, change.improvement, change.lower_bound) == (regression, improvement, which)
    assert ("lower bound" in change.message()) == bool(which)
    decided = regression or improvement or not which
    assert change.message().endswith("margin)" if decided else ", not judged)"), change.message()


def test_a_client_bound_capacity_is_never_read_as_capped() -> None:
    new = _capacity("b", 8, True, below=16)  # as a report written with a cap on a client-bound answer
    new["tests"][0]["results"][0]["client_limit"] = "lag p99 80 ms, CPU 0.95 core"
    (change,) = [c for c in compare_reports(_capacity("a", 20, False), new, 0.05) if c.metric == "capacity_rate"]
    assert (change.regression, change.undecided) == (False, True)


@pytest.mark.parametrize(
    ("new", "sentence"),
    [
        ((8, True, 10), "b against a: capacity_rate at least 2.0x lower (capacity: 20 -> 8 req/s)."),
        (
            (8, True, 15),
            "b against a: capacity_rate changed beyond the margin (capacity: at least -25%; capacity: 20 -> 8 req/s).",
        ),
    ],
)
def test_a_finding_on_bounds_states_the_smallest_change_they_allow(new: tuple[Any, ...], sentence: str) -> None:
    old, changed = _capacity("a", 20, False), _capacity("b", *new)
    changes = [c for c in compare_reports(old, changed, 0.05) if c.metric == "capacity_rate"]
    group = SideBySide("k", "t", (Side("a", old), Side("b", changed)), {"b": changes}, [])
    texts = [f.text for f in comparison_findings(group, []) if "capacity_rate" in f.text]
    assert texts == [sentence]  # (it said 2.5x lower, and -60%: from 8, which is only a lower bound)


def test_the_compare_table_says_a_lower_bound_was_not_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = _capacity("a", 20, False), _capacity("b", 8, True)
    assert main(["compare", write(tmp_path, old), write(tmp_path, new)]) == 0  # not a regression
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "capacity_rate" in line]
    assert row.endswith("lower bound: not judged"), row
