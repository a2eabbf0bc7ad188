"""Written findings generated from a report's numbers, each naming the figures it rests on.

Nothing is said of a metric that was not measured: every sentence is built from values that
are present, and a rule whose inputs are missing says nothing. The rules:

- capacity: a capacity search's answer (its ``capacity_<knob>`` and note) when the test ran
  one, and the highest throughput at which every SLO held;
- knee: where p99 latency turns upward over a sweep (``views.knee_index``);
- TTFT against ITL over a sweep: TTFT growing while ITL stays flat puts the time before the
  first token (queueing, prefill), not in decoding;
- client limit: the result's own ``client_limit`` verdict when it has one; in older reports,
  an open-loop point whose achieved rate fell short of the offered rate by more than 5 % was
  limited by the client (its schedule lag says by how much);
- the server's own view (its ``/metrics``, where the result has it): how much mean client
  TTFT exceeds the server's (network, HTTP, client; means, as the server's percentiles are
  only as fine as its buckets), and the largest share of the server's mean TTFT (or request
  time) spent in its queue, and where;
- errors and SLO breaches, per point;
- side by side: per key metric, the ratio (``2.0x slower``) when it is 1.5x or more, else
  the relative change beyond the margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_aifactory.core.metric_table import METRICS
from pytest_aifactory.export.compare import Change
from pytest_aifactory.export.comparisons import SideBySide
from pytest_aifactory.export.views import ReportTest, figure_id, knee_index, value, verdict_outcome

__all__ = ["Finding", "comparison_findings", "findings_of"]

_FACTOR = 1.5
_SHORTFALL = 0.95


@dataclass(frozen=True)
class Finding:
    """One sentence and the ids of the figures it rests on."""

    text: str
    figures: tuple[str, ...] = ()


def _ms(number: float) -> str:
    return f"{number:.3g} ms"


def _rate(number: float) -> str:
    return f"{number:.3g} req/s"


def _capacity(test: ReportTest) -> list[Finding]:
    found = []
    sweep = (figure_id("sweep", test.index),) if len(test.results) > 1 else ()
    for answer in test.answers:
        for name, number in sorted(answer.get("metrics", {}).items()):
            if name.startswith("capacity_") and number is not None:
                said = f" ({'; '.join(answer['notes'])})" if answer.get("notes") else ""
                found.append(Finding(f"{test.name}: capacity search found {name} = {number:.4g}{said}.", sweep))
    best = test.capacity()
    if best is not None:
        held = "; ".join(
            f"{v['metric']} = {v['value']:.4g} ({v['op']} {v['threshold']:g})"
            for v in test.verdicts_of(best)
            if v["value"] is not None
        )
        where = f" at point {best['label']}" if best["label"] else ""
        throughput = value(best, "request_s") or 0.0
        found.append(Finding(f"{test.name}: every SLO held up to {_rate(throughput)}{where} ({held}).", sweep))
    elif any(test.slo_outcome(r) == "breached" for r in test.results):
        found.append(Finding(f"{test.name}: no point met every SLO.", sweep))
    return found


def _knee(test: ReportTest) -> list[Finding]:
    xs = [value(r, "request_s") for r in test.results]
    p99 = [value(r, "p99_latency_ms") for r in test.results]
    knee = knee_index(xs, p99)
    first = next((i for i, y in enumerate(p99) if y is not None and xs[i] is not None), None)
    if knee is None or first is None:
        return []
    x0, y0, x, y = (xs[first] or 0.0), (p99[first] or 0.0), (xs[knee] or 0.0), (p99[knee] or 0.0)
    last = max(i for i, v in enumerate(p99) if v is not None)
    return [
        Finding(
            f"{test.name}: p99 latency turns upward at {_rate(x)} (point {test.results[knee]['label']}, "
            f"p99 {_ms(y)}, against {_ms(y0)} at {_rate(x0)}); at the last point it is {_ms(p99[last] or 0)}.",
            (figure_id("sweep", test.index),),
        )
    ]


def _ttft_itl(test: ReportTest) -> list[Finding]:
    points = [r for r in test.results if value(r, "p50_ttft_ms") and value(r, "p50_itl_ms")]
    if not test.inference or len(points) < 2:
        return []
    low, high = points[0], points[-1]
    ttft = (value(high, "p50_ttft_ms") or 0) / (value(low, "p50_ttft_ms") or 1)
    itl = (value(high, "p50_itl_ms") or 0) / (value(low, "p50_itl_ms") or 1)
    span = f"from {low['label']} to {high['label']}"
    figures = (figure_id("sweep", test.index), figure_id("cdf-ttft", test.index), figure_id("cdf-itl", test.index))
    if ttft >= 2 and 0.8 <= itl <= 1.25:
        text = (
            f"{test.name}: TTFT p50 grows {ttft:.1f}x {span} while ITL p50 stays flat ({itl:.2f}x): the time "
            "goes before the first token (queueing or prefill), not into decoding."
        )
    elif ttft >= 2 and itl >= _FACTOR:
        text = f"{test.name}: TTFT p50 grows {ttft:.1f}x and ITL p50 {itl:.1f}x {span}: decoding slows down too."
    else:
        return []
    return [Finding(text, figures)]


def _client_limit(test: ReportTest) -> list[Finding]:
    """The points where the client set the pace: as the result says (``client_limit``), else by the rates."""
    found = []
    for result in test.results:
        where = f"{test.name} [{result['label']}]" if result["label"] else test.name
        figures = (figure_id("rates", test.index),)
        if result.get("client_limit"):
            found.append(
                Finding(f"{where}: the client, not the server, was the limit: {result['client_limit']}.", figures)
            )
            continue
        offered, achieved = value(result, "offered_rate"), value(result, "achieved_rate")
        if "client_limit" in result or result.get("mode") != "open" or offered is None or achieved is None:
            continue  # a result that carries the client's own verdict has said it was not the limit
        if achieved >= _SHORTFALL * offered:
            continue
        lag = value(result, "p99_lag_ms")
        lagging = f", schedule lag p99 {_ms(lag)}" if lag is not None else ""
        found.append(
            Finding(
                f"{where}: the achieved rate fell short of the offered one ({_rate(achieved)} of "
                f"{_rate(offered)}{lagging}): the client, not the server, set the pace there.",
                figures,
            )
        )
    return found


def _problems(test: ReportTest) -> list[Finding]:
    found = []
    for result in test.results:
        errors, requests = value(result, "errors"), value(result, "requests")
        where = f"{test.name} [{result['label']}]" if result["label"] else test.name
        if errors and requests:
            sample = f"; most frequent: {result['error_samples'][0]}" if result.get("error_samples") else ""
            found.append(
                Finding(
                    f"{where}: {errors:.0f} of {requests:.0f} requests failed ({errors / requests:.1%}){sample}.",
                    (figure_id("rates", test.index),),
                )
            )
        for verdict in test.verdicts_of(result):
            outcome = verdict_outcome(verdict)
            if outcome != "held":
                found.append(Finding(f"{where}: SLO {outcome}: {verdict['message']}."))
    return found


def _client_overhead(test: ReportTest) -> list[Finding]:
    """Mean client TTFT minus the server's own mean, per point where the client's is the larger.

    Means, because they are exact: the server's percentiles are only as fine as its buckets.
    """
    gaps = [
        (r["label"] or test.name, client, server, value(r, "mean_lag_ms"))
        for r in test.results
        if (client := value(r, "mean_ttft_ms")) is not None
        and (server := value(r, "server_mean_ttft_ms")) is not None
        and client > server
    ]
    if not gaps:
        return []
    listing = "; ".join(
        f"{label}: {_ms(c - s)} ({_ms(c)} against {_ms(s)}{'' if lag is None else f', schedule lag {_ms(lag)}'})"
        for label, c, s, lag in gaps
    )
    return [
        Finding(
            f"{test.name}: client TTFT exceeds the server's own (mean, its /metrics) by {listing}: "
            "network, HTTP, the client and its schedule lag (the client's TTFT runs from the scheduled "
            "send; the server's figure covers every request of the point, warm-up included).",
            (figure_id("server-vs-client", test.index),),
        )
    ]


def _server_queue(test: ReportTest) -> list[Finding]:
    """The point where the server's mean queue time is the largest share of its mean TTFT (or request time)."""
    shares = []
    for result in test.results:
        queue = value(result, "server_mean_queue_ms")
        whole, what = value(result, "server_mean_ttft_ms"), "TTFT"
        if whole is None:
            whole, what = value(result, "server_mean_e2e_ms"), "request time"
        if queue is not None and whole:
            shares.append((queue / whole, queue, whole, what, result))
    if not shares:
        return []
    share, queue, whole, what, worst = max(shares, key=lambda s: s[0])
    if share == 0:
        return [
            Finding(
                f"{test.name}: the server never queued a request (mean queue time 0 ms at every point, its /metrics).",
                (figure_id("server-time", test.index),),
            )
        ]
    rate = value(worst, "request_s")
    where = f"at {_rate(rate)} (point {worst['label']})" if rate is not None else f"at point {worst['label']}"
    verdict = ": the server queues requests" if share >= 0.5 else ""
    return [
        Finding(
            f"{test.name}: the server's mean queue time is {share:.0%} of its mean {what} {where} "
            f"({_ms(queue)} of {_ms(whole)}, its /metrics){verdict}.",
            (figure_id("server-time", test.index),),
        )
    ]


