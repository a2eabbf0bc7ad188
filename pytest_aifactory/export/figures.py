"""The HTML report's plots as Plotly figures (plain dicts: ``data`` traces and ``layout``).

Only what was measured is drawn: a figure whose traces would all be empty is not made, nor a
timeline of a load shorter than two windows (one point per line draws nothing). SLO
thresholds are drawn as dashed red lines on the plots of their metric's distribution. Where
a result has the server's own figures (its ``/metrics``), they are drawn beside the client's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_aifactory.core.metric_table import METRICS, Metric
from pytest_aifactory.export.views import ReportTest, figure_id, knee_index, value

__all__ = ["Figure", "comparison_figure", "figures_of", "resource_figures"]

Figure = dict[str, Any]
_DISTRIBUTIONS = {"ttft": "time to first token", "itl": "inter-token latency", "tpot": "time per output token"}


def latency_name(test: ReportTest) -> str:
    """What the ``latency`` distribution is for this test."""
    return "end-to-end latency" if test.inference else "operation latency"


def _figure(fid: str, title: str, data: list[dict[str, Any]], **layout: Any) -> Figure | None:
    if not any(v is not None for trace in data for v in trace.get("y") or ()):
        return None
    base = {"title": {"text": title}, "margin": {"t": 50, "b": 50}, "height": 360, "legend": {"orientation": "h"}}
    return {"id": fid, "title": title, "data": data, "layout": {**base, **layout}}


def _thresholds(test: ReportTest, distribution: str, vertical: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Lines (and their labels) at the thresholds of the SLOs on ``distribution``'s statistics."""
    shapes, notes, seen = [], [], set()
    for verdict in test.verdicts:
        metric = METRICS.get(verdict["metric"])
        if metric is None or metric.distribution != distribution or verdict["threshold"] in seen:
            continue
        seen.add(verdict["threshold"])
        at = verdict["threshold"]
        line = {"dash": "dash", "color": "#d62728", "width": 2}
        if vertical:
            shapes.append({"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": at, "x1": at, "line": line})
            notes.append({"x": at, "y": 1, "yref": "paper", "text": f"SLO {verdict['slo']}", "showarrow": False})
        else:
            shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": at, "y1": at, "line": line})
            notes.append({"x": 0, "xref": "paper", "y": at, "text": f"SLO {verdict['slo']}", "showarrow": False})
    return {"shapes": shapes, "annotations": notes}


def _sweep(test: ReportTest) -> Figure | None:
    xs = [value(r, "request_s") for r in test.results]
    labels = [r["label"] for r in test.results]
    distributions = ["latency", "ttft"] if test.inference else ["latency"]
    data = []
    for distribution in distributions:
        for stat in ("p50", "p90", "p99") if distribution == "latency" else ("p50", "p99"):
            ys = [value(r, f"{stat}_{distribution}_ms") for r in test.results]
            name = f"{stat} {'TTFT' if distribution == 'ttft' else latency_name(test)}"
            data.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": xs, "y": ys, "text": labels})
    p99 = [value(r, "p99_latency_ms") for r in test.results]
    knee = knee_index(xs, p99)
    if knee is not None:
        data.append(_marker("knee", xs[knee], p99[knee], labels[knee], "diamond"))
    best = test.capacity()
    for name, point in (("best point meeting the SLOs", best), *(("capacity search", a) for a in test.answers)):
        if point is not None:
            data.append(
                _marker(name, value(point, "request_s"), value(point, "p99_latency_ms"), point["label"], "star")
            )
    lines = _thresholds(test, "latency")
    extra = _thresholds(test, "ttft") if test.inference else {"shapes": [], "annotations": []}
    return _figure(
        figure_id("sweep", test.index),
        f"{test.name}: latency vs achieved throughput",
        data,
        xaxis={"title": {"text": "achieved throughput (completed req/s)"}},
        yaxis={"title": {"text": "ms"}, "rangemode": "tozero"},
        shapes=lines["shapes"] + extra["shapes"],
        annotations=lines["annotations"] + extra["annotations"],
    )


def _marker(name: str, x: float | None, y: float | None, label: str, symbol: str) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [x],
        "y": [y],
        "text": [label],
        "marker": {"size": 16, "symbol": symbol, "color": "#d62728" if symbol == "diamond" else "#2ca02c"},
    }


def _line(name: str, xs: Sequence[float], ys: Sequence[float], **style: Any) -> dict[str, Any]:
    """A Plotly line trace (``style``: legendgroup, yaxis, line ...)."""
    return {"type": "scatter", "mode": "lines", "name": name, "x": xs, "y": ys, **style}


