"""Local processes known by pid AND start time, so that a reused pid is never signalled.

A pid alone names whatever process holds it now: once a job's process has exited, the
kernel may give its pid to an unrelated one. A process is identified by its pid and its
start time (field 22 of ``/proc/PID/stat``, clock ticks since boot), and is signalled through
a pidfd, so the check and the signal concern the same process.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["group_members", "pid_alive", "process_start", "process_tree", "same_process", "signal_process"]


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (PID 1 may reap slowly)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return "Z" not in state.split()[1:2]


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":  # fields 3 (state) and 5 (pgrp) of /proc/PID/stat
            members.append(int(stat.parent.name))
    return members


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after "(comm)" start at field 3


def same_process(pid: int, start: int | None) -> bool:
    """True when ``pid`` is alive and is the process that started at ``start`` (None: unknown, never)."""
    return start is not None and pid_alive(pid) and process_start(pid) == start


def signal_process(pid: int, start: int | None, signum: int) -> bool:
    """Send ``signum`` to ``pid`` only if it is still the process that started at ``start``."""
    if start is None:
        return False
    try:
        handle = os.pidfd_open(pid)
    except OSError:  # no such process
        return False
    try:
        if process_start(pid) != start:
            return False
        signal.pidfd_send_signal(handle, signum)
    except ProcessLookupError:
        return False
    finally:
        os.close(handle)
    return True


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (read from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found
