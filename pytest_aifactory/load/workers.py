"""Several processes, or several client nodes, driving one load together.

One Python process is one core: above a few hundred streamed requests per second a
single event loop falls behind its schedule. ``run_load(..., workers=N)`` splits one plan
into N shards (open loop: request i goes to shard i mod N, keeping its due time; closed
loop: the concurrency and count are divided), starts N processes, holds them at a barrier
until every one has prepared its schedule, payloads and connections, gives them one common start
time, and merges their records and their health (``LoadRun``). Every process runs its load in
uvloop where it is installed.
``run_on_jobs`` does the same with submitit jobs on several client nodes (Slurm), which
rendezvous through files in a shared folder; their clocks must agree (NTP, as on clusters).
They can send back mergeable histograms and a sample (``core/digest.py``) instead of every
record. The common start is a file rather than one heterogeneous or array job: the jobs of a
load may wait in the queue for different times, and a Slurm job array still starts its tasks
one by one, so only a rendezvous after they all run gives them one start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_aifactory.core.digest import LatencyDigest
from pytest_aifactory.core.metrics import GoodputSLO
from pytest_aifactory.core.records import ClientHealth, RequestRecord
from pytest_aifactory.load.engine import Engine, LoadPlan, Progress, RequestClient, StopSignal, Workload
from pytest_aifactory.load.pacing import new_event_loop, signals_cancel

__all__ = ["LoadInterrupted", "LoadRun", "Shard", "drive", "run_load", "run_on_jobs", "split_plan"]

_START_MARGIN_S = 0.25


@dataclass(frozen=True)
class Shard:
    """One worker's part of a load: its plan, schedule and index numbering."""

    client: RequestClient
    workload: Workload
    plan: LoadPlan
    schedule: Sequence[tuple[int, float]] | None
    worker: str
    index_offset: int = 0
    index_stride: int = 1


@dataclass
class LoadRun:
    """What a load produced: every record, and each load-generating process's health.

    From client nodes (``run_on_jobs`` with a ``digest``), ``records`` is a bounded sample and
    ``digest`` the merged histograms and totals of all of them.
    """

    records: list[RequestRecord]
    health: list[ClientHealth]
    digest: LatencyDigest | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what a worker or a client-node job sends back)."""
        return {"records": [r.to_json() for r in self.records], "health": [h.to_json() for h in self.health]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadRun:
        """Inverse of ``to_json``."""
        return cls([RequestRecord.from_json(r) for r in data["records"]], [ClientHealth(**h) for h in data["health"]])

    @classmethod
    def merge(cls, runs: Sequence[LoadRun]) -> LoadRun:
        """One run of several processes' parts, records in index order."""
        records = sorted((r for run in runs for r in run.records), key=lambda r: r.index)
        return cls(records, [h for run in runs for h in run.health])


class LoadInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGTERM) during a load: ``run`` holds what was measured so far."""

    def __init__(self, run: LoadRun) -> None:
        super().__init__(f"interrupted during a load, after {len(run.records)} request(s)")
        self.run = run


def drive(engine: Engine, schedule: Sequence[tuple[int, float]] | None = None, **start: Any) -> LoadRun:
    """Run ``engine`` in a new event loop (uvloop when installed); ``start``: ``start_at`` or ``ready``.

    An interruption is raised as ``LoadInterrupted``, carrying the requests completed so far. In
    the main thread the loop itself takes SIGINT and SIGTERM while it runs (a KeyboardInterrupt
    raised inside uvloop's callbacks can be lost, and the load would run on): it cancels the load.
    """
    loop = new_event_loop()
    main = loop.create_task(engine.run(schedule, **start))
    completed: list[RequestRecord] = []  # at the first signal, before the requests in flight are cancelled
    try:
        with signals_cancel(loop, main, lambda: completed.extend(engine.records)) as signals:
            try:
                records = loop.run_until_complete(main)
                loop.run_until_complete(loop.shutdown_asyncgens())
                if signals:  # the cancel was taken for a stop (Python 3.10 cannot tell them apart) or lost
                    raise asyncio.CancelledError
            except (KeyboardInterrupt, asyncio.CancelledError) as interrupt:
                if not (signals or isinstance(interrupt, KeyboardInterrupt)):
                    raise
                done = sorted(completed if signals else engine.records, key=lambda r: r.index)
                pending = asyncio.all_tasks(loop)  # (the engine ends its own; another's may be left)
                for task in pending:
                    task.cancel()
                if pending:  # (an empty gather would belong to no loop, or to another)
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))  # connections closed
                health = [engine.health] if engine.health is not None else []
                raise LoadInterrupted(LoadRun(done, health)) from None
    finally:
        loop.close()
    return LoadRun(records, [engine.health] if engine.health is not None else [])


def _share(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def split_plan(client: RequestClient, workload: Workload, plan: LoadPlan, parts: int) -> list[Shard]:
    """Divide ``plan`` into ``parts`` shards that together offer the same load."""
    if parts < 1:
        raise ValueError(f"workers must be >= 1, got {parts}")
    if plan.mode == "open":
        schedule = plan.schedule()
        return [Shard(client, workload, plan, schedule[i::parts], f"w{i}") for i in range(parts)]
    concurrency = plan.concurrency or 1
    if parts > concurrency:
        raise ValueError(f"closed loop: {parts} workers need a concurrency of at least {parts}, got {concurrency}")
    shards = []
    for i in range(parts):
        shard_plan = dataclasses.replace(
            plan,
            concurrency=_share(concurrency, parts, i),
            count=None if plan.count is None else _share(plan.count, parts, i),
            warmup=_share(plan.warmup, parts, i),
        )
        shards.append(Shard(client, workload, shard_plan, None, f"w{i}", index_offset=i, index_stride=parts))
    return shards


def _engine(shard: Shard, progress: Callable[[Progress], None] | None, stop: StopSignal | None = None) -> Engine:
    return Engine(
        shard.client,
        shard.workload,
        shard.plan,
        progress=progress,
        worker=shard.worker,
        index_offset=shard.index_offset,
        index_stride=shard.index_stride,
        stop=stop,
    )


def _worker_main(shard: Shard, barrier: Any, start: Any, out: Any, stop: Any) -> None:
    """A worker process: wait at the barrier, run the shard from the common start, report."""

    def report(p: Progress) -> None:
        out.put(("progress", shard.worker, (p.sent, p.done, p.errors)))

    def ready() -> float:
        barrier.wait()
        barrier.wait()  # the parent sets the start time between the two waits
        return float(start.value)

    try:
        run = drive(_engine(shard, report, stop), shard.schedule, ready=ready)
        out.put(("records", shard.worker, run.to_json()))
    except BaseException as exc:
        out.put(("error", shard.worker, f"{type(exc).__name__}: {exc}"))
        raise


def run_load(
    client: RequestClient,
    workload: Workload,
    plan: LoadPlan,
    workers: int = 1,
    progress: Callable[[Progress], None] | None = None,
    stop: StopSignal | None = None,
) -> LoadRun:
    """Run ``plan`` in this process (``workers=1``) or in ``workers`` processes; merged records and health.

    ``stop`` ends the load early (see ``Engine``); worker processes are told within a second.
    """
    if workers == 1:
        return drive(_engine(Shard(client, workload, plan, None, "w0"), progress, stop))
    shards = split_plan(client, workload, plan, workers)
    ctx = mp.get_context("spawn")
    barrier, start, out, stopping = ctx.Barrier(workers + 1), ctx.Value("d", 0.0), ctx.Queue(), ctx.Event()
    processes = [ctx.Process(target=_worker_main, args=(s, barrier, start, out, stopping), daemon=True) for s in shards]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=600)  # every worker has built its payloads: a long schedule takes a while
        start.value = time.time() + _START_MARGIN_S
        barrier.wait(timeout=10)
        return _collect(out, processes, progress, start.value, lambda: stop is not None and stop.is_set(), stopping)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(10)


def _collect(
    out: Any,
    processes: list[Any],
    progress: Callable[[Progress], None] | None,
    start_at: float,
    stopped: Callable[[], bool],
    stopping: Any,
) -> LoadRun:
    """The workers' records and health; ``stopping`` is set for them once ``stopped()``."""
    results: dict[str, LoadRun] = {}
    counts: dict[str, tuple[int, int, int]] = {}
    while len(results) < len(processes):
        if stopped():
            stopping.set()
        try:
            kind, worker, payload = out.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"load worker process exited with code {dead[0].exitcode}") from None
            continue
        if kind == "error":
            raise RuntimeError(f"load worker {worker} failed: {payload}")
        if kind == "records":
            results[worker] = LoadRun.from_json(payload)
        elif progress is not None:
            counts[worker] = payload
            sent, done, errors = (sum(c[i] for c in counts.values()) for i in range(3))
            progress(Progress(time.time() - start_at, sent, done, errors, sent - done, []))
    return LoadRun.merge(list(results.values()))


