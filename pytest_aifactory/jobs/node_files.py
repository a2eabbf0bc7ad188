"""What a job keeps on its node outside its job folder, and removing it once its service is gone.

A job's ``{tmp}`` folder is in the node's tmp, not in the job folder, because Unix socket
paths are limited to 107 bytes (vLLM's IPC sockets and ``vllm_dist_*`` files are there); a
``run_as`` service's workdir is there too; a service may map POSIX shared memory (vLLM's
``/dev/shm/psm_*``, which its resource tracker removes when it is stopped with SIGTERM) and
bind Unix sockets where it chooses (SeaweedFS's ``/tmp/seaweedfs-*-<port>.sock``, which it
leaves behind even when stopped cleanly). So the job records them in its folder as they appear
(``NODE_FILES``: its node, and for each path the folder it is in, its device, inode and
owner) and, once its service's processes have ended, removes what they left (``remove_left``).
A killed job (SIGKILL: Slurm's escalation KillWait after ``scancel``, a time limit, the OOM
killer) cannot: the side that cancels it removes what is left once the job has left the
queue, when the job ran on this host: a compute node's tmp and shared memory cannot be reached
from the login node (a site's job epilog, or Slurm's ``job_container/tmpfs``, clears them
there). Shared memory is known by what the service's processes map, looked at once a second: a
file no process keeps mapped (a semaphore left to Python's resource tracker, as vLLM's start
leaves one ``sem.mp-*``) is not seen, nor is one owned by another user than the process
mapping it. Sockets are known the same way, by the Unix sockets its processes have bound to a path.

Only what the job made is removed: a path directly in its recorded folder, that is still the
same file (device, inode and owner as recorded: a name reused since, by anyone, is left
alone), a folder named as ``mkdtemp`` names the job's, a shared memory file a regular file, a
socket a socket.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_aifactory.jobs.listening import socket_inodes

__all__ = [
    "NODE_FILES",
    "NODE_TMP_PREFIX",
    "bound_unix_sockets",
    "made_folder",
    "mapped_shared_memory",
    "remove_left",
]

NODE_FILES = "node_files.json"
NODE_TMP_PREFIX = "aif-"  # every folder a job makes in its node's tmp starts with it
SHM = Path("/dev/shm")
_DELETED = " (deleted)"
# mkdtemp's names: the prefix, then 8 of [a-z0-9_] (``aif-`` + a service name and "-", or nothing)
_MKDTEMP_NAME = re.compile(rf"{re.escape(NODE_TMP_PREFIX)}.*[a-z0-9_]{{8}}")


def _entry(kind: str, path: Path, found: os.stat_result) -> dict[str, Any]:
    """What identifies a file the job made: its kind, the folder it is in, device, inode, owner."""
    return {"kind": kind, "base": str(path.parent), "dev": found.st_dev, "ino": found.st_ino, "uid": found.st_uid}


def made_folder(path: Path) -> dict[str, dict[str, Any]]:
    """The record of a folder ``mkdtemp`` just made in the node's tmp (after any ``chown``)."""
    return {str(path): _entry("tmp", path, os.lstat(path))}


def mapped_shared_memory(pids: Iterable[int]) -> dict[str, dict[str, Any]]:
    """The ``/dev/shm`` files that ``pids`` map (from ``/proc/PID/maps``), as ``NODE_FILES`` records them.

    Unlinked ones are left out, and those that are not the mapped file any more or are not
    owned by the process's user.
    """
    found: dict[str, dict[str, Any]] = {}
    prefix = f"{SHM}/"
    for pid in pids:
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
            lines = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:  # gone, or not ours to read
            continue
        for line in lines:
            fields = line.split(maxsplit=5)  # address, perms, offset, device (hex major:minor), inode, path
            if len(fields) < 6 or not fields[5].startswith(prefix) or fields[5].endswith(_DELETED):
                continue
            major, _, minor = fields[3].partition(":")
            path = Path(fields[5])
            try:
                now = os.lstat(path)
            except OSError:
                continue
            mapped = (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]), owner)
            if path.parent == SHM and (now.st_dev, now.st_ino, now.st_uid) == mapped:
                found[str(path)] = _entry("shm", path, now)
    return found


