"""``synthetic-llm``: an OpenAI-compatible streaming server with known timing, for calibration.

It answers ``/v1/completions`` and ``/v1/chat/completions`` with ``max_tokens`` tokens: the
first ``ttft_ms`` after the request arrived, then one chunk every ``itl_ms`` (each carrying
``tokens_per_chunk`` tokens), on an absolute timetable so that delays do not accumulate.
Chat streams open as vLLM's do, with a role-only delta just before the first text; with
``stream_options.continuous_usage_stats`` every chunk carries the running usage.
The load engine measured against it must find these delays: what it finds beyond them is
the client's (and the server loop's) own error. No framework, so that the server is cheap per
request and not the limit of a calibration: one event loop (uvloop where installed), an
``asyncio.Protocol`` per connection, each stream's frames encoded when its request is read
(identical frames once) and written by loop timers, never before they are due.
``error_every=N`` answers every N-th request with HTTP 500; ``cpu=N`` pins the server to core N
(calibration keeps it off the client's core); ``realtime=true`` runs its loop at real-time
priority (``core.scheduling``: ordinary tasks on its core no longer delay its reads and
writes); ``metrics=true`` serves vLLM's ``/metrics``
families of what it really did (``served_metrics``), so that loads against it scrape the
server's own view as they do vLLM's.

It records its own truth for every request that carries an ``X-Request-Id`` header: when its
first byte was read and when the first token was written to the socket (``time.monotonic()``,
CLOCK_MONOTONIC, the clock of the load engine on the same machine). ``GET /truth`` returns
``{"clock": "monotonic", "requests": {id: [read, first_token_written]}, "cpu_s": s, "scheduling": p}``
(``cpu_s``: the CPU time the server process has used, so that a caller can tell whether the
server was its own limit; ``scheduling``: the policy its loop runs at); ``DELETE /truth``
forgets the requests.

Run: ``python -m pytest_aifactory.services.synthetic_llm --host 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import signal
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass

import orjson

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.core.scheduling import NORMAL, realtime_priority
from pytest_aifactory.services.served_metrics import ServedMetrics
from pytest_aifactory.services.settings import switch
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

__all__ = ["DEFAULTS", "SyntheticServer", "SyntheticTiming", "TimedStream", "build", "main", "run", "serve"]

DEFAULTS: dict[str, SettingValue] = {
    "ttft_ms": 20.0,
    "itl_ms": 5.0,
    "tokens_per_chunk": 1,
    "error_every": 0,
    "cpu": -1,
    "realtime": False,
    "metrics": False,
}


def build(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The synthetic server as a service."""
    return ServiceSpec(
        name="synthetic-llm",
        command=(
            "{python}",
            "-m",
            "pytest_aifactory.services.synthetic_llm",
            "--host={host}",
            "--port={ports.http}",
            f"--ttft-ms={settings['ttft_ms']}",
            f"--itl-ms={settings['itl_ms']}",
            f"--tokens-per-chunk={settings['tokens_per_chunk']}",
            f"--error-every={settings['error_every']}",
            f"--cpu={settings['cpu']}",
            *(("--realtime",) if switch(settings["realtime"]) else ()),
            *metrics_flag(settings),
        ),
        probe=HttpProbe(path="/health"),
        readiness_timeout_s=30,
        meta=metrics_meta(settings),
    )


def metrics_flag(settings: Mapping[str, SettingValue]) -> tuple[str, ...]:
    """``--metrics`` when the ``metrics`` setting asks for vLLM's ``/metrics`` (off by default)."""
    return ("--metrics",) if switch(settings["metrics"]) else ()


def metrics_meta(settings: Mapping[str, SettingValue]) -> dict[str, str]:
    """The service's meta that makes loads scrape its ``/metrics`` as vLLM's, when served."""
    return {"metrics": "vllm"} if switch(settings["metrics"]) else {}


