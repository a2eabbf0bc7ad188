"""SLO verdicts as test outcomes, the live progress line, and the metrics table at the end.

Registered by the plugin as an object. ``@pytest.mark.slo(...)`` expressions are checked at
collection (a typo is a usage error before anything starts) and evaluated after the test
against every load result it produced; all breaches fail the test in one message. Each
result's key figures travel as an attribute of the call report (``result_rows(report)``),
which pytest-xdist serialises with the report, so the table is complete under xdist too; they
stay out of ``user_properties`` and so out of ``--junitxml``.

The table's columns and figures are the metric table's rows with a heading. It says which
latency its p50/p99 are (end-to-end for inference, one operation for data tests), how many
samples each is drawn from, and warns when they are too few for the percentile or when the load
generator was the limit (``client_bound``). SLOs on such a result are inconclusive, as are those a
capacity answer known only as a lower bound cannot settle: the test is skipped saying so, or
fails under ``--aif-fail-inconclusive``.

A capacity search's probes are results too (in the table and the report) but the test's
objectives are not checked against them: they are checked against the search's answer
(role ``capacity``), and objectives on ``capacity_*`` metrics only against answers.
``@pytest.mark.slo(..., pessimistic=True)`` judges each metric that has a confidence
interval by the interval's pessimistic end.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import pytest

from pytest_aifactory.core.metric_table import TABLE, Metric, min_samples
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.core.series import compact_series
from pytest_aifactory.core.slo import (
    SLO,
    SLOError,
    SLOInconclusive,
    Verdict,
    check,
    format_breaches,
    format_inconclusive,
    parse_slo,
)
from pytest_aifactory.export.compare import families_of
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.plugin.options import setting

__all__ = [
    "ENDED_KEY",
    "RESULTS_KEY",
    "Outcomes",
    "check_slos",
    "format_results",
    "progress_printer",
    "result_rows",
    "terminal_lines",
]

RESULTS_KEY = pytest.StashKey[list[LoadResult]]()
ENDED_KEY = pytest.StashKey[list[float]]()  # wall-clock time each result was recorded (its load's end)
_VERDICTS_KEY = pytest.StashKey[list[Verdict]]()
_ROWS_ATTRIBUTE = "aifactory_results"


def result_rows(report: pytest.TestReport) -> list[dict[str, Any]]:
    """The rows (result, verdicts, SLO cell) that ``Outcomes`` attached to a call report."""
    rows: list[dict[str, Any]] = getattr(report, _ROWS_ATTRIBUTE, None) or []
    return rows


# The results table's columns (every row) and figures (shown when a result has them).
_COLUMNS = [metric for metric in TABLE if metric.heading and metric.column]
_FIGURES = [metric for metric in TABLE if metric.heading and not metric.column]
_LEGEND = (
    "latency: e2e = end-to-end, scheduled send to last token (inference); op = one operation from its "
    "scheduled send (data tests)",
    "n: latency samples behind p50/p99; ! = too few samples to support that percentile "
    f"(p99 needs >= {min_samples('p99')}, p999 >= {min_samples('p999')})",
)


_UNJUDGED = ("probe", "repeat")  # roles of results the test's objectives are not checked against


def _applies(slo: SLO, result: LoadResult) -> bool:
    """Whether the test's objective ``slo`` is checked against ``result``."""
    if result.role in _UNJUDGED:
        return False
    return result.role == "capacity" or not slo.metric.startswith("capacity_")


def _verdicts(item: pytest.Item, slos: Sequence[SLO], results: Sequence[LoadResult]) -> list[Verdict]:
    pessimistic = any(mark.kwargs.get("pessimistic") for mark in item.iter_markers("slo"))
    label = len(results) > 1
    verdicts = []
    for result in results:
        mine = [slo for slo in slos if _applies(slo, result)]
        intervals = result.intervals if pessimistic else None
        where = result.label if label else ""
        bounds = result.lower_bounds, result.upper_bounds
        verdicts += check(mine, result.metrics(), where, result.client_limit, intervals, *bounds)
    return verdicts


def slos_of(item: pytest.Item, variables: Mapping[str, object]) -> list[SLO]:
    """The parsed objectives of every ``slo`` marker on ``item``.

    Thresholds may name profile variables: ``"p99_ttft_ms <= {llm_p99_ttft_ms}"``.
    """
    slos = []
    for expr in (e for mark in item.iter_markers("slo") for e in mark.args):
        try:
            text = str(expr).format_map(variables)
        except KeyError as exc:
            known = ", ".join(sorted(variables)) or "(none)"
            raise SLOError(
                f"SLO {expr!r} names {exc.args[0]!r}, which the profile's vars do not set; set: {known}"
            ) from None
        slos.append(parse_slo(text))
    return slos


