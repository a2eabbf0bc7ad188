"""What the engine records of each request: every timestamp, token counts and the outcome.

Times are seconds on the run's own clock, whose zero is the run's start: a request scheduled
at 0.25 was due 250 ms after the start. Worker processes and client nodes share the start,
so their records merge on one time axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_aifactory.core.scheduling import NORMAL

__all__ = ["UNHELD_WAKEUP", "Chunk", "ClientHealth", "RequestRecord", "attribute_tokens"]

UNHELD_WAKEUP = "machine default"  # ``ClientHealth.wakeup_latency`` when ``load.wakeup`` held nothing


@dataclass(slots=True)
class Chunk:
    """One streamed piece of output: when it arrived and how many tokens it carried."""

    at: float
    tokens: int


@dataclass
class RequestRecord:
    """The life of one request.

    ``scheduled`` is when the request was due (open loop: from the precomputed schedule;
    closed loop: when a client slot became free), ``sent`` when it really left. Latencies are
    measured from ``scheduled``, so time spent queueing in the client is never hidden, and
    ``sent - scheduled`` (the schedule lag) is reported for every run. ``extra`` holds amounts
    reported as rates (``mib`` -> ``mib_s``), ``values`` per-request scores reported as
    their mean and minimum (``recall_at_10``, ``min_recall_at_10``). ``marks`` holds named
    instants within the request (a pipeline's stage boundaries: ``embed_end``...), ``turns``
    the records of a session's requests (a conversation's turns).
    """

    index: int
    scheduled: float
    sent: float | None = None
    first_token: float | None = None
    end: float | None = None
    chunks: list[Chunk] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens_estimated: bool = False
    status: int | None = None
    error: str | None = None
    warmup: bool = False
    worker: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    turns: list[RequestRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Completed without error."""
        return self.error is None and self.end is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        """Inverse of ``to_json``."""
        chunks = [Chunk(**c) for c in data.get("chunks", [])]
        turns = [cls.from_json(t) for t in data.get("turns", [])]
        return cls(**{**data, "chunks": chunks, "turns": turns})


@dataclass(frozen=True)
class ClientHealth:
    """How one load-generating process fared during its load window.

    ``cpu_s`` is the CPU time of the whole process, ``loop_cpu_s`` that of the thread running
    the event loop (the one that paces and sends: when it is near one core, the client is the
    limit), ``stall_max_ms`` the longest the event loop was blocked beyond its watch tick,
    ``event_loop`` which loop ran (``uvloop 0.21.0`` or ``asyncio``), ``clock_zero`` the
    ``time.monotonic()`` of the records' time zero (to match them with a server's own times),
    ``clock_zero_wall`` the same instant as ``time.time()`` on the process's host (to match
    them with a service job's samples, such as its energy reads), ``wakeup_latency`` what the
    CPUs' wake-up latency was held at during the load (``load.wakeup``), ``scheduling`` the
    policy the event loop's thread ran at (``core.scheduling``).
    """

    worker: str
    wall_s: float
    cpu_s: float
    loop_cpu_s: float
    stall_max_ms: float
    event_loop: str
    clock_zero: float = 0.0
    clock_zero_wall: float | None = None
    wakeup_latency: str = UNHELD_WAKEUP
    scheduling: str = NORMAL

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def attribute_tokens(texts: list[str], total: int | None) -> tuple[list[int], bool]:
    """Tokens carried by each content chunk, and whether that split is an estimate.

    Without a total, each chunk counts as one token. With the server's total (``usage``):
    when it equals the chunk count, one each (exact); otherwise the total is split in
    proportion to each chunk's text length, every chunk getting at least one token when
    there are enough (largest remainder), and the split is marked as estimated.
    """
    count = len(texts)
    if total is None or total == count:
        return [1] * count, False
    if count == 0:
        return [], True
    if total < count:
        return [1] * count, True
    base = [1] * count
    spare = total - count
    weights = [max(len(t), 1) for t in texts]
    scale = spare / sum(weights)
    shares = [w * scale for w in weights]
    floors = [int(s) for s in shares]
    left = spare - sum(floors)
    order = sorted(range(count), key=lambda i: shares[i] - floors[i], reverse=True)
    for i in order[:left]:
        floors[i] += 1
    return [b + f for b, f in zip(base, floors, strict=True)], True
