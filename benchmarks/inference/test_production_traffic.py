"""Traffic shaped like production: multi-turn conversations, a replayed trace, embedding batches.

Sizes come from the profile's ``vars`` (small defaults for the tiny local model).
"""

from __future__ import annotations

import pytest

from pytest_aifactory.workloads.traces import SYNTHETIC_TRACE


@pytest.mark.slo("error_rate == 0", "p99_ttft_ms <= {llm_p99_e2e_ms}")
def test_conversations(llm_service, aif_load, aif_vars):
    """Sessions arriving open loop; each turn carries the history, so later turns prefill more."""
    result = aif_load.conversations(
        llm_service,
        sessions=aif_vars("conv_sessions", "synthetic:turns=3,user=24,out=8"),
        think_s=aif_vars("conv_think_s", 0.5),
        think="exponential",
        rate=aif_vars("conv_rate", 0.5),
        count=aif_vars("conv_count", 3),
    )
    assert result["sessions_completed"] == result["sessions"]
    turns = result.records[0].turns
    assert turns[-1].input_tokens > turns[0].input_tokens  # the history grew


@pytest.mark.slo("error_rate == 0")
def test_trace_replay(llm_service, aif_load, aif_vars):
    """The shipped synthetic trace (or the profile's ``trace_file``), its gaps scaled, lengths capped."""
    result = aif_load.trace_replay(
        llm_service,
        aif_vars("trace_file", str(SYNTHETIC_TRACE)),
        time_scale=aif_vars("trace_time_scale", 1.0),
        window=(0.0, aif_vars("trace_window_s", 2.0)),
        max_input=aif_vars("trace_max_input", 128),
        max_output=aif_vars("trace_max_output", 8),
    )
    assert len(result.config["trace_sha256"]) == 64
    assert result["achieved_rate"] == pytest.approx(result["offered_rate"], rel=0.2), "the client fell behind"


@pytest.mark.slo("error_rate == 0")
def test_embeddings_batch_sweep(embedding_service, aif_load, aif_vars):
    """Inputs/s and latency against the batch size."""
    points = aif_load.sweep(
        "batch",
        aif_vars("emb_batches", [1, 8]),
        aif_load.embeddings,
        embedding_service,
        concurrency=aif_vars("emb_concurrency", 2),
        count=aif_vars("emb_requests", 10),
    )
    assert points[-1]["inputs_s"] > points[0]["inputs_s"]  # batching pays
