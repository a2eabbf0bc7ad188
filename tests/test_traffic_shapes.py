"""Production-shaped workloads: shared prefixes, trace replay (formats, errors, timing), conversations."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest

from pytest_aifactory.core.composite import RAG_MARKS, stage_durations_ms, summarize_pipeline, summarize_sessions
from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.workloads.conversations import conversations_from_spec
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import prompts_from_spec
from pytest_aifactory.workloads.runner import LoadRunner
from pytest_aifactory.workloads.shared_prefix import SharedPrefixPrompts
from pytest_aifactory.workloads.traces import SYNTHETIC_TRACE, Trace, TraceError, TracePrompts

pytestmark = pytest.mark.timeout(120)

SPEC = "shared-prefix:prefixes=3,prefix=40,suffix=5:9,out=4,share=0.75"


def test_shared_prefix_prompts_are_reproducible_by_seed() -> None:
    first, again, other = (prompts_from_spec(SPEC, seed) for seed in (1, 1, 2))
    assert isinstance(first, SharedPrefixPrompts)
    assert [first.request(i) for i in range(20)] == [again.request(i) for i in range(20)]
    assert [first.request(i).prompt for i in range(20)] != [other.request(i).prompt for i in range(20)]


def test_shared_prefix_share_lengths_and_groups() -> None:
    prompts = prompts_from_spec(SPEC)
    assert isinstance(prompts, SharedPrefixPrompts)
    groups = [prompts.prefix_group(i) for i in range(100)]
    assert sum(g is not None for g in groups) == 75  # exactly the share
    assert {g for g in groups if g is not None} == {0, 1, 2}
    for i, group in enumerate(groups):
        request = prompts.request(i)
        head, suffix = request.prompt.split("\n")
        assert len(head.split()) == 40
        assert 5 <= len(suffix.split()) <= 9
        assert request.input_tokens == 40 + len(suffix.split())
        assert (head == prompts.prefix(group)) if group is not None else head.startswith(f"own {i}:")
    assert len({prompts.request(i).prompt for i in range(100)}) == 100  # every prompt its own
    unique = prompts_from_spec(SPEC.replace("share=0.75", "share=0"))
    assert all(unique.prefix_group(i) is None for i in range(50))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SPEC + ",colour=red", "unknown option(s) colour"),
        (SPEC.replace("share=0.75", "share=2"), "need 0 <= share <= 1"),
        (SPEC.replace("prefix=40", "prefix=x"), "prompts 'shared-prefix:"),
    ],
)
def test_shared_prefix_bad_options(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        prompts_from_spec(spec)


def test_synthetic_trace_ships_and_loads() -> None:
    trace = Trace.load(SYNTHETIC_TRACE)
    assert trace.name == "synthetic-trace"
    assert len(trace.requests) == 40
    assert len(trace.sha256) == 64
    assert trace.requests[0].at_s == 0.0
    assert trace.requests[-1].at_s == pytest.approx(6.689)
    prompts = TracePrompts(trace, trace.requests, max_input=300)
    for i, traced in enumerate(trace.requests):
        request = prompts.request(i)
        assert request.max_tokens == traced.output_tokens
        assert len(request.prompt.split()) == min(traced.input_tokens, 300)
    same_block = [i for i, r in enumerate(trace.requests) if r.hash_ids[:1] == (0,)]
    texts = [prompts.request(i).prompt.split() for i in same_block]
    shortest = min(len(t) for t in texts)
    assert len({tuple(t[:shortest]) for t in texts}) == 1  # a shared first block is a shared prefix
    assert prompts.times(0.5)[-1] == pytest.approx(6.689 / 2)


def test_azure_and_burstgpt_csv(tmp_path: Path) -> None:
    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,4808,10\n"
        "2023-11-16 18:15:47.1805900,100,1\n"
        "2023-11-16 18:16:00.0000000,20,3\n"
    )
    trace = Trace.load(azure)
    assert [r.at_s for r in trace.requests] == pytest.approx([0.0, 0.5, 13.31941])
    assert [(r.input_tokens, r.output_tokens) for r in trace.requests] == [(4808, 10), (100, 1), (20, 3)]
    assert [r.at_s for r in trace.window(0.4, 13)] == pytest.approx([0.5])
    burst = tmp_path / "burst.csv"
    burst.write_text("Timestamp,Model,Request tokens,Response tokens\n5,ChatGPT,472,18\n45,GPT-4,1087,230\n")
    assert [r.at_s for r in Trace.load(burst).requests] == [0.0, 40.0]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.csv", "timestamp_s,input_tokens\n0,5\n", r"t.csv:1: no output column .*accepted: output_tokens"),
        ("t.csv", "timestamp_s,input_tokens,output_tokens\n0,5,1\n-2,5,1\n", r"t.csv:3: column .timestamp_s.: neg"),
        ("t.csv", "timestamp_s,input_tokens,output_tokens\n3,5,1\n1,5,1\n", r"t.csv:3: column 'timestamp_s'.*sorted"),
        ("t.csv", "timestamp_s,input_tokens,output_tokens\n0,five,1\n", r"t.csv:2: column 'input_tokens': 'five'"),
        (
            "t.jsonl",
            '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 9, "input_length": 5}\n',
            r"t.jsonl:2: column 'output_tokens' missing",
        ),
        ("t.jsonl", '{"timestamp": -1, "input_length": 5, "output_length": 1}\n', r"t.jsonl:1: .*negative"),
        ("t.txt", "x", r"unknown format '.txt'"),
    ],
)
def test_bad_trace_names_file_line_and_column(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        Trace.load(path)


@pytest.fixture(scope="module")
def fast_server(aif_shared_service):  # type: ignore[no-untyped-def]
    return aif_shared_service("synthetic-llm", ttft_ms=5.0, itl_ms=1.0)


def test_trace_replay_honours_scaled_timestamps(fast_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trace = Trace.load(SYNTHETIC_TRACE)
    result = LoadRunner().trace_replay(fast_server, SYNTHETIC_TRACE, time_scale=0.25, window=(1.0, 5.0), max_input=64)
    window = trace.window(1.0, 5.0)
    expected = [(r.at_s - window[0].at_s) * 0.25 for r in window]
    assert [r.scheduled for r in result.records] == pytest.approx(expected)
    assert [r.output_tokens for r in result.records] == [r.output_tokens for r in window]
    assert result["error_rate"] == 0
    assert result["p99_lag_ms"] < 50
    assert result["offered_rate"] == pytest.approx((len(window) - 1) / expected[-1])
    assert result.config["trace"] == "synthetic-trace"
    assert result.config["trace_sha256"] == trace.sha256
    assert result.config["time_scale"] == 0.25
    assert result.config["schedule"] == "fixed times"
    assert json.loads(json.dumps(result.to_json()))["config"]["trace_requests"] == len(window)


def _turn(scheduled: float, ttft: float, end: float) -> RequestRecord:
    return RequestRecord(0, scheduled, sent=scheduled, first_token=scheduled + ttft, end=end, output_tokens=4)


def test_session_metrics_from_hand_made_records() -> None:
    sessions = []
    for i, base in enumerate((0.0, 10.0)):
        session = RequestRecord(i, base, sent=base, end=base + 3.0)
        session.turns = [
            _turn(base, 0.1, base + 1.0),
            _turn(base + 1.5, 0.3, base + 2.0),
            _turn(base + 2.5, 0.5, base + 3.0),
        ]
        sessions.append(session)
    failed = RequestRecord(2, 20.0, sent=20.0, end=21.0, error="turn 2: HTTP 500")
    failed.turns = [_turn(20.0, 0.2, 20.5), RequestRecord(2, 21.0, sent=21.0, end=21.0, error="HTTP 500")]
    result = summarize_sessions([*sessions, failed])
    assert result["sessions"] == 3
    assert result["sessions_completed"] == 2
    assert result["mean_turns"] == 3
    assert result["requests"] == 8  # every turn is a request
    assert result["errors"] == 1
    assert result["p50_session_ms"] == pytest.approx(3000)
    assert result["p50_ttft_turn1_ms"] == pytest.approx(100)  # 100, 100, 200
    assert result["max_ttft_turn1_ms"] == pytest.approx(200)
    assert result["p50_ttft_turn3_ms"] == pytest.approx(500)
    assert math.isnan(result["p50_ttft_turn4_ms"])  # no fourth turn: not available, never 0
    again = [RequestRecord.from_json(json.loads(json.dumps(s.to_json()))) for s in sessions]
    assert again[0].turns[2].first_token == pytest.approx(2.5 + 0.5)


def test_conversation_prompts_grow_with_the_history() -> None:
    workload = conversations_from_spec("synthetic:turns=4,user=6,out=5", think_s=2.0, think="exponential", seed=3)
    session = workload.request(7)
    assert session == conversations_from_spec("synthetic:turns=4,user=6,out=5", 2.0, "exponential", 3).request(7)
    assert len(session.turns) == 4
    assert len(session.think_s) == 3
    assert len(set(session.think_s)) == 3  # drawn, not fixed
    sizes = []
    for k in range(4):
        request = session.request(k)
        assert [role for role, _ in request.messages] == ["user", "assistant"] * k + ["user"]
        assert request.messages[-1][1] == session.turns[k].user
        assert all(request.messages[2 * j + 1][1] == session.turns[j].reply for j in range(k))
        assert request.max_tokens == 5
        sizes.append(request.input_tokens)
    assert sizes == [6, 17, 28, 39]  # each turn adds the previous reply (5) and a new message (6)
    _, body = OpenAIClient("http://127.0.0.1:1", "m", api="chat").body(session.request(2))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    fixed = conversations_from_spec("synthetic:turns=3,user=6,out=5", think_s=0.5).request(0)
    assert fixed.think_s == (0.5, 0.5)


def test_sharegpt_conversations_keep_their_turns(tmp_path: Path) -> None:
    path = tmp_path / "share.json"
    talk = [{"from": f, "value": f"{f} {n} words here"} for n, f in enumerate(["human", "gpt"] * 3)]
    path.write_text(json.dumps([{"conversations": talk}, {"conversations": [{"from": "gpt", "value": "x"}]}]))
    workload = conversations_from_spec(f"sharegpt:{path},max_turns=2", think_s=0)
    session = workload.request(0)
    assert [t.user for t in session.turns] == ["human 0 words here", "human 2 words here"]
    assert session.turns[1].reply == "gpt 3 words here"
    assert workload.request(1) == session  # the entry without a human turn was skipped
    with pytest.raises(ValueError, match="unknown option"):
        conversations_from_spec("synthetic:turns=2,colour=red")


def test_conversations_against_a_server(fast_server) -> None:  # type: ignore[no-untyped-def]
    result = LoadRunner().conversations(
        fast_server, sessions="synthetic:turns=3,user=8,out=4", think_s=0.05, rate=20, count=4
    )
    assert result["sessions_completed"] == 4
    assert result["requests"] == 12
    assert result["error_rate"] == 0
    for session in result.records:
        turns = session.turns
        assert turns[0].scheduled == session.scheduled
        for previous, turn in itertools.pairwise(turns):
            assert turn.scheduled - previous.end == pytest.approx(0.05, abs=0.01)  # type: ignore[operator]
    assert 5 <= result["p50_ttft_turn2_ms"] < 50
    assert result["p50_session_ms"] > 2 * 50


def test_pipeline_stages_from_hand_made_records() -> None:
    records = []
    for i in range(4):
        t = 10.0 * i
        record = RequestRecord(i, t, sent=t + 0.002, first_token=t + 0.5, end=t + 0.9, output_tokens=8)
        record.marks = {
            "embed_end": t + 0.052,
            "search_start": t + 0.053,
            "search_end": t + 0.063,
            "llm_start": t + 0.065,
        }
        records.append(record)
    records.append(RequestRecord(9, 50.0, sent=50.0, end=50.1, error="HTTP 500", marks={"embed_end": 50.1}))
    result = summarize_pipeline(records)
    assert result["p50_embed_ms"] == pytest.approx(50)
    assert result["p50_search_ms"] == pytest.approx(10)
    assert result["p50_prefill_ms"] == pytest.approx(435)
    assert result["p50_decode_ms"] == pytest.approx(400)
    assert result["p50_overhead_ms"] == pytest.approx(3)  # 1 ms before the search, 2 ms before the LLM request
    assert result["p50_ttft_ms"] == pytest.approx(500)  # the pipeline's: from the question's due time
    assert result["p50_lag_ms"] == pytest.approx(2)
    assert result.distributions["embed"].count == 4  # the failed question is not attributed
    stages = stage_durations_ms(records[0], RAG_MARKS)
    assert sum(stages.values()) + 2 == pytest.approx(900)  # stages + overhead + lag = end-to-end
