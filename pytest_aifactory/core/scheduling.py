"""Run the calling thread at real-time priority while a block runs (``SCHED_FIFO``), as latency tools do.

A load generator sleeps between sends; when its timer fires, the kernel runs it as soon as
its core is free of other ordinary tasks. On a node with daemons, kernel workers and other
jobs, "as soon as" is often a millisecond or more late, and that lateness becomes schedule
lag and late first-token stamps. A thread at real-time priority preempts every ordinary task
on its core at once (cyclictest's ``-p``). The calibration benchmark measures what it changes
(``benchmarks/calibration/machine_floor.py``).

It applies to the calling thread only (the engine's event loop: the one that paces, sends and
stamps), with ``SCHED_RESET_ON_FORK``: a thread it starts during the block (a pool of blocking
calls, the resolver's) runs at the normal policy, not at real-time priority. A thread already
at that priority or higher is left as it is, and the thread's own policy is restored when the
block ends (a lowering, which needs no privilege). A real-time thread that
saturates its core keeps ordinary tasks there from running, up to the kernel's real-time
throttle (``/proc/sys/kernel/sched_rt_runtime_us``, 95% by default): it is asked for
(``--aif-realtime-priority``), never the default, and the result says what ran. Raising the
priority needs root, ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` (``ulimit -r``): otherwise the
block runs at the thread's own priority and says why.

A raised thread also holds off the kernel's softirq thread of its core, where loopback
receive work can wait: while the block runs, the softirq threads of the CPUs the thread may run
on (every CPU, unless it is pinned) are raised one step above it (``core.softirq``). A thread
already at that priority or higher is left as it is, and so are they.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pytest_aifactory.core.softirq import policy_name, softirq_threads_above

__all__ = ["NORMAL", "REALTIME_PRIORITY", "realtime_priority"]

REALTIME_PRIORITY = 10  # above ordinary tasks and the RCU boost threads (1), below threaded interrupts (50)
NORMAL = "normal (SCHED_OTHER)"


@contextlib.contextmanager
def realtime_priority(wanted: bool, priority: int = REALTIME_PRIORITY) -> Iterator[str]:
    """While the block runs, the calling thread runs at ``SCHED_FIFO`` ``priority`` if ``wanted``.

    Yields what ran: ``SCHED_FIFO 10 (ksoftirqd of CPUs 0-1 at SCHED_FIFO 11)``
    (``core.softirq``); the thread's own policy when not asked for
    (``normal (SCHED_OTHER)``, ``SCHED_BATCH`` under ``chrt --batch``, ``SCHED_FIFO 50`` under
    ``chrt --fifo 50``) or when it was already at least that high; or ``not raised: <why>``.
    """
    if not hasattr(os, "SCHED_RESET_ON_FORK"):  # Linux only (macOS and Windows lack sched_getscheduler too)
        yield "not raised: this platform has no real-time scheduling policy (Linux only)" if wanted else NORMAL
        return
    reset = os.SCHED_RESET_ON_FORK
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    realtime = (policy & ~reset) in (os.SCHED_FIFO, os.SCHED_RR)
    if not wanted or (realtime and param.sched_priority >= priority):
        yield _described(policy, param.sched_priority)
        return
    refused = ""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | reset, os.sched_param(priority))
    except OSError as exc:
        refused = f"not raised: sched_setscheduler(SCHED_FIFO, {priority}): {exc.strerror or exc}"
    if refused:  # (yielded outside the handler: a load's own error would carry this one as its context)
        yield refused
        return
    try:
        with softirq_threads_above(priority, os.sched_getaffinity(0)) as softirq:
            yield f"SCHED_FIFO {priority} ({softirq})"
    finally:
        try:
            os.sched_setscheduler(0, policy, param)
        except PermissionError:  # without CAP_SYS_NICE the reset-on-fork flag cannot be cleared: keep it
            os.sched_setscheduler(0, policy | reset, param)


def _described(policy: int, priority: int) -> str:
    """A thread's policy as results name it: ``SCHED_FIFO 50``, ``SCHED_BATCH``, ``normal (SCHED_OTHER)``."""
    policy &= ~os.SCHED_RESET_ON_FORK
    return NORMAL if policy == os.SCHED_OTHER else policy_name(policy, priority)
