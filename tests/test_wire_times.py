"""Wire times: ``sent`` is when the request's last byte went to the socket, not when sending began."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_aifactory.load.engine import Engine, LoadPlan
from pytest_aifactory.load.schedule import Arrivals
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import LLMRequest

pytestmark = pytest.mark.timeout(60)

BODY_PROMPT = 12 * 2**20  # far more than the kernel buffers on both sides (4 MiB send, 64 KiB receive)
PIECE, PAUSE_S = 128 * 2**10, 0.01  # the server reads 128 KiB every 10 ms: about a second for the body
EVENTS = (
    b'data: {"choices":[{"index":0,"text":"tok "}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\ndata: [DONE]\n\n'
)


class SlowReader:
    """An HTTP/1.1 server on 127.0.0.1 that reads request bodies slowly and notes when (monotonic)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 2**10)  # no receive autotuning
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.read_at: list[tuple[int, float]] = []  # (body bytes read so far, when)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            head, body = head.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            read = len(body)
            while read < length:
                time.sleep(PAUSE_S)
                read += len(conn.recv(min(PIECE, length - read)))
                self.read_at.append((read, time.monotonic()))
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
            conn.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (len(EVENTS), EVENTS))

    def when_read(self, amount: int) -> float:
        """When the server had read ``amount`` body bytes."""
        return next(at for read, at in self.read_at if read >= amount)


@pytest.fixture
def slow_reader() -> Iterator[SlowReader]:
    server = SlowReader()
    yield server
    server.listener.close()


class OneHugePrompt:
    def request(self, index: int) -> LLMRequest:
        return LLMRequest("x" * BODY_PROMPT, 1, 1)


def test_sent_is_after_the_body_was_written(slow_reader: SlowReader) -> None:
    client = OpenAIClient(f"http://127.0.0.1:{slow_reader.port}", "m")
    engine = Engine(client, OneHugePrompt(), LoadPlan("open", Arrivals(1.0, "constant"), count=1))
    (record,) = asyncio.run(engine.run())
    assert record.error is None, record.error
    assert record.first_token is not None
    assert record.sent is not None
    sent = engine.clock.t0 + record.sent
    # The last byte cannot have left before the server had drained all but the kernel's buffers
    # (a quarter of the body, far below what they can hold), and had left before it read it all.
    assert slow_reader.when_read(BODY_PROMPT // 4) <= sent <= slow_reader.when_read(BODY_PROMPT)
    assert record.sent - record.scheduled > 0.2  # the second it took shows as schedule lag
    assert record.first_token > record.sent
