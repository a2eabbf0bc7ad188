"""``slotted-llm``: the synthetic LLM server with a known capacity, for testing capacity search and gates.

It has ``slots`` request slots and a fixed ``service_ms`` per request (times ``slowdown``,
the knob that plants a regression: 1.3 is 30 % slower). A request waits in FIFO order for a
free slot, holds it for the service time while its ``max_tokens`` tokens stream out evenly,
then frees it. So the server completes at most ``slots / service time`` requests per second:
under constant arrivals below that rate no request waits (a D/D/c queue), above it the queue
and the latency grow for as long as the load lasts. Its capacity at any latency bound
between one and a few service times is therefore ``capacity_rate(slots, service_ms)``,
within a few percent for runs of a few seconds. ``version`` is reported as the service's
version, so that runs of "different versions" can be told apart. ``metrics=true`` serves
vLLM's ``/metrics`` families (``served_metrics``), its queue time being the wait for a slot.

Run: ``python -m pytest_aifactory.services.slotted_llm --port 8000 --slots 4 --service-ms 50``.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.served_metrics import ServedMetrics
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec
from pytest_aifactory.services.synthetic_llm import (
    SyntheticServer,
    SyntheticTiming,
    TimedStream,
    metrics_flag,
    metrics_meta,
    run,
    serve,
)

__all__ = ["DEFAULTS", "build", "capacity_rate", "main"]

DEFAULTS: dict[str, SettingValue] = {"slots": 4, "service_ms": 50.0, "slowdown": 1.0, "version": "1", "metrics": False}


def capacity_rate(slots: int, service_ms: float, slowdown: float = 1.0) -> float:
    """Requests per second the server completes at most: ``slots`` / service time."""
    return slots * 1000.0 / (service_ms * slowdown)


def build(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The slotted server as a service."""
    return ServiceSpec(
        name="slotted-llm",
        command=(
            "{python}",
            "-m",
            "pytest_aifactory.services.slotted_llm",
            "--host={host}",
            "--port={ports.http}",
            f"--slots={settings['slots']}",
            f"--service-ms={settings['service_ms']}",
            f"--slowdown={settings['slowdown']}",
            *metrics_flag(settings),
        ),
        probe=HttpProbe(path="/health"),
        readiness_timeout_s=30,
        meta={"model": "synthetic", "version": str(settings["version"]), **metrics_meta(settings)},
    )


class _SlottedServer(SyntheticServer):
    """Streams like the synthetic server, but only ``slots`` requests at a time, each for a fixed time."""

    def __init__(self, slots: int, service_s: float, metrics: ServedMetrics | None = None) -> None:
        super().__init__(SyntheticTiming(ttft_ms=0.0, itl_ms=0.0), metrics)
        self.free = slots
        self.service_s = service_s
        self.waiting: collections.deque[TimedStream] = collections.deque()  # in arrival order
        self.serving: set[TimedStream] = set()

    def due(self, started: float, chunk: int, chunks: int) -> float:
        """Chunks spread evenly over the service time, from when the request got its slot."""
        return started + self.service_s * (chunk + 1) / chunks

    def admit(self, stream: TimedStream) -> None:
        """Start it in a free slot, or queue it for the next one."""
        self.waiting.append(stream)
        self.waited(+1)
        self.start_waiting()

    def finished(self, stream: TimedStream) -> None:
        super().finished(stream)
        self.release(stream)

    def abandoned(self, stream: TimedStream) -> None:
        """Its client went away: it leaves the queue, or frees its slot."""
        if stream in self.waiting:
            self.waiting.remove(stream)
            self.waited(-1)
        self.release(stream)

    def release(self, stream: TimedStream) -> None:
        if stream in self.serving:
            self.serving.remove(stream)
            self.free += 1
            self.start_waiting()

    def start_waiting(self) -> None:
        while self.free and self.waiting:
            stream = self.waiting.popleft()
            self.waited(-1)
            self.free -= 1
            self.serving.add(stream)
            stream.start(time.monotonic())

    def waited(self, change: int) -> None:
        """Count a request as waiting for a slot (in the served metrics)."""
        if self.metrics is not None:
            self.metrics.waiting.inc(change)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    for flag, kind in (("--slots", int), ("--service-ms", float), ("--slowdown", float)):
        parser.add_argument(flag, type=kind, default=DEFAULTS[flag[2:].replace("-", "_")])
    parser.add_argument("--metrics", action="store_true", help="serve vLLM's /metrics families")
    args = parser.parse_args()
    if args.slots < 1 or args.service_ms <= 0 or args.slowdown <= 0:
        parser.error("--slots must be >= 1, --service-ms and --slowdown > 0")
    metrics = ServedMetrics() if args.metrics else None
    run(serve(args.host, args.port, _SlottedServer(args.slots, args.service_ms * args.slowdown / 1000, metrics)))


if __name__ == "__main__":
    main()
