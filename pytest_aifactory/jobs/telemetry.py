"""What runs beside a service inside its job: a log forwarder to Loki and a resource monitor.

Both are threads of the job process, so they start with the service and stop with the job.
The monitor samples the service's process tree and the node from ``/proc`` (and GPUs through
NVML when ``pynvml`` and a driver are there) and pushes to the Pushgateway with ``service``,
``job_id`` and ``node`` labels, and appends every sample to the job folder's
``monitor.jsonl`` (read back by ``resource_series`` for the reports); the forwarder tails the
service's stdout and stderr. A third thread reads the node's energy counters (``jobs.energy``)
every ``ENERGY_INTERVAL_S`` into ``energy.jsonl``, so that a load point's energy can be cut
from them however short the point.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.delivery.loki import LokiPusher
from pytest_aifactory.delivery.pushgateway import GatewayTarget, Pushgateway
from pytest_aifactory.jobs.energy import EnergyMeter
from pytest_aifactory.jobs.processes import process_tree

__all__ = [
    "ENERGY_INTERVAL_S",
    "MONITOR_FILE",
    "MONITOR_METRICS",
    "Telemetry",
    "TelemetryThreads",
    "resource_series",
    "sample_node",
    "sample_tree",
]

MONITOR_FILE = "monitor.jsonl"
ENERGY_INTERVAL_S = 0.5  # energy counters are cheap to read; a point's ends fall at most this far from a read

MONITOR_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "aifactory_service_cpu_seconds_total": ("CPU seconds used by the service's process tree", ()),
    "aifactory_service_memory_bytes": ("Resident memory of the service's process tree", ()),
    "aifactory_service_processes": ("Processes in the service's tree", ()),
    "aifactory_node_cpu_utilization_ratio": ("Busy share of the node's CPUs since the last sample", ()),
    "aifactory_node_memory_used_bytes": ("Memory in use on the node (total - available)", ()),
    "aifactory_node_network_bytes_total": ("Bytes through the node's network interfaces", ("direction",)),
    "aifactory_node_disk_bytes_total": ("Bytes read and written by the node's disks", ("direction",)),
    "aifactory_gpu_utilization_ratio": ("GPU busy share (NVML)", ("gpu",)),
    "aifactory_gpu_memory_used_bytes": ("GPU memory in use (NVML)", ("gpu",)),
    "aifactory_gpu_power_watts": ("GPU power draw (NVML)", ("gpu",)),
}
_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Telemetry:
    """Where a job sends its logs and resource samples (all optional)."""

    run_id: str
    spool_dir: Path
    loki_url: str | None = None
    pushgateway: GatewayTarget | None = None
    interval_s: float = 5.0


def sample_tree(root: int) -> tuple[float, int, int]:
    """(CPU seconds, resident bytes, process count) of ``root`` and its descendants."""
    cpu, rss, count = 0.0, 0, 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _CLK
        rss += int(fields[21]) * _PAGE
        count += 1
    return cpu, rss, count


def sample_node() -> dict[str, float]:
    """Node counters: CPU busy/total jiffies, memory used, network and disk bytes."""
    cpu = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    meminfo = {
        line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
    }
    rx = tx = 0
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, data = line.split(":", 1)
        if name.strip() != "lo":
            values = data.split()
            rx, tx = rx + int(values[0]), tx + int(values[8])
    read = written = 0
    for line in Path("/proc/diskstats").read_text().splitlines():
        parts = line.split()
        if len(parts) > 9 and not parts[2].startswith(("loop", "ram")):
            read, written = read + int(parts[5]) * 512, written + int(parts[9]) * 512
    return {
        "cpu_busy": float(sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)),
        "cpu_total": float(sum(cpu)),
        "mem_used": float(meminfo.get("MemTotal", 0) - meminfo.get("MemAvailable", 0)),
        "net_rx": float(rx),
        "net_tx": float(tx),
        "disk_read": float(read),
        "disk_written": float(written),
    }


def _gpu_samples() -> list[tuple[str, float, float, float]]:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU: nothing to report
        return []
    samples = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        power = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
        samples.append((str(index), float(util), float(memory), float(power)))
    return samples


def resource_series(path: Path, limit: int = 1000) -> dict[str, Any] | None:
    """The samples of a job's ``monitor.jsonl`` as columns (every k-th, at most ``limit``); None without any.

    ``t`` is Unix time, ``cpu_cores`` the service tree's CPU use between samples (cores),
    ``rss_mib`` its resident memory, ``node_cpu`` the node's busy share; ``gpus`` per GPU its
    busy share, memory (MiB) and power (W), when NVML saw any.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    samples = []
    for line in lines:
        try:
            samples.append(json.loads(line))
        except ValueError:  # a line cut short by the job's end
            continue
    if len(samples) < 2:
        return None
    pairs = list(itertools.pairwise(samples))[:: max(1, math.ceil((len(samples) - 1) / limit))]
    series: dict[str, Any] = {
        "t": [b["t"] for _, b in pairs],
        "cpu_cores": [round((b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-9), 4) for a, b in pairs],
        "rss_mib": [round(b["rss"] / 2**20, 2) for _, b in pairs],
        "node_cpu": [round(b["node_cpu"], 4) for _, b in pairs],
        "gpus": {},
    }
    for gpu in sorted({g for _, b in pairs for g in b.get("gpus", {})}):
        values = [b.get("gpus", {}).get(gpu) for _, b in pairs]
        series["gpus"][gpu] = {
            key: [v[i] if v else None for v in values] for i, key in enumerate(("util", "memory_mib", "power_w"))
        }
    return series


