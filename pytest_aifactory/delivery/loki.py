"""Logs to Grafana Loki through its push API, batched, retried, spooled when Loki is down.

``POST /loki/api/v1/push`` with ``{"streams": [{"stream": {labels}, "values": [["<unix ns>",
"line", {metadata}], ...]}]}``: nanosecond timestamps as strings, lines of a stream in time
order. Labels are few and low-cardinality (``job``, ``run_id``, ``service``, ``level``, and
``source``: the writing process, ``pytest``, ``pytest-gw0`` or ``job-ID``, so that every
stream has one writer and stays in order); the test id and other per-line details go in
structured metadata. A batch that still fails
after retries with exponential backoff is spooled and re-sent at the end of the run (and by
``aifactory resend --loki``). Every line passes the ``Redactor`` first.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pytest_aifactory.core.secrets import Redactor

__all__ = ["LOKI_LABELS", "LogEntry", "LokiPusher", "build_push_body"]

LOKI_LABELS = ("job", "run_id", "service", "level", "source")
_STOP, _TICK = object(), object()


@dataclass(frozen=True)
class LogEntry:
    """One log line: its stream's labels, time (ns), text and structured metadata."""

    labels: Mapping[str, str]
    ts_ns: int
    line: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def build_push_body(entries: list[LogEntry]) -> dict[str, object]:
    """Loki's JSON push body: one stream per label set, values sorted by time."""
    streams: dict[tuple[tuple[str, str], ...], list[LogEntry]] = {}
    for entry in entries:
        streams.setdefault(tuple(sorted(entry.labels.items())), []).append(entry)
    body = []
    for labels, items in streams.items():
        items.sort(key=lambda e: e.ts_ns)
        values = [[str(e.ts_ns), e.line, dict(e.metadata)] if e.metadata else [str(e.ts_ns), e.line] for e in items]
        body.append({"stream": dict(labels), "values": values})
    return {"streams": body}


class LokiPusher:
    """Queues entries and ships them from a background thread."""

    def __init__(
        self,
        url: str,
        run_id: str,
        spool_dir: Path,
        redactor: Redactor,
        source: str = "pytest",
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        retries: int = 3,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/") + "/loki/api/v1/push"
        self.run_id = run_id
        self.spool_dir = spool_dir
        self.redactor = redactor
        self.source = source
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retries = retries
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed_batches = 0
        self.failures: list[str] = []  # why spooled batches could not be re-sent
        self._queue: queue.Queue[LogEntry | object] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="aifactory-loki", daemon=True)
        self._thread.start()

    def log(self, line: str, service: str = "pytest", level: str = "info", **metadata: str) -> None:
        """Queue one line (``service`` is the stream: ``pytest`` for the run's own events)."""
        labels = {"job": "aifactory", "run_id": self.run_id, "service": service, "level": level, "source": self.source}
        clean = {k: self.redactor.text(str(v)) for k, v in metadata.items() if v is not None}
        self._queue.put(LogEntry(labels, time.time_ns(), self.redactor.text(line), clean))

    def _loop(self) -> None:
        batch: list[LogEntry] = []
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                item = _TICK
            if item is _STOP:
                self._ship(batch)
                return
            if isinstance(item, LogEntry):
                batch.append(item)
            if len(batch) >= self.batch_size or time.monotonic() >= deadline:
                self._ship(batch)
                batch = []
                deadline = time.monotonic() + self.flush_interval_s

    def _post(self, body: bytes) -> None:
        response = httpx.post(
            self.url, content=body, headers={"Content-Type": "application/json"}, timeout=self.timeout_s
        )
        if response.status_code >= 300:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}: {response.text[:200]}", request=response.request, response=response
            )

    def _ship(self, batch: list[LogEntry]) -> None:
        if not batch:
            return
        body = json.dumps(build_push_body(batch)).encode()
        delay = 0.2
        for attempt in range(self.retries):
            try:
                self._post(body)
            except httpx.HTTPError:
                if attempt + 1 < self.retries:
                    time.sleep(delay)
                    delay *= 2
                continue
            self.delivered += len(batch)
            return
        self.failed_batches += 1
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"{time.time_ns()}-{uuid.uuid4().hex[:6]}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)

    def close(self) -> None:
        """Ship what is queued and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=self.timeout_s * (self.retries + 1) + 5)

    def spooled(self) -> list[Path]:
        """Batches not delivered yet."""
        return sorted(self.spool_dir.glob("*.json")) if self.spool_dir.exists() else []

    def resend(self) -> tuple[int, int]:
        """Deliver spooled batches in order: (sent, still spooled)."""
        sent = 0
        for path in self.spooled():
            try:
                self._post(path.read_bytes())
            except httpx.HTTPError as exc:
                self.failures.append(f"{path}: {type(exc).__name__}: {self.redactor.text(str(exc))[:300]}")
                break  # keep the order: stop at the first failure
            path.unlink()
            sent += 1
        return sent, len(self.spooled())
