"""The load generator's own health during a load: its CPU, its event loop's stalls, which loop ran.

A result is only as good as the client that produced it: when the event loop that paces and
sends is saturated, requests leave late and latencies grow for reasons that have nothing to
do with the service. ``LoopWatch`` measures, over the load window, the CPU of the process and
of the event loop's thread, and the longest time the loop did not run a ready callback (a
task waking every ``tick_s`` notes how late it woke).
"""

from __future__ import annotations

import asyncio
import time

from pytest_aifactory.core.records import ClientHealth
from pytest_aifactory.load.pacing import event_loop_name

__all__ = ["LoopWatch", "cancelled_from_outside", "end_task"]


class LoopWatch:
    """Watches the running event loop from ``start()`` to ``stop()``."""

    tick_s = 0.01

    def __init__(self, worker: str, clock_zero: float, wakeup_latency: str, scheduling: str) -> None:
        """Watch for ``worker``, whose records count from ``clock_zero`` (monotonic seconds).

        ``wakeup_latency``: what the load held the CPUs' wake-up latency at (``load.wakeup``);
        ``scheduling``: the policy the event loop's thread ran at (``core.scheduling``).
        """
        self.worker = worker
        self.wakeup_latency = wakeup_latency
        self.scheduling = scheduling
        self.clock_zero = clock_zero
        self.clock_zero_wall = time.time() - (time.monotonic() - clock_zero)
        self.stall_max_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._started = (0.0, 0.0, 0.0)

    def start(self) -> None:
        """Begin the window (call inside the running loop)."""
        self._started = (time.monotonic(), time.process_time(), time.thread_time())
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick_s)
            self.stall_max_s = max(self.stall_max_s, time.monotonic() - before - self.tick_s)

    async def stop(self) -> ClientHealth:
        """End the window: what the process and its loop used during it."""
        wall0, cpu0, thread0 = self._started
        health = ClientHealth(
            worker=self.worker,
            wall_s=time.monotonic() - wall0,
            cpu_s=time.process_time() - cpu0,
            loop_cpu_s=time.thread_time() - thread0,
            stall_max_ms=self.stall_max_s * 1000,
            event_loop=event_loop_name(asyncio.get_running_loop()),
            clock_zero=self.clock_zero,
            clock_zero_wall=self.clock_zero_wall,
            wakeup_latency=self.wakeup_latency,
            scheduling=self.scheduling,
        )
        if self._task is not None:
            await end_task(self._task)
        return health


async def end_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended.

    Its error is raised, its cancellation is not; a cancellation of the caller itself goes on.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if cancelled_from_outside():
            raise


def cancelled_from_outside() -> bool:
    """Whether the running task itself is being cancelled (Python 3.11+; 3.10 cannot tell: False)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False
