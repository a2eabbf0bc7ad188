"""A load point's energy: the service node's counters cut to the point's window, per unit of work.

The service's job reads its node's counters every half second into ``energy.jsonl``
(``jobs.energy``: RAPL packages, NVML GPUs). ``EnergyWatch`` notes the wall-clock time a
point starts and ends, waits until the job has read past the end, and takes each source's
cumulative joules at both ends by linear interpolation between the two reads around each
(exact while the power is steady between them). For a Slurm job it also asks ``sacct`` for
the job's ``ConsumedEnergyRaw`` at both ends; 0 or empty (no energy plugin), or no change over
the point (a site that only updates it when a step ends), is "not available", never 0 J.

``energy_j`` is RAPL + NVML where either worked, else Slurm's figure; ``energy_source``
names what it is made of. Energy per unit of work is the point's mean power over its
throughput (``j_per_request`` = energy_j / window / request_s, and so on), so that it is per
completed unit however the warm-up was cut.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_aifactory.jobs.energy import ENERGY_FILE
from pytest_aifactory.services.spec import RunningService

__all__ = [
    "NOT_AVAILABLE",
    "REQUESTS",
    "TOKENS",
    "UNITS",
    "EnergyWatch",
    "PointEnergy",
    "SacctEnergy",
    "cumulative_at",
    "energy_watch",
]

SacctEnergy = Callable[[str], tuple[float | None, str]]  # job id -> (ConsumedEnergyRaw J, or None and why)
NOT_AVAILABLE = "not available"
# Unit of work -> (its metric, the throughput it is per, that throughput's units per second).
UNITS: dict[str, tuple[str, str, float]] = {
    "request": ("j_per_request", "request_s", 1.0),
    "output_token": ("j_per_output_token", "output_tok_s", 1.0),
    "query": ("j_per_query", "request_s", 1.0),
    "transaction": ("j_per_transaction", "request_s", 1.0),
    "gib": ("j_per_gib", "mib_s", 1 / 1024),
}
REQUESTS = ("request",)
TOKENS = ("request", "output_token")  # LLM loads


def cumulative_at(samples: Sequence[Mapping[str, Any]], source: str, at: float) -> float | None:
    """``source``'s joules at time ``at``, interpolated between the reads around it (None: not bracketed)."""
    reads = [(s["t"], s["joules"][source]) for s in samples if source in s.get("joules", {})]
    for (t0, j0), (t1, j1) in itertools.pairwise(reads):
        if t0 <= at <= t1:
            return float(j0 + (j1 - j0) * ((at - t0) / (t1 - t0) if t1 > t0 else 0.0))
    return None


@dataclass
class PointEnergy:
    """Joules each source counted over a point, and why the others gave none."""

    window_s: float
    joules: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def used(self) -> tuple[str, ...]:
        """The sources ``energy_j`` is made of: the node's counters, else Slurm's."""
        counters = tuple(s for s in ("rapl", "nvml") if s in self.joules)
        return counters or (("sacct",) if "sacct" in self.joules else ())

    @property
    def source(self) -> str:
        """``rapl+nvml``, ``sacct``... or ``not available``."""
        return "+".join(self.used) or NOT_AVAILABLE

    def figures(self, metrics: Mapping[str, float], units: Sequence[str]) -> dict[str, float]:
        """``energy_j``, each source's joules and J per each unit in ``units`` (none without a source)."""
        if not self.used:
            return {}
        total = sum(self.joules[s] for s in self.used)
        figures = {"energy_j": total, **{f"energy_{s}_j": j for s, j in self.joules.items()}}
        power = total / self.window_s if self.window_s > 0 else math.nan
        for unit in units:
            name, throughput, scale = UNITS[unit]
            rate = metrics.get(throughput, math.nan) * scale
            if rate > 0 and math.isfinite(power):
                figures[name] = power / rate
        return figures

    def describe(self) -> dict[str, Any]:
        """For the result's configuration: the source, the window, and why a source gave nothing."""
        return {
            "energy_source": self.source,
            "energy_window_s": round(self.window_s, 3),
            "energy_not_available": dict(self.missing),
        }


@dataclass
class EnergyWatch:
    """Energy of one service's node over a load point: ``start()``, ``end()``, then ``finish()``."""

    samples: Path
    slurm_job: str | None = None
    sacct: SacctEnergy | None = None
    wait_s: float = 10.0
    started: float = field(default=0.0, init=False)  # wall-clock time of the point's start
    ended: float | None = field(default=None, init=False)  # and of its end
    _sacct_reads: list[tuple[float | None, str]] = field(default_factory=list, init=False)

    def start(self) -> None:
        """Note the point's start (and Slurm's figure then)."""
        self._sacct_read()
        self.started, self.ended = time.time(), None

    def end(self) -> None:
        """Note the point's end (and Slurm's figure then), before its records are summarized."""
        self.ended = time.time()
        self._sacct_read()

    def _sacct_read(self) -> None:
        if self.slurm_job is not None and self.sacct is not None:
            self._sacct_reads.append(self.sacct(self.slurm_job))

    def finish(self) -> PointEnergy:
        """The point's energy, once the job has read its counters past the point's end."""
        if self.ended is None:
            self.end()
        ended = self.ended if self.ended is not None else time.time()
        energy = PointEnergy(ended - self.started)
        samples = self._samples_past(ended)
        last = samples[-1] if samples else {}
        energy.missing.update(last.get("missing", {}))
        for source in ("rapl", "nvml"):
            if source in energy.missing:
                continue
            start, end = cumulative_at(samples, source, self.started), cumulative_at(samples, source, ended)
            if start is None or end is None:
                energy.missing[source] = f"the job's {self.samples.name} does not cover the point"
            else:
                energy.joules[source] = end - start
        if not samples:
            energy.missing.update(dict.fromkeys(("rapl", "nvml"), f"no read in {self.samples} by the point's end"))
        self._slurm(energy)
        return energy

    def _samples_past(self, ended: float) -> list[dict[str, Any]]:
        """The job's reads, once one is past ``ended`` or the job reads nothing (polled until ``wait_s``).

        A job without the file (its reader writes it as the service starts, long before a load)
        reads no energy: no wait.
        """
        if not self.samples.exists():
            return []
        deadline = time.monotonic() + self.wait_s
        while True:
            samples = _read_samples(self.samples)
            done = samples and (samples[-1]["t"] >= ended or not samples[-1]["joules"])
            if done or time.monotonic() >= deadline:
                return samples
            time.sleep(0.1)

    def _slurm(self, energy: PointEnergy) -> None:
        if self.slurm_job is None or self.sacct is None:
            energy.missing["sacct"] = "not a Slurm job"
            return
        (before, why), (after, why_after) = self._sacct_reads[-2:]
        if before is None or after is None:
            energy.missing["sacct"] = why or why_after
        elif after <= before:
            energy.missing["sacct"] = (
                f"ConsumedEnergyRaw of job {self.slurm_job} did not grow over the point "
                "(the site updates it only when a step ends)"
            )
        else:
            energy.joules["sacct"] = after - before


def _read_samples(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    samples = []
    for line in lines:
        try:
            samples.append(json.loads(line))
        except ValueError:  # the line being written
            continue
    return samples


def energy_watch(service: RunningService | str, sacct: SacctEnergy | None) -> EnergyWatch | None:
    """A watch of ``service``'s node (None for a service given by URL: its node is not known)."""
    if not isinstance(service, RunningService):
        return None
    slurm_job = service.job_id if service.backend == "slurm" else None
    return EnergyWatch(service.folder / ENERGY_FILE, slurm_job, sacct)
