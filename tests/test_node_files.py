"""What a killed job left on its node is removed, and nothing else (the jobs' own record is all it goes by)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from pytest_aifactory.jobs.node_files import bound_unix_sockets, made_folder, mapped_shared_memory, remove_left

HERE = socket.gethostname()
NOBODY = 65534


@pytest.fixture
def segment() -> Iterator[shared_memory.SharedMemory]:
    """A POSIX shared memory segment this process maps, as a service's."""
    mapped = shared_memory.SharedMemory(create=True, size=4096)
    try:
        yield mapped
    finally:
        mapped.close()
        Path(f"/dev/shm/{mapped.name}").unlink(missing_ok=True)


def test_only_a_jobs_own_files_on_this_host_are_removed(tmp_path: Path, segment: shared_memory.SharedMemory) -> None:
    base = tmp_path / "tmp"
    base.mkdir()
    own = Path(tempfile.mkdtemp(prefix="aif-", dir=base))
    (own / "ipc.sock").write_text("")
    shm = Path(f"/dev/shm/{segment.name}")
    record = {**made_folder(own), **mapped_shared_memory([os.getpid()])}
    assert str(shm) in record
    remove_left({"node": "another-node", "paths": record})
    assert [path for path in (own, shm) if not path.exists()] == []  # another node's are not this host's
    remove_left({"node": HERE, "paths": record})
    assert [path for path in (own, shm) if path.exists()] == []
    remove_left({"node": HERE, "paths": record})  # gone already: nothing to do


def test_an_aif_folder_the_job_did_not_make_is_left_alone(tmp_path: Path) -> None:
    """The results folder (``aif-results``) and a fio workdir are named ``aif-*`` too: only the job's own go."""
    base = tmp_path / "tmp"
    base.mkdir()
    own = Path(tempfile.mkdtemp(prefix="aif-", dir=base))
    results = tmp_path / "aif-results"
    results.mkdir()
    fio = Path(tempfile.mkdtemp(prefix="aif-fio-", dir=tmp_path))  # mkdtemp's shape, outside the job's tmp
    recorded = made_folder(own)[str(own)]
    remove_left({"node": HERE, "paths": [str(results), str(fio)]})  # a bare list of names is not obeyed
    remove_left({"node": HERE, "paths": {str(results): recorded, str(fio): recorded}})  # not in the recorded base
    remove_left({"node": HERE, "paths": {str(fio): {**made_folder(fio)[str(fio)], "base": str(base)}}})
    remove_left({"node": HERE, "paths": made_folder(results)})  # not a name mkdtemp gives the job's folders
    assert [path for path in (own, results, fio) if not path.exists()] == []


def test_a_folder_made_again_under_the_recorded_name_is_left_alone(tmp_path: Path) -> None:
    own = Path(tempfile.mkdtemp(prefix="aif-", dir=tmp_path))
    record = made_folder(own)
    gone = own.rename(own.with_name("removed"))
    own.mkdir()  # someone's, since the job was killed (made before the old one goes: another inode)
    gone.rmdir()
    (own / "theirs").write_text("")
    remove_left({"node": HERE, "paths": record})
    assert (own / "theirs").exists()


def test_shared_memory_made_again_under_the_recorded_name_is_left_alone(segment: shared_memory.SharedMemory) -> None:
    """A name reused after the kill is another file (its inode differs): it is not the job's to remove."""
    shm = Path(f"/dev/shm/{segment.name}")
    record = mapped_shared_memory([os.getpid()])
    again = shm.with_name(f"{segment.name}.new")
    again.write_bytes(b"theirs")
    os.replace(again, shm)  # the same name, a new inode (the old one is still mapped here)
    remove_left({"node": HERE, "paths": record})
    assert shm.read_bytes() == b"theirs"


def test_shared_memory_of_another_owner_is_neither_recorded_nor_removed(segment: shared_memory.SharedMemory) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    shm = Path(f"/dev/shm/{segment.name}")
    record = mapped_shared_memory([os.getpid()])
    os.chown(shm, NOBODY, NOBODY)
    assert str(shm) not in mapped_shared_memory([os.getpid()])  # mapped by a process of another user
    remove_left({"node": HERE, "paths": record})  # recorded as ours, now another user's
    assert shm.exists()


