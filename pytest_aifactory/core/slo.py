"""Service-level objectives: ``p99_ttft_ms <= 500``, parsed once, checked against results.

An expression is ``METRIC OP NUMBER`` with OP one of ``<= < >= > ==``; METRIC is a metric of
``metric_table.TABLE``. Every breach of every objective is collected and reported at once,
each as ``p99_ttft=812.4 ms, expected <= 500 ms``, after a first line naming the breached
objectives (the line pytest's short summary keeps). On a result where the load generator was
the limit (``client_bound``) no objective is judged: each verdict is inconclusive, neither a
pass nor a breach of the service's objective.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pytest_aifactory.core.metric_table import METRICS

__all__ = [
    "PESSIMISTIC",
    "SLO",
    "SLOBreach",
    "SLOError",
    "SLOInconclusive",
    "Verdict",
    "assert_slo",
    "check",
    "format_breaches",
    "format_inconclusive",
    "parse_slo",
]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class SLOError(ValueError):
    """A malformed SLO expression or an unknown metric name."""


class SLOBreach(AssertionError):
    """One or more objectives were not met; the message lists every breach."""

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        super().__init__(format_breaches(verdicts))
        self.verdicts = list(verdicts)


class SLOInconclusive(AssertionError):
    """The objectives could not be judged: the load generator was the limit."""

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        super().__init__(format_inconclusive(verdicts))
        self.verdicts = list(verdicts)


@dataclass(frozen=True)
class SLO:
    """One objective: ``metric op threshold``."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"

    def display(self) -> tuple[str, str]:
        """Short name and unit for messages: ``p99_ttft_ms`` -> (``p99_ttft``, ``ms``)."""
        info = METRICS.get(self.metric)
        if info is not None and info.unit in ("ms", "s") and self.metric.endswith(f"_{info.unit}"):
            return self.metric[: -len(info.unit) - 1], info.unit
        return self.metric, info.unit if info is not None else ""


# Where an unknown metric's message sends the reader (the list has hundreds of names: not in the message).
_WHERE_METRICS_ARE = (
    "every metric is declared, with its unit and meaning, in pytest_aifactory/core/metric_table.py "
    "(README: 'One metric table')"
)


