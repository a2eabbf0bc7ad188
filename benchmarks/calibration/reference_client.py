"""A bare reference client for the calibration: what one Python process on this machine can do at best.

No engine, no records, no parsing beyond finding the first event: a constant-rate schedule
paced as the engine paces (its timerfd ``Pacer``), keep-alive connections on asyncio protocols
(uvloop; a new one is made in its own task, off the pacing, as the engine's pool does), the
request written at its scheduled time, the first ``data:`` bytes of the response stamped on
arrival and the stream read to its end, with the garbage collector off while it runs, as the
engine has it (in the calibration's process a full collection walks the engine's records of
every earlier point). Its lateness and TTFT error against the server's truth are the floor the
engine's are compared with: what the engine adds is its own cost.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field

from pytest_aifactory.load.pacing import Pacer, run_interruptible

__all__ = ["ReferenceRun", "run_reference"]


@dataclass
class ReferenceRun:
    """Per request id: scheduled send and first event's arrival (monotonic); the client's CPU cores."""

    scheduled: dict[str, float] = field(default_factory=dict)
    first_event: dict[str, float] = field(default_factory=dict)
    cpu_cores: float = float("nan")


class _Stream(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, run: ReferenceRun, idle: list[_Stream]) -> None:
        self.run, self.idle = run, idle
        self.transport: asyncio.Transport | None = None
        self.request_id = ""
        self.seen_event = False
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request_id: str, data: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.request_id, self.seen_event = request_id, False
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.done

    def data_received(self, data: bytes) -> None:
        if not self.seen_event and b"data:" in data:
            self.run.first_event[self.request_id] = time.monotonic()
            self.seen_event = True
        if data.endswith(b"0\r\n\r\n") and self.done is not None:
            self.done.set_result(None)
            self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))


async def _connect_and_send(
    host: str, port: int, run: ReferenceRun, idle: list[_Stream], request_id: str, data: bytes
) -> None:
    _, stream = await asyncio.get_running_loop().create_connection(lambda: _Stream(run, idle), host, port)
    await stream.send(request_id, data)


async def _drive(host: str, port: int, rate: float, duration_s: float, tag: str, run: ReferenceRun) -> None:
    idle: list[_Stream] = []
    body = b'{"model":"synthetic","prompt":"tok tok tok tok","max_tokens":32,"stream":true}'
    count = int(rate * duration_s)
    requests = [
        (
            f"{tag}-{i}",
            b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nX-Request-Id: %s-%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (host.encode(), port, tag.encode(), i, len(body), body),
        )
        for i in range(count)
    ]
    pending: list[asyncio.Future[None]] = []
    pacer = Pacer()
    pacer.open()
    cpu, start = time.process_time(), time.monotonic() + 0.05
    for i, (request_id, data) in enumerate(requests):
        due = start + i / rate
        await pacer.until(due)
        run.scheduled[request_id] = due
        if idle:
            pending.append(idle.pop().send(request_id, data))
        else:  # a new connection, made in its own task as the engine's pool does: the pacing goes on meanwhile
            pending.append(asyncio.ensure_future(_connect_and_send(host, port, run, idle, request_id, data)))
    await asyncio.gather(*pending, return_exceptions=True)
    run.cpu_cores = (time.process_time() - cpu) / (time.monotonic() - start)
    pacer.close()
    for stream in idle:
        if stream.transport is not None:
            stream.transport.close()


def run_reference(host: str, port: int, rate: float, duration_s: float, tag: str) -> ReferenceRun:
    """Drive ``rate`` requests per second for ``duration_s`` at the synthetic server; ids are ``{tag}-{i}``."""
    run = ReferenceRun()
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        run_interruptible(_drive(host, port, rate, duration_s, tag, run))  # on uvloop, as the engine
    finally:
        if collecting:
            gc.enable()
    return run