def _cdf(test: ReportTest, distribution: str) -> Figure | None:
    data = []
    for result in test.results:
        cdf = (result.get("series") or {}).get("cdf") or {}
        if cdf.get(distribution):
            data.append(_line(result["label"] or test.name, cdf[distribution], cdf["levels"]))
    text = _DISTRIBUTIONS.get(distribution, latency_name(test))
    return _figure(
        figure_id(f"cdf-{distribution}", test.index),
        f"{test.name}: distribution of the {text} (CDF)",
        data,
        xaxis={"title": {"text": f"{text} (ms)"}},
        yaxis={"title": {"text": "fraction of requests"}, "range": [0, 1.02]},
        **_thresholds(test, distribution, vertical=True),
    )


def _offsets(test: ReportTest) -> list[float]:
    """Where each point's timeline starts, in seconds from the test's first load."""
    starts = [(r.get("series") or {}).get("started_at") for r in test.results]
    if all(s is not None for s in starts) and starts:
        first = min(s for s in starts if s is not None)
        return [float(s) - first for s in starts if s is not None]
    offsets, at = [], 0.0
    for result in test.results:
        offsets.append(at)
        timeline = (result.get("series") or {}).get("timeline") or {"t": [0.0]}
        at += (timeline["t"][-1] or 0.0) + (result.get("series") or {}).get("window_s", 1.0)
    return offsets


_MIN_WINDOWS = 2  # a timeline of one window is a single point: no line, an empty plot


def _timelines(test: ReportTest) -> list[Figure | None]:
    rates, latency = [], []
    for result, offset in zip(test.results, _offsets(test), strict=True):
        timeline = (result.get("series") or {}).get("timeline")
        if not timeline or len(timeline["t"]) < _MIN_WINDOWS:
            continue  # a load shorter than two windows has no line to draw
        xs = [t + offset for t in timeline["t"]]
        point = f" [{result['label']}]" if len(test.results) > 1 else ""
        for key, name in (
            ("offered", "offered"),
            ("achieved", "achieved (sent)"),
            ("completed", "completed"),
            ("errors", "errors"),
        ):
            rates.append(_line(f"{name}{point}", xs, timeline[key], legendgroup=key))
        for key, name in (("p99_ms", f"p99 {latency_name(test)}"), ("p99_ttft_ms", "p99 TTFT")):
            if timeline.get(key):
                latency.append(_line(f"{name}{point}", xs, timeline[key], legendgroup=key))
        flight = {"yaxis": "y2", "line": {"dash": "dot"}, "legendgroup": "flight"}
        latency.append(_line(f"in flight{point}", xs, timeline["in_flight"], **flight))
    seconds = {"title": {"text": "seconds since the test's first load"}}
    lines = _thresholds(test, "latency")
    return [
        _figure(
            figure_id("rates", test.index),
            f"{test.name}: offered vs achieved rate, errors (per second)",
            rates,
            xaxis=seconds,
            yaxis={"title": {"text": "requests/s"}, "rangemode": "tozero"},
        ),
        _figure(
            figure_id("latency-time", test.index),
            f"{test.name}: p99 latency per window and requests in flight",
            latency,
            xaxis=seconds,
            yaxis={"title": {"text": "p99 (ms)"}, "rangemode": "tozero"},
            yaxis2={"title": {"text": "in flight"}, "overlaying": "y", "side": "right", "rangemode": "tozero"},
            **lines,
        ),
    ]


# Client statistic beside the server's (``server_{stat}_{stem}_ms``): TTFT mean, p50, p99; e2e mean.
_CLIENT_VS_SERVER = (
    ("mean", "ttft", "TTFT"),
    ("p50", "ttft", "TTFT"),
    ("p99", "ttft", "TTFT"),
    ("mean", "e2e", "end-to-end"),
)
_SERVER_PHASES = ("queue", "prefill", "decode")


def _bars(test: ReportTest, fid: str, title: str, bars: list[tuple[str, str]], **layout: Any) -> Figure | None:
    """One bar per (metric, name) in ``bars`` at every point (x: the points' labels)."""
    labels = [r["label"] or test.name for r in test.results]
    data = [
        {"type": "bar", "name": name, "x": labels, "y": [value(r, metric) for r in test.results]}
        for metric, name in bars
    ]
    return _figure(figure_id(fid, test.index), f"{test.name}: {title}", data, yaxis={"title": {"text": "ms"}}, **layout)


