"""Server-sent events, shared by the streaming clients (OpenAI, Triton generate).

What is measured is what happened on the wire: the request's ``sent`` is stamped when its
last byte was handed to the socket, and every event's arrival time is when the bytes holding
it were read, not when the lines before it had been parsed. The stream is scanned for lines
as bytes; events are decoded with orjson and handed at once, with their arrival time, to the
caller's ``EventSink``, which keeps what it needs of them: an event is read while its bytes
are still in the CPU's cache, not again after the stream (a stored event, revisited when its
stream ends, costs several times its first reading at hundreds of streams in flight).
``open_event_streams`` picks the transport:

- ``http://``: ``http1.ConnectionPool``, this package's HTTP/1.1 client on asyncio protocols,
  which handles a whole stream in the event loop's callbacks and wakes the request's coroutine
  once (it costs a fraction of aiohttp's CPU per request, so the client stays off its own
  measurements for longer);
- ``https://``: aiohttp (TLS). The request body is then an aiohttp payload that notes when
  aiohttp's writer returned from handing its last byte to the socket (aiohttp's
  ``on_request_chunk_sent`` trace fires before each chunk is written, so it cannot tell).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.workloads.http1 import ConnectionPool

__all__ = [
    "EventSink",
    "EventStreams",
    "PooledClient",
    "StampedBody",
    "StreamingClient",
    "open_event_streams",
    "open_session",
]

EventSink = Callable[[float, dict[str, Any]], None]
"""Takes each event of a stream as it arrives: its arrival time (clock time) and the decoded event."""


def open_session(
    base_url: str, headers: Mapping[str, str] | None = None, max_connections: int = 0
) -> aiohttp.ClientSession:
    """A pool without a total timeout (the engine times requests) and a 1 MiB read buffer.

    aiohttp's 64 KiB default buffer throttled long streams (vLLM issue #39963).
    """
    return aiohttp.ClientSession(
        base_url=base_url,
        headers=dict(headers or {}),
        connector=aiohttp.TCPConnector(limit=max_connections),
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=2**20,
    )


class _EventScan:
    """One response's events: the body is scanned as it arrives (stamped), ``data:`` lines go decoded to ``take``.

    It is also the ``http1.Exchange`` of a request sent through a ``ConnectionPool``.
    """

    __slots__ = ("error_body", "failure", "finished", "pending", "record", "status", "take", "zero")

    def __init__(self, record: RequestRecord, clock: Clock, take: EventSink) -> None:
        self.record, self.zero, self.take = record, clock.t0, take
        self.pending = b""
        self.finished = False  # [DONE], or an event carrying an error
        self.status = 0
        self.error_body: list[bytes] = []
        self.failure: Exception | None = None  # an event that could not be read (raised by ``events``)

    def http_error(self, status: int, text: str, now: float) -> None:
        """An HTTP error status ends the request: its status, the body's start as the error, the end."""
        self.record.error = f"HTTP {status}: {text[:300]}"
        self.record.end = now

    def sent(self, at: float) -> None:
        """``http1.Exchange``: the request's last byte left at ``at`` (monotonic)."""
        self.record.sent = at - self.zero

    def head(self, status: int) -> None:
        """``http1.Exchange``: the response's status."""
        self.status = self.record.status = status

    def body(self, at: float, data: bytes) -> bool:
        """``http1.Exchange``: a piece of the body, arrived at ``at`` (monotonic); True once the stream has ended.

        An error status's body is kept whole. An event that cannot be decoded or read (by
        ``take``) ends the stream: its error is kept in ``failure``, for the request's
        coroutine to raise (not raised here: in a read callback it would close the connection
        and read as the server's fault). (One method: it runs for every read of every stream.)
        """
        if self.status >= 400:
            self.error_body.append(data)
            return False
        if self.finished:
            return True
        if not self.pending and data.startswith(b"data: {") and data.find(b"\n") == len(data) - 2 and data[-1] == 10:
            try:  # one whole event, one line and a blank one: the common read of a stream
                event = orjson.loads(data[5:])
                if "error" not in event:
                    self.take(at - self.zero, event)
                    return False
            except Exception as failure:
                return self._failed(failure)
        lines = (self.pending + data if self.pending else data).split(b"\n")
        self.pending = lines.pop()
        try:
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                try:
                    event = orjson.loads(line[5:])  # (JSON allows the blank after "data:" and a CR at the end)
                except orjson.JSONDecodeError:
                    if line[5:].strip() != b"[DONE]":
                        raise
                    self.finished = True
                    return True
                if "error" in event:
                    self.record.error = f"stream error: {str(event['error'])[:300]}"
                    self.finished = True
                    return True
                self.take(at - self.zero, event)
        except Exception as failure:  # (the event's, or the sink's)
            return self._failed(failure)
        return False

    def _failed(self, failure: Exception) -> bool:
        """An event could not be decoded or read: the stream ends, ``failure`` waits for ``raise_failure``."""
        self.failure, self.finished = failure, True
        return True

    @property
    def abandoned(self) -> bool:
        """``http1.Exchange``: an event could not be read (the connection is closed, not read to the end)."""
        return self.failure is not None

    def raise_failure(self) -> None:
        """Raise the error of an event that could not be read, if there was one."""
        failure, self.failure = self.failure, None  # (the scan and the error's frames would hold each other)
        if failure is not None:
            raise failure

    def ended(self) -> None:
        """``http1.Exchange``: the message ended (an HTTP error is then complete)."""
        if self.status >= 400:
            text = b"".join(self.error_body).decode("utf-8", "replace")
            self.http_error(self.status, text, time.monotonic() - self.zero)


