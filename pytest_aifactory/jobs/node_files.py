"""What a job keeps on its node outside its job folder, and removing it once a killed job is gone.

A job's ``{tmp}`` folder is in the node's tmp, not in the job folder, because Unix socket
paths are limited to 107 bytes (vLLM's IPC sockets and ``vllm_dist_*`` files are there); a
``run_as`` service's workdir is there too; and a service may map POSIX shared memory
(vLLM's ``/dev/shm/psm_*``, which its resource tracker removes when it is stopped with
SIGTERM). The job removes all of it when it ends, unless it is killed (SIGKILL: Slurm's
escalation KillWait after ``scancel``, a time limit, the OOM killer). So the job records
them in its folder as they appear (``NODE_FILES``: its node and the paths), and the side
that cancels the job removes what is left once the job has left the queue
(``remove_left``), when the job ran on this host: a compute node's tmp and shared memory
cannot be reached from the login node (a site's job epilog, or Slurm's
``job_container/tmpfs``, clears them there). Shared memory is known by what the service's
processes map, looked at once a second: a file no process keeps mapped (a semaphore left to
Python's resource tracker, as vLLM's start leaves one ``sem.mp-*``) is not seen.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["NODE_FILES", "NODE_TMP_PREFIX", "mapped_shared_memory", "remove_left"]

NODE_FILES = "node_files.json"
NODE_TMP_PREFIX = "aif-"  # every folder a job makes in its node's tmp starts with it
SHM = Path("/dev/shm")
_DELETED = " (deleted)"


def mapped_shared_memory(pids: Iterable[int]) -> set[str]:
    """The ``/dev/shm`` files that ``pids`` map (from ``/proc/PID/maps``), unlinked ones left out."""
    found = set()
    prefix = f"{SHM}/"
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:  # gone, or not ours to read
            continue
        for line in lines:
            fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
            if len(fields) == 6 and fields[5].startswith(prefix) and not fields[5].endswith(_DELETED):
                found.add(fields[5])
    return found


def _removable(path: Path) -> bool:
    """A path a job records: a file directly in /dev/shm, or one of its own folders in a tmp."""
    return path.is_absolute() and (path.parent == SHM or path.name.startswith(NODE_TMP_PREFIX))


def remove_left(record: Mapping[str, Any] | None) -> None:
    """Remove what a job that has ended recorded (its ``NODE_FILES``) and left on this host.

    Nothing is touched when the job ran on another node. Call it only once the job has left
    the queue: its service's processes are gone then.
    """
    if not record or record.get("node") != socket.gethostname():
        return
    for path in map(Path, record.get("paths", [])):
        if not _removable(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
