"""The HTML report: one self-contained file with findings, plots, tables and provenance.

Plotly draws the plots: its JavaScript (``plotly.offline.get_plotlyjs()``, from the
``plotly`` package on PyPI, about 4.8 MB) is inlined, so the file opens without network
access, e.g. on a laptop after ``scp`` from the cluster. Plotly was chosen over static SVG
for hover values, zoom and legend toggling on dense sweeps and timelines, and over smaller
libraries because its Python package ships the browser bundle (no npm step at install).
The figures' data is one JSON block; each plot ``div`` gets ``data-points`` (points drawn)
once rendered, which the browser test checks.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.metric_table import METRICS, TABLE
from pytest_aifactory.export.comparisons import SideBySide, across_runs, within_run
from pytest_aifactory.export.figures import Figure, comparison_figure, figures_of, resource_figures
from pytest_aifactory.export.findings import Finding, comparison_findings, findings_of
from pytest_aifactory.export.views import ReportTest, figure_id, report_tests, value, verdict_outcome

__all__ = ["render_html", "write_html"]

_COLUMNS = (
    "requests",
    "request_s",
    "offered_rate",
    "achieved_rate",
    "error_rate",
    "p50_latency_ms",
    "p99_latency_ms",
    "p99_ttft_ms",
    "p99_itl_ms",
    "recall_at_10",
    "p99_lag_ms",
)
_MAX_COMPARED = 6
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.pass,.held{color:#2ca02c}.fail,.breached{color:#d62728;font-weight:bold}.inconclusive{color:#b8860b}.aif-plot{min-height:360px}
.findings li{margin:.3em 0}code{background:#f4f4f4;padding:0 3px}
"""
_SCRIPT = """
const figures = JSON.parse(document.getElementById('aif-figures').textContent);
const drawn = figures.map(f => {
  const div = document.getElementById(f.id);
  return Plotly.newPlot(div, f.data, f.layout, {displaylogo: false, responsive: true}).then(() => {
    div.dataset.points = f.data.reduce((n, t) => n + (t.y || []).filter(v => v !== null).length, 0);
  });
});
Promise.all(drawn).then(() => { document.body.dataset.rendered = String(figures.length); });
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]
    except ImportError:
        raise AifError("the HTML report needs the plotly package: pip install plotly") from None
    js: str = get_plotlyjs()
    return js


def _fmt(metric: str, number: float | None) -> str:
    if number is None:
        return "-"
    return METRICS[metric].fmt.format(number) if metric in METRICS else f"{number:.4g}"


def _titles(figures: Sequence[Figure]) -> dict[str, str]:
    return {f["id"]: f["title"] for f in figures}


def _findings(findings: Sequence[Finding], known: Mapping[str, str]) -> str:
    if not findings:
        return "<p>No finding: nothing measured supports one.</p>"
    items = []
    for finding in findings:
        links = "; ".join(f'<a href="#{f}">figure "{_e(known[f])}"</a>' for f in finding.figures if f in known)
        items.append(f"<li>{_e(finding.text)}{f' ({links})' if links else ''}</li>")
    return f"<ul class='findings'>{''.join(items)}</ul>"


def _plots(figures: Sequence[Figure]) -> str:
    return "".join(f'<div class="aif-plot" id="{_e(f["id"])}" title="{_e(f["title"])}"></div>' for f in figures)


_POINT_OUTCOME = {"held": "PASS", "breached": "FAIL", "inconclusive": "INCONCLUSIVE"}


def _points_table(test: ReportTest) -> str:
    columns = [c for c in _COLUMNS if any(value(r, c) is not None for r in test.results)]
    head = "".join(f"<th title='{_e(METRICS[c].description)}'>{_e(c)}</th>" for c in columns)
    rows = []
    for result in test.results:
        outcome = test.slo_outcome(result)
        verdict = "-" if outcome is None else f"<span class={outcome}>{_POINT_OUTCOME[outcome]}</span>"
        cells = "".join(f"<td>{_e(_fmt(c, value(result, c)))}</td>" for c in columns)
        rows.append(f"<tr><td>{_e(result['label'] or '-')}</td>{cells}<td>{verdict}</td></tr>")
    verdicts = "".join(
        f"<tr><td>{_e(v['label'] or '-')}</td><td><code>{_e(v['slo'])}</code></td>"
        f"<td>{_e(_fmt(v['metric'], v['value']))}</td>"
        f"<td class={outcome}>{outcome}</td></tr>"
        for v, outcome in ((v, verdict_outcome(v)) for v in test.verdicts)
    )
    slo = (
        f"<table><tr><th>point</th><th>SLO</th><th>value</th><th>verdict</th></tr>{verdicts}</table>"
        if verdicts
        else ""
    )
    return f"<table><tr><th>point</th>{head}<th>SLOs</th></tr>{''.join(rows)}</table>{slo}"


def _provenance(report: Mapping[str, Any]) -> str:
    p = report["provenance"]
    profile = p["profile"]
    rows = {
        "run": f"{report['run_id']} ({report['status']}, exit {report['exit_status']})",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report["started_at"])),
        "command": " ".join(p["command_line"]),
        "git": f"{p['git']['commit']}{' (dirty)' if p['git']['dirty'] else ''}",
        "profile": f"{profile['name']} ({profile['executor']}, partition {profile['partition']}) "
        f"from {profile['source']}",
        "images": ", ".join(f"{k}: {v}" for k, v in profile["images"].items()) or "-",
        "host": f"{p['host']}: {p['cpu_model']}, {p['cpu_count']} CPUs, GPUs: {', '.join(p['gpus']) or 'none'}",
        "nodes": ", ".join(report.get("nodes", [])) or "-",
        "services": ", ".join(f"{j['service']} ({j['backend']} {j['job_id']})" for j in report["jobs"]) or "-",
        "seeds": ", ".join(str(s) for s in report.get("seeds", [])) or "-",
        "python": p["python"],
        "packages": ", ".join(f"{k} {v}" for k, v in p["packages"].items()),
    }
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows.items()) + "</table>"


def _comparison(group: SideBySide) -> tuple[str, list[Figure], list[Finding]]:
    changes = [c for cs in group.changes.values() for c in cs]
    moved = {c.metric for c in changes if c.regression or c.improvement}
    compared = [m for m in TABLE if any(c.metric == m.name for c in changes)]
    metrics = sorted(compared, key=lambda m: (m.name not in moved, m.distribution != "latency"))
    figures = [
        f
        for m in metrics[:_MAX_COMPARED]
        if (f := comparison_figure(figure_id(m.name, group.key), f"{group.title}: {m.name}", m, group.values(m.name)))
    ]
    findings = comparison_findings(group, [f["id"] for f in figures])
    return f"<h2>{_e(group.title)}</h2>{_plots(figures)}", figures, findings


def render_html(reports: Sequence[Mapping[str, Any]], margin: float = 0.05) -> str:
    """The page for one or more run reports (several: each compared with the first).

    The findings are written once, at the top, each linking to the figures it rests on; the
    sections below hold the tables and plots.
    """
    if not reports:
        raise AifError("no report to render")
    figures: list[Figure] = []
    findings: list[Finding] = []
    sections: list[str] = []
    capacities = []
    for position, report in enumerate(reports):
        views = report_tests(report)
        capacities.append({t.nodeid: value(best, "request_s") or 0.0 for t in views if (best := t.capacity())})
        prefix = f"r{position}-" if len(reports) > 1 else ""
        for group in within_run(views, margin):
            section, made, said = _comparison(replace(group, key=prefix + group.key))
            sections.append(section)
            figures += made
            findings += said
        for test in views:
            made = [{**f, "id": prefix + f["id"]} for f in figures_of(test)]
            run = f"{report['run_id']}: " if prefix else ""  # several runs: whose test it is
            said = [Finding(run + f.text, tuple(prefix + i for i in f.figures)) for f in findings_of(test)]
            figures += made
            findings += said
            sections.append(
                f"<h2>{_e(report['run_id'])}: {_e(test.name)} ({_e(test.outcome)})</h2>"
                f"{_points_table(test)}{_plots(made)}"
            )
        made = [{**f, "id": prefix + f["id"]} for f in resource_figures(report["jobs"], report["started_at"])]
        figures += made
        resources = _plots(made) or "<p>No resource samples (the monitor runs inside service jobs).</p>"
        sections.append(f"<h2>{_e(report['run_id'])}: services and provenance</h2>{resources}{_provenance(report)}")
    if len(reports) > 1:
        section, made, said = _comparison(across_runs(reports, capacities, margin))
        sections.insert(0, section)
        figures += made
        findings = said + findings
    known = _titles(figures)
    data = json.dumps(figures, allow_nan=False).replace("</", "<\\/")
    title = "aifactory report: " + ", ".join(r["run_id"] for r in reports)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_STYLE}</style>"
        f"<script>{_plotly_js()}</script></head><body><h1>{_e(title)}</h1>"
        f"<h2>Findings</h2>{_findings(findings, known)}{''.join(sections)}"
        f"<script type='application/json' id='aif-figures'>{data}</script><script>{_SCRIPT}</script></body></html>"
    )


def write_html(reports: Sequence[Mapping[str, Any]], path: Path, margin: float = 0.05) -> Path:
    """Write the page to ``path`` (atomically)."""
    text = render_html(reports, margin)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