class EventStreams(abc.ABC):
    """Posts requests whose answers are server-sent events (a transport: ``open_event_streams`` picks it)."""

    async def events(
        self,
        path: str,
        body: bytes,
        record: RequestRecord,
        clock: Clock,
        take: EventSink,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """POST ``body`` (JSON bytes); every event before ``[DONE]`` goes to ``take`` as it arrives.

        ``record.sent`` becomes the time the body's last byte went to the socket, ``record.status``
        the response's status. An HTTP error status, or an event carrying ``error``, becomes the
        record's error and ends the stream (an HTTP error also sets the record's end). An event
        that cannot be decoded, or that ``take`` fails on, raises its error here, once the
        exchange is over; its connection is closed (the server stops producing the response).
        """
        scan = _EventScan(record, clock, take)
        await self._exchange(path, body, headers, scan, clock)
        scan.raise_failure()

    @abc.abstractmethod
    async def _exchange(
        self, path: str, body: bytes, headers: Mapping[str, str] | None, scan: _EventScan, clock: Clock
    ) -> None:
        """Send the request; hand its response to ``scan`` until the stream has ended."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connections."""


class _RawStreams(EventStreams):
    """``EventStreams`` over ``http1.ConnectionPool`` (plain ``http://``)."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None, max_connections: int) -> None:
        self.pool = ConnectionPool(base_url, headers, max_connections)

    async def _exchange(
        self, path: str, body: bytes, headers: Mapping[str, str] | None, scan: _EventScan, clock: Clock
    ) -> None:
        await self.pool.send(self.pool.encode(path, body, headers), scan)

    async def close(self) -> None:
        await self.pool.close()


class _AiohttpStreams(EventStreams):
    """``EventStreams`` over aiohttp (``https://``)."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None, max_connections: int) -> None:
        self.session = open_session(base_url, headers, max_connections)

    async def _exchange(
        self, path: str, body: bytes, headers: Mapping[str, str] | None, scan: _EventScan, clock: Clock
    ) -> None:
        def written() -> None:
            scan.sent(time.monotonic())

        async with self.session.post(path, data=StampedBody(body, written), headers=headers) as response:
            scan.head(response.status)
            if response.status >= 400:
                scan.http_error(response.status, await response.text(errors="replace"), clock.now())
                return
            async for received in response.content.iter_any():
                if scan.body(time.monotonic(), received):
                    break

    async def close(self) -> None:
        await self.session.close()


def open_event_streams(
    base_url: str, headers: Mapping[str, str] | None = None, max_connections: int = 0
) -> EventStreams:
    """This package's HTTP/1.1 client for ``http://`` URLs, aiohttp for the others (``https://``)."""
    if base_url.startswith("http://"):
        return _RawStreams(base_url, headers, max_connections)
    return _AiohttpStreams(base_url, headers, max_connections)


@dataclass
class PooledClient:
    """A client of one model at ``base_url`` over one aiohttp pool (opened in the sending process)."""

    base_url: str
    model: str
    _http: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def open(self) -> None:
        """Create the connection pool."""
        self._http = open_session(self.base_url)

    async def close(self) -> None:
        """Close the pool."""
        if self._http is not None:
            await self._http.close()
            self._http = None


@dataclass
class StreamingClient:
    """A client of one model at ``base_url`` whose answers are server-sent events (opened in the sending process)."""

    base_url: str
    model: str
    _streams: EventStreams | None = field(default=None, init=False, repr=False)

    async def open(self) -> None:
        """Create the connection pool."""
        self._streams = open_event_streams(self.base_url)

    async def close(self) -> None:
        """Close the pool."""
        if self._streams is not None:
            await self._streams.close()
            self._streams = None


class StampedBody(Payload):
    """A JSON request body that calls ``written()`` once aiohttp has handed its last byte to the socket.

    (aiohttp's own bytes payload warns above 1 MiB that it "might lock the event loop"; it does
    not: the transport buffers what the socket does not take, and the writer drains past 64 KiB.)
    """

    _value: bytes

    def __init__(self, body: bytes, written: Callable[[], None]) -> None:
        super().__init__(body, content_type="application/json")
        self._size = len(body)
        self._written = written

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The body as text."""
        return self._value.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write the whole body, then note the time."""
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        """Write the body (the writer waits for the transport to drain past 64 KiB), then note the time."""
        await writer.write(self._value if content_length is None else self._value[:content_length])
        self._written()
