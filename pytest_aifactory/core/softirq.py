"""Raise the kernel's softirq threads above a real-time thread, shared by every process that asks.

A thread at real-time priority (``core.scheduling``) holds off the softirq thread of its core
(``ksoftirqd/N``, an ordinary task). Network receive work the kernel cannot finish where it
was raised waits there; on loopback it is the server's receive of the bytes the engine sent,
and the server sees them late although the engine handed them over on time (the calibration's
server-seen lateness was several times the engine's own lag while the client core's
``ksoftirqd`` waited on the run queue). ``softirq_threads_above`` raises the softirq threads
of some CPUs one step above the caller (``SCHED_FIFO`` ``priority + 1``; tuned's realtime
profiles raise them too) while a block runs, and gives them their own policy back when the
last process that asked for them ends its block.

Several processes may ask for the same CPU at once (the workers of one load, a synthetic
server and its client, two sessions on a node). What was raised, its own policy and which
processes hold it are kept per CPU in a private directory of the user (``registry_directory``:
``/run/pytest-aifactory-softirq`` for root), under an ``flock``, so that the first to end does
not lower it under the others. The record is written before the raise and replaced whole
(``os.replace``), so a crash leaves a record, never half of one. A holder that died without
ending its block (``SIGKILL``) is dropped by the next process that looks (a holder is its pid
and start time: a reused pid is another process), and a thread it left raised gets its own
policy back then. A thread already at that priority or higher is left as it is, as is one whose
policy ``sched_setscheduler`` cannot set back (``SCHED_DEADLINE``); a thread whose policy
someone else changed during the block keeps that change. Processes that do not see the same
directory (containers with their own ``/run``) do not share.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

__all__ = ["REGISTRY_ENV", "cpu_list", "policy_name", "registry_directory", "softirq_threads_above"]

REGISTRY_ENV = "AIF_SOFTIRQ_REGISTRY"  # another directory for the shared records (tests, containers sharing one)
_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat's flags: a kernel thread (a process may name itself ksoftirqd/0)
_SETTABLE = (os.SCHED_OTHER, os.SCHED_BATCH, os.SCHED_IDLE, os.SCHED_FIFO, os.SCHED_RR)
_LOCK_WAIT_S = 5.0  # a holder stopped (SIGSTOP, a debugger) with the lock held must not hang every load


@contextlib.contextmanager
def softirq_threads_above(
    priority: int, cpus: Iterable[int], proc: str = "/proc", registry: str | None = None
) -> Iterator[str]:
    """While the block runs, the softirq threads of ``cpus`` run at ``SCHED_FIFO`` ``priority + 1``.

    Yields what was done: ``ksoftirqd of CPUs 0-1 at SCHED_FIFO 11``, with the CPUs whose thread
    was left as it was (already as high) or could not be raised, and why. Nothing here fails the
    caller: a thread that cannot be raised is said, one that cannot be given back is warned of.
    """
    above, wanted, directory = priority + 1, sorted(set(cpus)), registry or registry_directory()
    outcomes: dict[str, list[int]] = {}
    held: list[int] = []
    try:
        try:
            threads, unseen = _softirq_threads(wanted, proc), f"not raised: no kernel thread of that name in {proc}"
        except OSError as exc:
            threads, unseen = {}, f"not raised: {proc} not readable: {exc.strerror or exc}"
        for cpu in wanted:
            outcome = unseen
            if cpu in threads:
                try:
                    outcome, holding = _hold(cpu, threads[cpu], above, directory)
                except Exception as exc:  # (an optional tuning: the load runs without it, and says so)
                    outcome, holding = f"not raised: {getattr(exc, 'strerror', None) or exc}", False
                if holding:
                    held.append(cpu)
            outcomes.setdefault(outcome, []).append(cpu)
        yield "; ".join(f"ksoftirqd of {cpu_list(listed)} {outcome}" for outcome, listed in outcomes.items())
    finally:
        for cpu in held:
            try:
                _release(cpu, directory)
            except Exception as exc:  # (every other CPU is still given back; the load's own outcome stands)
                warnings.warn(f"ksoftirqd of CPU {cpu} not given back: {exc}", RuntimeWarning, stacklevel=3)


def registry_directory() -> str:
    """Where the shared records are: ``$AIF_SOFTIRQ_REGISTRY``, root's under /run, else the user's own."""
    chosen = os.environ.get(REGISTRY_ENV)
    if chosen:
        return chosen
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/pytest-aifactory-softirq"
    return os.path.join(tempfile.gettempdir(), f"pytest-aifactory-softirq-{os.geteuid()}")


@dataclass
class _Raise:
    """One CPU's raised softirq thread: its own policy, the raise, who holds it ([pid, start time])."""

    boot: str
    thread: int
    policy: int
    priority: int
    above: int
    holders: list[list[int]]