class TelemetryThreads:
    """Starts the forwarder and the monitor for one service process; ``stop()`` flushes them.

    ``env`` is the service's environment (the profile's ``env``, the run's S3 keys...): its
    secrets are masked in what is forwarded, as well as those of the job's own environment.
    The monitor runs when there is a Pushgateway or a ``samples_file`` to append to; the
    energy reader when there is an ``energy_file`` (with no working source it writes one
    line saying why, and stops).
    """

    def __init__(
        self,
        telemetry: Telemetry,
        service: str,
        job_id: str,
        pid: int,
        logs: dict[str, Path],
        env: Mapping[str, str],
        samples_file: Path | None = None,
        energy_file: Path | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.samples_file = samples_file
        self.service = service
        self.job_id = job_id
        self.pid = pid
        self.node = socket.gethostname()
        self.redactor = Redactor(named=env)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.loki = (
            LokiPusher(
                telemetry.loki_url, telemetry.run_id, telemetry.spool_dir / "loki", self.redactor, f"job-{job_id}"
            )
            if telemetry.loki_url
            else None
        )
        self.gateway = (
            Pushgateway(telemetry.pushgateway, telemetry.run_id, telemetry.spool_dir / "pushgateway", self.redactor)
            if telemetry.pushgateway
            else None
        )
        if self.loki is not None:
            for stream, path in logs.items():
                self._start(self._forward, stream, path)
        if self.gateway is not None or samples_file is not None:
            self._start(self._monitor)
        if energy_file is not None:
            self._start(self._read_energy, energy_file)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"aifactory-{target.__name__}")
        thread.start()
        self._threads.append(thread)

    def _forward(self, stream: str, path: Path) -> None:
        assert self.loki is not None
        position = 0
        while True:
            stopping = self._stop.is_set()
            try:
                with path.open("rb") as handle:
                    handle.seek(position)
                    chunk = handle.read()
            except OSError:
                chunk = b""
            complete = chunk[: chunk.rfind(b"\n") + 1] if not stopping else chunk
            position += len(complete)
            for raw in complete.decode("utf-8", errors="replace").splitlines():
                if raw.strip():
                    lowered = raw.lower()
                    level = "error" if "error" in lowered else "warning" if "warn" in lowered else "info"
                    self.loki.log(
                        raw, service=self.service, level=level, stream=stream, job_id=self.job_id, node=self.node
                    )
            if stopping:
                return
            self._stop.wait(0.5)

    def _monitor(self) -> None:
        registry = CollectorRegistry()
        gauges = {
            name: Gauge(name, text, labels, registry=registry) for name, (text, labels) in MONITOR_METRICS.items()
        }
        group = f"service:{self.service}:{self.job_id}"
        previous = sample_node()
        while not self._stop.wait(self.telemetry.interval_s):
            cpu, rss, count = sample_tree(self.pid)
            node = sample_node()
            total = node["cpu_total"] - previous["cpu_total"]
            busy = (node["cpu_busy"] - previous["cpu_busy"]) / total if total else 0.0
            gpus = _gpu_samples()
            previous = node
            if self.samples_file is not None:
                gpu_values = {gpu: [util, memory / 2**20, power] for gpu, util, memory, power in gpus}
                sample = {"t": time.time(), "cpu_s": cpu, "rss": rss, "node_cpu": busy, "gpus": gpu_values}
                with self.samples_file.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(sample) + "\n")
            if self.gateway is None:
                continue
            gauges["aifactory_service_cpu_seconds_total"].set(cpu)
            gauges["aifactory_service_memory_bytes"].set(rss)
            gauges["aifactory_service_processes"].set(count)
            gauges["aifactory_node_cpu_utilization_ratio"].set(busy)
            gauges["aifactory_node_memory_used_bytes"].set(node["mem_used"])
            gauges["aifactory_node_network_bytes_total"].labels("rx").set(node["net_rx"])
            gauges["aifactory_node_network_bytes_total"].labels("tx").set(node["net_tx"])
            gauges["aifactory_node_disk_bytes_total"].labels("read").set(node["disk_read"])
            gauges["aifactory_node_disk_bytes_total"].labels("write").set(node["disk_written"])
            for gpu, util, memory, power in gpus:
                gauges["aifactory_gpu_utilization_ratio"].labels(gpu).set(util)
                gauges["aifactory_gpu_memory_used_bytes"].labels(gpu).set(memory)
                gauges["aifactory_gpu_power_watts"].labels(gpu).set(power)
            self.gateway.push(
                group, registry, extra_labels={"service": self.service, "job_id": self.job_id, "node": self.node}
            )

    def _read_energy(self, path: Path) -> None:
        meter = EnergyMeter()
        try:
            with path.open("a", encoding="utf-8") as handle:
                while True:
                    handle.write(json.dumps(meter.sample()) + "\n")
                    handle.flush()
                    if not meter.sources or self._stop.wait(ENERGY_INTERVAL_S):
                        return
        finally:
            meter.close()

    def event(self, line: str, level: str = "info") -> None:
        """A lifecycle line of the service (started, stopped...) in its Loki stream."""
        if self.loki is not None:
            self.loki.log(
                line, service=self.service, level=level, source="aifactory", job_id=self.job_id, node=self.node
            )

    def stop(self) -> None:
        """Flush the last log lines and stop both threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.loki is not None:
            self.loki.close()
