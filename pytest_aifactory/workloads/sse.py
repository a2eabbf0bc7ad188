"""Server-sent events over aiohttp, shared by the streaming clients (OpenAI, Triton generate).

What is measured is what happened on the wire: the request's ``sent`` is stamped when its
last body byte was handed to the socket (by the body itself, an aiohttp payload that notes when
aiohttp's writer returned: aiohttp's ``on_request_chunk_sent`` trace fires before each chunk is
written, so it cannot tell), and every event's arrival time is when the bytes holding it were
read, not when the lines before it had been parsed. The stream is read as it arrives and
scanned for lines as bytes; events are decoded with orjson.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock

__all__ = ["PooledClient", "StampedBody", "open_session", "stream_events"]


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


async def stream_events(
    session: aiohttp.ClientSession,
    path: str,
    body: bytes | Mapping[str, Any],
    record: RequestRecord,
    clock: Clock,
    headers: Mapping[str, str] | None = None,
) -> AsyncGenerator[tuple[float, dict[str, Any]], None]:
    """POST ``body`` (JSON bytes, or a mapping to encode) and yield (arrival time, event) until ``[DONE]``.

    ``record.sent`` becomes the time the body's last byte went to the socket. An HTTP error
    status, or an event carrying ``error``, becomes the record's error and ends the stream (an
    HTTP error also sets the record's end).
    """

    def written() -> None:
        record.sent = clock.now()

    data = StampedBody(body if isinstance(body, bytes) else orjson.dumps(dict(body)), written)
    async with session.post(path, data=data, headers=headers) as response:
        record.status = response.status
        if response.status >= 400:
            text = await response.text(errors="replace")
            record.error = f"HTTP {response.status}: {text[:300]}"
            record.end = clock.now()
            return
        pending = b""
        async for received in response.content.iter_any():
            now = clock.now()
            *lines, pending = (pending + received).split(b"\n") if pending else received.split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                value = line[5:].strip()
                if value == b"[DONE]":
                    return
                event = orjson.loads(value)
                if "error" in event:
                    record.error = f"stream error: {str(event['error'])[:300]}"
                    return
                yield now, event
