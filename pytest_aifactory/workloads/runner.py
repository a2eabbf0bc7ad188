"""What a benchmark calls: one line per load, a ``LoadResult`` back (plain Python, no pytest).

result = load.openai(llm_server, rate=20, duration_s=60, prompts="synthetic:in=512,out=128")
points = load.sweep("rate", [5, 10, 20], load.openai, llm_server, count=200)
answer = load.capacity("rate", load.openai, llm_server, slo=["p99_ttft_ms <= 500"], low=2, duration_s=10)
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_aifactory.core.digest import summarize_digest
from pytest_aifactory.core.errors import LoadConfigError, LoadStoppedError
from pytest_aifactory.core.metrics import GoodputSLO, LoadResult, summarize
from pytest_aifactory.core.repeats import combine
from pytest_aifactory.core.slo import parse_slo
from pytest_aifactory.core.steady import cut_transient
from pytest_aifactory.load.capacity import Capacity, CapacitySearch, Knob, search_capacity
from pytest_aifactory.load.engine import LoadPlan, Progress, RequestClient, StopSignal, Workload
from pytest_aifactory.load.workers import LoadInterrupted, LoadRun, run_load, run_on_jobs
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.energy import (
    NOT_AVAILABLE,
    EnergyWatch,
    SacctEnergy,
    energy_watch,
)
from pytest_aifactory.workloads.plans import make_plan, plan_label
from pytest_aifactory.workloads.production_loads import ProductionLoads
from pytest_aifactory.workloads.server_metrics import ServerScraper, ttft_overhead
from pytest_aifactory.workloads.service_loads import ServiceLoads

__all__ = ["LoadRunner", "make_plan"]

ProgressFactory = Callable[[str], Callable[[Progress], None]]


class LoadRunner(ServiceLoads, ProductionLoads):
    """Runs loads and hands every result to ``on_result`` (the plugin records them for SLOs)."""

    def __init__(
        self,
        on_result: Callable[[LoadResult], None] | None = None,
        progress: ProgressFactory | None = None,
        workers: int = 1,
        submit: Callable[..., Any] | None = None,
        shard_dir: Path | None = None,
        stop: StopSignal | None = None,
        sacct_energy: SacctEnergy | None = None,
        low_wakeup_latency: bool = False,
        realtime_priority: bool = False,
    ) -> None:
        """``submit(fn, *args)`` -> submitit job and ``shard_dir`` (seen by every node) enable ``nodes=N``.

        ``stop``, once set (the service is known dead), ends the load under way: its result is
        kept and recorded, then ``LoadStoppedError`` is raised, and so for any later load.
        ``sacct_energy(job_id)`` is Slurm's energy of a service's job (the backend's).
        ``low_wakeup_latency`` holds the CPUs' wake-up latency low during every load (``load.wakeup``),
        ``realtime_priority`` runs every load's engine at real-time priority (``core.scheduling``).
        """
        self.on_result = on_result
        self.progress = progress
        self.workers = workers
        self.submit = submit
        self.shard_dir = shard_dir
        self.stop = stop
        self.sacct_energy = sacct_energy
        self.low_wakeup_latency = low_wakeup_latency
        self.realtime_priority = realtime_priority
        self.results: list[LoadResult] = []
        self._role = "point"  # "probe" while a capacity search runs, "repeat" while repeats run

    def run(
        self,
        client: RequestClient,
        workload: Workload,
        plan: LoadPlan,
        *,
        label: str | None = None,
        workers: int | None = None,
        goodput: Mapping[str, float] | None = None,
        config: Mapping[str, Any] | None = None,
        nodes: int = 1,
        scalars: Mapping[str, float] | None = None,
        summarizer: Callable[..., LoadResult] = summarize,
        server: ServerScraper | None = None,
        energy: tuple[RunningService | str, tuple[str, ...]] | None = None,
    ) -> LoadResult:
        """Run any client and workload under ``plan``; the general form of every helper.

        ``workers`` processes share the load on this node; ``nodes > 1`` runs it as that many
        jobs (client nodes on Slurm) with one common start and merged records. ``summarizer``
        turns the records into the result (``summarize``; sessions and pipelines have their own).
        A load interrupted (Ctrl-C, SIGTERM) records what it measured so far (``interrupted``
        in its configuration) before the interruption goes on. ``server`` scrapes the server's
        own metrics around the load into the result. ``energy=(service, units)`` measures the
        energy of the service's node over the load, and per each unit (``workloads.energy.UNITS``).
        A plan with ``repeats=N`` runs N times (fresh arrival seeds), each recorded as a result
        of role ``repeat`` (labelled ``#1``...), then one result with the means and Student t
        intervals (``core.repeats``).
        """
        label = label or plan_label(plan)
        workers = workers or self.workers
        if self.low_wakeup_latency or self.realtime_priority:
            plan = dataclasses.replace(
                plan,
                low_wakeup_latency=plan.low_wakeup_latency or self.low_wakeup_latency,
                realtime_priority=plan.realtime_priority or self.realtime_priority,
            )
        options = {"workers": workers, "goodput": goodput, "nodes": nodes, "scalars": scalars, "energy": energy}
        if plan.repeats > 1:
            return self._repeated(client, workload, plan, label, config, summarizer, server, options)

        good = GoodputSLO(**goodput) if goodput else None

        def result_of(run: LoadRun, **more: Any) -> LoadResult:
            full_config = {
                **plan.describe(),
                **_describe(workload),
                **_describe(client),
                "workers": workers,
                "client_nodes": nodes,
                "clock_zero_monotonic_s": min((h.clock_zero for h in run.health), default=None),
                "event_loop": _each(h.event_loop for h in run.health),
                "cpu_wakeup_latency": _each(h.wakeup_latency for h in run.health),
                "engine_scheduling": _each(h.scheduling for h in run.health),
                "goodput": dict(goodput or {}),
                **dict(config or {}),
                **more,
            }
            if run.digest is not None:  # merged histograms; the records kept are a sample
                full_config["record_sample"] = f"{len(run.records)} of {run.digest.seen}"
                return summarize_digest(run.digest, label, plan.mode, full_config, health=run.health)
            records, steady = cut_transient(run.records) if plan.steady_state else (run.records, None)
            result = summarizer(records, label, plan.mode, full_config, good, health=run.health)
            if steady is not None:
                result.config["steady_state"] = steady.describe()
                result.scalars["transient_requests"] = float(steady.cut)
                if not steady.steady:
                    result.notes.append("never reached steady state: latency still trending half-way through (MSER-5)")
            return result

        before = server.start() if server is not None else None
        watch = energy_watch(energy[0], self.sacct_energy) if energy is not None else None
        if watch is not None:
            watch.before()  # the energy is cut at the load's own span, from its records
        try:
            # client nodes send histograms and a sample, not every record, when nothing needs more
            digest = summarizer is summarize and not plan.steady_state
            run = self._drive(client, workload, plan, label, workers, nodes, goodput=good, digest=digest, server=server)
        except LoadInterrupted as interrupted:
            self.record(result_of(interrupted.run, interrupted=True))
            raise
        finally:
            if server is not None:
                server.stop()
            if watch is not None:
                watch.after()
        result = result_of(run)
        result.scalars.update(scalars or {})
        if server is not None and before is not None:
            figures = server.finish(before)
            result.scalars.update({**figures, **ttft_overhead(result.metrics(), figures)})
            result.server_series = server.series()
        if energy is not None:
            _add_energy(result, energy[0], watch, energy[1], _load_span(run, result))
        self.record(result)
        if self.stop is not None and self.stop.is_set():
            raise LoadStoppedError(
                f"load {label} stopped early after {len(run.records)} request(s): its service is gone"
            )
        return result

    def _repeated(
        self,
        client: RequestClient,
        workload: Workload,
        plan: LoadPlan,
        label: str,
        config: Mapping[str, Any] | None,
        summarizer: Callable[..., LoadResult],
        server: ServerScraper | None,
        options: dict[str, Any],
    ) -> LoadResult:
        """``plan.repeats`` runs, each recorded as a repeat, then their combination."""
        runs = []
        role, self._role = self._role, "repeat"
        try:
            for i in range(plan.repeats):
                arrivals = dataclasses.replace(plan.arrivals, seed=plan.arrivals.seed + i) if plan.arrivals else None
                seeded = {**(config or {}), "schedule_seed": arrivals.seed if arrivals else None}
                once = dataclasses.replace(plan, arrivals=arrivals, repeats=1)
                runs.append(
                    self.run(
                        client,
                        workload,
                        once,
                        label=f"{label} #{i + 1}",
                        config=seeded,
                        summarizer=summarizer,
                        server=server,
                        **options,
                    )
                )
        finally:
            self._role = role
        combined = combine(runs)
        combined.label = label
        return self.record(combined)

    def _drive(
        self,
        client: RequestClient,
        workload: Workload,
        plan: LoadPlan,
        label: str,
        workers: int,
        nodes: int,
        goodput: GoodputSLO | None = None,
        digest: bool = False,
        server: ServerScraper | None = None,
    ) -> LoadRun:
        if nodes > 1:
            if self.submit is None or self.shard_dir is None:
                raise ValueError("nodes > 1 needs a job launcher (the aif_load fixture provides one)")
            sync = self.shard_dir / f"{len(self.results):03d}-{uuid.uuid4().hex[:6]}"
            return run_on_jobs(self.submit, client, workload, plan, nodes, sync, goodput=goodput, digest=digest)
        callback = self.progress(label) if self.progress else None
        if callback is not None and server is not None:
            callback = server.beside(callback)
        return run_load(client, workload, plan, workers=workers, progress=callback, stop=self.stop)

    def record(self, result: LoadResult) -> LoadResult:
        """Keep a result (also those measured outside the engine, such as fio's)."""
        if result.role == "point":
            result.role = self._role
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def sweep(
        self, parameter: str, values: Sequence[float], run: Callable[..., LoadResult], *args: Any, **kwargs: Any
    ) -> list[LoadResult]:
        """One result per value of ``parameter`` (``rate``, ``concurrency``...): ``run(*args, parameter=value)``."""
        return [run(*args, **{**kwargs, parameter: value, "label": f"{parameter}={value:g}"}) for value in values]

    def capacity(
        self,
        knob: Knob,
        run: Callable[..., LoadResult],
        *args: Any,
        slo: Sequence[str],
        low: float = 1.0,
        high: float | None = None,
        precision: float = 0.05,
        budget_s: float = 600.0,
        growth: float = 2.0,
        label: str = "capacity",
        **kwargs: Any,
    ) -> Capacity:
        """The highest ``knob`` (``rate`` or ``concurrency``) at which every ``slo`` holds.

        ``run(*args, **kwargs, knob=value)`` is one probe (``aif_load.openai`` and the rest);
        how the search brackets, bisects and stops is in ``load.capacity``. Every probe is
        recorded as a result of role ``probe``, and the answer as a result of role
        ``capacity`` holding ``capacity_<knob>`` and the figures at that point.
        """
        search = CapacitySearch(knob, low, high, precision, budget_s, growth)
        slos = [parse_slo(expression) for expression in slo]
        if not slos:
            raise LoadConfigError("capacity search needs at least one SLO (slo=[...])")

        def probe(value: float) -> LoadResult:
            setting = int(value) if knob == "concurrency" else value
            return run(*args, **{**kwargs, knob: setting, "label": f"{knob}={value:g}"})

        self._role = "probe"
        try:
            answer = search_capacity(probe, slos, search)
        finally:
            self._role = "point"
        self.record(answer.to_result(label))
        return answer


def _each(values: Iterable[str]) -> str:
    """The distinct values the load's processes reported, joined (``not available`` when none did)."""
    return ", ".join(sorted(set(values))) or "not available"


def _load_span(run: LoadRun, result: LoadResult) -> tuple[float, float] | None:
    """The load's measured window (``duration_s``, ending at the last request's end) on the wall clock.

    None when no request completed or no process said when its clock started.
    """
    zeros = [h.clock_zero_wall for h in run.health if h.clock_zero_wall is not None]
    if run.digest is not None:
        last_end = run.digest.totals.last_end
    else:
        last_end = max((r.end for r in run.records if r.end is not None and not r.warmup), default=-math.inf)
    duration = result.metrics().get("duration_s", math.nan)
    if not zeros or not math.isfinite(last_end) or not duration > 0:
        return None
    end = min(zeros) + last_end  # the processes share one start
    return end - duration, end


def _add_energy(
    result: LoadResult,
    target: RunningService | str,
    watch: EnergyWatch | None,
    units: tuple[str, ...],
    span: tuple[float, float] | None,
) -> None:
    """The point's energy figures over the load's ``span``, and where they come from (a note when there are any)."""
    if watch is None:
        unknown = f"{target} is not a service this run started: its node is not known"
        result.config.update(energy_source=NOT_AVAILABLE, energy_not_available={"node": unknown})
        return
    energy = watch.finish(span)
    result.config.update(energy.describe())
    figures = energy.figures(result.metrics(), units)
    result.scalars.update(figures)
    if figures:
        result.notes.append(
            f"energy {figures['energy_j']:.4g} J over {energy.window_s:.3g} s from {energy.source} "
            "(the whole node of the service, other jobs on it included)"
        )


def _describe(thing: object) -> dict[str, Any]:
    describe = getattr(thing, "describe", None)
    return dict(describe()) if callable(describe) else {}
