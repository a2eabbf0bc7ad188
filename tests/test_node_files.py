"""What a killed job left on its node is removed, and nothing else (the jobs' own record is all it goes by)."""

from __future__ import annotations

import os
import socket
from multiprocessing import shared_memory
from pathlib import Path

from pytest_aifactory.jobs.node_files import mapped_shared_memory, remove_left


def test_only_a_jobs_own_files_on_this_host_are_removed(tmp_path: Path) -> None:
    own = tmp_path / "aif-own"
    own.mkdir()
    (own / "ipc.sock").write_text("")
    foreign = tmp_path / "results"  # not a job's tmp folder: a record naming it is not obeyed
    foreign.mkdir()
    segment = Path("/dev/shm") / f"psm_aif_test_{os.getpid()}"
    segment.write_bytes(b"x")
    try:
        remove_left({"node": "another-node", "paths": [str(own), str(segment)]})
        assert [path for path in (own, segment) if not path.exists()] == []  # another node's are not this host's
        remove_left({"node": socket.gethostname(), "paths": [str(own), str(foreign), str(segment), "aif-relative"]})
        assert [path for path in (own, foreign, segment) if path.exists()] == [foreign]
        remove_left({"node": socket.gethostname(), "paths": [str(own)]})  # gone already: nothing to do
    finally:
        segment.unlink(missing_ok=True)


def test_the_shared_memory_a_process_maps_is_found() -> None:
    segment = shared_memory.SharedMemory(create=True, size=4096)
    try:
        assert f"/dev/shm/{segment.name}" in mapped_shared_memory([os.getpid()])
    finally:
        segment.close()
        segment.unlink()
    assert f"/dev/shm/{segment.name}" not in mapped_shared_memory([os.getpid()])
