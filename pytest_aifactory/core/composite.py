"""Results of composite requests: conversation sessions (records of turns) and pipelines (stage marks).

A session's record holds its turns' records (``RequestRecord.turns``): the usual metrics
are computed over the turns (TTFT, ITL, E2E of every turn, each from its own due time), and
added to them are the session duration, the TTFT of turns 1..``TURN_METRICS`` one by one,
and session counts. A pipeline's record holds its stage boundaries (``RequestRecord.marks``:
``embed_start``, ``embed_end``...): each stage's duration becomes a distribution, and
``overhead`` is what end-to-end latency leaves once the schedule lag and the stages are
taken out (the client's own time between stages).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pytest_aifactory.core.metric_table import TURN_METRICS
from pytest_aifactory.core.metrics import Distribution, LoadResult, summarize
from pytest_aifactory.core.records import RequestRecord

__all__ = ["RAG_MARKS", "stage_durations_ms", "summarize_pipeline", "summarize_sessions"]

# stage -> (start mark, end mark); "sent" and "end" are the record's own fields
RAG_MARKS: Mapping[str, tuple[str, str]] = {
    "embed": ("sent", "embed_end"),
    "search": ("search_start", "search_end"),
    "prefill": ("llm_start", "first_token"),
    "decode": ("first_token", "end"),
}


def summarize_sessions(sessions: Sequence[RequestRecord], *args: Any, **kwargs: Any) -> LoadResult:
    """The usual metrics over every turn, plus per-session and per-turn-index figures.

    The other arguments are ``summarize``'s (label, mode, config, goodput).
    """
    turns = []
    for session in sessions:
        for turn in session.turns:
            turn.warmup = session.warmup
            turns.append(turn)
    result = summarize(turns, *args, **kwargs)
    measured = [s for s in sessions if not s.warmup]
    complete = [s for s in measured if s.ok]
    result.distributions["session"] = Distribution.of([(s.end - s.scheduled) * 1000 for s in complete if s.end])
    for k in range(1, TURN_METRICS + 1):
        ttfts = [
            (t.first_token - t.scheduled) * 1000
            for s in measured
            if len(s.turns) >= k and (t := s.turns[k - 1]).ok and t.first_token is not None
        ]
        result.distributions[f"ttft_turn{k}"] = Distribution.of(ttfts)
    result.scalars.update(
        sessions=float(len(measured)),
        sessions_completed=float(len(complete)),
        mean_turns=float(np.mean([len(s.turns) for s in complete])) if complete else math.nan,
    )
    result.records = list(sessions)
    return result


def _instant(record: RequestRecord, mark: str) -> float | None:
    if mark in ("sent", "first_token", "end", "scheduled"):
        value: float | None = getattr(record, mark)
        return value
    return record.marks.get(mark)


def stage_durations_ms(record: RequestRecord, stages: Mapping[str, tuple[str, str]]) -> dict[str, float]:
    """Each stage's duration (ms) whose two marks the record has, and the ``overhead`` left over."""
    durations: dict[str, float] = {}
    for stage, (start, end) in stages.items():
        begin, finish = _instant(record, start), _instant(record, end)
        if begin is not None and finish is not None:
            durations[stage] = (finish - begin) * 1000
    if len(durations) == len(stages) and record.sent is not None and record.end is not None:
        lag = record.sent - record.scheduled
        durations["overhead"] = (record.end - record.scheduled - lag) * 1000 - sum(durations.values())
    return durations


def summarize_pipeline(
    records: Sequence[RequestRecord], *args: Any, stages: Mapping[str, tuple[str, str]] = RAG_MARKS, **kwargs: Any
) -> LoadResult:
    """The usual metrics (TTFT is the pipeline's: question due to the answer's first token) and every stage's.

    The other arguments are ``summarize``'s (label, mode, config, goodput).
    """
    result = summarize(records, *args, **kwargs)
    done = [stage_durations_ms(r, stages) for r in records if r.ok and not r.warmup]
    for stage in (*stages, "overhead"):
        result.distributions[stage] = Distribution.of([d[stage] for d in done if stage in d])
    return result
