"""The async load engine: open loop from a precomputed schedule, or closed loop at a concurrency.

Honest about time: in open loop every request has a due time from the schedule and its
latency is measured from that due time, not from when the client managed to send it
(no coordinated omission); how late each send was (the schedule lag) is recorded for
every request. ``sent`` is stamped by the engine before the client's ``send`` and moved by
clients that can see it (the streaming HTTP clients) to when the request's last byte went
to the socket, so the lag is the lateness the service sees.

Nothing that can be done before the clock starts is done on it: the schedule, every payload
(``Workload.request``, then the client's ``prepare`` when it has one: request bodies) and the
client's connections are made first, then the clock's zero is set (or the common start is
awaited, with workers). Each send waits on a ``Pacer`` (a timerfd on Linux: no spinning, no
millisecond timer rounding), with the CPUs' wake-up latency held low if the plan asks
(``load.wakeup``). The process's CPU, its event-loop thread's CPU and the loop's
longest stall over the load are kept in ``Engine.health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pytest_aifactory.core.records import ClientHealth, RequestRecord
from pytest_aifactory.core.scheduling import realtime_priority
from pytest_aifactory.load.health import LoopWatch, cancelled_from_outside, end_task
from pytest_aifactory.load.pacing import Pacer
from pytest_aifactory.load.schedule import Arrivals, arrival_times
from pytest_aifactory.load.wakeup import low_wakeup_latency

__all__ = ["Clock", "Engine", "LoadPlan", "PreparingClient", "Progress", "RequestClient", "StopSignal", "Workload"]


class Clock:
    """Seconds since the run's start (``time.monotonic`` based, CLOCK_MONOTONIC on Linux; shared start for workers)."""

    def __init__(self, start_at: float | None = None) -> None:
        """Start now, or at wall-clock time ``start_at`` (``time.time()`` seconds)."""
        offset = 0.0 if start_at is None else start_at - time.time()
        self.t0 = time.monotonic() + offset

    def now(self) -> float:
        """Seconds since the start (negative before it)."""
        return time.monotonic() - self.t0


class Workload(Protocol):
    """Builds request ``index`` deterministically, so that any worker builds the same one."""

    def request(self, index: int) -> Any:
        """The payload of request ``index``."""


class RequestClient(Protocol):
    """Sends one request and fills its record (first token, chunks, tokens, status, end)."""

    async def open(self) -> None:
        """Create connections (called once, in the process that sends)."""

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Send ``payload``; set ``record.end`` (and the rest) as the response arrives."""

    async def close(self) -> None:
        """Release connections."""


@runtime_checkable
class PreparingClient(Protocol):
    """A client that turns a workload's payload into what it sends (a request body) ahead of the clock."""

    def prepare(self, payload: Any) -> Any:
        """What ``send`` will receive for ``payload``."""


