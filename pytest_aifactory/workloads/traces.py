"""Trace replay: arrivals, input and output lengths taken from a trace file (CSV or JSONL).

Accepted columns (names matched without regard to case; one of each row is needed):

============  ==========================================================================
time          ``timestamp_s`` (seconds), ``timestamp_ms`` (milliseconds), or ``timestamp``:
              in CSV seconds when numeric (BurstGPT's ``Timestamp``) and a date-time
              when not (the Azure LLM inference traces' ``TIMESTAMP``,
              ``2023-11-16 18:15:46.6805900``); in JSONL milliseconds (Mooncake's)
input         ``input_tokens``, ``input_length`` (Mooncake), ``ContextTokens`` (Azure),
              ``Request tokens`` (BurstGPT), ``prompt_tokens``
output        ``output_tokens``, ``output_length`` (Mooncake), ``GeneratedTokens`` (Azure),
              ``Response tokens`` (BurstGPT), ``completion_tokens``
hash_ids      optional, JSONL (Mooncake): ids of the prompt's blocks of ``block_tokens``
              tokens (512 in Mooncake's traces); prompts that share leading ids share that
              prefix, so the replay exercises the prefix cache as the traced service saw it
============  ==========================================================================

Times are taken relative to the first request. A missing column, a value that is not a
number, a negative timestamp or a time earlier than the previous row's is an error naming
the file, the line and the column. The loaded trace keeps its name and the SHA-256 of the
file, which every result of a replay reports.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pytest_aifactory.core.words import COMMON_WORDS
from pytest_aifactory.workloads.prompts import LLMRequest

__all__ = ["SYNTHETIC_TRACE", "Trace", "TraceError", "TracePrompts", "TraceRequest"]

SYNTHETIC_TRACE = Path(__file__).with_name("data") / "synthetic-trace.jsonl"
_TIME = ("timestamp_s", "timestamp_ms", "timestamp")
_INPUT = ("input_tokens", "input_length", "contexttokens", "request tokens", "prompt_tokens")
_OUTPUT = ("output_tokens", "output_length", "generatedtokens", "response tokens", "completion_tokens")
_DATETIME = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(?:\.(\d+))?$")


class TraceError(ValueError):
    """A trace file that cannot be replayed (the message names file, line and column)."""


@dataclass(frozen=True)
class TraceRequest:
    """One traced request: when it arrived (s after the first), its lengths, its prefix blocks."""

    at_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Trace:
    """A loaded trace: its requests in time order, name, file and checksum."""

    name: str
    path: str
    sha256: str
    requests: tuple[TraceRequest, ...]

    @classmethod
    def load(cls, path: Path | str, name: str | None = None) -> Trace:
        """Read a ``.csv`` or ``.jsonl`` trace (see the module's table of columns)."""
        path = Path(path)
        if not path.is_file():
            raise TraceError(f"trace file {path} does not exist")
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
        if path.suffix.lower() == ".csv":
            rows = _csv_rows(path, text)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(path, text)
        else:
            raise TraceError(f"trace file {path}: unknown format {path.suffix!r}; accepted: .csv, .jsonl")
        requests = _requests(path, rows)
        if not requests:
            raise TraceError(f"trace file {path}: no request in it")
        return cls(name or path.stem, str(path), hashlib.sha256(data).hexdigest(), tuple(requests))

    def window(self, start_s: float = 0.0, end_s: float | None = None) -> list[TraceRequest]:
        """The requests arriving in ``[start_s, end_s)`` of trace time."""
        return [r for r in self.requests if r.at_s >= start_s and (end_s is None or r.at_s < end_s)]


Row = tuple[int, Mapping[str, Any]]  # line number, fields by lower-case name


def _csv_rows(path: Path, text: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    for names, what in ((_TIME, "time"), (_INPUT, "input"), (_OUTPUT, "output")):
        if not set(names) & set(header):
            raise TraceError(
                f"{path}:1: no {what} column in the header {reader.fieldnames}; accepted: {', '.join(names)}"
            )
    for fields in reader:
        yield reader.line_num, {k.strip().lower(): v for k, v in fields.items() if k is not None}


def _jsonl_rows(path: Path, text: str) -> Iterator[Row]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}:{line}: not valid JSON: {exc}") from None
        if not isinstance(entry, dict):
            raise TraceError(f"{path}:{line}: expected a JSON object per line")
        fields = {k.lower(): v for k, v in entry.items()}
        if "timestamp" in fields:  # Mooncake: milliseconds
            fields["timestamp_ms"] = fields.pop("timestamp")
        yield line, fields


def _column(path: Path, line: int, fields: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        if name in fields and fields[name] not in (None, ""):
            return name, fields[name]
    raise TraceError(f"{path}:{line}: column {names[0]!r} missing (accepted names: {', '.join(names)})")


def _number(path: Path, line: int, column: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TraceError(f"{path}:{line}: column {column!r}: {value!r} is not a number") from None
    if not np.isfinite(number):
        raise TraceError(f"{path}:{line}: column {column!r}: {value!r} is not a finite number")
    return number


def _seconds(path: Path, line: int, column: str, value: Any) -> float:
    text = str(value).strip()
    match = _DATETIME.match(text) if isinstance(value, str) else None
    if match:  # Azure: 100 ns ticks, more digits than datetime parses
        stamp = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp()
        return stamp + float(f"0.{match.group(2) or 0}")
    seconds = _number(path, line, column, value)
    if seconds < 0:
        raise TraceError(f"{path}:{line}: column {column!r}: negative timestamp {value!r}")
    return seconds / 1000 if column == "timestamp_ms" else seconds


def _tokens(path: Path, line: int, column: str, value: Any) -> int:
    number = _number(path, line, column, value)
    if number < 0 or number != int(number):
        raise TraceError(f"{path}:{line}: column {column!r}: {value!r} is not a token count (an integer >= 0)")
    return int(number)


def _requests(path: Path, rows: Iterator[Row]) -> list[TraceRequest]:
    requests: list[TraceRequest] = []
    first: float | None = None
    previous: tuple[float, int] | None = None
    for line, fields in rows:
        time_column, raw_time = _column(path, line, fields, _TIME)
        at = _seconds(path, line, time_column, raw_time)
        if previous is not None and at < previous[0]:
            raise TraceError(
                f"{path}:{line}: column {time_column!r}: {raw_time!r} is earlier than the previous row's "
                f"(line {previous[1]}): a trace must be sorted by time"
            )
        previous = (at, line)
        first = at if first is None else first
        input_column, raw_input = _column(path, line, fields, _INPUT)
        output_column, raw_output = _column(path, line, fields, _OUTPUT)
        hash_ids = fields.get("hash_ids") or []
        if not isinstance(hash_ids, list) or not all(isinstance(h, int) for h in hash_ids):
            raise TraceError(f"{path}:{line}: column 'hash_ids': expected a list of integers")
        requests.append(
            TraceRequest(
                at - first,
                _tokens(path, line, input_column, raw_input),
                _tokens(path, line, output_column, raw_output),
                tuple(hash_ids),
            )
        )
    return requests


@dataclass(frozen=True)
class TracePrompts:
    """The prompts of a window of a trace, request ``index`` being the window's ``index``-th.

    Prompts are random common words of the traced input length (``max_input`` caps it, for
    a small model), built block by block from the trace's ``hash_ids`` when it has them;
    ``max_tokens`` is the traced output length (``max_output`` caps it).
    """

    trace: Trace
    requests: tuple[TraceRequest, ...]
    block_tokens: int = 512
    max_input: int | None = None
    max_output: int | None = None
    seed: int = 0

    def request(self, index: int) -> LLMRequest:
        """Prompt ``index`` of the window."""
        traced = self.requests[index]
        tokens = max(1, min(traced.input_tokens, self.max_input or traced.input_tokens))
        output = max(1, min(traced.output_tokens, self.max_output or traced.output_tokens))
        if traced.hash_ids:
            words: list[str] = []
            for block in traced.hash_ids:
                rng = np.random.default_rng([self.seed, 3, block])
                words += list(rng.choice(COMMON_WORDS, size=min(self.block_tokens, tokens - len(words))))
                if len(words) >= tokens:
                    break
            tail = np.random.default_rng([self.seed, index]).choice(COMMON_WORDS, size=tokens - len(words))
            return LLMRequest(" ".join([*words, *tail]), output, tokens)
        rng = np.random.default_rng([self.seed, index])
        return LLMRequest(f"{index}: " + " ".join(rng.choice(COMMON_WORDS, size=tokens - 1)), output, tokens)

    def times(self, time_scale: float = 1.0) -> tuple[float, ...]:
        """Due times of the window's requests: the traced gaps times ``time_scale`` (0.5: twice as fast)."""
        if not time_scale > 0:
            raise TraceError(f"trace {self.trace.name}: time_scale must be > 0, got {time_scale}")
        start = self.requests[0].at_s
        return tuple((r.at_s - start) * time_scale for r in self.requests)

    def describe(self) -> dict[str, Any]:
        """The trace (name, checksum) and how its prompts are built."""
        return {
            "prompts": "trace",
            "trace": self.trace.name,
            "trace_path": self.trace.path,
            "trace_sha256": self.trace.sha256,
            "trace_requests": len(self.requests),
            "block_tokens": self.block_tokens,
            "max_input": self.max_input,
            "max_output": self.max_output,
        }
