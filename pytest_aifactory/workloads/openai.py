"""OpenAI-compatible streaming client (``/v1/completions``, ``/v1/chat/completions``).

vLLM, llama.cpp, Ollama and TGI all speak it. Asks for ``stream_options.include_usage``
(and vLLM's ``continuous_usage_stats``, which gives exact tokens per chunk); where the
server gives no usage, each content chunk counts as one token. ``fixed_length`` asks for
exactly ``max_tokens`` (``ignore_eos`` and ``min_tokens``), so tokens/s figures compare.
``prepare`` encodes a request's body (orjson) before the load's clock starts; ``request_id_prefix``
sends ``X-Request-Id: PREFIX<index>`` with every request (the synthetic server keys its
per-request truth by it; vLLM takes it as its request id).

Streams go through ``sse.open_event_streams``: this package's HTTP/1.1 client for ``http://``,
aiohttp for ``https://`` (not httpx: measured on 2 cores against the synthetic server at 500
streamed requests/s, httpx fell behind its schedule, schedule lag p99 55 ms, where aiohttp
kept it, 1.4 ms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

from pytest_aifactory.core.records import Chunk, RequestRecord, attribute_tokens
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.workloads.prompts import LLMRequest
from pytest_aifactory.workloads.sse import EventStreams, open_event_streams

__all__ = ["OpenAIClient", "PreparedRequest"]


class PreparedRequest(NamedTuple):
    """A request ready to send: its path, its encoded JSON body and its estimated input tokens."""

    path: str
    body: bytes
    input_tokens: int


@dataclass
class OpenAIClient:
    """Streams completions from ``base_url`` (``http://host:port``).

    ``api_key_env`` names the environment variable holding the API key: the key itself
    never enters the client's configuration, pickles or reports.
    """

    base_url: str
    model: str
    api: Literal["completions", "chat"] = "completions"
    api_key_env: str | None = None
    include_usage: bool = True
    continuous_usage: bool = False
    fixed_length: bool = False
    temperature: float = 0.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    max_connections: int = 0  # unlimited: the engine decides how many requests are in flight
    request_id_prefix: str | None = None
    _streams: EventStreams | None = field(default=None, init=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Configuration for reports (no secret)."""
        return {
            "client": "openai",
            "api": self.api,
            "base_url": self.base_url,
            "model": self.model,
            "include_usage": self.include_usage,
            "continuous_usage": self.continuous_usage,
            "fixed_length": self.fixed_length,
            "extra_body": self.extra_body,
        }

    async def open(self) -> None:
        """Create the HTTP connection pool."""
        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise RuntimeError(f"environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._streams = open_event_streams(self.base_url, headers, self.max_connections)

    async def close(self) -> None:
        """Close the pool."""
        if self._streams is not None:
            await self._streams.close()
            self._streams = None

    def body(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """Path and JSON body for ``request``."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": self.temperature,
            "stream": True,
        }
        if self.fixed_length:  # exactly max_tokens: EOS ignored (vLLM's sampling parameters)
            body.update(ignore_eos=True, min_tokens=request.max_tokens)
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
            if self.continuous_usage:
                body["stream_options"]["continuous_usage_stats"] = True
        body.update(self.extra_body)
        if self.api == "chat":
            turns = request.messages or (("user", request.prompt),)
            body["messages"] = [{"role": role, "content": content} for role, content in turns]
            return "/v1/chat/completions", body
        body["prompt"] = request.prompt
        return "/v1/completions", body

    def prepare(self, request: LLMRequest) -> PreparedRequest:
        """The request as it will be sent (built before the clock starts)."""
        path, body = self.body(request)
        return PreparedRequest(path, orjson.dumps(body), request.input_tokens)

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Stream one completion (an ``LLMRequest`` or its ``PreparedRequest``), timing every content chunk."""
        assert self._streams is not None, "open() first"
        request: PreparedRequest = payload if isinstance(payload, PreparedRequest) else self.prepare(payload)
        record.input_tokens = request.input_tokens
        headers = (
            None if self.request_id_prefix is None else {"X-Request-Id": f"{self.request_id_prefix}{record.index}"}
        )
        output = _Output()
        await self._streams.events(request.path, request.body, record, clock, output.take, headers)
        if output.prompt_tokens is not None:
            record.input_tokens = output.prompt_tokens
        if output.times and record.first_token is None:
            record.first_token = output.times[0]
        if record.status is not None and record.status >= 400:
            return
        record.end = clock.now()
        record.output_tokens = output.completion_tokens
        record.chunks, record.tokens_estimated = output.counted()


class _Output:
    """One response's content chunks (their arrival times and texts, counted in tokens at the end) and its usage."""

    __slots__ = ("completion_tokens", "prompt_tokens", "running", "texts", "times")

    def __init__(self) -> None:
        self.times: list[float] = []  # when each content chunk arrived (its ``Chunk`` is made at the end)
        self.texts: list[str] = []
        self.running: list[int] = []  # completion tokens so far, per content chunk (vLLM's continuous usage)
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None  # the server's total

    def take(self, now: float, event: dict[str, Any]) -> None:
        """``sse.EventSink``: one event of the stream, arrived at ``now``."""
        usage = event.get("usage")
        choices = event.get("choices")
        if not choices:
            content = None
        elif "text" in (choice := choices[0]):  # a completion's chunk: the common case, without a call
            text = choice["text"]
            content = str(text) if text else ("" if choice.get("finish_reason") is None else None)
        else:
            content = _delta_content(choice)
        if content is not None:
            self.times.append(now)
            self.texts.append(content)
            if usage and "completion_tokens" in usage:
                self.running.append(int(usage["completion_tokens"]))
        if usage:
            if usage.get("prompt_tokens") is not None:
                self.prompt_tokens = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                self.completion_tokens = int(usage["completion_tokens"])

    def counted(self) -> tuple[list[Chunk], bool]:
        """The chunks with their tokens, and whether those are estimated (``core.records.attribute_tokens``)."""
        running, times = self.running, self.times
        if running and len(running) == len(times):  # exact: per-chunk usage (vLLM continuous usage)
            counts = [b - a for a, b in zip([0, *running[:-1]], running, strict=True)]
            estimated = False
        else:
            counts, estimated = attribute_tokens(self.texts, self.completion_tokens)
        return [Chunk(at, count) for at, count in zip(times, counts, strict=True)], estimated


def _delta_content(choice: dict[str, Any]) -> str | None:
    """The text of a chat chunk's choice that carries a token, else None (a completion's is read in ``take``).

    A chunk carries a token when it has text, or when it has an empty text field and
    is neither the closing chunk nor the role announcement: llama.cpp streams one chunk
    per token, and a token that is part of a multi-byte character decodes to an empty
    string (so does a completion chunk's empty ``text`` before the end); a chat stream
    opens with a role-only delta (``{"role": "assistant", "content": ""}``), which carries
    no token.
    """
    fields = choice.get("delta") or {}
    text = fields.get("text") or fields.get("content") or fields.get("reasoning_content")
    if text:
        return str(text)
    has_field = any(key in fields for key in ("text", "content"))
    return "" if has_field and "role" not in fields and choice.get("finish_reason") is None else None