@dataclass(frozen=True)
class LoadPlan:
    """What load to offer and when to stop.

    Open loop: ``arrivals`` (rate and distribution), optionally capped at ``concurrency``
    requests in flight (time waiting for a slot counts as latency). Closed loop: exactly
    ``concurrency`` requests in flight. Stop after ``count`` requests or ``duration_s``
    seconds. The first ``warmup`` requests run but are excluded from the results;
    ``steady_state`` excludes instead the transient found in the latencies (``core.steady``).
    ``times`` replaces the arrivals with a fixed schedule (trace replay: due times in seconds).
    ``repeats`` runs the plan that many times (arrival seeds ``seed``, ``seed + 1``...).
    ``low_wakeup_latency`` holds the CPUs' wake-up latency low while it runs (``load.wakeup``);
    ``realtime_priority`` runs the engine's thread at real-time priority (``core.scheduling``).
    """

    mode: Literal["open", "closed"]
    arrivals: Arrivals | None = None
    concurrency: int | None = None
    count: int | None = None
    duration_s: float | None = None
    warmup: int = 0
    timeout_s: float = 300.0
    times: tuple[float, ...] | None = None
    steady_state: bool = False
    repeats: int = 1
    low_wakeup_latency: bool = False
    realtime_priority: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.mode == "open" and self.arrivals is None and self.times is None:
            raise ValueError("an open-loop plan needs arrivals (a rate) or fixed times")
        if self.mode == "closed" and not (self.concurrency and self.concurrency > 0):
            raise ValueError("a closed-loop plan needs a concurrency >= 1")
        if (self.count is None) == (self.duration_s is None):
            raise ValueError("give exactly one of count and duration_s")

    def schedule(self) -> list[tuple[int, float]]:
        """Open loop: (index, due time) of every request, warm-up included."""
        if self.times is not None:
            limit = len(self.times) if self.count is None else self.count + self.warmup
            return [(i, t) for i, t in enumerate(self.times[:limit]) if self.duration_s is None or t < self.duration_s]
        assert self.arrivals is not None
        count = None if self.count is None else self.count + self.warmup
        times = arrival_times(self.arrivals, count=count, duration_s=self.duration_s)
        return list(enumerate(times))

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready configuration."""
        data: dict[str, Any] = {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "count": self.count,
            "duration_s": self.duration_s,
            "warmup": self.warmup,
            "timeout_s": self.timeout_s,
            "steady_state": self.steady_state,
            "repeats": self.repeats,
            "low_wakeup_latency": self.low_wakeup_latency,
            "realtime_priority": self.realtime_priority,
        }
        if self.times is not None:
            data["schedule"] = "fixed times"
        if self.arrivals is not None:
            data.update(
                rate=self.arrivals.rate,
                distribution=self.arrivals.distribution,
                burstiness=self.arrivals.burstiness,
                seed=self.arrivals.seed,
            )
        return data


@dataclass(frozen=True)
class Progress:
    """A live snapshot, passed to the progress callback about once a second.

    ``server``: the server's own figures so far, when something scrapes them beside the load
    (``workloads.server_metrics``); the engine itself leaves it empty.
    """

    elapsed_s: float
    sent: int
    done: int
    errors: int
    in_flight: int
    records: Sequence[RequestRecord] = field(repr=False)
    server: Mapping[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


class StopSignal(Protocol):
    """Set from outside (a thread, another process) to end a load early: ``threading.Event``, ``mp.Event``."""

    def is_set(self) -> bool:
        """True once the load must stop."""


class Engine:
    """Runs one ``LoadPlan`` against a client in one event loop; returns the records."""

    def __init__(
        self,
        client: RequestClient,
        workload: Workload,
        plan: LoadPlan,
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 1.0,
        worker: str = "",
        index_offset: int = 0,
        index_stride: int = 1,
        stop: StopSignal | None = None,
    ) -> None:
        """Closed loop numbers its requests ``index_offset + k * index_stride`` (worker shards).

        ``stop`` (checked every 0.1 s) ends the load early, as when its service is known dead:
        nothing more is sent, requests in flight end as errors, the records so far are returned.
        """
        self.client = client
        self.workload = workload
        self.plan = plan
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.worker = worker
        self.index_offset = index_offset
        self.index_stride = index_stride
        self.stop = stop
        self.records: list[RequestRecord] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self.health: ClientHealth | None = None
        self._sent = 0
        self._errors = 0  # kept as records arrive: a progress snapshot does not walk them all
        self._slots = asyncio.Semaphore(plan.concurrency) if plan.mode == "open" and plan.concurrency else None
        self._pacer = Pacer()
        self._sends: list[tuple[int, float, Any]] = []
        self._payloads: list[Any] | None = None
        # (checked once: an isinstance against a runtime-checkable protocol costs ~7 us, per request in a closed loop)
        self._prepared = client.prepare if isinstance(client, PreparingClient) else None
        self.clock = Clock()

    def _prepare(self, schedule: Sequence[tuple[int, float]] | None) -> None:
        """Before the clock: open loop, the schedule and every payload; closed loop, a known count's payloads."""
        plan = self.plan
        if plan.mode == "open":
            due = schedule if schedule is not None else plan.schedule()
            self._sends = [(index, at, self._payload(index)) for index, at in due]
        elif plan.count is not None:
            self._payloads = [self._payload(self._index(k)) for k in range(plan.count + plan.warmup)]

    def _payload(self, index: int) -> Any:
        payload = self.workload.request(index)
        return self._prepared(payload) if self._prepared is not None else payload

    async def run(
        self,
        schedule: Sequence[tuple[int, float]] | None = None,
        start_at: float | None = None,
        ready: Callable[[], float] | None = None,
    ) -> list[RequestRecord]:
        """Run the plan (open loop: ``schedule`` or the plan's own); returns every record.

        The clock starts once everything is prepared: now, at wall-clock ``start_at``, or at
        what ``ready()`` returns (it is called, blocking, when this engine is prepared: the
        workers' barrier).
        """
        self._prepare(schedule)
        async with contextlib.AsyncExitStack() as cleanup:  # every step runs, whichever of them fails
            await self.client.open()
            await cleanup.enter_async_context(_Afterwards(self.client.close))
            self._pacer.open()
            cleanup.callback(self._pacer.close)
            if gc.isenabled():
                cleanup.callback(gc.enable)
            gc.collect()
            gc.disable()  # a collection pause in the middle of a load would become schedule lag
            if self.progress:
                await cleanup.enter_async_context(_beside(asyncio.create_task(self._report())))
            held = cleanup.enter_context(low_wakeup_latency(self.plan.low_wakeup_latency))  # released however it ends
            scheduling = cleanup.enter_context(realtime_priority(self.plan.realtime_priority))  # restored likewise
            self.clock = Clock(ready() if ready is not None else start_at)
            watch = LoopWatch(self.worker, self.clock.t0, held, scheduling)
            watch.start()
            cleanup.push_async_callback(watch.stop)  # (a second stop after the one below changes nothing)
            work = asyncio.create_task(self._open_loop() if self.plan.mode == "open" else self._closed_loop())
            cleanup.push_async_callback(self._cancel_load, work)
            if self.stop is not None:
                await cleanup.enter_async_context(_beside(asyncio.create_task(self._watch_stop(work))))
            await self._until_done_or_stopped(work)
            self.health = await watch.stop()
        self._emit()
        return sorted(self.records, key=lambda r: r.index)

    async def _cancel_load(self, work: asyncio.Task[None]) -> None:
        """After a failure, end the load and its requests still in flight (a completed load has none)."""
        await _cancel_and_wait([work, *self._in_flight])

    async def _watch_stop(self, work: asyncio.Task[None]) -> None:
        assert self.stop is not None
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        work.cancel()

    async def _until_done_or_stopped(self, work: asyncio.Task[None]) -> None:
        """Await the load; once stopped, end the requests still in flight (they become errors)."""
        try:
            await work
        except asyncio.CancelledError:
            if cancelled_from_outside():  # not stopped
                raise
            await _cancel_and_wait(self._in_flight)

    def _index(self, k: int) -> int:
        return self.index_offset + k * self.index_stride

    async def _wait_until(self, due: float) -> None:
        await self._pacer.until(self.clock.t0 + due)

    async def _open_loop(self) -> None:
        """Send every scheduled request in the loop round after its timer fires.

        Each request's task is made before its due time and waits on the armed timer itself:
        when the timer fires, the loop resumes that task and it sends, in one step (a task made
        after the wait would start only after every callback ready by then, a second time).
        The loop arms the next timer once the request has gone (its task's first step ended);
        behind the schedule, it starts the late requests' tasks at once.
        """
        tasks = self._in_flight
        loop = asyncio.get_running_loop()
        t0 = self.clock.t0
        for index, due, payload in self._sends:
            record = RequestRecord(index=index, scheduled=due, warmup=index < self.plan.warmup, worker=self.worker)
            departed: asyncio.Future[None] | None = None
            if t0 + due <= time.monotonic():  # behind the schedule: catch up at once, not one step per request
                task = asyncio.create_task(self._one(record, payload))
            else:
                departed = loop.create_future()
                task = asyncio.create_task(self._at_due(record, payload, self._pacer.arm(t0 + due), departed))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if departed is not None:
                await departed
        if tasks:
            await asyncio.gather(*tasks)

    async def _at_due(
        self, record: RequestRecord, payload: Any, due: asyncio.Future[None], departed: asyncio.Future[None]
    ) -> None:
        """Wait for ``due``, then send (the open loop goes on once this step has written the request)."""
        try:
            await due
        finally:
            if not departed.done():  # (the open loop may have been stopped, cancelling it)
                departed.set_result(None)
        await self._one(record, payload)

    async def _closed_loop(self) -> None:
        plan, payloads = self.plan, self._payloads
        total = None if plan.count is None else plan.count + plan.warmup
        issued = 0
        await self._wait_until(0.0)

        async def slot() -> None:
            nonlocal issued
            while True:
                now = self.clock.now()
                if total is not None and issued >= total:
                    return
                if plan.duration_s is not None and now >= plan.duration_s:
                    return
                k, issued = issued, issued + 1
                index = self._index(k)
                record = RequestRecord(index=index, scheduled=now, warmup=k < plan.warmup, worker=self.worker)
                await self._one(record, payloads[k] if payloads is not None else self._payload(index))

        slots = [asyncio.ensure_future(slot()) for _ in range(plan.concurrency or 1)]
        try:
            await asyncio.gather(*slots)
        finally:  # one slot failed, or the load was stopped: the others end with it
            await _cancel_and_wait(slots)

    async def _one(self, record: RequestRecord, payload: Any) -> None:
        async with self._slots if self._slots is not None else contextlib.nullcontext():
            record.sent = self.clock.now()  # a lower bound; a client that sees its last byte leave moves it
            self._sent += 1
            try:
                await _within(self.plan.timeout_s, self.client.send(payload, record, self.clock))
            except asyncio.TimeoutError:
                record.error = f"timeout after {self.plan.timeout_s:g} s"
            except asyncio.CancelledError:  # the load was stopped while this request was in flight
                record.error = "in flight when the load was stopped"
                self._errors += 1
                self.records.append(record)
                raise
            except Exception as exc:  # any client failure is a failed request, never a crashed run
                record.error = f"{type(exc).__name__}: {exc}"[:500]
        if record.end is None and record.error is None:
            record.end = self.clock.now()
        if record.error is not None:
            self._errors += 1
        self.records.append(record)

    def _emit(self) -> None:
        if self.progress is None:
            return
        done = len(self.records)
        self.progress(Progress(self.clock.now(), self._sent, done, self._errors, self._sent - done, self.records))

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval_s)
            self._emit()


async def _cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel those of ``tasks`` still running and wait until they have ended (their errors are theirs)."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


class _Afterwards:
    """Runs ``step`` when the load ends, however it ends (closing the client, ending a helper task).

    The step's own error is raised after a load that succeeded; after a failure the load's error stands.
    """

    def __init__(self, step: Callable[[], Awaitable[None]]) -> None:
        self.step = step

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        try:
            await self.step()
        except Exception as failed:
            if exc is None:
                raise
            if hasattr(exc, "add_note"):  # (Python 3.11+) kept beside the load's own error, not instead of it
                exc.add_note(f"then, ending the load: {type(failed).__name__}: {failed}")
        return False


def _beside(task: asyncio.Task[None]) -> _Afterwards:
    """A helper task that runs beside a load (progress reports, the stop watcher), ended with it."""
    return _Afterwards(functools.partial(end_task, task))


async def _within(seconds: float, send: Coroutine[Any, Any, None]) -> None:
    """Await ``send`` for at most ``seconds`` (``asyncio.timeout`` adds no task per request; ``wait_for`` does)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            await send
    else:
        await asyncio.wait_for(send, seconds)
