"""Server-sent events over aiohttp, shared by the streaming clients (OpenAI, Triton generate)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock

__all__ = ["PooledClient", "open_session", "stream_events"]


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


async def stream_events(
    session: aiohttp.ClientSession, path: str, body: Mapping[str, Any], record: RequestRecord, clock: Clock
) -> AsyncGenerator[tuple[float, dict[str, Any]], None]:
    """POST ``body`` and yield (arrival time, parsed JSON) for every ``data:`` event until ``[DONE]``.

    An HTTP error status, or an event carrying ``error``, becomes the record's error and ends
    the stream (an HTTP error also sets the record's end).
    """
    async with session.post(path, json=dict(body)) as response:
        record.status = response.status
        if response.status >= 400:
            text = await response.text(errors="replace")
            record.error = f"HTTP {response.status}: {text[:300]}"
            record.end = clock.now()
            return
        async for line in response.content:
            now = clock.now()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                record.error = f"stream error: {str(event['error'])[:300]}"
                return
            yield now, event