@dataclass(frozen=True)
class SyntheticTiming:
    """The server's known delays."""

    ttft_ms: float
    itl_ms: float
    tokens_per_chunk: int = 1
    error_every: int = 0


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests, one at a time (keep-alive), answered by the server."""

    def __init__(self, server: SyntheticServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.stream: TimedStream | None = None  # the response being streamed; later requests wait in the buffer
        self.arrived = 0.0  # when the first byte of the request at the buffer's head was read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.buffer:
            self.arrived = time.monotonic()
        self.buffer += data
        self.serve_buffered()

    def serve_buffered(self) -> None:
        """Answer the requests complete in the buffer, until one streams (the next waits for its end)."""
        while self.stream is None and self.transport is not None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            lines = self.buffer[:head_end].decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            end = head_end + 4 + int(headers.get("content-length", "0"))
            if len(self.buffer) < end:
                return
            body, received = bytes(self.buffer[head_end + 4 : end]), self.arrived
            del self.buffer[:end]
            self.arrived = time.monotonic()
            truth = None
            if "x-request-id" in headers:
                truth = self.server.truth[headers["x-request-id"]] = [received, math.nan]
            self.server.respond(self, method, path, body, received, truth)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def stream_ended(self) -> None:
        self.stream = None
        self.serve_buffered()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.stream is not None:
            self.stream.abandon()


class TimedStream:
    """One streamed response: its frames, written on the server's timetable by the event loop's timers."""

    def __init__(
        self, server: SyntheticServer, connection: _Connection, frames: list[bytes], tail: bytes, truth: list[float]
    ) -> None:
        self.server, self.connection, self.frames, self.tail = server, connection, frames, tail
        self.truth = truth  # [arrival, first token written]
        self.started = 0.0
        self.sent = 0
        self.timer: asyncio.TimerHandle | None = None

    def start(self, at: float) -> None:
        """Begin streaming now, on a timetable that counts from ``at`` (the arrival, or when a slot was free)."""
        self.started = at
        self.server.running(+1)
        self.connection.write(_HEAD)
        self.wait_for_next()

    def wait_for_next(self) -> None:
        """Set the timer for the next frame, or end the stream when all are written."""
        if self.sent < len(self.frames):
            due = self.server.due(self.started, self.sent, len(self.frames))
            self.timer = asyncio.get_running_loop().call_later(due - time.monotonic() + _TIMER_SLACK_S, self.step, due)
            return
        self.connection.write(self.tail)
        self.timer = None
        self.server.running(-1)
        self.server.finished(self)
        self.connection.stream_ended()

    def step(self, due: float) -> None:
        """Write the next frame once it is due (a timer that fired early is set again)."""
        if time.monotonic() < due:
            self.wait_for_next()
            return
        self.connection.write(self.frames[self.sent])
        if self.sent == 0:
            self.truth[1] = time.monotonic()  # the first token went to the socket
        self.sent += 1
        self.wait_for_next()

    def abandon(self) -> None:
        """The client went away: stop the timer; the server forgets the stream."""
        if self.timer is not None:
            self.timer.cancel()
            self.server.running(-1)
        self.server.abandoned(self)


_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
# Added to every timer: uvloop's timers count in whole milliseconds of a cached clock and may fire up
# to about a millisecond early; a frame is never written before it is due (an early timer is set again).
_TIMER_SLACK_S = 0.001


class SyntheticServer:
    """What every connection shares: the timing, the truth kept per request id, the served metrics."""

    def __init__(self, timing: SyntheticTiming, metrics: ServedMetrics | None = None, scheduling: str = NORMAL) -> None:
        self.timing = timing
        self.metrics = metrics
        self.scheduling = scheduling
        self.counter = itertools.count(1)
        self.truth: dict[str, list[float]] = {}  # request id -> [head read, first token written]
        self.frames: dict[tuple[bool, int], bytes] = {}  # (chat, tokens) -> its frame, when usage is not streamed

    def connection(self) -> _Connection:
        """A new connection's protocol (the listener's factory)."""
        return _Connection(self)

    def respond(
        self, connection: _Connection, method: str, path: str, body: bytes, received: float, truth: list[float] | None
    ) -> None:
        """Answer one request: health, models, metrics, truth, or a completion streamed on the timetable."""
        if method == "GET" and path in ("/health", "/v1/models"):
            return connection.write(_plain(200, b'{"status":"ok","data":[{"id":"synthetic"}]}'))
        if method == "GET" and path == "/metrics" and self.metrics is not None:
            return connection.write(_plain(200, self.metrics.text(), b"text/plain; version=0.0.4"))
        if path == "/truth" and method in ("GET", "DELETE"):
            payload = orjson.dumps(
                {
                    "clock": "monotonic",
                    "requests": self.truth,
                    "cpu_s": time.process_time(),
                    "scheduling": self.scheduling,
                }
            )
            if method == "DELETE":
                self.truth.clear()
            return connection.write(_plain(200, payload))
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return connection.write(_plain(404, b'{"error":"not found"}'))
        if self.timing.error_every and next(self.counter) % self.timing.error_every == 0:
            return connection.write(_plain(500, b'{"error":"synthetic failure"}'))
        frames, tail = self.response(orjson.loads(body), chat=path.endswith("chat/completions"))
        stamps = truth if truth is not None else [received, math.nan]  # arrival, first token written
        connection.stream = TimedStream(self, connection, frames, tail, stamps)
        self.admit(connection.stream)
        return None

    def response(self, request: dict[str, object], chat: bool) -> tuple[list[bytes], bytes]:
        """The stream's frames (one per chunk of tokens) and its tail (usage if asked, ``[DONE]``, the end)."""
        total = int(str(request.get("max_tokens", 16)))
        per_chunk = self.timing.tokens_per_chunk
        options = request.get("stream_options")
        options = options if isinstance(options, dict) else {}
        continuous = bool(options.get("include_usage") and options.get("continuous_usage_stats"))
        frames: list[bytes] = []
        for sent in range(0, total, per_chunk):
            tokens = min(per_chunk, total - sent)
            if continuous:
                frame = _frame(_chunk(_text(tokens, chat), sent + tokens, chat))
            else:
                key = (chat, tokens)
                frame = self.frames.get(key) or self.frames.setdefault(
                    key, _frame(_chunk(_text(tokens, chat), None, chat))
                )
            if chat and not frames:  # as vLLM: a role-only delta with the first output, before its text
                frame = _frame(_chunk({"role": "assistant", "content": ""}, 0 if continuous else None)) + frame
            frames.append(frame)
        usage = _frame({"choices": [], "usage": _usage(total)}) if options.get("include_usage") else b""
        return frames, usage + _DONE

    def admit(self, stream: TimedStream) -> None:
        """Start streaming, its timetable counting from its arrival (a server with limited slots queues it)."""
        stream.start(stream.truth[0])

    def finished(self, stream: TimedStream) -> None:
        """A stream ended: its figures go to the served metrics (``started``: when serving it began)."""
        if self.metrics is not None:
            arrived, first = stream.truth
            self.metrics.finished(arrived, first, stream.started - arrived, time.monotonic())

    def abandoned(self, stream: TimedStream) -> None:
        """A stream's client went away before its end."""

    def running(self, change: int) -> None:
        """Count a stream as running (in the served metrics) from its start until it ends or is abandoned."""
        if self.metrics is not None:
            self.metrics.running.inc(change)

    def due(self, started: float, chunk: int, chunks: int) -> float:
        """When chunk ``chunk`` (of ``chunks``) is written: the TTFT, then one ITL per chunk."""
        return started + (self.timing.ttft_ms + chunk * self.timing.itl_ms) / 1000


