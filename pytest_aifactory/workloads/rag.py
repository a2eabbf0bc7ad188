"""A RAG pipeline as one request: embed the question, search a vector store, stream the LLM's answer.

Before the load (not timed): every corpus document is embedded by the embedding service and
inserted into the store. Then each request, on one open-loop schedule of user questions,
embeds its question (``embed``), searches the top-k documents (``search``), builds a prompt
from them and streams the answer (``prefill``: the LLM request to its first token,
``decode``: to its end). The record marks every stage's boundaries, so the result attributes
latency to stages, and its TTFT is the pipeline's: from the question's due time to the
answer's first token. ``overhead`` is the client's own time between stages (prompt
building, hand-offs), what end-to-end latency leaves once lag and stages are taken out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.workloads.embeddings import Document, EmbeddingsClient, embed_texts
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import LLMRequest
from pytest_aifactory.workloads.vectors.stores.base import VectorStore

__all__ = ["RagClient", "RagQuestions", "index_documents"]


def index_documents(
    embedder: EmbeddingsClient, store: VectorStore, docs: Sequence[Document], batch: int = 32
) -> dict[str, int]:
    """Embed every document through the embedding service and load the store (id = document id)."""
    matrix = embed_texts(embedder, [d.text for d in docs], batch)
    store.create(matrix.shape[1], "l2")  # the vectors are normalised: L2 ranks as cosine does
    ids = np.asarray([d.id for d in docs], dtype=np.int64)
    store.insert(ids, matrix, np.zeros(len(docs), dtype=np.int64))
    store.build_index()
    return {"rag_documents": len(docs), "rag_dim": int(matrix.shape[1]), "rag_batch": batch}


@dataclass(frozen=True)
class RagQuestions:
    """Question ``index``: about a corpus document drawn by seed (its title and a phrase of it)."""

    docs: tuple[Document, ...]
    seed: int = 0

    def request(self, index: int) -> str:
        """The question text."""
        doc = self.docs[int(np.random.default_rng([self.seed, index]).integers(len(self.docs)))]
        words = doc.text.split()
        return f"How do I use {doc.title} to {' '.join(words[1:8]).rstrip('.').lower()}?"

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {"questions": "corpus", "documents": len(self.docs), "seed": self.seed}


@dataclass
class RagClient:
    """The pipeline: embedding client, vector store (searched in threads), LLM client."""

    embedder: EmbeddingsClient
    store: VectorStore
    llm: OpenAIClient
    docs: dict[int, Document]
    k: int = 3
    max_tokens: int = 32
    threads: int = 4
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Configuration for reports: the three services' clients."""
        return {
            "client": "rag",
            "embeddings": self.embedder.describe(),
            "store": self.store.name,
            "llm": self.llm.describe(),
            "k": self.k,
            "max_tokens": self.max_tokens,
        }

    async def open(self) -> None:
        """Open the embedding and LLM pools and the search threads."""
        await self.embedder.open()
        await self.llm.open()
        self._pool = ThreadPoolExecutor(self.threads)

    async def close(self) -> None:
        """Close them."""
        await self.embedder.close()
        await self.llm.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def prompt(self, question: str, ids: Sequence[int]) -> LLMRequest:
        """The LLM request: the top-k documents, then the question."""
        context = "\n".join(f"[{n}] {self.docs[i].title}: {self.docs[i].text}" for n, i in enumerate(ids, 1))
        text = f"Answer from these documents.\n{context}\nQuestion: {question}\nAnswer:"
        return LLMRequest(text, self.max_tokens, max(1, len(text) // 4))

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """One question through the three stages, marking each boundary."""
        question = str(payload)
        vectors = await self.embedder.embed([question], record)
        record.marks["embed_end"] = clock.now()
        sent = record.sent  # the question's send: the LLM stage's wire stamp must not move it
        if record.error is not None:
            return
        query = np.asarray(vectors[0], dtype=np.float32)
        record.marks["search_start"] = clock.now()
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(self._pool, self.store.search, query, self.k, None)
        record.marks["search_end"] = clock.now()
        request = self.prompt(question, [i for i in ids if i in self.docs])
        record.marks["llm_start"] = clock.now()
        record.status = None
        try:
            await self.llm.send(request, record, clock)
        finally:
            record.sent = sent