def findings_of(test: ReportTest) -> list[Finding]:
    """What one test's numbers show."""
    return [
        *_capacity(test),
        *_knee(test),
        *_ttft_itl(test),
        *_client_overhead(test),
        *_server_queue(test),
        *_client_limit(test),
        *_problems(test),
    ]


def _worse_by(change: Change) -> float:
    """How many times worse ``new`` is than ``old`` (below 1: better), at least; NaN when either is 0.

    On values known only within bounds, the factor is that of the true values that changed least.
    """
    old, new = change.least or (change.old, change.new)
    if old == 0 or new == 0:
        return float("nan")
    return new / old if METRICS[change.metric].better == "lower" else old / new


def _relative(change: Change) -> str:
    """The relative change, ``+18%``; on bounds the smallest the true values allow, ``at least -40%``."""
    if change.least is None:
        return f"{change.relative:+.0%}"
    old, new = change.least
    return f"at least {(new - old) / old:+.0%}" if old else "-"


def _wording(metric: str, factor: float) -> str:
    worse = factor >= 1
    times = factor if worse else 1 / factor
    unit = METRICS[metric].unit
    if unit in ("ms", "s"):
        word = "slower" if worse else "faster"
    else:
        word = (
            ("higher" if worse else "lower") if METRICS[metric].better == "lower" else ("lower" if worse else "higher")
        )
    return f"{times:.1f}x {word}"


