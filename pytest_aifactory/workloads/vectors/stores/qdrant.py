"""Qdrant through qdrant-client."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.vectors.datasets import Metric, Vectors

__all__ = ["QdrantStore"]


@dataclass
class QdrantStore:
    """Qdrant through qdrant-client: a server (``url``) or its in-process mode (``location``).

    A server's API key, when it wants one, comes from ``AIF_QDRANT_API_KEY``.
    """

    url: str | None = None
    location: str | None = None
    collection: str = "aif_bench"
    name: str = "qdrant"
    service: RunningService | None = field(default=None, repr=False)  # where it runs (energy)
    _client: Any = field(default=None, init=False, repr=False)

    def create(self, dim: int, metric: Metric) -> None:
        """Create the collection (dropping an old one)."""
        from qdrant_client import QdrantClient, models

        if self.url:
            self._client = QdrantClient(url=self.url, api_key=os.environ.get("AIF_QDRANT_API_KEY"))
        else:
            self._client = QdrantClient(location=self.location or ":memory:")
        distance = {"l2": models.Distance.EUCLID, "ip": models.Distance.DOT, "cosine": models.Distance.COSINE}[metric]
        if self._client.collection_exists(self.collection):
            self._client.delete_collection(self.collection)
        self._client.create_collection(self.collection, vectors_config=models.VectorParams(size=dim, distance=distance))

    def insert(self, ids: npt.NDArray[np.int64], vectors: Vectors, categories: npt.NDArray[np.int64]) -> None:
        """Upsert one batch (the category is payload) and wait until it is applied."""
        from qdrant_client import models

        batch = models.Batch(
            ids=[int(i) for i in ids], vectors=vectors.tolist(), payloads=[{"category": int(c)} for c in categories]
        )
        self._client.upsert(self.collection, points=batch, wait=True)

    def build_index(self) -> None:
        """Index the category payload (Qdrant builds its HNSW graph as points arrive)."""
        from qdrant_client import models

        if self.url:
            self._client.create_payload_index(
                self.collection, "category", field_schema=models.PayloadSchemaType.INTEGER
            )

    def search(self, vector: Vectors, k: int, category: int | None = None) -> list[int]:
        """Search one query (a payload filter for the category)."""
        from qdrant_client import models

        where = None
        if category is not None:
            where = models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value=category))])
        found = self._client.query_points(self.collection, query=vector.tolist(), limit=k, query_filter=where)
        return [int(point.id) for point in found.points]

    def drop(self) -> None:
        """Delete the collection."""
        if self._client is not None:
            self._client.delete_collection(self.collection)
            self._client.close()
