"""Energy counters of a service's node, read beside the service inside its job.

Two sources give a cumulative counter the job can read on its own node:

- ``rapl``: the CPU packages' energy from the Linux powercap driver
  (``/sys/class/powercap/intel-rapl:N/energy_uj``, also on AMD). Every package zone
  (``name`` = ``package-N``) is summed; its sub-zones (``intel-rapl:N:M``: core, uncore, dram)
  are left out, as are ``psys`` (the whole platform, packages included) and the
  ``intel-rapl-mmio`` duplicate of package 0, so nothing is counted twice. A counter wraps
  at its ``max_energy_range_uj``: a read lower than the one before adds that range.
  Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694): unreadable is
  "not available", with that reason.
- ``nvml``: each of the job's GPUs' ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the
  driver loaded; Volta and newer), summed. The job's GPUs are those ``CUDA_VISIBLE_DEVICES``
  names (indexes or UUIDs); without it, every GPU NVML sees.

``EnergyMeter`` opens the sources that work and remembers why the others do not; each
``sample()`` is the joules every working source counted since the meter opened. The job's
monitor appends samples to ``energy.jsonl`` (``ENERGY_FILE``); the load side turns them
into a point's energy (``workloads.energy``). Tests point ``AIF_POWERCAP_ROOT`` at a
stand-in tree.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ENERGY_FILE",
    "POWERCAP_ROOT_ENV",
    "EnergyMeter",
    "EnergyUnavailableError",
    "NvmlEnergy",
    "RaplEnergy",
    "powercap_root",
]

ENERGY_FILE = "energy.jsonl"
POWERCAP_ROOT_ENV = "AIF_POWERCAP_ROOT"
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")  # top-level zones only: sub-zones have a second ":M"


class EnergyUnavailableError(Exception):
    """A source gives no energy on this node; the message says why."""


class EnergySource(Protocol):
    """A cumulative energy counter of the node (or of the job's GPUs)."""

    name: str

    def joules(self) -> float:
        """Joules counted since the source was opened."""
        ...

    def close(self) -> None:
        """Release what the source holds (NVML's session)."""
        ...


def powercap_root() -> Path:
    """Where the powercap zones are: ``$AIF_POWERCAP_ROOT`` (a stand-in tree) or ``/sys/class/powercap``."""
    return Path(os.environ.get(POWERCAP_ROOT_ENV) or "/sys/class/powercap")


def _read_int(path: Path) -> int:
    """An integer sysfs file; ``EnergyUnavailableError`` naming the file when it cannot be read."""
    try:
        return int(path.read_text().strip())
    except PermissionError:
        raise EnergyUnavailableError(
            f"{path} is not readable by this user (root only since Linux 5.10, CVE-2020-8694; "
            "a site grants it with a udev rule or chmod)"
        ) from None
    except (OSError, ValueError) as exc:
        raise EnergyUnavailableError(f"{path} cannot be read: {exc}") from None


class RaplEnergy:
    """The summed package zones of a powercap tree, wrap-around handled per zone."""

    name = "rapl"

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise EnergyUnavailableError(f"no {root} on this node (no powercap driver)")
        self.zones: list[tuple[Path, int]] = []  # (energy_uj file, max_energy_range_uj)
        for zone in sorted(p for p in root.iterdir() if _PACKAGE_ZONE.fullmatch(p.name)):
            try:
                name = (zone / "name").read_text().strip()
            except OSError:
                continue
            if name.startswith("package-"):
                self.zones.append((zone / "energy_uj", _read_int(zone / "max_energy_range_uj")))
        if not self.zones:
            raise EnergyUnavailableError(f"no RAPL package zone (intel-rapl:N named package-N) under {root}")
        self._last = [_read_int(path) for path, _ in self.zones]
        self._total_uj = 0

    def joules(self) -> float:
        """Joules of every package since the source opened."""
        for i, (path, wrap) in enumerate(self.zones):
            now = _read_int(path)
            grown = now - self._last[i]
            self._total_uj += grown if grown >= 0 else grown + wrap  # wrapped past max_energy_range_uj
            self._last[i] = now
        return self._total_uj / 1e6

    def close(self) -> None:
        """Nothing held: sysfs files are opened per read."""


def _nvml_handles(nvml: Any, visible: str | None) -> list[Any]:
    """Handles of the job's GPUs: those ``CUDA_VISIBLE_DEVICES`` names, else every GPU."""
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    names = [name.strip() for name in visible.split(",") if name.strip()]
    return [
        nvml.nvmlDeviceGetHandleByUUID(name) if not name.isdigit() else nvml.nvmlDeviceGetHandleByIndex(int(name))
        for name in names
    ]


class NvmlEnergy:
    """The summed ``nvmlDeviceGetTotalEnergyConsumption`` (mJ) of the job's GPUs."""

    name = "nvml"

    def __init__(self, nvml: Any | None = None, visible: str | None = None) -> None:
        if nvml is None:
            try:
                import pynvml  # type: ignore[import-not-found]
            except ImportError:
                raise EnergyUnavailableError("pynvml is not installed (nvidia-ml-py)") from None
            nvml = pynvml
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise EnergyUnavailableError(f"NVML cannot start (no GPU driver?): {exc}") from None
        try:
            self.handles = _nvml_handles(nvml, visible)
            if not self.handles:
                raise EnergyUnavailableError("no GPU for this job")
            self._start = self._millijoules()
        except nvml.NVMLError as exc:
            nvml.nvmlShutdown()
            raise EnergyUnavailableError(
                f"NVML gives no total energy (nvmlDeviceGetTotalEnergyConsumption needs Volta or newer): {exc}"
            ) from None
        except EnergyUnavailableError:
            nvml.nvmlShutdown()
            raise

    def _millijoules(self) -> int:
        return sum(int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) for handle in self.handles)

    def joules(self) -> float:
        """Joules of the job's GPUs since the source opened."""
        try:
            return (self._millijoules() - self._start) / 1000
        except self.nvml.NVMLError as exc:
            raise EnergyUnavailableError(f"NVML energy read failed: {exc}") from None

    def close(self) -> None:
        """Shut NVML down (it was started for this source)."""
        with contextlib.suppress(self.nvml.NVMLError):  # the driver went away: nothing left to shut down
            self.nvml.nvmlShutdown()


class EnergyMeter:
    """The sources that work on this node, and why the others do not."""

    def __init__(self, openers: dict[str, Callable[[], EnergySource]] | None = None) -> None:
        if openers is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            openers = {"rapl": lambda: RaplEnergy(powercap_root()), "nvml": lambda: NvmlEnergy(visible=visible)}
        self.sources: dict[str, EnergySource] = {}
        self.missing: dict[str, str] = {}
        for name, opener in openers.items():
            try:
                self.sources[name] = opener()
            except EnergyUnavailableError as exc:
                self.missing[name] = str(exc)

    def sample(self) -> dict[str, Any]:
        """``{"t": unix time, "joules": {source: J since open}, "missing": {source: reason}}``.

        A source that fails to read is dropped for good (its reason kept): a counter with a
        gap in its reads can no longer say what a window used.
        """
        joules = {}
        for name, source in list(self.sources.items()):
            try:
                joules[name] = source.joules()
            except EnergyUnavailableError as exc:
                self.sources.pop(name).close()
                self.missing[name] = str(exc)
        return {"t": time.time(), "joules": joules, "missing": dict(self.missing)}

    def close(self) -> None:
        """Close every source still open (NVML is shut down)."""
        for source in self.sources.values():
            source.close()
        self.sources.clear()
