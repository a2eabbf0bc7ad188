"""A minimal HTTP/1.1 client for streamed responses over plain ``http://``, on asyncio protocols.

The load engine's CPU per request is mostly its HTTP client's: a general client (aiohttp)
wakes a coroutine and walks its reader, parser and payload layers for every piece of a
stream. Here one ``asyncio.Protocol`` per connection does the whole exchange in callbacks:
it writes the request (encoded before the clock by the caller, head joined here), notes when
its last byte was handed to the socket (the write returned with nothing left in the
transport's buffer, or the buffer drained: its high-water mark is zero, so ``resume_writing``
says when), decodes the response's chunked (or length-delimited, or until-close) body as it
arrives and hands each piece, with the time it arrived, to the caller's ``Exchange``. The
caller's coroutine wakes once, when the exchange says it has all it needs or the message ends.

Connections are kept alive in a pool per client (``max_connections``, 0: unlimited); a
connection whose message has not ended when its caller is done (a stream that ended with
``[DONE]`` before its last chunk) finishes reading it and then returns to the pool; one whose
caller gave up on the response (``Exchange.abandoned``: an event it could not read) or timed
out is closed, so that the server stops producing it; one the server closes leaves it.
A refused connection, a connection lost before the response ended
or a malformed response raises (``OSError`` or ``HTTPStreamError``), which the engine records
as the request's error. No TLS, no proxies, no redirects: the streaming clients use aiohttp for
``https://`` URLs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Protocol, cast
from urllib.parse import urlsplit

__all__ = ["ConnectionPool", "Exchange", "HTTPStreamError"]

_MAX_HEAD = 64 * 2**10


class HTTPStreamError(Exception):
    """The server broke the exchange: closed the connection early, or sent a malformed response."""


class Exchange(Protocol):
    """What one request's response is handed to, as it arrives (times are ``time.monotonic()``)."""

    def sent(self, at: float) -> None:
        """The request's last byte was handed to the socket at ``at``."""

    def head(self, status: int) -> None:
        """The response's status line and headers were read."""

    def body(self, at: float, data: bytes) -> bool:
        """A piece of the (de-chunked) body arrived at ``at``; True when the caller needs no more of it."""

    def ended(self) -> None:
        """The response's message ended."""

    @property
    def abandoned(self) -> bool:
        """The caller gave up on the response: the connection is closed rather than read to the message's end."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sending = False  # the request's bytes are not all in the socket yet
        self.lost = False
        self._buffer = b""
        self._in_head = True
        self._chunked = False
        self._remaining = -1  # body bytes still due (chunked: of the current chunk; -1: until close)
        self._keep_alive = True
        self.responded = False  # any byte of the current response received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=0)  # resume_writing says when the buffer drained

    def request(self, data: bytes, exchange: Exchange, waiter: asyncio.Future[None]) -> None:
        """Write a whole request; its response goes to ``exchange``, ``waiter`` ends when it has enough."""
        assert self.transport is not None
        self.exchange, self.waiter = exchange, waiter
        self._buffer, self._in_head, self.responded = b"", True, False
        self.sending = True
        self.transport.write(data)
        if self.sending and not self.transport.get_write_buffer_size():
            self.sending = False
            exchange.sent(time.monotonic())

    def pause_writing(self) -> None:
        pass  # the request is in the transport's buffer: ``sent`` waits for resume_writing

    def resume_writing(self) -> None:
        if self.sending and self.exchange is not None:
            self.sending = False
            self.exchange.sent(time.monotonic())

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        self.responded = True
        if not (self._in_head or self._buffer or self._remaining) and self._chunked:  # a read of one whole chunk?
            line_end = data.find(b"\r\n", 0, 10)
            if line_end > 0 and data.endswith(b"\r\n"):
                try:
                    size = int(data[:line_end], 16)
                except ValueError:
                    size = 0
                if size > 0 and line_end + size + 4 == len(data):  # the common one, of a stream: one whole chunk
                    if exchange.body(at, data[line_end + 2 : -2]) and (waiter := self.waiter) and not waiter.done():
                        waiter.set_result(None)  # (``_deliver``'s work, without its call: this runs for every event)
                    return
        if self._in_head:
            data = self._buffer + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = data
                if len(data) > _MAX_HEAD:
                    self._fail(HTTPStreamError(f"response head longer than {_MAX_HEAD} bytes"))
                return
            try:
                status = self._parse_head(data[:end])
            except ValueError as exc:
                self._fail(HTTPStreamError(f"malformed response head: {exc}"))
                return
            data = data[end + 4 :]
            if 100 <= status < 200:  # an interim response (100 Continue, 103 Early Hints): the real head follows
                self._buffer = b""
                if data:
                    self.data_received(data)
                return
            self._in_head, self._buffer = False, b""
            exchange.head(status)
            if self._remaining == 0 and not self._chunked:
                self._end()
                return
        if self._chunked:
            self._dechunk(at, data)
        elif data:
            self._deliver(at, data if self._remaining < 0 else data[: self._remaining])
            if self._remaining > 0:
                self._remaining = max(0, self._remaining - len(data))
                if self._remaining == 0:
                    self._end()

    def _parse_head(self, head: bytes) -> int:
        status_line, *lines = head.split(b"\r\n")
        version, status, *_ = status_line.split(b" ", 2)
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"status line {status_line[:80]!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        self._chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
        length = headers.get(b"content-length")
        code = int(status)
        bodiless = code in (204, 304) or code < 200
        self._remaining = 0 if self._chunked or bodiless else int(length) if length is not None else -1
        connection = headers.get(b"connection", b"")
        self._keep_alive = (b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection) and (
            self._chunked or bodiless or length is not None
        )
        if bodiless:
            self._chunked = False
        return code

    def _dechunk(self, at: float, data: bytes) -> None:
        """Decode chunked transfer coding; what one read holds goes to the exchange at once (one piece, one time).

        ``_remaining`` is what the current chunk still owes of its data and CRLF when a read ended inside it.
        """
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        pieces: list[bytes] = []
        position, size = 0, len(data)
        if self._remaining > 0:  # the rest of a chunk begun in an earlier read
            take = self._remaining if self._remaining < size else size
            if self._remaining > 2:
                pieces.append(data[: min(take, self._remaining - 2)])
            self._remaining -= take
            position = take
        while position < size:
            line_end = data.find(b"\r\n", position)
            if line_end < 0:
                self._buffer = data[position:]
                break
            try:
                chunk = int(data[position:line_end].split(b";", 1)[0], 16)
            except ValueError:
                self._fail(HTTPStreamError(f"malformed chunk size {data[position:line_end][:40]!r}"))
                return
            start = line_end + 2
            if chunk == 0:  # the last chunk, then trailers (if any) and an empty line
                rest = data[start:]
                if pieces:
                    self._deliver(at, b"".join(pieces))
                if rest.startswith(b"\r\n") or b"\r\n\r\n" in rest:
                    self._end()
                else:
                    self._buffer = b"0\r\n" + rest
                return
            end = start + chunk
            pieces.append(data[start:end])
            if end + 2 > size:  # the read ended inside this chunk (its data or its CRLF)
                self._remaining = end + 2 - size
                break
            position = end + 2
        if pieces:
            self._deliver(at, pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _deliver(self, at: float, data: bytes) -> None:
        exchange, waiter = self.exchange, self.waiter
        if exchange is not None and exchange.body(at, data) and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        exchange, waiter = self.exchange, self.waiter
        self.exchange = self.waiter = None
        if exchange is not None:
            exchange.ended()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._keep_alive and not self.lost:
            self.pool.release(self)
        else:
            self.close()

    def _fail(self, error: Exception) -> None:
        waiter = self.waiter
        self.exchange = self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # close the transport: the server will send no more

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        if self.exchange is None:
            return
        if not self._in_head and not self._chunked and self._remaining < 0:  # a body that runs until close
            self._end()
            return
        where = "before the response ended" if self.responded else "before the response began"
        self._fail(HTTPStreamError(f"the server closed the connection {where}" + (f" ({exc})" if exc else "")))


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to the host of ``base_url`` (``http://host:port``)."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, max_connections: int = 0) -> None:
        """``headers`` go with every request; ``max_connections`` caps the open connections (0: no cap)."""
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"ConnectionPool takes an http://host:port URL, got {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        authority = url.netloc.rsplit("@", 1)[-1]
        common = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._common = f"Host: {authority}\r\n{common}".encode("latin-1")
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._opening = 0  # connections being made
        self._waiting: list[asyncio.Future[_Connection | None]] = []
        self._closed = False

    def encode(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
        """A POST of a JSON ``body`` to ``path``, as bytes on the wire."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
        return b"POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
            path.encode("latin-1"),
            self._common,
            len(body),
            extra.encode("latin-1"),
            body,
        )

    async def send(self, request: bytes, exchange: Exchange) -> None:
        """Send ``request`` (from ``encode``); return once ``exchange`` has all it needs, or the message ended.

        A kept-alive connection the server closed before answering (its idle timeout, racing
        this request) is retried once on a new connection, as browsers do.
        """
        for retry in (False, True):
            connection, reused = await self._acquire()
            waiter = asyncio.get_running_loop().create_future()
            connection.request(request, exchange, waiter)
            try:
                await waiter
                return
            except HTTPStreamError:
                if retry or not reused or connection.responded:
                    raise
            finally:
                if connection.waiter is waiter and (waiter.cancelled() or exchange.abandoned):  # (message not ended)
                    connection.exchange = connection.waiter = None
                    connection.close()

    async def _acquire(self) -> tuple[_Connection, bool]:
        """A connection, and whether it served requests before."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and connection.transport is not None and not connection.transport.is_closing():
                return connection, True
        loop = asyncio.get_running_loop()
        while self.max_connections and len(self._open) + self._opening >= self.max_connections:
            waiter: asyncio.Future[_Connection | None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            if handed is not None:
                return handed, True
        self._opening += 1
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except BaseException:
            self._wake_one()  # the slot it held is free
            raise
        finally:
            self._opening -= 1
        self._open.add(connection)
        return connection, False

    def release(self, connection: _Connection) -> None:
        """A connection whose message ended: to the next waiting request, else idle."""
        while self._waiting:
            waiter = self._waiting.pop(0)
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection that closed."""
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        """A slot freed: the next waiting request opens its own connection."""
        while self._waiting:
            waiter = self._waiting.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close every connection."""
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
