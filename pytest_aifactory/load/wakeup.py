"""Hold the CPUs' wake-up latency low while a load runs (Linux PM QoS), as latency tools do.

Between two sends an idle load generator sleeps; an idle CPU enters an idle state, and
waking it takes time that becomes schedule lag and late first-token stamps. In a virtual
machine it is worst: an idle vCPU halts and the host must run it again (the calibration
benchmark measures both, ``benchmarks/calibration/machine_floor.py``). Writing a 32-bit 0
to ``/dev/cpu_dma_latency`` and keeping the file open asks the kernel to use only idle
states that wake at once (cpuidle's polling state); closing it ends the request.
cyclictest and tuned's ``latency-performance`` profile do the same.

The request is system-wide: it also speeds up the wake-ups of a service on the same node,
and an idle CPU then polls instead of halting (more power, and in a VM more host CPU). So it
is asked for (``--aif-low-wakeup-latency``), never the default, and the result says whether
it was held. Writing the file needs root (or a udev rule): otherwise the load runs with the
machine's default and says why.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

from pytest_aifactory.core.records import UNHELD_WAKEUP

__all__ = ["PM_QOS_DEVICE", "low_wakeup_latency"]

PM_QOS_DEVICE = "/dev/cpu_dma_latency"


@contextlib.contextmanager
def low_wakeup_latency(wanted: bool, device: str = PM_QOS_DEVICE) -> Iterator[str]:
    """While the block runs, hold the wake-up latency at 0 if ``wanted``; yields what was held.

    ``held at 0 us (/dev/cpu_dma_latency)``, ``machine default``, or ``not held: <why>``.
    """
    if not wanted:
        yield UNHELD_WAKEUP
        return
    try:
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        yield f"not held: {device}: {exc.strerror or exc}"
        return
    try:
        os.write(fd, struct.pack("i", 0))
    except OSError as exc:
        os.close(fd)
        yield f"not held: writing {device}: {exc.strerror or exc}"
        return
    try:
        yield f"held at 0 us ({device})"
    finally:
        os.close(fd)