def _metric_sentence(side: str, base: str, metric: str, changes: Sequence[Change]) -> str | None:
    changes = [c for c in changes if not c.undecided]  # a lower bound that cannot say which way it moved
    factors = [_worse_by(c) for c in changes]
    unit = METRICS[metric].unit
    detail = ", ".join(
        f"{c.point or c.test.split('::')[-1]}: {c.old:.4g} -> {c.new:.4g}{' ' + unit if unit else ''}" for c in changes
    )
    big = [f for f in factors if f == f and (f >= _FACTOR or f <= 1 / _FACTOR)]
    if big and len(big) == len(factors) and (all(f >= 1 for f in big) or all(f < 1 for f in big)):
        low, high = _wording(metric, min(big)), _wording(metric, max(big))
        ratio = low if low == high else f"{low.split('x')[0]}-{high}"
        at_least = "at least " if any(c.least for c in changes) else ""  # a bound: the smallest change it allows
        return f"{side} against {base}: {metric} {at_least}{ratio} ({detail})."
    moved = [c for c in changes if c.regression or c.improvement]
    if not moved:
        return None
    parts = ", ".join(f"{c.point or c.test}: {_relative(c)}" for c in moved)
    return f"{side} against {base}: {metric} changed beyond the margin ({parts}; {detail})."


def comparison_findings(group: SideBySide, figures: Sequence[str]) -> list[Finding]:
    """Per compared side and key metric, what changed against the first side; capacities side by side."""
    base = group.sides[0].name
    found = []
    capacities = [(s.name, rate) for s in group.sides for rate in s.capacity.values()]
    if len(capacities) >= 2:
        listing = "; ".join(f"{name} {_rate(rate)}" for name, rate in capacities)
        throughput = tuple(f for f in figures if f.endswith("request_s"))
        found.append(Finding(f"{group.title}: highest throughput meeting every SLO: {listing}.", throughput))
    for side, changes in group.changes.items():
        by_metric: dict[str, list[Change]] = {}
        for change in changes:
            by_metric.setdefault(change.metric, []).append(change)
        for metric, rows in by_metric.items():
            text = _metric_sentence(side, base, metric, rows)
            if text:
                found.append(Finding(text, tuple(f for f in figures if f.endswith(metric))))
    if not group.differences:
        found.append(Finding(f"{group.title}: same provenance and load configuration: the figures are comparable."))
    else:
        found.append(Finding(f"{group.title}: not the same in: {'; '.join(group.differences[:8])}."))
    return found