def _server_view(test: ReportTest) -> list[Figure | None]:
    """The server's own view beside the client's, per point, from its /metrics (vLLM, Triton)."""
    pairs: list[tuple[str, str]] = []
    for stat, stem, text in _CLIENT_VS_SERVER:
        server = f"server_{stat}_{stem}_ms"
        if any(value(r, server) is not None for r in test.results):
            client = f"{stat}_{'ttft' if stem == 'ttft' else 'latency'}_ms"
            pairs += [(client, f"client {text} {stat}"), (server, f"server {text} {stat}")]
    phases = [(f"server_mean_{stem}_ms", f"mean {stem}") for stem in _SERVER_PHASES]
    return [
        _bars(test, "server-vs-client", "client vs server (its /metrics): the gap is network + client", pairs)
        if pairs
        else None,
        _bars(
            test,
            "server-time",
            "where the server's time went (mean per request, its /metrics)",
            phases,
            barmode="stack",
        ),
        _server_gauges(test),
    ]


def _server_gauges(test: ReportTest) -> Figure | None:
    """The server's KV-cache usage, running and waiting requests over each point, as scraped."""
    data = []
    for result, offset in zip(test.results, _offsets(test), strict=True):
        gauges = result.get("server_series") or {}
        if not gauges:
            continue
        shift = offset + gauges["started_at"] - ((result.get("series") or {}).get("started_at") or gauges["started_at"])
        xs = [t + shift for t in gauges["t"]]
        point = f" [{result['label']}]" if len(test.results) > 1 else ""
        for key in ("running", "waiting"):
            if key in gauges:
                data.append(_line(f"{key}{point}", xs, gauges[key], legendgroup=key))
        if "kv_cache_usage" in gauges:
            usage = {"yaxis": "y2", "line": {"dash": "dot"}, "legendgroup": "kv"}
            data.append(_line(f"KV-cache usage{point}", xs, gauges["kv_cache_usage"], **usage))
    kv = any(trace.get("yaxis") == "y2" for trace in data)
    return _figure(
        figure_id("server-gauges", test.index),
        f"{test.name}: the server's requests running and waiting{', KV-cache usage' if kv else ''} "
        "(its /metrics, as scraped)",
        data,
        xaxis={"title": {"text": "seconds since the test's first load"}},
        yaxis={"title": {"text": "requests"}, "rangemode": "tozero"},
        **(
            {"yaxis2": {"title": {"text": "KV-cache usage"}, "overlaying": "y", "side": "right", "range": [0, 1]}}
            if kv
            else {}
        ),
    )


def figures_of(test: ReportTest) -> list[Figure]:
    """Every figure of one test: sweep curve, CDFs, timelines, the server's view (those with data)."""
    made: list[Figure | None] = [_sweep(test)] if len(test.results) > 1 else []
    for distribution in ("ttft", "itl", "latency") if test.inference else ("latency",):
        made.append(_cdf(test, distribution))
    made += _timelines(test)
    made += _server_view(test)
    return [f for f in made if f is not None]


def resource_figures(jobs: Sequence[Mapping[str, Any]], started_at: float) -> list[Figure]:
    """The services' CPU and memory (and GPUs when seen) from the monitor, seconds from the run's start."""
    cpu, gpu = [], []
    for job in jobs:
        samples = job.get("resources")
        if not samples:
            continue
        xs = [t - started_at for t in samples["t"]]
        name = f"{job['service']} ({job['job_id']})"
        cpu.append(_line(f"{name} CPU cores", xs, samples["cpu_cores"]))
        cpu.append(_line(f"{name} memory MiB", xs, samples["rss_mib"], yaxis="y2", line={"dash": "dot"}))
        for index, values in samples.get("gpus", {}).items():
            gpu.append(_line(f"{name} GPU {index} busy", xs, values["util"]))
    seconds = {"title": {"text": "seconds since the run's start"}}
    made = [
        _figure(
            figure_id("resources", "run"),
            "services: CPU (cores) and resident memory (MiB), from the monitor",
            cpu,
            xaxis=seconds,
            yaxis={"title": {"text": "CPU cores"}, "rangemode": "tozero"},
            yaxis2={"title": {"text": "MiB"}, "overlaying": "y", "side": "right", "rangemode": "tozero"},
        ),
        _figure(
            figure_id("gpus", "run"),
            "services: GPU busy share (NVML)",
            gpu,
            xaxis=seconds,
            yaxis={"title": {"text": "busy share"}, "range": [0, 1]},
        ),
    ]
    return [f for f in made if f is not None]


def comparison_figure(
    fid: str, title: str, metric: Metric, sides: Mapping[str, Mapping[str, float | None]]
) -> Figure | None:
    """Grouped bars of one metric: one bar group per point, one bar per run or service (``sides``)."""
    points = sorted({point for side in sides.values() for point in side})
    data = [
        {"type": "bar", "name": name, "x": points, "y": [values.get(p) for p in points]}
        for name, values in sides.items()
    ]
    unit = f" ({metric.unit})" if metric.unit else ""
    return _figure(fid, title, data, barmode="group", yaxis={"title": {"text": f"{metric.name}{unit}"}})