def parse_slo(expression: str, extra_metrics: Iterable[str] = ()) -> SLO:
    """Parse ``METRIC OP NUMBER``; raise ``SLOError`` naming the expression, close matches and where the metrics are."""
    match = _EXPR.match(expression)
    if not match:
        raise SLOError(
            f"malformed SLO {expression!r}: expected 'METRIC OP NUMBER' with OP one of "
            f"{', '.join(_OPS)}, e.g. 'p99_ttft_ms <= 500'"
        )
    metric, op, number = match.groups()
    known = set(METRICS) | set(extra_metrics)
    if metric not in known:
        close = difflib.get_close_matches(metric, sorted(known), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise SLOError(f"unknown metric {metric!r} in SLO {expression!r}{hint}; {_WHERE_METRICS_ARE}")
    return SLO(metric, op, float(number))


@dataclass(frozen=True)
class Verdict:
    """The outcome of one objective against one result; ``client_limit`` or ``undecided`` set: inconclusive."""

    slo: SLO
    value: float
    passed: bool
    label: str = ""
    client_limit: str = ""
    rule: str = "value"
    undecided: str = ""  # why the value cannot decide the objective (a lower bound below its threshold)

    @property
    def inconclusive(self) -> bool:
        """Not judged: the load generator, not the service, was the limit, or the value cannot decide."""
        return bool(self.client_limit or self.undecided)

    @property
    def breached(self) -> bool:
        """Judged and not met."""
        return not self.passed and not self.inconclusive

    def to_json(self) -> dict[str, object]:
        """The verdict as JSON (a missing value is null)."""
        return {
            "slo": str(self.slo),
            "metric": self.slo.metric,
            "op": self.slo.op,
            "threshold": self.slo.threshold,
            "value": None if math.isnan(self.value) else self.value,
            "passed": self.passed,
            "inconclusive": self.inconclusive,
            "label": self.label,
            "rule": self.rule,
            "message": self.message(),
        }

    def message(self) -> str:
        """``p99_ttft=812.4 ms, expected <= 500 ms`` (prefixed with the result's label)."""
        name, unit = self.slo.display()
        suffix = f" {unit}" if unit else ""
        where = f"[{self.label}] " if self.label else ""
        rule = f" ({self.rule})" if self.rule != "value" else ""
        text = f"{where}{name}={_fmt(self.value)}{suffix}{rule}, expected {self.slo.op} {self.slo.threshold:g}{suffix}"
        if self.client_limit:
            text += f": inconclusive: the load generator was the limit ({self.client_limit}); use workers=N or nodes=N"
        elif self.undecided:
            text += f": inconclusive: {self.undecided}"
        return text


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan (no data)"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


PESSIMISTIC = "pessimistic end of the 95 % interval"


def check(
    slos: Sequence[SLO],
    metrics: Mapping[str, float],
    label: str = "",
    client_limit: str = "",
    intervals: Mapping[str, tuple[float, float]] | None = None,
    lower_bounds: Mapping[str, str] | None = None,
    upper_bounds: Mapping[str, float] | None = None,
) -> list[Verdict]:
    """Evaluate every objective; a missing or NaN metric is a breach, never a pass.

    ``client_limit`` (why the load generator was the limit) makes every verdict inconclusive.
    With ``intervals``, a metric that has one is judged by the interval's pessimistic end
    (the upper end for ``<=``/``<``, the lower for ``>=``/``>``), and the verdict says so.
    ``lower_bounds``: metrics whose value is only known to be "at least" (why, by metric): an
    objective it does not settle (``>=`` not met yet, ``<=`` not broken yet) is inconclusive;
    ``upper_bounds`` (of those, by metric) a value the true one is known to be below, which settles more.
    """
    verdicts = []
    for slo in slos:
        bound = (lower_bounds or {}).get(slo.metric)
        if bound is not None and not client_limit:
            below = (upper_bounds or {}).get(slo.metric, math.inf)
            verdicts.append(_at_least(slo, float(metrics.get(slo.metric, math.nan)), label, bound, below))
            continue
        value, rule = float(metrics.get(slo.metric, math.nan)), "value"
        if intervals is not None:
            interval = intervals.get(slo.metric)
            if interval is None:
                rule = "value (no interval)"
            elif slo.op in ("<=", "<", ">=", ">"):
                value, rule = (interval[1] if slo.op in ("<=", "<") else interval[0]), PESSIMISTIC
        passed = not client_limit and not math.isnan(value) and _OPS[slo.op](value, slo.threshold)
        verdicts.append(Verdict(slo, value, passed, label, client_limit, rule))
    return verdicts


def _at_least(slo: SLO, value: float, label: str, why: str, below: float = math.inf) -> Verdict:
    """The verdict on a value known only to be at least ``value`` (and below ``below``).

    It is decided where no value in between could change it. Met ``>=``/``>`` stay met, broken
    ``<=``/``<`` stay broken, and ``==`` below the value stays broken; with ``below`` at or under
    the threshold every true value is under it (``>=``, ``>`` and ``==`` broken, ``<=`` and ``<``
    met). The rest is inconclusive. A missing value is a breach, as everywhere.
    """
    if math.isnan(value):
        return Verdict(slo, value, False, label, rule="lower bound")
    if below <= slo.threshold:
        return Verdict(slo, value, slo.op in ("<=", "<"), label, rule=f"lower bound, below {below:g}")
    meets = _OPS[slo.op](value, slo.threshold)
    if slo.op in (">=", ">"):
        settled = meets
    elif slo.op in ("<=", "<"):
        settled = not meets
    else:
        settled = value > slo.threshold
    if settled:
        return Verdict(slo, value, meets, label, rule="lower bound")
    return Verdict(slo, value, False, label, rule="lower bound", undecided=f"{why}; it may be higher")


def format_breaches(verdicts: Sequence[Verdict]) -> str:
    """One failure message: the breached objectives on its first line, then every breach."""
    breaches = [v for v in verdicts if v.breached]
    breached = ", ".join(dict.fromkeys(str(v.slo) for v in breaches))
    lines = [f"SLO breached: {breached}", f"{len(breaches)} SLO breach(es):", *(f"  {v.message()}" for v in breaches)]
    return "\n".join(lines)


def format_inconclusive(verdicts: Sequence[Verdict]) -> str:
    """The objectives that could not be judged, on the first line, then each with the client's limit."""
    unjudged = [v for v in verdicts if v.inconclusive]
    names = ", ".join(dict.fromkeys(str(v.slo) for v in unjudged))
    return "\n".join([f"SLO inconclusive: {names}", *(f"  {v.message()}" for v in unjudged)])


class _HasMetrics(Protocol):
    label: str

    def metrics(self) -> dict[str, float]: ...


def assert_slo(result: _HasMetrics, *expressions: str, pessimistic: bool = False) -> list[Verdict]:
    """Check ``expressions`` against a result; raise ``SLOBreach`` listing every breach.

    On a client-bound result (a ``LoadResult`` with a ``client_limit``), raise ``SLOInconclusive`` instead.
    ``pessimistic``: judge each metric by its confidence interval's pessimistic end.
    """
    metrics = result.metrics()
    slos = [parse_slo(e, extra_metrics=metrics) for e in expressions]
    intervals = getattr(result, "intervals", {}) if pessimistic else None
    client_limit = str(getattr(result, "client_limit", ""))
    bounds = getattr(result, "lower_bounds", None), getattr(result, "upper_bounds", None)
    verdicts = check(slos, metrics, result.label, client_limit, intervals, *bounds)
    if any(v.breached for v in verdicts):
        raise SLOBreach(verdicts)
    if any(v.inconclusive for v in verdicts):
        raise SLOInconclusive(verdicts)
    return verdicts