def check_slos(items: Sequence[pytest.Item], variables: Callable[[], Mapping[str, object]]) -> None:
    """Reject malformed objectives of ``items`` with a usage error (called before the run starts)."""
    for item in (item for item in items if item.get_closest_marker("slo")):
        try:
            slos_of(item, variables())
        except SLOError as exc:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.slo: {exc}") from None


def _cell(metric: Metric, row: Mapping[str, Any]) -> tuple[str, tuple[int, str] | None]:
    """The formatted value of ``metric`` in ``row``, ``!`` and (samples, statistic) when the samples are too few."""
    value = row["result"]["metrics"].get(metric.name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-", None
    text = metric.fmt.format(value)
    samples = row.get("samples", {}).get(metric.distribution)
    if samples is None or samples >= metric.min_samples:
        return text, None
    return f"{text}!", (samples, metric.stat)


def _warning(row: Mapping[str, Any], flagged: Sequence[tuple[str, tuple[int, str]]]) -> str:
    """``! test [point]: p99 ms, ttft p99 from 24 samples (a p99 needs >= 100)``."""
    groups: dict[tuple[int, str], list[str]] = {}
    for heading, key in flagged:
        groups.setdefault(key, []).append(heading)
    where = f"{_test_name(row)} [{row['label']}]" if row["label"] else _test_name(row)
    parts = [
        f"{', '.join(h)} from {n} samples (a {stat} needs >= {min_samples(stat)})" for (n, stat), h in groups.items()
    ]
    return f"! {where}: {'; '.join(parts)}"


def _client_warning(row: Mapping[str, Any]) -> str:
    """``! test [point]: client-bound (lag p99 125 ms, CPU 0.99 core): ...``."""
    where = f"{_test_name(row)} [{row['label']}]" if row["label"] else _test_name(row)
    limit = row["result"].get("client_limit", "")
    return f"! {where}: client-bound ({limit}): the load generator was the limit; use workers=N or nodes=N"


def _test_name(row: Mapping[str, Any]) -> str:
    return str(row["test"]).split("::", 1)[-1]


def format_results(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The end-of-run table: key figures, sample sizes and SLO verdict per result; its legend and warnings."""
    headings = ["test", "point", "latency", "n", *(m.heading for m in _COLUMNS), "SLO", "figures"]
    table, warnings = [], []
    for row in rows:
        columns = [_cell(metric, row) for metric in _COLUMNS]
        figures = [(m, cell) for m in _FIGURES if (cell := _cell(m, row))[0] not in ("-", "0")]
        flagged = [
            (m.heading, flag) for m, (_, flag) in [*zip(_COLUMNS, columns, strict=True), *figures] if flag is not None
        ]
        if flagged:
            warnings.append(_warning(row, flagged))
        if row["result"].get("client_limit"):
            warnings.append(_client_warning(row))
        warnings += [f"note {_test_name(row)} [{row['label']}]: {note}" for note in row["result"].get("notes", [])]
        table.append(
            [
                _test_name(row),
                row["label"],
                "e2e" if "inference" in row.get("families", ()) else "op",
                str(row.get("samples", {}).get("latency", "-")),
                *(text for text, _ in columns),
                row["slo"],
                "  ".join(f"{m.heading} {text}" for m, (text, _) in figures),
            ]
        )
    widths = [max(len(str(r[i])) for r in [headings, *table]) for i in range(len(headings))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [headings, *table]
    ]
    return [*lines, "", *_LEGEND, *warnings]


def _slo_cell(verdicts: int, failed: int, unjudged: int) -> str:
    """``-``, ``PASS``, ``FAIL(2)`` or ``INCONCLUSIVE(1)`` (failures first)."""
    if not verdicts:
        return "-"
    if failed:
        return f"FAIL({failed})"
    return f"INCONCLUSIVE({unjudged})" if unjudged else "PASS"


def _zero(result: LoadResult, ends: Sequence[float], index: int) -> float | None:
    """Wall-clock time of the load's time zero: when it was recorded minus its last record's time."""
    times = [r.end or r.sent or r.scheduled for r in result.records]
    return ends[index] - max(times) if index < len(ends) and times else None


class Outcomes:
    """SLO checks, progress display and the results table."""

    def __init__(
        self,
        config: pytest.Config,
        variables: Callable[[], Mapping[str, object]],
        regressions: Callable[[pytest.Item, list[LoadResult]], list[str]],
    ) -> None:
        """Checks with the profile's vars and a baseline gate.

        ``variables()`` gives the profile's vars (loaded when first needed);
        ``regressions(item, results)`` lists what got worse against a baseline run.
        """
        self.config = config
        self.variables = variables
        self.regressions = regressions
        self.rows: list[dict[str, Any]] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        """After a passing test body: its objectives, and regressions against a baseline run.

        A test body that failed after measuring (its service died mid-load) still has its
        objectives judged on what was measured, for the report and the table; its failure stays the one.
        """
        try:
            yield
        except SLOInconclusive as exc:  # assert_slo in the body, on a client-bound result
            if item.stash.get(RESULTS_KEY, []):
                self._judge(item)
            if setting(self.config, "aif_fail_inconclusive"):
                raise
            pytest.skip(str(exc))
        except BaseException:
            if item.stash.get(RESULTS_KEY, []):
                self._judge(item)
            raise
        results = item.stash.get(RESULTS_KEY, [])
        if not results and not item.get_closest_marker("slo"):
            return None
        if not results and slos_of(item, self.variables()):
            pytest.fail("this test has @pytest.mark.slo but ran no load (use the aif_load fixture)", pytrace=False)
        verdicts = self._judge(item)
        problems = []
        if any(v.breached for v in verdicts):
            errors = [f"  [{r.label}] {sample}" for r in results for sample in r.error_samples]
            notes = [f"  [{r.label}] {note}" for r in results if r.role not in _UNJUDGED for note in r.notes]
            problems.append(
                format_breaches(verdicts)
                + ("\nerrors seen:\n" + "\n".join(errors) if errors else "")
                + ("\nnotes:\n" + "\n".join(notes) if notes else "")
            )
        regressed = self.regressions(item, results)
        if regressed:
            lines = "\n".join(f"  {r}" for r in regressed)
            problems.append(f"{len(regressed)} regression(s) against the baseline:\n{lines}")
        inconclusive = format_inconclusive(verdicts) if any(v.inconclusive for v in verdicts) else ""
        if problems or (inconclusive and setting(self.config, "aif_fail_inconclusive")):
            pytest.fail("\n".join([*problems, inconclusive]).strip(), pytrace=False)
        if inconclusive:
            pytest.skip(inconclusive)
        return None

    def _judge(self, item: pytest.Item) -> list[Verdict]:
        """The verdicts of the test's objectives on each of its results (kept for its report)."""
        results = item.stash.get(RESULTS_KEY, [])
        verdicts = _verdicts(item, slos_of(item, self.variables()), results)
        item.stash[_VERDICTS_KEY] = verdicts
        return verdicts

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        """Attach each result's key figures and SLO verdicts to the call report."""
        report = yield
        if call.when == "call" and RESULTS_KEY in item.stash:
            rows = []
            verdicts = item.stash.get(_VERDICTS_KEY, [])
            markers = [mark.name for mark in item.iter_markers()]
            ends = item.stash.get(ENDED_KEY, [])
            results = item.stash[RESULTS_KEY]
            for index, result in enumerate(results):
                mine = [v for v in verdicts if v.label in ("", result.label)] if result.role not in _UNJUDGED else []
                failed = sum(v.breached for v in mine)
                unjudged = sum(v.inconclusive for v in mine)
                data = {**result.to_json(), "series": compact_series(result.records, _zero(result, ends, index))}
                row = {
                    "test": item.nodeid,
                    "label": result.label,
                    "result": data,
                    "verdicts": [v.to_json() for v in mine],
                    "slo": result.role if result.role in _UNJUDGED else _slo_cell(len(mine), failed, unjudged),
                    "families": families_of({"markers": markers, "results": [data]}),
                    "samples": {name: dist.count for name, dist in result.distributions.items()},
                }
                rows.append(json.loads(json.dumps(row, allow_nan=False)))  # JSON now: xdist sends it
            setattr(report, _ROWS_ATTRIBUTE, rows)
        return report

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect rows (from this process or from xdist workers)."""
        self.rows += result_rows(report)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print every result's key figures and SLO verdict."""
        if not self.rows:
            return
        terminalreporter.section("aifactory results (latencies in ms)")
        for line in format_results(self.rows):
            terminalreporter.write_line(line)


def terminal_lines(config: pytest.Config) -> Callable[[str], None] | None:
    """Writes a line on the terminal while a test runs, as live logging does (None when quiet: ``-q``).

    A line written from a test's body would be captured with its output (shown only if it fails,
    and breaking ``-v``'s layout); so in the main thread the capture is suspended for the line.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() < 0:
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        if capture is None or threading.current_thread() is not threading.main_thread():
            reporter.write_line(line)  # (suspending capture is process-wide: never from another thread)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return write


def progress_printer(
    write: Callable[[str], None], test: str, interval_s: float = 5.0
) -> Callable[[str], Callable[[Progress], None]]:
    """A progress-callback factory writing one line every ``interval_s`` while a load runs."""

    def factory(label: str) -> Callable[[Progress], None]:
        last = [0.0]

        def show(progress: Progress) -> None:
            now = time.monotonic()
            if now - last[0] < interval_s:
                return
            last[0] = now
            write(
                f"[aifactory] {test} {label}: {progress.elapsed_s:6.1f} s, {progress.sent} sent, "
                f"{progress.done} done, {progress.errors} errors, {progress.in_flight} in flight"
            )

        return show

    return factory