def test_the_shared_memory_a_process_maps_is_found() -> None:
    segment = shared_memory.SharedMemory(create=True, size=4096)
    try:
        assert f"/dev/shm/{segment.name}" in mapped_shared_memory([os.getpid()])
    finally:
        segment.close()
        segment.unlink()
    assert f"/dev/shm/{segment.name}" not in mapped_shared_memory([os.getpid()])


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A Unix socket this process listens on, bound in the system's tmp (as SeaweedFS binds its own)."""
    folder = Path(tempfile.mkdtemp(prefix="aif-sock-"))  # short: a socket path has at most 107 bytes
    bound = socket.socket(socket.AF_UNIX)
    try:
        bound.bind(str(folder / "s.sock"))
        bound.listen()
        yield bound
    finally:
        bound.close()
        (folder / "s.sock").unlink(missing_ok=True)
        folder.rmdir()


def test_the_unix_sockets_a_process_bound_are_recorded_and_removed_once_it_is_gone(
    listener: socket.socket,
) -> None:
    path = Path(listener.getsockname())
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    accepted, _ = listener.accept()  # /proc/net/unix names the path for it too: still the one file
    record = bound_unix_sockets([os.getpid()])  # taken while it listens, as the job does once a second
    accepted.close()
    client.close()
    assert record[str(path)]["kind"] == "socket"
    listener.close()  # the service is gone; its socket file stays (closing does not unlink it)
    assert path.exists()
    remove_left({"node": HERE, "paths": record})
    assert not path.exists()


def test_a_socket_bound_again_under_the_recorded_name_is_left_alone(listener: socket.socket) -> None:
    path = Path(listener.getsockname())
    record = bound_unix_sockets([os.getpid()])
    listener.close()
    theirs = socket.socket(socket.AF_UNIX)
    try:
        theirs.bind(str(path.with_name("t.sock")))  # someone's since the job was killed
        os.replace(path.with_name("t.sock"), path)  # under the same name, made before the old goes: another inode
        remove_left({"node": HERE, "paths": record})
        assert path.exists()
    finally:
        theirs.close()


def test_a_recorded_socket_that_is_now_a_regular_file_is_left_alone(listener: socket.socket) -> None:
    path = Path(listener.getsockname())
    record = bound_unix_sockets([os.getpid()])
    entry = record[str(path)]
    listener.close()
    path.unlink()
    path.write_text("theirs")
    found = os.lstat(path)
    remove_left({"node": HERE, "paths": {str(path): {**entry, "ino": found.st_ino, "dev": found.st_dev}}})
    assert path.read_text() == "theirs"


def test_a_recorded_socket_still_bound_by_a_live_process_is_left_alone(listener: socket.socket) -> None:
    """A service's process that left its group (``setsid``) outlives the group's SIGKILL, and still serves there."""
    path = Path(listener.getsockname())
    remove_left({"node": HERE, "paths": bound_unix_sockets([os.getpid()])})
    assert path.exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="a mount namespace needs root")
def test_a_socket_in_a_private_tmp_is_not_taken_for_the_file_under_that_name_here() -> None:
    """A container's own /tmp: the service's socket path names another file on the host, which is not recorded."""
    folder = Path(tempfile.mkdtemp(prefix="aif-ns-"))  # short: the socket path has at most 107 bytes
    script = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); "
        "print('bound', flush=True); sys.stdin.read()"
    )
    private = f'mount -t tmpfs none {folder} && exec {sys.executable} -c "{script}" {folder}/s.sock'
    here = socket.socket(socket.AF_UNIX)
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", private]
    try:
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
            try:
                assert child.stdout is not None
                assert child.stdout.readline() == "bound\n"
                here.bind(str(folder / "s.sock"))  # another socket, under the same name, on the host
                assert str(folder / "s.sock") not in bound_unix_sockets([child.pid])
            finally:
                child.kill()
    finally:
        here.close()
        (folder / "s.sock").unlink(missing_ok=True)
        folder.rmdir()
