"""A load point's energy: the service node's counters cut to the load's own span, per unit of work.

The service's job reads its node's counters every half second into ``energy.jsonl``
(``jobs.energy``: RAPL packages, NVML GPUs). The span is the load's measured window (the
first measured request's scheduled send to the last request's end, as ``duration_s``), on the
wall clock through the engine's clock zero. ``EnergyWatch`` waits until the job has read past
the span's end, and takes each source's cumulative joules at both ends by linear
interpolation between the two reads around each (exact while the power is steady between
them). A counter that did not move over the span (frozen, as on some VMs) is "not available".

Only when no node counter works before the load, and the service is a Slurm job, is ``sacct``
asked for the job's ``ConsumedEnergyRaw`` before and after the load (one try each, a short
timeout): its growth between the two reads, as mean power, times the span. 0 or empty (no
energy plugin), NO_VAL, or no growth (a site that only updates it when a step ends) is "not
available", never 0 J.

``energy_j`` is RAPL + NVML where either worked, else Slurm's figure; ``energy_source``
names what it is made of. Energy per unit of work is the span's mean power over its
throughput (``j_per_request`` = energy_j / span / request_s, and so on: energy_j over the
completed units, however the warm-up was cut).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_aifactory.jobs.energy import ENERGY_FILE
from pytest_aifactory.services.spec import RunningService

__all__ = [
    "ENERGY_BOOKKEEPING",
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
# Keys of a result's configuration that record where energy came from: they vary from run to run
# (windows, job ids in reasons) without changing the load, so runs are compared regardless.
ENERGY_BOOKKEEPING = frozenset({"energy_source", "energy_window_s", "energy_not_available"})
_TAIL_BYTES = 8192  # enough for the job's last few reads (a line is ~150 bytes)


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
    """Energy of one service's node over a load: ``before()`` and ``after()`` the load, then ``finish(span)``."""

    samples: Path
    slurm_job: str | None = None
    sacct: SacctEnergy | None = None
    wait_s: float = 10.0
    _offset: int = field(default=0, init=False)  # bytes of the job's file already read
    _read: list[dict[str, Any]] = field(default_factory=list, init=False)  # the reads from the load's on
    _sacct_reads: list[tuple[float, tuple[float | None, str]]] = field(default_factory=list, init=False)

    def before(self) -> None:
        """Before the load: read the job's file from its last read on, and ask Slurm only without node counters."""
        self._offset, self._read = _last_line_start(self.samples), []
        self._poll()
        if not (self._read and self._read[-1].get("joules")):
            self._sacct_read()

    def after(self) -> None:
        """After the load: Slurm's figure again, when it was asked before."""
        if self._sacct_reads:
            self._sacct_read()

    def _sacct_read(self) -> None:
        if self.slurm_job is not None and self.sacct is not None:
            self._sacct_reads.append((time.time(), self.sacct(self.slurm_job)))

    def finish(self, span: tuple[float, float] | None) -> PointEnergy:
        """The energy over ``span`` (the load's own, wall-clock), once the job has read its counters past it."""
        if span is None:
            energy = PointEnergy(0.0)
            no_span = "no request completed: the load has no span"
            energy.missing.update(dict.fromkeys(("rapl", "nvml", "sacct"), no_span))
            return energy
        started, ended = span
        energy = PointEnergy(ended - started)
        samples = self._samples_past(ended)
        energy.missing.update(samples[-1].get("missing", {}) if samples else {})
        for source in ("rapl", "nvml"):
            if source in energy.missing:
                continue
            start, end = cumulative_at(samples, source, started), cumulative_at(samples, source, ended)
            if start is None or end is None:
                energy.missing[source] = f"the job's {self.samples.name} does not cover the load"
            elif end <= start:
                energy.missing[source] = (
                    f"the {source} counter did not advance over the load's {energy.window_s:.3g} s "
                    "(frozen, as some VMs expose it)"
                )
            else:
                energy.joules[source] = end - start
        if not samples:
            energy.missing.update(dict.fromkeys(("rapl", "nvml"), f"no read in {self.samples} by the load's end"))
        self._slurm(energy)
        return energy

    def _poll(self) -> None:
        """Add the job's complete lines written since the last poll (from a byte offset: never re-read)."""
        try:
            with self.samples.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # the line being written is read next time
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                self._read.append(json.loads(line))
            except ValueError:  # not a read (a torn line of a job killed mid-write)
                continue

    def _samples_past(self, ended: float) -> list[dict[str, Any]]:
        """The job's reads, once one is past ``ended`` or the job reads nothing (polled until ``wait_s``).

        A job without the file (its reader writes it as the service starts, long before a load)
        reads no energy: no wait.
        """
        if not self.samples.exists():
            return []
        deadline = time.monotonic() + self.wait_s
        while True:
            self._poll()
            done = self._read and (self._read[-1]["t"] >= ended or not self._read[-1]["joules"])
            if done or time.monotonic() >= deadline:
                return self._read
            time.sleep(0.1)

    def _slurm(self, energy: PointEnergy) -> None:
        if self.slurm_job is None or self.sacct is None:
            energy.missing["sacct"] = "not a Slurm job"
            return
        if len(self._sacct_reads) < 2:
            energy.missing["sacct"] = "not read: the node's counters were working when the load began"
            return
        (asked, (before, why)), (answered, (after, why_after)) = self._sacct_reads[-2:]
        if before is None or after is None:
            energy.missing["sacct"] = why or why_after
        elif after <= before:
            energy.missing["sacct"] = (
                f"ConsumedEnergyRaw of job {self.slurm_job} did not grow over the load "
                "(the site updates it only when a step ends)"
            )
        else:  # Slurm's mean power between its two reads (around the load), over the load's span
            energy.joules["sacct"] = (after - before) * energy.window_s / max(answered - asked, energy.window_s)


def _last_line_start(path: Path) -> int:
    """Byte offset of the last complete line of ``path`` (the job's last read before now), 0 without one."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            tail_at = max(0, size - _TAIL_BYTES)
            handle.seek(tail_at)
            tail = handle.read()
    except OSError:
        return 0
    body = tail[: tail.rfind(b"\n") + 1].rstrip(b"\n")
    return tail_at + body.rfind(b"\n") + 1 if body else tail_at


def energy_watch(service: RunningService | str, sacct: SacctEnergy | None) -> EnergyWatch | None:
    """A watch of ``service``'s node (None for a service given by URL: its node is not known)."""
    if not isinstance(service, RunningService):
        return None
    slurm_job = service.job_id if service.backend == "slurm" else None
    return EnergyWatch(service.folder / ENERGY_FILE, slurm_job, sacct)
