"""The embeddings family against the real embedding server (all-MiniLM-L6-v2 on CPU, on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.workloads.embeddings import DOCS, EmbeddingsClient, corpus_vectors, documents
from pytest_aifactory.workloads.runner import LoadRunner
from pytest_aifactory.workloads.vectors.datasets import VectorDataset

pytestmark = pytest.mark.timeout(600)


def test_corpus_ships() -> None:
    docs = documents(DOCS)
    assert len(docs) == 431
    assert [d.id for d in docs] == list(range(431))
    assert all(60 <= len(d.text) <= 400 for d in docs)


def test_batch_size_sweep(embedding_service) -> None:  # type: ignore[no-untyped-def]
    runner = LoadRunner()
    points = runner.sweep("batch", [1, 4], runner.embeddings, embedding_service, concurrency=1, count=6)
    for batch, point in zip((1, 4), points, strict=True):
        assert point["error_rate"] == 0
        assert point["inputs_s"] == pytest.approx(batch * point["request_s"])
        assert point["input_tok_s"] > 10 * point["inputs_s"]  # the server's token count: ~15-90 per text
        assert point["mean_input_tokens"] == pytest.approx(point["input_tok_s"] / point["request_s"])
        assert point["p50_latency_ms"] > 0
    assert points[1].config["batch"] == 4


def test_vectors_are_real_embeddings(embedding_service) -> None:  # type: ignore[no-untyped-def]
    """Normalised 384-wide vectors, and a paraphrase nearer its source than an unrelated text."""
    texts = ["Return the square root of x.", "Compute the square root of a number.", "Open a TCP socket to a host."]

    async def embed() -> tuple[list[list[float]], RequestRecord]:
        client = EmbeddingsClient(embedding_service.url().rstrip("/"), "all-MiniLM-L6-v2")
        await client.open()
        record = RequestRecord(0, 0.0)
        try:
            return await client.embed(texts, record), record
        finally:
            await client.close()

    vectors, record = asyncio.run(embed())
    matrix = np.asarray(vectors)
    assert matrix.shape == (3, 384)
    assert np.linalg.norm(matrix, axis=1) == pytest.approx([1, 1, 1], abs=1e-4)
    assert matrix[0] @ matrix[1] > matrix[0] @ matrix[2] + 0.2
    assert record.extra["inputs"] == 3


def test_a_bad_request_is_a_failed_request(embedding_service) -> None:  # type: ignore[no-untyped-def]
    async def send() -> RequestRecord:
        client = EmbeddingsClient(embedding_service.url().rstrip("/"), "m")
        await client.open()
        record = RequestRecord(0, 0.0)
        try:
            await client.embed([], record)
        finally:
            await client.close()
        return record

    record = asyncio.run(send())
    assert record.status == 400
    assert "non-empty list" in str(record.error)


def test_corpus_vectors_feed_a_vector_dataset(embedding_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = corpus_vectors(embedding_service, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert corpus_vectors(embedding_service, tmp_path) == path
    assert path.stat().st_mtime_ns == stamp  # cached, not embedded again
    rows = np.load(path)
    assert rows.shape == (431, 384)
    dataset = VectorDataset("embedded", count=331, dim=384, queries=100, source=str(path))
    assert np.array_equal(dataset.base(), rows[:331])
    assert np.array_equal(dataset.query_vectors(), rows[331:])
    assert dataset.describe()["source"] == str(path)
    with pytest.raises(ValueError, match=r"count \+ queries = 500 rows of dim 384 in source=.*found \(431, 384\)"):
        VectorDataset("embedded", count=400, dim=384, queries=100, source=str(path))
    with pytest.raises(ValueError, match="found no such file"):
        VectorDataset("embedded", count=10, dim=384, queries=1, source=str(tmp_path / "none.npy"))