def _shard_job(
    shard: Shard, sync_dir: str, timeout_s: float, goodput: GoodputSLO | None = None, digest: bool = False
) -> dict[str, Any]:
    """Inside a client-node job: prepare, announce readiness, wait for the common start, run.

    With ``digest``, it sends back histograms, totals and a sample instead of every record.
    """
    folder = Path(sync_dir)
    started: list[float] = []

    def ready() -> float:
        (folder / f"ready-{shard.worker}").write_text(str(time.time()))
        go = folder / "go.json"
        deadline = time.monotonic() + timeout_s
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no start signal in {sync_dir} after {timeout_s:g} s")
            time.sleep(0.05)
        started.append(float(json.loads(go.read_text())["start_at"]))
        return started[0]

    run = drive(_engine(shard, None), shard.schedule, ready=ready)
    if not digest:
        return run.to_json()
    summary = LatencyDigest.of(run.records, started[0], goodput=goodput)
    return {"digest": summary.to_json(), "health": [h.to_json() for h in run.health]}


def _from_nodes(answers: list[dict[str, Any]]) -> LoadRun:
    """The client nodes' answers merged: their records, or their digests."""
    if not all("digest" in answer for answer in answers):
        return LoadRun.merge([LoadRun.from_json(answer) for answer in answers])
    digest = LatencyDigest.from_json(answers[0]["digest"])
    for answer in answers[1:]:
        digest.merge(LatencyDigest.from_json(answer["digest"]))
    health = [ClientHealth(**h) for answer in answers for h in answer["health"]]
    return LoadRun(sorted(digest.sample, key=lambda r: r.index), health, digest)


def run_on_jobs(
    submit: Callable[..., Any],
    client: RequestClient,
    workload: Workload,
    plan: LoadPlan,
    nodes: int,
    sync_dir: Path,
    ready_timeout_s: float = 600.0,
    goodput: GoodputSLO | None = None,
    digest: bool = False,
) -> LoadRun:
    """Run ``plan`` split over ``nodes`` jobs; ``submit(fn, *args)`` returns a submitit job.

    The jobs start whenever the scheduler runs them; each reports ready in ``sync_dir``
    (a folder every node sees) and waits; when all are ready a common start time is
    written, and the merged records are returned (with ``digest``: the merged digests and
    a sample of the records; ``goodput`` is what the jobs count as good).
    """
    sync_dir.mkdir(parents=True, exist_ok=True)
    shards = split_plan(client, workload, plan, nodes)
    jobs = [submit(_shard_job, shard, str(sync_dir), ready_timeout_s, goodput, digest) for shard in shards]
    deadline = time.monotonic() + ready_timeout_s
    while len(list(sync_dir.glob("ready-*"))) < nodes:
        finished = [job for job in jobs if job.done()]
        if finished:
            finished[0].result()  # raises the job's error
            raise RuntimeError(f"load job {finished[0].job_id} ended before the start")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(list(sync_dir.glob('ready-*')))}/{nodes} load jobs ready after {ready_timeout_s:g} s"
            )
        time.sleep(0.1)
    tmp = sync_dir / "go.json.tmp"
    tmp.write_text(json.dumps({"start_at": time.time() + 1.0}))
    tmp.replace(sync_dir / "go.json")
    return _from_nodes([job.result() for job in jobs])