def _plain(status: int, payload: bytes, kind: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        kind,
        len(payload),
        payload,
    )


def _frame(data: dict[str, object]) -> bytes:
    """One server-sent event as one HTTP chunk."""
    payload = b"data: " + orjson.dumps(data) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _text(tokens: int, chat: bool) -> dict[str, str]:
    return {"content" if chat else "text": "tok " * tokens}


def _usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 1, "completion_tokens": completion_tokens, "total_tokens": 1 + completion_tokens}


def _chunk(fields: dict[str, str], completion_tokens: int | None, chat: bool = True) -> dict[str, object]:
    """One streamed event: a chat delta or a completion's text, with the running usage if asked."""
    choice = {"index": 0, "delta": fields} if chat else {"index": 0, **fields}
    event: dict[str, object] = {"choices": [{**choice, "finish_reason": None}]}
    if completion_tokens is not None:
        event["usage"] = _usage(completion_tokens)
    return event


async def serve(host: str, port: int, server: SyntheticServer) -> None:
    """Serve until SIGTERM or SIGINT (the job's stop), then return.

    Returning lets the caller give back what it holds for the server (``realtime_priority``'s
    raised softirq threads), as a signal's default action would not.
    """
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    listener = await loop.create_server(server.connection, host, port, backlog=4096)
    try:
        await stopped.wait()
    finally:
        listener.close()  # (no wait_closed: from Python 3.12 it waits for every client to hang up)


def run(coroutine: Coroutine[None, None, None]) -> None:
    """Run the server's loop: uvloop where installed (cheaper per request), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--error-every", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=-1, help="pin the server to this core (-1: not pinned)")
    parser.add_argument("--realtime", action="store_true", help="run the server's loop at real-time priority")
    parser.add_argument("--metrics", action="store_true", help="serve vLLM's /metrics families")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    timing = SyntheticTiming(args.ttft_ms, args.itl_ms, args.tokens_per_chunk, args.error_every)
    with realtime_priority(args.realtime) as scheduling:
        run(serve(args.host, args.port, SyntheticServer(timing, ServedMetrics() if args.metrics else None, scheduling)))


if __name__ == "__main__":
    main()