def _hold(cpu: int, thread: int, above: int, directory: str) -> tuple[str, bool]:
    """Join the holders of ``cpu``'s raised softirq thread, raising it first if none; (outcome, held)."""
    with _record(cpu, directory) as record:
        raised = _read(record, thread)
        holders = [] if raised is None else _running(raised.holders)
        if raised is not None and not holders:  # its holders ended without giving it back
            _give_back(raised)
            _write(record, None)
            raised = None
        me = _holder(os.getpid())
        if raised is not None:
            _write(record, _Raise(**{**asdict(raised), "holders": [*holders, me]}))
            now = _policy(thread)
            changed = "" if now == (os.SCHED_FIFO, raised.above) else f" (now {policy_name(*now)}: changed since)"
            return f"at SCHED_FIFO {raised.above}{changed}", True
        policy, current = _policy(thread)
        if policy in (os.SCHED_FIFO, os.SCHED_RR) and current >= above:
            return f"left at {policy_name(policy, current)}", False
        if policy not in _SETTABLE:
            return f"left at {policy_name(policy, current)} (it could not be given back)", False
        _write(record, _Raise(_boot_id(), thread, policy, current, above, [me]))  # (first: a crash leaves it)
        try:
            os.sched_setscheduler(thread, os.SCHED_FIFO, os.sched_param(above))
        except BaseException:
            _write(record, None)
            raise
        return f"at SCHED_FIFO {above}", True


def _release(cpu: int, directory: str) -> None:
    """Leave the holders of ``cpu``'s softirq thread; the last one gives the thread its own policy back."""
    with _record(cpu, directory) as record:
        raised = _read(record, None)
        if raised is None:
            return
        holders = _running(raised.holders)
        with contextlib.suppress(ValueError):
            holders.remove(_holder(os.getpid()))
        if holders:
            _write(record, _Raise(**{**asdict(raised), "holders": holders}))
        else:
            _give_back(raised)
            _write(record, None)


def _give_back(raised: _Raise) -> None:
    """The thread's own policy again, unless it is no longer at the raise (someone else changed it since)."""
    with contextlib.suppress(ProcessLookupError):  # (a CPU taken offline ends its thread)
        if _policy(raised.thread) == (os.SCHED_FIFO, raised.above):
            os.sched_setscheduler(raised.thread, raised.policy, os.sched_param(raised.priority))


@contextlib.contextmanager
def _record(cpu: int, directory: str) -> Iterator[str]:
    """The path of ``cpu``'s record (``_read``, ``_write``), locked while the block runs."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    status = os.lstat(directory)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid() or status.st_mode & 0o077:
        raise PermissionError(f"{directory} is not a directory of this user's alone (mode 0700)")
    path = os.path.join(directory, f"ksoftirqd-{cpu}")
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _lock(lock, path)
        yield f"{path}.json"
    finally:
        os.close(lock)  # (releases the lock)


def _read(path: str, thread: int | None) -> _Raise | None:
    """The record at ``path``; one from another boot, for another thread, or unreadable is none."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, encoding="utf-8") as file:
        try:
            raised = _Raise(**json.load(file))
        except (ValueError, TypeError):  # (not a record of this module)
            return None
    fields_ok = all(isinstance(v, int) for v in (raised.thread, raised.policy, raised.priority, raised.above))
    if not fields_ok or raised.boot != _boot_id() or (thread is not None and raised.thread != thread):
        return None
    return raised


def _write(path: str, raised: _Raise | None) -> None:
    """Replaces the record at ``path`` whole (a temporary file, then ``os.replace``), or removes it (``None``)."""
    if raised is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    temporary = f"{path}.{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(temporary, flags, 0o600), "w", encoding="utf-8") as file:
        json.dump(asdict(raised), file)
    os.replace(temporary, path)


def _lock(descriptor: int, path: str) -> None:
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}.lock held by another process for {_LOCK_WAIT_S:g} s") from None
            time.sleep(0.01)  # (a lock retry with a deadline, not a readiness wait)


def _holder(pid: int) -> list[int]:
    """A process as a holder: [pid, start time] (a reused pid is another process); [pid, -1] if it is gone."""
    return [pid, _started(pid)]


def _running(holders: list[list[int]]) -> list[list[int]]:
    """The holders that still run (the same process: not a zombie, the same start time)."""
    return [holder for holder in holders if holder[1] >= 0 and _started(holder[0]) == holder[1]]


def _started(pid: int) -> int:
    """A process's start time (clock ticks since boot, /proc/<pid>/stat's 22nd field); -1: gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as file:
            fields = file.read().rpartition(") ")[2].split()
    except OSError:
        return -1
    return -1 if fields[0] in ("Z", "X") else int(fields[19])


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


def _policy(thread: int) -> tuple[int, int]:
    return os.sched_getscheduler(thread) & ~os.SCHED_RESET_ON_FORK, os.sched_getparam(thread).sched_priority


def policy_name(policy: int, priority: int) -> str:
    """A policy (without the reset-on-fork flag) by name: ``SCHED_FIFO 50``, ``SCHED_BATCH``, ``SCHED_OTHER``."""
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        return f"{'SCHED_FIFO' if policy == os.SCHED_FIFO else 'SCHED_RR'} {priority}"
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH", os.SCHED_IDLE: "SCHED_IDLE"}
    return names.get(policy, f"scheduling policy {policy}")  # (SCHED_DEADLINE is 6; Python has no name for it)


def _softirq_threads(cpus: Iterable[int], proc: str) -> dict[int, int]:
    """The process id of each CPU's softirq thread, by CPU: kernel threads named ``ksoftirqd/N``."""
    wanted = {f"ksoftirqd/{cpu}": cpu for cpu in cpus}
    found: dict[int, int] = {}
    with os.scandir(proc) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat"), encoding="utf-8", errors="replace") as file:
                    line = file.read()
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
