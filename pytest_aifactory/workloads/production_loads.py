"""Loads shaped like production traffic, as ``aif_load`` methods: trace replay, conversations, embeddings, RAG.

``LoadRunner`` inherits these; each builds its client and workload and hands them to
``LoadRunner.run`` like the other helpers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pytest_aifactory.core.composite import summarize_pipeline, summarize_sessions
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.load.engine import LoadPlan
from pytest_aifactory.load.parameters import check_parameters
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.conversations import ConversationClient, conversations_from_spec
from pytest_aifactory.workloads.embeddings import EmbeddingBatches, documents, embeddings_client
from pytest_aifactory.workloads.energy import REQUESTS, TOKENS
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.plans import make_plan
from pytest_aifactory.workloads.rag import RagClient, RagQuestions, index_documents
from pytest_aifactory.workloads.server_metrics import scraper_for
from pytest_aifactory.workloads.traces import Trace, TracePrompts
from pytest_aifactory.workloads.vectors.stores.base import VectorStore

__all__ = ["ProductionLoads", "openai_client"]


def openai_client(
    service: RunningService | str,
    api: Literal["completions", "chat"] = "completions",
    model: str | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> OpenAIClient:
    """A streaming client of an OpenAI-compatible service (its model, key variable and body from its spec)."""
    meta = service.spec.meta if isinstance(service, RunningService) else {}
    body = json.loads(meta.get("extra_body", "{}"))
    return OpenAIClient(
        base_url=service.url() if isinstance(service, RunningService) else service,
        model=model or meta.get("model", "default"),
        api=api,
        api_key_env=meta.get("api_key_env") or None,
        continuous_usage=meta.get("continuous_usage") == "true",
        fixed_length=meta.get("fixed_length") == "true",
        extra_body={**body, **dict(extra_body or {})},
    )


def watching(service: RunningService | str, units: tuple[str, ...]) -> dict[str, Any]:
    """``run()``'s watchers of a service: its own metrics (when it exposes known ones), its node's energy."""
    return {"server": scraper_for(service), "energy": (service, units)}


class _Runner(Protocol):
    run: Callable[..., LoadResult]


class ProductionLoads:
    """Trace replay, and the other production-shaped loads of ``aif_load``."""

    def trace_replay(
        self: _Runner,
        service: RunningService | str,
        trace: Path | str,
        *,
        time_scale: float = 1.0,
        window: tuple[float, float | None] = (0.0, None),
        api: Literal["completions", "chat"] = "completions",
        block_tokens: int = 512,
        max_input: int | None = None,
        max_output: int | None = None,
        concurrency: int | None = None,
        warmup: int = 0,
        timeout_s: float = 300.0,
        seed: int = 0,
        label: str | None = None,
        goodput: Mapping[str, float] | None = None,
        workers: int | None = None,
    ) -> LoadResult:
        """Replay a trace file's arrivals and lengths (``window`` in trace seconds, gaps times ``time_scale``).

        Latency counts from each request's traced (scaled) time, as in every open-loop load;
        the result's configuration names the trace and its SHA-256.
        """
        check_parameters(concurrency=concurrency, warmup=warmup, timeout_s=timeout_s)
        loaded = Trace.load(trace)
        requests = loaded.window(*window)
        if not requests:
            raise ValueError(f"trace {loaded.path}: no request in the window {window} (seconds of trace time)")
        prompts = TracePrompts(loaded, tuple(requests), block_tokens, max_input, max_output, seed)
        times = prompts.times(time_scale)
        if warmup >= len(times):
            raise ValueError(f"trace {loaded.path}: warmup={warmup} leaves none of its {len(times)} requests")
        plan = LoadPlan("open", None, concurrency, len(times) - warmup, None, warmup, timeout_s, times=times)
        return self.run(
            openai_client(service, api),
            prompts,
            plan,
            label=label or f"trace {loaded.name} x{time_scale:g}",
            workers=workers,
            goodput=goodput,
            config={"time_scale": time_scale, "window_s": list(window)},
            **watching(service, TOKENS),
        )

    def conversations(
        self: _Runner,
        service: RunningService | str,
        *,
        sessions: str = "synthetic:turns=4,user=16,out=16",
        think_s: float = 1.0,
        think: Literal["fixed", "exponential"] = "fixed",
        api: Literal["completions", "chat"] = "chat",
        model: str | None = None,
        label: str | None = None,
        workers: int | None = None,
        goodput: Mapping[str, float] | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Multi-turn sessions (``rate``: sessions/s, open loop; ``count``: sessions) with growing history.

        ``sessions`` is ``synthetic:turns=2:6,user=16,out=32`` or ``sharegpt:PATH[,max_turns=N,max_out=N]``;
        ``think_s`` the think time between turns (``think="exponential"`` draws it with that
        mean). The usual metrics are over every turn; ``p50_session_ms``, ``p99_ttft_turn3_ms``,
        ``sessions`` and ``mean_turns`` are added.
        """
        workload = conversations_from_spec(sessions, think_s, think, int(plan.get("seed", 0)))
        return self.run(
            ConversationClient(openai_client(service, api, model)),
            workload,
            make_plan(**plan),
            label=label,
            workers=workers,
            goodput=goodput,
            summarizer=summarize_sessions,
            **watching(service, TOKENS),
        )

    def embeddings(
        self: _Runner,
        service: RunningService | str,
        *,
        batch: int = 1,
        model: str | None = None,
        label: str | None = None,
        workers: int | None = None,
        **plan: Any,
    ) -> LoadResult:
        """``/v1/embeddings`` requests of ``batch`` corpus texts each: inputs/s, tokens/s, latency.

        A batch-size sweep: ``aif_load.sweep("batch", [1, 8, 32], aif_load.embeddings, service, count=50)``.
        """
        texts = tuple(doc.text for doc in documents())
        return self.run(
            embeddings_client(service, model),
            EmbeddingBatches(texts, int(batch), int(plan.get("seed", 0))),
            make_plan(**plan),
            label=label,
            workers=workers,
            energy=(service, REQUESTS),
        )

    def rag(
        self: _Runner,
        llm: RunningService | str,
        embeddings: RunningService | str,
        store: VectorStore,
        *,
        k: int = 3,
        max_tokens: int = 32,
        api: Literal["completions", "chat"] = "completions",
        label: str | None = None,
        goodput: Mapping[str, float] | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Questions through embed, search (``store``, top ``k``) and the LLM's streamed answer.

        The corpus is embedded and loaded into ``store`` first (not timed; the store is
        dropped after). TTFT is the pipeline's (question due to the answer's first token);
        ``p50_embed_ms``, ``p99_search_ms``, ``p50_prefill_ms``, ``p99_decode_ms`` and
        ``p99_overhead_ms`` attribute the latency to stages.
        """
        docs = documents()
        embedder = embeddings_client(embeddings)
        try:
            loaded = index_documents(embedder, store, docs)
            client = RagClient(embedder, store, openai_client(llm, api), {d.id: d for d in docs}, k, max_tokens)
            return self.run(
                client,
                RagQuestions(tuple(docs), int(plan.get("seed", 0))),
                make_plan(**plan),
                label=label,
                workers=1,  # the store client stays in this process
                goodput=goodput,
                config=loaded,
                summarizer=summarize_pipeline,
            )
        finally:
            store.drop()
