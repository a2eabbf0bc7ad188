"""File-system benchmarks: fio for bandwidth, IOPS and latency; an mdtest-style metadata load.

``O_DIRECT`` is used wherever the file system supports it, so that page-cache speeds are
never reported as disk speeds; where it is not supported, the result says ``cached``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_aifactory.core.metrics import PERCENTILES, Distribution, LoadResult, summarize
from pytest_aifactory.core.records import RequestRecord

__all__ = ["FioJob", "direct_io_supported", "metadata_load", "run_fio"]

_BLOCK_SIZE = re.compile(r"^\d+[kKmMgG]?$")
RW = Literal["read", "write", "randread", "randwrite", "randrw"]


def direct_io_supported(directory: Path) -> bool:
    """True when ``directory``'s file system accepts ``O_DIRECT`` opens."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = directory / f".aif-odirect-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | flag, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class FioJob:
    """One fio job: pattern, block size, file size, queue depth, jobs, runtime."""

    rw: RW
    bs: str = "4k"
    size: str = "64M"
    iodepth: int = 1
    numjobs: int = 1
    runtime_s: int = 5
    ioengine: str = "psync"

    def __post_init__(self) -> None:
        if not _BLOCK_SIZE.match(self.bs):
            raise ValueError(f"block size {self.bs!r}: expected a number of bytes with an optional k, m or g suffix")
        if self.rw not in ("read", "write", "randread", "randwrite", "randrw"):
            raise ValueError(f"fio pattern {self.rw!r}: valid are read, write, randread, randwrite, randrw")


def run_fio(job: FioJob, directory: Path) -> LoadResult:
    """Run fio in ``directory`` (files removed after) and turn its JSON into a ``LoadResult``."""
    binary = shutil.which("fio")
    if binary is None:
        raise FileNotFoundError("fio is not installed (Debian package 'fio')")
    direct = direct_io_supported(directory)
    workdir = directory / f"aif-fio-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    argv = [
        binary,
        "--name=aif",
        f"--directory={workdir}",
        f"--rw={job.rw}",
        f"--bs={job.bs}",
        f"--size={job.size}",
        f"--iodepth={job.iodepth}",
        f"--numjobs={job.numjobs}",
        f"--runtime={job.runtime_s}",
        "--time_based",
        f"--ioengine={job.ioengine}",
        f"--direct={int(direct)}",
        "--group_reporting",
        "--output-format=json",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=job.runtime_s + 300, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        report = json.loads(done.stdout[done.stdout.index("{") :])
        data = report["jobs"][0]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"fio refused the job (bs={job.bs}, rw={job.rw}): {done.stderr.strip()[-400:]}") from None
    if data.get("error"):
        message = done.stderr.strip().splitlines()[:2]
        raise ValueError(f"fio refused block size {job.bs} (rw={job.rw}, direct={int(direct)}): {' '.join(message)}")
    return _result(job, data, direct, directory)


def _result(job: FioJob, data: dict[str, Any], direct: bool, directory: Path) -> LoadResult:
    sides = [data[side] for side in ("read", "write") if data[side]["io_bytes"] > 0]
    bw_kib = sum(side["bw"] for side in sides)
    iops = sum(side["iops"] for side in sides)
    main = max(sides, key=lambda side: side["io_bytes"])
    clat = main["clat_ns"]
    points = {float(k): v / 1e6 for k, v in clat.get("percentile", {}).items()}

    def pct(p: float) -> float:
        return float(points.get(p, float("nan")))

    latency = Distribution(
        count=int(clat.get("N", 0)),
        mean=clat["mean"] / 1e6,
        stddev=clat["stddev"] / 1e6,
        min=clat["min"] / 1e6,
        max=clat["max"] / 1e6,
        **{name: pct(p) for name, p in PERCENTILES.items()},
    )
    label = f"{job.rw} bs={job.bs} qd={job.iodepth}x{job.numjobs}" + ("" if direct else " (cached)")
    return LoadResult(
        label=label,
        mode="fio",
        config={"fio": job.__dict__ | {"direct": direct}, "directory": str(directory), "cached": not direct},
        distributions={"latency": latency, "e2e": latency},
        scalars={
            "bw_mib_s": bw_kib / 1024,
            "iops": iops,
            "requests": float(latency.count),
            "errors": 0.0,
            "error_rate": 0.0,
        },
    )


def metadata_load(directory: Path, files: int = 2000, threads: int = 4) -> LoadResult:
    """mdtest-style: each thread creates, stats and removes its own files; ops/s per phase."""
    root = directory / f"aif-md-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    per_thread = max(files // threads, 1)
    records: list[RequestRecord] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    rates: dict[str, float] = {}

    def phase(name: str, op: Any) -> None:
        barrier = threading.Barrier(threads)

        def work(t: int) -> None:
            folder = root / f"t{t}"
            folder.mkdir(exist_ok=True)
            barrier.wait()
            mine: list[RequestRecord] = []
            for i in range(per_thread):
                start = time.perf_counter() - t0
                op(folder / f"f{i}")
                mine.append(RequestRecord(index=len(mine), scheduled=start, sent=start, end=time.perf_counter() - t0))
            with lock:
                records.extend(mine)

        begin = time.perf_counter()
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates[f"{name}_s"] = per_thread * threads / (time.perf_counter() - begin)

    def create(path: Path) -> None:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))

    try:
        phase("create", create)
        phase("stat", os.stat)
        phase("remove", os.unlink)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
    for n, record in enumerate(records):
        record.index = n
    result = summarize(
        records,
        label=f"metadata files={per_thread * threads} threads={threads}",
        mode="metadata",
        config={"directory": str(directory), "files": per_thread * threads, "threads": threads},
    )
    result.scalars.update(rates)
    return result
