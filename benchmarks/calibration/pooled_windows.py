"""A calibration rate measured in windows: each window's per-request figures, and their pool.

On a VM one stall of the host delays every request due during it, so the p99 of one short
window rests on the few stalls that happened to fall in it. A rate measured in several windows
is judged on their requests pooled (every window weighs the same: they last equally long);
each window's own p99s stay visible beside the pooled ones (``by_window``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Pooled", "Window", "percentile"]


@dataclass(frozen=True)
class Window:
    """One measurement window of a rate, against the server's truth: per-request figures (ms) and the client's.

    The engine's windows also carry its schedule lag, achieved/target, the server's CPU and
    whether the result was marked client-bound; the reference client's leave them empty.
    """

    lateness_ms: list[float]
    errors_ms: list[float]
    cpu_cores: float
    steal_ms: tuple[float, float] | None  # client cores, server core; None where /proc/stat has no steal
    sent: int
    lag_ms: list[float] = field(default_factory=list)
    ratio: float = math.nan
    server_cpu_cores: float = math.nan
    client_bound: bool = False


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (numpy's linear one, as the engine's figures), NaN when empty."""
    return float(np.percentile(values, q)) if values else math.nan


class Pooled:
    """Figures of a rate's windows: percentiles of their requests pooled, the client's CPU their mean."""

    windows: tuple[Window, ...]

    def _all(self, name: str) -> list[float]:
        return [value for window in self.windows for value in getattr(window, name)]

    def _mean(self, name: str) -> float:
        return float(np.mean([getattr(window, name) for window in self.windows]))

    @property
    def lateness_p99_ms(self) -> float:
        """Server-seen lateness p99 of every window's requests."""
        return percentile(self._all("lateness_ms"), 99)

    @property
    def error_p50_ms(self) -> float:
        """TTFT error p50 of every window's requests."""
        return percentile(self._all("errors_ms"), 50)

    @property
    def error_p99_ms(self) -> float:
        """TTFT error p99 of every window's requests."""
        return percentile(self._all("errors_ms"), 99)

    @property
    def cpu_cores(self) -> float:
        """The client's CPU, the windows' mean."""
        return self._mean("cpu_cores")

    @property
    def matched(self) -> int:
        """Requests matched with the server's truth, in all windows."""
        return len(self._all("errors_ms"))

    def by_window(self) -> str:
        """Each window's TTFT error p99 / lateness p99 (``+0.41 / 0.30; +2.35 / 1.90``), ``-`` for one window."""
        if len(self.windows) < 2:
            return "-"
        return "; ".join(
            f"{percentile(w.errors_ms, 99):+.2f} / {percentile(w.lateness_ms, 99):.2f}" for w in self.windows
        )

    def steal(self) -> str:
        """``10 / 0`` (ms taken by the host from the client's cores / the server's, all windows), or not available."""
        taken = [pair for pair in (window.steal_ms for window in self.windows) if pair is not None]
        if len(taken) < len(self.windows):
            return "not available"
        return f"{sum(client for client, _ in taken):.0f} / {sum(server for _, server in taken):.0f}"
