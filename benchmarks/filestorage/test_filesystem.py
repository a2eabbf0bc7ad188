"""File storage: fio bandwidth/IOPS/latency (O_DIRECT where supported) and metadata rates.

The directory is the profile's ``fs_dir`` variable (Lustre scratch on MeluXina), else the
results folder's file system.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aifactory.workloads.files import FioJob


@pytest.fixture(scope="module")
def target(aif_vars, aif_run) -> Path:
    path = Path(aif_vars("fs_dir", str(aif_run.run_dir / "fs")))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize(("rw", "bs"), [("write", "1m"), ("read", "1m"), ("randwrite", "4k"), ("randread", "4k")])
@pytest.mark.slo("bw_mib_s > 0", "p99_latency_ms <= {fs_p99_latency_ms}")
def test_fio(aif_load, aif_vars, target, rw, bs):
    """Sequential bandwidth (1 MiB blocks) and random IOPS (4 KiB blocks)."""
    aif_load.fio(
        FioJob(
            rw,
            bs=bs,
            size=aif_vars("fs_file_size", "64M"),
            iodepth=aif_vars("fs_iodepth", 4),
            runtime_s=aif_vars("fs_runtime_s", 3),
            ioengine="libaio",
        ),
        target,
    )


@pytest.mark.slo("create_s >= {fs_min_create_s}", "stat_s >= {fs_min_create_s}")
def test_metadata(aif_load, aif_vars, target):
    """Files created, stat'ed and removed per second (mdtest-style)."""
    aif_load.metadata(target, files_count=aif_vars("fs_md_files", 4000), threads=aif_vars("fs_md_threads", 4))
