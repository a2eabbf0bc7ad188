"""The machine's own floor for the calibration: how late the engine's timer wakes an idle process.

cyclictest's measurement, with the engine's own pacer: on the client's core, with nothing
else to do, wake every millisecond at an absolute due time (``Pacer``: a timerfd in a uvloop
loop) and note how late each wake-up was. No client can send more punctually than this
process wakes. Its tail has two sources: ordinary tasks on the same core that run first (a
thread at real-time priority preempts them, ``core.scheduling``), and on a virtual machine the
host (a vCPU that is not running when its timer expires waits for the host to run it again).
The calibration measures it before and after its rates: before them with the machine's
default and tuned as its loads (``load.wakeup``'s hold, real-time priority), after them tuned.

``stolen_ms`` reads what the hypervisor says it took from each vCPU (``steal`` in
``/proc/stat``, kvm's steal time), so that a point can say how much the host took while it ran.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from pytest_aifactory.core.scheduling import realtime_priority
from pytest_aifactory.load.pacing import Pacer, run_interruptible
from pytest_aifactory.load.wakeup import low_wakeup_latency

__all__ = ["WakeupFloor", "measure_floor", "stolen_ms"]


@dataclass(frozen=True)
class WakeupFloor:
    """Wake-up lateness of an idle process on this core (ms), and how often it passed 1 ms."""

    seconds: float
    wakeups: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    over_1ms: int
    wakeup_latency: str
    scheduling: str

    def line(self, when: str) -> str:
        """One sentence for the calibration's output."""
        return (
            f"Timer wake-up lateness of an idle process on the client's core ({when}, CPU wake-up latency "
            f"{self.wakeup_latency}, {self.scheduling}; the engine's pacer, every 1 ms for {self.seconds:g} s, "
            f"{self.wakeups} wake-ups): p50 {self.p50_ms:.3f} ms, "
            f"p99 {self.p99_ms:.3f} ms, p99.9 {self.p999_ms:.2f} ms, max {self.max_ms:.2f} ms; "
            f"{self.over_1ms} wake-ups more than 1 ms late ({self.over_1ms / self.seconds:.1f} per second)."
        )


async def _wake_every(interval_s: float, seconds: float) -> list[float]:
    pacer = Pacer()
    pacer.open()
    late: list[float] = []
    try:
        due = time.monotonic() + interval_s
        end = due + seconds
        while due < end:
            await pacer.until(due)
            late.append(time.monotonic() - due)
            due += interval_s
    finally:
        pacer.close()
    return late


def measure_floor(seconds: float, hold_wakeup_latency: bool, realtime: bool, interval_s: float = 0.001) -> WakeupFloor:
    """Wake every ``interval_s`` for ``seconds`` in this process (pinned as the caller pinned it), tuned as a load."""
    with low_wakeup_latency(hold_wakeup_latency) as held, realtime_priority(realtime) as scheduling:
        late_ms = np.array(run_interruptible(_wake_every(interval_s, seconds))) * 1000
    p50, p99, p999 = (float(np.percentile(late_ms, q)) for q in (50, 99, 99.9))
    over = int((late_ms > 1.0).sum())
    return WakeupFloor(seconds, len(late_ms), p50, p99, p999, float(late_ms.max()), over, held, scheduling)


def stolen_ms(stat: str = "/proc/stat") -> dict[int, float]:
    """Time the host has taken from each vCPU since boot (ms), by CPU; empty where ``stat`` cannot be read.

    ``steal``, the 8th value of each ``cpuN`` line, in clock ticks (``SC_CLK_TCK``, 10 ms): a
    difference of two readings is good to one tick per CPU. Linux always prints it: a
    hypervisor that does not report steal time, or bare metal, shows 0.
    """
    try:
        with open(stat, encoding="ascii") as lines:
            rows = [line.split() for line in lines if line.startswith("cpu") and line[3].isdigit()]
    except OSError:
        return {}
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return {int(row[0][3:]): int(row[8]) * tick_ms for row in rows if len(row) > 8}
