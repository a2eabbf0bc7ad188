"""Raise the kernel's softirq threads above a real-time thread, shared by every process that asks.

A thread at real-time priority (``core.scheduling``) holds off the softirq thread of its core
(``ksoftirqd/N``, an ordinary task). Network receive work the kernel cannot finish where it
was raised waits there; on loopback it is the server's receive of the bytes the engine sent,
and the server sees them late although the engine handed them over on time (measured here:
about 5 ms on the run queue per wake-up of the client core's ``ksoftirqd``, and a server-seen
lateness five times the engine's own lag). ``softirq_threads_above`` raises the softirq threads
of some CPUs one step above the caller (``SCHED_FIFO`` ``priority + 1``; tuned's realtime
profiles raise them too) while a block runs, and gives them their own policy back when the
last process that asked for them ends its block.

Several processes may ask for the same CPU at once (the workers of one load, a synthetic
server and its client, two sessions on a node): who raised a thread, its own policy and which
processes hold it are kept in a file per CPU (``REGISTRY``, under an ``flock``), so that the
first to end does not lower it under the others. A holder that died without ending its block
(``SIGKILL``) is dropped by the next process that looks, and a thread left raised with no live
holder gets its own policy back then. A thread already at that priority or higher is left as it
is, as is one whose policy ``sched_setscheduler`` cannot set back (``SCHED_DEADLINE``); a thread
whose policy was changed by someone else during the block keeps that change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["REGISTRY", "cpu_list", "softirq_threads_above"]

REGISTRY = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(), "pytest-aifactory-softirq")
_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat's flags: a kernel thread (a process may name itself ksoftirqd/0)
_SETTABLE = (os.SCHED_OTHER, os.SCHED_BATCH, os.SCHED_IDLE, os.SCHED_FIFO, os.SCHED_RR)


@contextlib.contextmanager
def softirq_threads_above(
    priority: int, cpus: Iterable[int], proc: str = "/proc", registry: str = REGISTRY
) -> Iterator[str]:
    """While the block runs, the softirq threads of ``cpus`` run at ``SCHED_FIFO`` ``priority + 1``.

    Yields what was done: ``ksoftirqd of CPUs 0-1 at SCHED_FIFO 11``, with the CPUs whose thread
    was left as it was (already as high) or could not be raised, and why.
    """
    above, wanted = priority + 1, sorted(set(cpus))
    outcomes: dict[str, list[int]] = {}
    held: list[int] = []
    try:
        try:
            threads, unseen = _softirq_threads(wanted, proc), f"not raised (no kernel thread of that name in {proc})"
        except OSError as exc:
            threads, unseen = {}, f"not raised ({proc} not readable: {exc.strerror or exc})"
        for cpu in wanted:
            outcome = unseen
            if cpu in threads:
                try:
                    outcome, holding = _hold(cpu, threads[cpu], above, registry)
                except OSError as exc:
                    outcome, holding = f"not raised ({exc.strerror or exc})", False
                if holding:
                    held.append(cpu)
            outcomes.setdefault(outcome, []).append(cpu)
        yield "; ".join(f"ksoftirqd of {cpu_list(listed)} {outcome}" for outcome, listed in outcomes.items())
    finally:
        failures = []
        for cpu in held:
            try:
                _release(cpu, registry)
            except OSError as exc:
                failures.append(exc)
        if failures:  # (every CPU was given back first)
            raise failures[0]


def _hold(cpu: int, thread: int, above: int, registry: str) -> tuple[str, bool]:
    """Join the holders of ``cpu``'s raised softirq thread, raising it first if none; (outcome, held)."""
    with _shared(cpu, registry) as state:
        holders = _alive(state.get("holders", []))
        if state and not holders:  # its holders ended without giving it back (killed): give it back now
            _give_back(state)
            state.clear()
        if holders:
            state["holders"] = [*holders, os.getpid()]
            return f"at SCHED_FIFO {state['above']}", True
        policy = os.sched_getscheduler(thread) & ~os.SCHED_RESET_ON_FORK
        current = os.sched_getparam(thread).sched_priority
        if policy in (os.SCHED_FIFO, os.SCHED_RR) and current >= above:
            return f"left at {'SCHED_FIFO' if policy == os.SCHED_FIFO else 'SCHED_RR'} {current}", False
        if policy not in _SETTABLE:
            return f"left at scheduling policy {policy} (it could not be given back)", False
        os.sched_setscheduler(thread, os.SCHED_FIFO, os.sched_param(above))
        state.update(thread=thread, policy=policy, priority=current, above=above, holders=[os.getpid()])
        return f"at SCHED_FIFO {above}", True


def _release(cpu: int, registry: str) -> None:
    """Leave the holders of ``cpu``'s softirq thread; the last one gives the thread its own policy back."""
    with _shared(cpu, registry) as state:
        holders = _alive(state.get("holders", []))
        with contextlib.suppress(ValueError):
            holders.remove(os.getpid())
        if holders:
            state["holders"] = holders
        elif state:
            _give_back(state)
            state.clear()


def _give_back(state: dict[str, Any]) -> None:
    """The thread's own policy again, unless it is no longer at the raise (someone else changed it since)."""
    thread = int(state["thread"])
    try:
        now = (os.sched_getscheduler(thread) & ~os.SCHED_RESET_ON_FORK, os.sched_getparam(thread).sched_priority)
        if now == (os.SCHED_FIFO, int(state["above"])):
            os.sched_setscheduler(thread, int(state["policy"]), os.sched_param(int(state["priority"])))
    except ProcessLookupError:  # (a CPU taken offline ends its thread)
        pass


def _alive(pids: list[int]) -> list[int]:
    """The processes among ``pids`` that still run (one entry per block they hold)."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # (another user's process: it runs)
            pass
        alive.append(pid)
    return alive


@contextlib.contextmanager
def _shared(cpu: int, registry: str) -> Iterator[dict[str, Any]]:
    """The shared state of ``cpu``'s raise (empty: not raised by anyone), locked while the block runs, then kept."""
    os.makedirs(registry, mode=0o700, exist_ok=True)
    with open(os.path.join(registry, f"ksoftirqd-{cpu}.json"), "a+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # (released when the file is closed)
        file.seek(0)
        try:
            state: dict[str, Any] = json.loads(file.read() or "{}")
        except ValueError:  # (a file cut short by a crash while it was written: nobody's raise can be told)
            state = {}
        yield state
        file.seek(0)
        file.truncate()
        if state:
            file.write(json.dumps(state))


def _softirq_threads(cpus: Iterable[int], proc: str) -> dict[int, int]:
    """The process id of each CPU's softirq thread, by CPU: kernel threads named ``ksoftirqd/N``."""
    wanted = {f"ksoftirqd/{cpu}": cpu for cpu in cpus}
    found: dict[int, int] = {}
    with os.scandir(proc) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat"), encoding="utf-8", errors="replace") as stat:
                    line = stat.read()
            except OSError:  # (a process that ended while the list was read)
                continue
            name, _, rest = line.partition(" (")[2].rpartition(") ")
            fields = rest.split()
            if name in wanted and len(fields) > 6 and int(fields[6]) & _PF_KTHREAD:
                found.setdefault(wanted[name], int(entry.name))
    return found


def cpu_list(cpus: Iterable[int]) -> str:
    """``CPU 3``, ``CPUs 0-3,8``: as Linux writes a CPU list."""
    ordered = sorted(cpus)
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    listed = ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)
    return f"CPU {listed}" if len(ordered) == 1 else f"CPUs {listed}"
