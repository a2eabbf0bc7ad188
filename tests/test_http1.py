"""The HTTP/1.1 streaming client (``workloads/http1.py``) against real servers on 127.0.0.1.

Each server here reads a request and answers with scripted pieces of bytes, written with
pauses, so that events arrive split across reads, chunk headers arrive cut in two, streams stop
midway and connections close when a client would rather they did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock, Engine, LoadPlan
from pytest_aifactory.load.schedule import Arrivals
from pytest_aifactory.workloads.http1 import ConnectionPool, HTTPStreamError
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import LLMRequest
from pytest_aifactory.workloads.sse import EventStreams, _AiohttpStreams, _RawStreams
from pytest_aifactory.workloads.triton import TritonGenerateClient

pytestmark = pytest.mark.timeout(60)

STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(text: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "text": text, "finish_reason": None}]}) + b"\n\n"


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3}}\n\n'


class Server:
    """Serves ``handler(reader, writer, request number)`` for every request; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.writing: list[float] = []  # when each scripted piece began to be written (monotonic)
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                await reader.readexactly(length)
                self.requests += 1
                await self.handler(reader, writer, self.requests)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def pieces(self, writer: asyncio.StreamWriter, *pieces: bytes, pause_s: float = 0.02) -> None:
        """Write each piece, pausing in between (so the client reads them separately)."""
        for piece in pieces:
            self.writing.append(time.monotonic())
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause_s)


def _run(coro: Awaitable[None]) -> None:
    async def main() -> None:
        await coro

    asyncio.run(main())


async def _send(client: OpenAIClient, index: int = 0) -> RequestRecord:
    clock = Clock()
    record = RequestRecord(index=index, scheduled=0.0)
    await client.send(LLMRequest("hello", 3, 3), record, clock)
    record.scheduled = clock.t0  # kept to turn clock times back into monotonic ones in the tests
    return record


def test_events_split_across_reads_are_scanned_whole_and_stamped_when_complete() -> None:
    """Chunk sizes, chunk bodies and SSE lines cut anywhere: the same events, each timed by its last piece."""
    whole = chunk(event("a")) + chunk(event("b") + event("c")) + chunk(USAGE) + chunk(b"data: [DONE]\n\n")
    whole += b"0\r\n\r\n"
    data = STREAM_HEAD + whole
    first_chunk = len(STREAM_HEAD)
    cuts = [first_chunk - 3, first_chunk + 1, first_chunk + 20, data.index(b"\r\n", first_chunk + 60) + 1]
    bounds = [0, *cuts, len(data)]
    # which piece completes each event: the one holding its blank line's last byte
    ends = [data.index(event(t)) + len(event(t)) - 1 for t in "abc"]
    completing = [next(i for i, b in enumerate(bounds[1:]) if end < b) for end in ends]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.pieces(writer, *(data[a:b] for a, b in itertools.pairwise(bounds)))

    server = Server(handler)

    async def check() -> None:
        async with server:
            client = OpenAIClient(server.url, "m")
            await client.open()
            record = await _send(client)
            await client.close()
        assert record.error is None, record.error
        assert record.status == 200
        assert [c.tokens for c in record.chunks] == [1, 1, 1]
        assert record.output_tokens == 3
        assert record.input_tokens == 3
        times = [record.scheduled + c.at for c in record.chunks]
        assert completing == [3, 4, 4]
        assert all(at >= server.writing[piece] for at, piece in zip(times, completing, strict=True))
        assert times[0] < server.writing[4]  # "a" was stamped when it arrived, before the rest was written
        assert record.sent is not None
        assert record.first_token is not None
        assert record.end is not None
        assert record.sent <= record.first_token <= record.end

    _run(check())


