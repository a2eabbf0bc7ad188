"""Mergeable latency histograms per time window: what a client node can send instead of every record.

5,000 requests/s for 300 s is 1.5 M records; as JSON that does not travel. A ``LatencyDigest``
keeps, for each latency family ``summarize`` reports (TTFT, ITL, TPOT, E2E, schedule lag) and
each time window of ``window_s`` from the load's common start, an HdrHistogram (the
``hdrhistogram`` package, the Python port of Gil Tene's HdrHistogram, chosen for its lossless
``add`` and compact ``encode``) at ``SIGNIFICANT_DIGITS`` significant digits: any value it
reports is within ``PRECISION`` (0.1 %) of a recorded one, and merging the digests of N shards
gives exactly the digest of all their records. The exact ``Totals`` (counts, tokens, first
and last instants) give the throughputs; a bounded ``sample`` of raw records rides along.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from pytest_aifactory.core.metrics import (
    PERCENTILES,
    Distribution,
    GoodputSLO,
    LoadResult,
    Totals,
    assemble,
    itl_per_token,
    output_tokens,
)
from pytest_aifactory.core.records import ClientHealth, RequestRecord

__all__ = ["PRECISION", "SIGNIFICANT_DIGITS", "LatencyDigest", "record_latencies", "summarize_digest"]
_FAMILIES = ("ttft", "itl", "tpot", "e2e", "lag")

SIGNIFICANT_DIGITS = 3
PRECISION = 10.0**-SIGNIFICANT_DIGITS  # relative
_UNIT = 1000  # histograms count microseconds: a latency in ms is recorded as round(ms * 1000)
_HIGHEST = 24 * 3600 * 1000 * _UNIT  # one day


def record_latencies(r: RequestRecord) -> dict[str, list[float]]:
    """The latencies (ms) one record adds to each family, as ``summarize`` defines them."""
    found: dict[str, list[float]] = {"lag": [(r.sent - r.scheduled) * 1000] if r.sent is not None else []}
    if not r.ok:
        return found
    if r.first_token is not None:
        found["ttft"] = [(r.first_token - r.scheduled) * 1000]
    if r.end is not None:
        found["e2e"] = [(r.end - r.scheduled) * 1000]
    tokens = output_tokens(r)
    if r.first_token is not None and r.end is not None and tokens >= 2:
        found["tpot"] = [(r.end - r.first_token) * 1000 / (tokens - 1)]
    found["itl"] = itl_per_token(r)
    return found


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, _HIGHEST, SIGNIFICANT_DIGITS)


@dataclass
class LatencyDigest:
    """Histograms per (family, window) of a set of records, their totals, and a bounded sample."""

    window_s: float = 10.0
    sample_size: int = 1000
    windows: dict[tuple[str, int], HdrHistogram] = field(default_factory=dict)
    sample: list[RequestRecord] = field(default_factory=list)
    seen: int = 0
    totals: Totals = field(default_factory=Totals)

    @classmethod
    def of(
        cls,
        records: Sequence[RequestRecord],
        start_at: float,
        window_s: float = 10.0,
        goodput: GoodputSLO | None = None,
    ) -> LatencyDigest:
        """The digest of ``records`` (warm-up left out), windows counted from ``start_at``."""
        measured = [r for r in records if not r.warmup]
        digest = cls(window_s=window_s, totals=Totals.of(measured, goodput))
        rng = random.Random(0)
        for r in measured:
            window = max(0, int((r.scheduled - start_at) // window_s))
            for family, values in record_latencies(r).items():
                histogram = digest._window(family, window)
                for value in values:
                    histogram.record_value(min(max(round(value * _UNIT), 1), _HIGHEST))
            digest._keep(r, rng)
        return digest

    def _window(self, family: str, window: int) -> HdrHistogram:
        if (family, window) not in self.windows:
            self.windows[(family, window)] = _histogram()
        return self.windows[(family, window)]

    def _keep(self, record: RequestRecord, rng: random.Random) -> None:
        """Reservoir sampling: every record seen so far is in the sample with the same chance."""
        self.seen += 1
        if len(self.sample) < self.sample_size:
            self.sample.append(record)
        elif (slot := rng.randrange(self.seen)) < self.sample_size:
            self.sample[slot] = record

    def merge(self, other: LatencyDigest) -> LatencyDigest:
        """Add ``other``'s histograms (lossless) and a fair share of its sample into this digest."""
        for (family, window), histogram in other.windows.items():
            self._window(family, window).add(histogram)
        total = self.seen + other.seen
        pool = self.sample + other.sample
        if len(pool) > self.sample_size:
            weights = [self.seen / max(len(self.sample), 1)] * len(self.sample)
            weights += [other.seen / max(len(other.sample), 1)] * len(other.sample)
            pool = _weighted_sample(pool, weights, self.sample_size)
        self.sample, self.seen, self.totals = pool, total, self.totals.merge(other.totals)
        return self

    def histogram(self, family: str, windows: Callable[[int], bool] = lambda w: True) -> HdrHistogram:
        """One family's histogram over the windows ``windows`` selects (all by default)."""
        merged = _histogram()
        for (name, window), histogram in self.windows.items():
            if name == family and windows(window):
                merged.add(histogram)
        return merged

    def distribution(self, family: str) -> Distribution:
        """The family's ``Distribution`` from its merged histogram (each figure within ``PRECISION``)."""
        histogram = self.histogram(family)
        count = histogram.get_total_count()
        if not count:
            return Distribution.of([])
        points = [histogram.get_value_at_percentile(p) / _UNIT for p in PERCENTILES.values()]
        variance = histogram.get_stddev() ** 2 * count / (count - 1) if count > 1 else 0.0
        return Distribution(
            count,
            histogram.get_mean_value() / _UNIT,
            math.sqrt(variance) / _UNIT,
            histogram.get_min_value() / _UNIT,
            histogram.get_max_value() / _UNIT,
            *points,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: each histogram in HdrHistogram's compressed base64 encoding."""
        return {
            "window_s": self.window_s,
            "sample_size": self.sample_size,
            "seen": self.seen,
            "windows": [[family, window, h.encode().decode()] for (family, window), h in self.windows.items()],
            "sample": [r.to_json() for r in self.sample],
            "totals": self.totals.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyDigest:
        """Inverse of ``to_json``."""
        windows = {(family, int(window)): HdrHistogram.decode(text) for family, window, text in data["windows"]}
        sample = [RequestRecord.from_json(r) for r in data["sample"]]
        totals = Totals.from_json(data["totals"])
        return cls(float(data["window_s"]), int(data["sample_size"]), windows, sample, int(data["seen"]), totals)


def _weighted_sample(pool: list[RequestRecord], weights: list[float], size: int) -> list[RequestRecord]:
    """``size`` of ``pool`` without replacement, each with a chance proportional to its weight."""
    rng = random.Random(len(pool))
    keys = sorted(((rng.random() ** (1 / weight), i) for i, weight in enumerate(weights)), reverse=True)
    return [pool[i] for _, i in keys[:size]]


def summarize_digest(
    digest: LatencyDigest,
    label: str = "",
    mode: str = "open",
    config: dict[str, Any] | None = None,
    health: Sequence[ClientHealth] = (),
) -> LoadResult:
    """The ``LoadResult`` of merged client nodes: ``summarize``'s metrics, the sample as records."""
    distributions = {family: digest.distribution(family) for family in _FAMILIES}
    distributions["latency"] = distributions["e2e"]
    records = sorted(digest.sample, key=lambda r: r.index)
    result = assemble(records, distributions, digest.totals, label, mode, config, health)
    result.interval_method = "not available: merged from client nodes' histograms"
    return result
