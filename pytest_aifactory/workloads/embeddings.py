"""Embeddings: an OpenAI ``/v1/embeddings`` client, batches of a small real text corpus.

Each request embeds a batch of texts; its record counts ``inputs`` and the server's
``input_tok`` (usage), reported per second as ``inputs_s`` and ``input_tok_s``; latency is
the usual one (from the scheduled time). A response with the wrong number of vectors, or
vectors of different widths, is a failed request.

The corpus (``DOCS``): 431 first paragraphs of CPython 3.11 standard-library docstrings
(PSF License), real English technical text of 60-400 characters, with the name of what each
documents; it feeds the batches here, the vector suites' real embeddings and the RAG pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.sse import PooledClient

__all__ = [
    "DOCS",
    "Document",
    "EmbeddingBatches",
    "EmbeddingsClient",
    "corpus_vectors",
    "documents",
    "embed_texts",
    "embeddings_client",
]

DOCS = Path(__file__).with_name("data") / "stdlib-docs.jsonl"


@dataclass(frozen=True)
class Document:
    """One corpus entry: its number, what it documents, its text."""

    id: int
    title: str
    text: str


def documents(path: Path = DOCS) -> list[Document]:
    """The corpus as documents (``{"id", "title", "text"}`` per line)."""
    return [Document(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class EmbeddingBatches:
    """Request ``index`` embeds ``batch`` corpus texts (a seeded draw per index)."""

    texts: tuple[str, ...]
    batch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"embeddings: batch={self.batch}: need at least 1 input per request")

    def request(self, index: int) -> list[str]:
        """The texts of request ``index``."""
        picks = np.random.default_rng([self.seed, index]).integers(0, len(self.texts), self.batch)
        return [self.texts[i] for i in picks]

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {"inputs": "corpus", "corpus_texts": len(self.texts), "batch": self.batch, "seed": self.seed}


@dataclass
class EmbeddingsClient(PooledClient):
    """POSTs ``/v1/embeddings`` to ``base_url`` and checks the vectors that come back."""

    def describe(self) -> dict[str, Any]:
        """Configuration for reports."""
        return {"client": "openai-embeddings", "base_url": self.base_url, "model": self.model}

    async def embed(self, texts: list[str], record: RequestRecord) -> list[list[float]]:
        """The vectors of ``texts`` (the record gets status, error, ``inputs`` and ``input_tok``; not its end)."""
        assert self._http is not None, "open() first"
        async with self._http.post("/v1/embeddings", json={"model": self.model, "input": texts}) as response:
            record.status = response.status
            if response.status >= 400:
                record.error = f"HTTP {response.status}: {(await response.text(errors='replace'))[:300]}"
                return []
            body = await response.json()
        vectors = [item["embedding"] for item in sorted(body.get("data", []), key=lambda d: d["index"])]
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) != 1:
            widths = sorted({len(v) for v in vectors})
            record.error = f"{len(texts)} inputs gave {len(vectors)} vectors of widths {widths}"
            return []
        record.extra["inputs"] = record.extra.get("inputs", 0.0) + len(texts)
        tokens = (body.get("usage") or {}).get("prompt_tokens")
        if tokens is not None:
            record.extra["input_tok"] = record.extra.get("input_tok", 0.0) + float(tokens)
        return vectors

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Embed one batch (its input tokens are the server's count)."""
        await self.embed(list(payload), record)
        record.end = clock.now()
        if "input_tok" in record.extra:
            record.input_tokens = int(record.extra["input_tok"])


def embeddings_client(service: RunningService | str, model: str | None = None) -> EmbeddingsClient:
    """A client of an embedding service (or base URL); the model from its spec unless given."""
    meta = service.spec.meta if isinstance(service, RunningService) else {}
    url = service.url() if isinstance(service, RunningService) else service
    return EmbeddingsClient(url.rstrip("/"), model or meta.get("model", "default"))


def embed_texts(client: EmbeddingsClient, texts: Sequence[str], batch: int = 32) -> npt.NDArray[np.float32]:
    """The vectors of ``texts`` (one row each), embedded ``batch`` at a time outside any load."""

    async def embed_all() -> list[list[float]]:
        await client.open()
        try:
            vectors: list[list[float]] = []
            for begin in range(0, len(texts), batch):
                record = RequestRecord(0, 0.0)
                vectors += await client.embed(list(texts[begin : begin + batch]), record)
                if record.error is not None:
                    raise RuntimeError(f"embedding {len(texts)} texts at {client.base_url} failed: {record.error}")
            return vectors
        finally:
            await client.close()

    return np.asarray(asyncio.run(embed_all()), dtype=np.float32)


def corpus_vectors(service: RunningService | str, cache_dir: Path, path: Path = DOCS) -> Path:
    """A ``.npy`` of the corpus's embeddings by ``service`` (one row per document), computed once and cached."""
    client = embeddings_client(service)
    key = hashlib.sha256(path.read_bytes() + client.model.encode()).hexdigest()[:16]
    target = cache_dir / f"corpus-{key}.npy"
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(target, embed_texts(client, [d.text for d in documents(path)]))
    return target