def test_keep_alive_reuses_one_connection_and_survives_the_server_closing_it() -> None:
    """A kept-alive connection the server closes instead of answering (its idle timeout): retried once, anew."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 3:  # read, then dropped unanswered, as a server whose keep-alive timeout just ran out
            writer.close()
            return
        await server.pieces(writer, STREAM_HEAD + chunk(event("x")) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    server = Server(handler)

    async def check() -> None:
        async with server:
            client = OpenAIClient(server.url, "m")
            await client.open()
            first, second = await _send(client), await _send(client)
            assert server.connections == 1
            third = await _send(client)
            await client.close()
        assert [r.error for r in (first, second, third)] == [None, None, None]
        assert len(third.chunks) == 1
        assert server.connections == 2
        assert server.requests == 4  # the third was sent twice: on the dropped connection, then on a new one

    _run(check())


def test_http_error_with_a_body_is_the_requests_error_and_the_connection_stays_usable() -> None:
    body = b'{"error":"model overloaded"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            await server.pieces(writer, head % len(body), body)
        else:
            await server.pieces(writer, STREAM_HEAD + chunk(event("x")) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    server = Server(handler)

    async def check() -> None:
        async with server:
            client = OpenAIClient(server.url, "m")
            await client.open()
            failed, ok = await _send(client), await _send(client)
            await client.close()
        assert failed.status == 503
        assert failed.error == f"HTTP 503: {body.decode()}"
        assert failed.end is not None
        assert failed.chunks == []
        assert ok.error is None
        assert len(ok.chunks) == 1
        assert server.connections == 1

    _run(check())


def test_a_stream_cut_short_and_a_refused_connection_are_request_errors() -> None:
    """Through the engine: the server closes mid-stream, then nothing listens; both are failed requests."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.pieces(writer, STREAM_HEAD + chunk(event("x")) + b"40\r\ndata: {")
        writer.close()

    server = Server(handler)

    class Hello:
        def request(self, index: int) -> LLMRequest:
            return LLMRequest("hello", 3, 3)

    async def check() -> None:
        async with server:
            url = server.url
            engine = Engine(OpenAIClient(url, "m"), Hello(), LoadPlan("open", Arrivals(50.0, "constant"), count=1))
            (cut,) = await engine.run()
        engine = Engine(OpenAIClient(url, "m"), Hello(), LoadPlan("open", Arrivals(50.0, "constant"), count=1))
        (refused,) = await engine.run()
        assert cut.error is not None
        assert cut.error.startswith("HTTPStreamError: the server closed the connection")
        assert "before the response ended" in cut.error
        assert refused.error is not None
        assert refused.error.startswith("ConnectionRefusedError")

    _run(check())


def test_a_connection_cap_queues_requests_and_a_timeout_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:  # never answers: the client times out
            await asyncio.sleep(30)
        await server.pieces(writer, STREAM_HEAD + chunk(event("x")) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    server = Server(handler)

    async def check() -> None:
        async with server:
            client = OpenAIClient(server.url, "m", max_connections=1)
            await client.open()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await _send(client)
            records = await asyncio.gather(*(_send(client, i) for i in range(3)))
            await client.close()
        assert [r.error for r in records] == [None, None, None]
        assert server.connections == 2  # the timed-out connection was dropped; the other three shared one

    _run(check())


def test_pool_refuses_urls_it_cannot_serve() -> None:
    with pytest.raises(ValueError, match=r"http://host:port URL, got 'https://x'"):
        ConnectionPool("https://x")
    assert issubclass(HTTPStreamError, Exception)


def test_an_interim_response_is_skipped_and_a_bodiless_one_keeps_the_connection() -> None:
    """``100 Continue`` before the real head; ``204 No Content`` has no body even without a length."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await server.pieces(
                writer, b"HTTP/1.1 100 Continue\r\n\r\n", STREAM_HEAD + chunk(event("x")) + b"0\r\n\r\n"
            )
        else:
            await server.pieces(writer, b"HTTP/1.1 204 No Content\r\n\r\n")

    server = Server(handler)

    async def check() -> None:
        async with server:
            client = OpenAIClient(server.url, "m")
            await client.open()
            streamed = await _send(client)
            async with asyncio.timeout(5):  # a 204 read as "until close" would wait for the server to close
                empty = await _send(client)
            await client.close()
        assert streamed.status == 200
        assert streamed.error is None
        assert len(streamed.chunks) == 1
        assert empty.status == 204
        assert empty.error is None
        assert server.connections == 1

    _run(check())


@pytest.mark.parametrize("transport", [_RawStreams, _AiohttpStreams])
def test_both_transports_give_the_same_events_status_and_errors(transport: type[EventStreams]) -> None:
    """aiohttp (``https://``) and the own client (``http://``) fill a record alike; aiohttp is driven over http here."""
    body = b'{"error":"bad request"}'
    stream = STREAM_HEAD + chunk(event("a") + event("b")[:9]) + chunk(event("b")[9:]) + chunk(b"data: [DONE]\n\n")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            cut = stream.index(event("b")[9:]) + 3  # inside the second half of "b"
            await server.pieces(writer, stream[:cut], stream[cut:] + b"0\r\n\r\n")
        else:
            head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body)
            await server.pieces(writer, head + body)

    server = Server(handler)

    async def check() -> None:
        async with server:
            streams = transport(server.url, None, 0)  # type: ignore[call-arg]
            clock = Clock()
            ok, failed = RequestRecord(0, 0.0), RequestRecord(1, 0.0)
            events: list[tuple[float, dict[str, Any]]] = []
            none: list[tuple[float, dict[str, Any]]] = []
            await streams.events("/v1/completions", b"{}", ok, clock, lambda at, e: events.append((at, e)))
            await streams.events("/v1/completions", b"{}", failed, clock, lambda at, e: none.append((at, e)))
            assert none == []
            await streams.close()
        assert [e["choices"][0]["text"] for _, e in events] == ["a", "b"]
        assert ok.status == 200
        assert ok.error is None
        assert ok.sent is not None
        assert 0 < ok.sent <= events[0][0] <= events[1][0]
        assert events[1][0] >= server.writing[1] - clock.t0  # "b" was whole only with the second piece
        assert failed.status == 400
        assert failed.error == f"HTTP 400: {body.decode()}"
        assert failed.end is not None

    _run(check())


@pytest.mark.parametrize("transport", [_RawStreams, _AiohttpStreams])
@pytest.mark.parametrize(
    ("line", "error", "message"),
    [(b'data: ["x"]\n\n', TypeError, "list indices"), (b"data: {garbage\n\n", orjson.JSONDecodeError, None)],
    ids=["the client fails on it", "not JSON"],
)
def test_an_event_the_client_cannot_read_is_the_requests_own_error_and_ends_its_connection(
    transport: type[EventStreams],
    line: bytes,
    error: type[Exception],
    message: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Raised by the request's coroutine as it was raised, not as a connection the server broke, and not logged.

    Its connection is closed (the server stops producing the stream); the next request gets another.
    """
    good = STREAM_HEAD + chunk(event("a")) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    given_up = asyncio.Event()  # the client closed the connection of the first request

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n > 1:
            await server.pieces(writer, good)
            return
        await server.pieces(writer, STREAM_HEAD + chunk(event("a")), chunk(line))  # the line in its own read; no more
        with contextlib.suppress(ConnectionError):
            await reader.read(1)  # returns (or fails) only once the client has closed the connection
        given_up.set()
        writer.close()

    server = Server(handler)

    def take(at: float, event: dict[str, Any]) -> None:
        event["choices"]  # a list has no such key: TypeError, as a client reading the event would fail

    async def check() -> None:
        async with server:
            streams = transport(server.url, None, 0)  # type: ignore[call-arg]
            clock = Clock()
            with pytest.raises(error, match=message):
                await streams.events("/v1/completions", b"{}", RequestRecord(0, 0.0), clock, take)
            await asyncio.wait_for(given_up.wait(), 5)
            await streams.events("/v1/completions", b"{}", after, clock, lambda at, e: None)
            await streams.close()

    after = RequestRecord(1, 0.0)
    _run(check())
    assert not [r for r in caplog.records if "data_received() call failed" in r.getMessage()]
    assert after.status == 200
    assert after.error is None
    assert server.connections == 2


@pytest.mark.parametrize("transport", [_RawStreams, _AiohttpStreams])
def test_an_event_carrying_an_error_ends_the_stream_as_the_requests_error(transport: type[EventStreams]) -> None:
    """The error event arrives whole in its own read (the scan's common case); no event after it is taken.

    The request returns on the error event itself: the server holds the rest of the message back
    until it has (or for 2 s), so a request that waited for the message's end would return after it.
    """
    error = b'data: {"error":{"message":"out of memory","code":500}}\n\n'
    returned: list[int] = []  # how many pieces the server had begun to write when the request returned
    request_returned = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.pieces(writer, STREAM_HEAD + chunk(event("a")), chunk(error))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(request_returned.wait(), 2)
        await server.pieces(writer, chunk(event("b")) + b"0\r\n\r\n")

    server = Server(handler)
    taken: list[dict[str, Any]] = []
    record = RequestRecord(0, 0.0)

    async def check() -> None:
        async with server:
            streams = transport(server.url, None, 0)  # type: ignore[call-arg]
            await streams.events("/v1/completions", b"{}", record, Clock(), lambda at, e: taken.append(e))
            returned.append(len(server.writing))
            request_returned.set()
            await streams.close()

    _run(check())
    assert record.error == "stream error: {'message': 'out of memory', 'code': 500}"
    assert [e["choices"][0]["text"] for e in taken] == ["a"]
    assert returned == [2]


def test_triton_generate_stream_times_each_event_and_a_stream_cut_short_leaves_no_tokens() -> None:
    """One token per event, the first one's time its TTFT; a stream the server cut keeps none of its events."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        events = (STREAM_HEAD + chunk(b'data: {"text_output":"a"}\n\n'), chunk(b'data: {"text_output":"b"}\n\n'))
        if n == 1:
            await server.pieces(writer, *events, b"0\r\n\r\n")
        else:
            await server.pieces(writer, *events)
            writer.close()

    server = Server(handler)

    async def check() -> None:
        async with server:
            client = TritonGenerateClient(server.url, "m")
            await client.open()
            whole, cut = RequestRecord(0, 0.0), RequestRecord(1, 0.0)
            await client.send(LLMRequest("hello", 3, 2), whole, Clock())
            with pytest.raises(HTTPStreamError):
                await client.send(LLMRequest("hello", 3, 2), cut, Clock())
            await client.close()
        assert whole.error is None
        assert whole.output_tokens == 2
        assert [c.tokens for c in whole.chunks] == [1, 1]
        assert whole.first_token == whole.chunks[0].at
        assert whole.end is not None
        assert whole.end >= whole.chunks[1].at > whole.chunks[0].at
        assert cut.chunks == []
        assert cut.first_token is None

    _run(check())