def _named_sockets() -> list[tuple[str, str]]:
    """(inode, path) of each Unix socket bound to a path, from this network namespace's ``/proc/net/unix``."""
    try:
        lines = Path("/proc/net/unix").read_bytes().split(b"\n")[1:]  # only "\n" ends a line
    except OSError:
        return []
    named = []
    for line in lines:
        fields = line.split(maxsplit=7)  # Num RefCount Protocol Flags Type St Inode Path
        if len(fields) == 8:
            named.append((fields[6].decode("ascii", "replace"), os.fsdecode(fields[7])))
    return named


def bound_unix_sockets(pids: list[int]) -> dict[str, dict[str, Any]]:
    """The Unix sockets that ``pids`` bound to a path (to listen on), as ``NODE_FILES`` records them.

    ``/proc/net/unix`` names a socket's path for the sockets bound to it and those accepted on
    them, which the binding service holds too; a client's socket has none. It names the path as
    the binding process saw it: one is kept only if it is the same file here (a container's
    own ``/tmp`` is another), a socket, and the process's user's. A socket named on two lines
    is left out (a path may hold a newline, and so fake a line).
    """
    holders: dict[str, tuple[int, int]] = {}  # socket inode -> (pid, its user)
    for pid in pids:
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:  # gone
            continue
        holders.update(dict.fromkeys(socket_inodes([pid]), (pid, owner)))
    named = _named_sockets()
    lines = Counter(inode for inode, _ in named)
    found: dict[str, dict[str, Any]] = {}
    for inode, name in named:
        if inode not in holders or lines[inode] > 1 or not name.startswith("/"):  # "@...": an abstract name
            continue
        pid, owner = holders[inode]
        try:
            here, theirs = os.lstat(name), os.lstat(f"/proc/{pid}/root{name}")
        except OSError:  # unlinked since, or not ours to look at
            continue
        same_file = (here.st_dev, here.st_ino) == (theirs.st_dev, theirs.st_ino)
        if same_file and stat.S_ISSOCK(here.st_mode) and here.st_uid == owner:
            found[name] = _entry("socket", Path(name), here)
    return found


def _still_made(path: Path, entry: Any) -> bool:
    """``path`` is directly in its recorded folder, and still the file the job made (``entry``)."""
    if not isinstance(entry, Mapping) or not path.is_absolute() or str(path.parent) != entry.get("base"):
        return False
    try:
        now = os.lstat(path)
    except OSError:  # gone already
        return False
    kind = entry.get("kind")
    shm_file = kind == "shm" and path.parent == SHM and stat.S_ISREG(now.st_mode)
    tmp_folder = kind == "tmp" and stat.S_ISDIR(now.st_mode) and _MKDTEMP_NAME.fullmatch(path.name) is not None
    unix_socket = kind == "socket" and stat.S_ISSOCK(now.st_mode)
    same = [now.st_dev, now.st_ino, now.st_uid] == [entry.get("dev"), entry.get("ino"), entry.get("uid")]
    return (shm_file or tmp_folder or unix_socket) and same


def remove_left(record: Mapping[str, Any] | None) -> None:
    """Remove what a job recorded (its ``NODE_FILES``) and its service's processes left on this host.

    Nothing is touched when the job ran on another node, nor a path that is not the file the
    job made, nor a socket some process still has bound there (one of the service's that
    outlived its process group, or someone's since). Call it once the service's processes are
    gone: the job itself when they have ended, its canceller once it has left the queue. A path
    that cannot be removed is left: what can be, is.
    """
    if not record or record.get("node") != socket.gethostname():
        return
    made = record.get("paths")
    live: set[str] | None = None
    for name, entry in made.items() if isinstance(made, Mapping) else ():
        path = Path(name)
        if not _still_made(path, entry):
            continue
        if entry["kind"] == "socket":
            live = live if live is not None else {bound for _, bound in _named_sockets()}
            if name in live:
                continue
        with contextlib.suppress(OSError):
            if entry["kind"] == "tmp":
                shutil.rmtree(path)
            else:
                path.unlink()
