"""``synthetic-llm``: an OpenAI-compatible streaming server with known timing, for calibration.

It answers ``/v1/completions`` and ``/v1/chat/completions`` with ``max_tokens`` tokens: the
first ``ttft_ms`` after the request arrived, then one chunk every ``itl_ms`` (each carrying
``tokens_per_chunk`` tokens), on an absolute timetable so that delays do not accumulate.
Chat streams open as vLLM's do, with a role-only delta just before the first text; with
``stream_options.continuous_usage_stats`` every chunk carries the running usage.
The load engine measured against it must find these delays: what it finds beyond them is
the client's (and the server loop's) own error. No framework: one asyncio process with orjson,
cheap per request. ``error_every=N`` answers every N-th request with
HTTP 500; ``cpu=N`` pins the server to core N (calibration keeps it off the client's core);
``metrics=true`` serves vLLM's ``/metrics`` families of what it really did (``served_metrics``),
so that loads against it scrape the server's own view as they do vLLM's.

It records its own truth for every request that carries an ``X-Request-Id`` header: when its
head was read and when the first token was written to the socket (``time.monotonic()``,
CLOCK_MONOTONIC, the clock of the load engine on the same machine). ``GET /truth`` returns
``{"clock": "monotonic", "requests": {id: [read, first_token_written]}}``; ``DELETE /truth``
forgets them.

Run: ``python -m pytest_aifactory.services.synthetic_llm --host 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import orjson

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.served_metrics import ServedMetrics
from pytest_aifactory.services.settings import switch
from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

__all__ = ["DEFAULTS", "SyntheticTiming", "build", "main"]

DEFAULTS: dict[str, SettingValue] = {
    "ttft_ms": 20.0,
    "itl_ms": 5.0,
    "tokens_per_chunk": 1,
    "error_every": 0,
    "cpu": -1,
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


async def _until(due: float) -> None:
    """Sleep until ``due`` (monotonic): asyncio's timer wakes within about a millisecond after it.

    Never before it: uvloop's timer rounds to the nearest millisecond of a cached clock and can.
    """
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class _Server:
    def __init__(self, timing: SyntheticTiming, metrics: ServedMetrics | None = None) -> None:
        self.timing = timing
        self.metrics = metrics
        self.counter = itertools.count(1)
        self.truth: dict[str, list[float]] = {}  # request id -> [head read, first token written]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = time.monotonic()
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                truth = None
                if "x-request-id" in headers:
                    truth = self.truth[headers["x-request-id"]] = [received, float("nan")]
                await self.respond(method, path, body, received, writer, truth)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def respond(
        self,
        method: str,
        path: str,
        body: bytes,
        received: float,
        writer: asyncio.StreamWriter,
        truth: list[float] | None = None,
    ) -> None:
        if method == "GET" and path in ("/health", "/v1/models"):
            return self.plain(writer, 200, b'{"status":"ok","data":[{"id":"synthetic"}]}')
        if method == "GET" and path == "/metrics" and self.metrics is not None:
            return self.plain(writer, 200, self.metrics.text(), b"text/plain; version=0.0.4")
        if path == "/truth" and method in ("GET", "DELETE"):
            payload = orjson.dumps({"clock": "monotonic", "requests": self.truth})
            if method == "DELETE":
                self.truth.clear()
            return self.plain(writer, 200, payload)
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return self.plain(writer, 404, b'{"error":"not found"}')
        if self.timing.error_every and next(self.counter) % self.timing.error_every == 0:
            return self.plain(writer, 500, b'{"error":"synthetic failure"}')
        request = orjson.loads(body)
        stamps = truth if truth is not None else [received, math.nan]  # arrival, first token written
        await self.stream(writer, request, chat=path.endswith("chat/completions"), received=received, truth=stamps)
        return None

    @staticmethod
    def plain(writer: asyncio.StreamWriter, status: int, payload: bytes, kind: bytes = b"application/json") -> None:
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (status, kind, len(payload), payload)
        )

    async def stream(
        self,
        writer: asyncio.StreamWriter,
        request: dict[str, object],
        chat: bool,
        received: float,
        truth: list[float] | None = None,
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        total = int(str(request.get("max_tokens", 16)))
        per_chunk = self.timing.tokens_per_chunk
        chunks = (total + per_chunk - 1) // per_chunk
        options = request.get("stream_options")
        options = options if isinstance(options, dict) else {}
        continuous = bool(options.get("include_usage") and options.get("continuous_usage_stats"))
        sent = 0
        with self.running():
            for i in range(chunks):
                await _until(self.due(received, i, chunks))
                if chat and i == 0:  # as vLLM: a role-only delta with the first output, before its text
                    self.event(writer, _chunk({"role": "assistant", "content": ""}, 0 if continuous else None))
                    await writer.drain()
                tokens = min(per_chunk, total - sent)
                sent += tokens
                text = {"content" if chat else "text": "tok " * tokens}
                self.event(writer, _chunk(text, sent if continuous else None, chat))
                if truth is not None and i == 0:
                    truth[1] = time.monotonic()  # the first token went to the socket (before drain yields)
                await writer.drain()
            if options.get("include_usage"):
                self.event(writer, {"choices": [], "usage": _usage(total)})
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            await writer.drain()
        if self.metrics is not None and truth is not None:  # its arrival; ``received``: when serving it began
            self.metrics.finished(truth[0], truth[1], received - truth[0], time.monotonic())

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Counted as running (in the served metrics) until the stream ends or its client goes away."""
        if self.metrics is None:
            yield
            return
        self.metrics.running.inc()
        try:
            yield
        finally:
            self.metrics.running.dec()

    def due(self, received: float, chunk: int, chunks: int) -> float:
        """When chunk ``chunk`` (of ``chunks``) is written: the TTFT, then one ITL per chunk."""
        return received + (self.timing.ttft_ms + chunk * self.timing.itl_ms) / 1000

    @staticmethod
    def event(writer: asyncio.StreamWriter, data: dict[str, object]) -> None:
        payload = b"data: " + orjson.dumps(data) + b"\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))


def _usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 1, "completion_tokens": completion_tokens, "total_tokens": 1 + completion_tokens}


def _chunk(fields: dict[str, str], completion_tokens: int | None, chat: bool = True) -> dict[str, object]:
    """One streamed event: a chat delta or a completion's text, with the running usage if asked."""
    choice = {"index": 0, "delta": fields} if chat else {"index": 0, **fields}
    event: dict[str, object] = {"choices": [{**choice, "finish_reason": None}]}
    if completion_tokens is not None:
        event["usage"] = _usage(completion_tokens)
    return event


async def serve(host: str, port: int, timing: SyntheticTiming, metrics: bool = False) -> None:
    """Serve until cancelled (``metrics``: vLLM's ``/metrics`` too)."""
    handler = _Server(timing, ServedMetrics() if metrics else None).handle
    server = await asyncio.start_server(handler, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


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
    parser.add_argument("--metrics", action="store_true", help="serve vLLM's /metrics families")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    timing = SyntheticTiming(args.ttft_ms, args.itl_ms, args.tokens_per_chunk, args.error_every)
    asyncio.run(serve(args.host, args.port, timing, args.metrics))


if __name__ == "__main__":
    main()
