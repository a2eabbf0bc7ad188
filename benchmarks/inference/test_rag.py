"""A RAG pipeline measured end to end: embedding server, vector store and LLM server, all three as services.

One open-loop schedule of questions; each embeds its question, searches the store's top-k
corpus documents and streams the LLM's answer from a prompt built of them. The SLO is on the
pipeline's time to first token (question due to the answer's first token); the stages
(embed, search, prefill, decode) must account for the end-to-end latency up to the client's
own overhead between them, which must stay small and is never negative.
"""

from __future__ import annotations

import os

import pytest

from pytest_aifactory.core.composite import RAG_MARKS, stage_durations_ms


@pytest.mark.slo(
    "error_rate == 0",
    "p99_ttft_ms <= {rag_p99_ttft_ms}",
    "min_overhead_ms >= 0",
    "p99_overhead_ms <= {rag_p99_overhead_ms}",
)
def test_rag_pipeline(llm_service, embedding_service, aif_vector_store, aif_load, aif_vars, readme_figures):
    """Questions at a set rate through embed, search and the streamed answer; latency by stage."""
    load_average = os.getloadavg()[0]
    rate = aif_vars("rag_rate", 0.5)
    store = aif_vector_store(aif_vars("rag_store", "milvus"), collection="aif_rag")
    result = aif_load.rag(
        llm_service,
        embedding_service,
        store,
        k=aif_vars("rag_k", 2),
        max_tokens=aif_vars("rag_max_tokens", 16),
        rate=rate,
        count=aif_vars("rag_questions", 8),
        warmup=1,
    )
    limit = aif_vars("rag_p99_overhead_ms", 50)
    for record in (r for r in result.records if not r.warmup):
        marks = record.marks
        order = [record.sent, marks["embed_end"], marks["search_start"], marks["search_end"], marks["llm_start"]]
        assert order == sorted(order), f"question {record.index}: stages out of order {order}"
        assert marks["llm_start"] <= record.first_token <= record.end
        stages = stage_durations_ms(record, RAG_MARKS)
        e2e_after_lag = (record.end - record.sent) * 1000
        unaccounted = e2e_after_lag - sum(stages[name] for name in RAG_MARKS)
        assert 0 <= unaccounted <= limit, f"question {record.index}: stages leave {unaccounted:.2f} ms unaccounted"
    assert result["p50_ttft_ms"] > result["p50_prefill_ms"]  # the pipeline's TTFT includes embed and search
    command = "pytest benchmarks/inference/test_rag.py -m inference --readme-figures"
    readme_figures.publish(
        "rag",
        f"{readme_figures.provenance(command, load_average, ('llama_cpp_python', 'milvus-lite'))}\n\n"
        f"{llm_service.name} ({llm_service.backend}), store {store.name}, {result['requests']:.0f} questions at "
        f"{rate:g}/s (Poisson): p50 TTFT {result['p50_ttft_ms']:,.0f} ms; p50 stages embed "
        f"{result['p50_embed_ms']:,.0f}, search {result['p50_search_ms']:,.1f}, "
        f"prefill {result['p50_prefill_ms']:,.0f}, "
        f"decode {result['p50_decode_ms']:,.0f} ms; overhead p50 {result['p50_overhead_ms']:.2f} ms "
        f"(p99 {result['p99_overhead_ms']:.2f}).",
    )
