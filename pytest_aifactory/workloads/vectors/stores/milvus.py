"""Milvus through ``MilvusClient``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.services.connect import milvus_client
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.vectors.datasets import Metric, Vectors

__all__ = ["MilvusStore"]


@dataclass
class MilvusStore:
    """Milvus (milvus-lite server locally, standalone on the cluster) through ``MilvusClient``.

    The collection has an INT64 ``category`` field; the vector index (``index_type`` with
    ``index_params``: ``HNSW`` by default, ``IVF_FLAT`` with ``{"nlist": 1024}``, ``FLAT``, or
    ``AUTOINDEX`` to let the server choose) is built after the load, so its build time is what
    is reported. ``search_params`` go with every search (``{"ef": 128}``, ``{"nprobe": 16}``).
    """

    uri: str
    collection: str = "aif_bench"
    index_type: str = "HNSW"  # M and ef as the FAISS store's HNSW32 with ef_search=128
    index_params: dict[str, Any] = field(default_factory=lambda: {"M": 32, "efConstruction": 200})
    search_params: dict[str, Any] = field(default_factory=lambda: {"ef": 128})
    name: str = "milvus"
    service: RunningService | None = field(default=None, repr=False)  # where it runs (energy)
    _client: Any = field(default=None, init=False, repr=False)

    def create(self, dim: int, metric: Metric) -> None:
        """Create the collection (dropping an old one), without an index yet."""
        from pymilvus import DataType, MilvusClient

        self._client = milvus_client(self.uri)
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)
        self._metric = {"l2": "L2", "ip": "IP", "cosine": "COSINE"}[metric]
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("category", DataType.INT64)
        self._client.create_collection(self.collection, schema=schema)

    def insert(self, ids: npt.NDArray[np.int64], vectors: Vectors, categories: npt.NDArray[np.int64]) -> None:
        """Insert one batch."""
        rows = [
            {"id": int(i), "vector": v.tolist(), "category": int(c)}
            for i, v, c in zip(ids, vectors, categories, strict=True)
        ]
        self._client.insert(self.collection, rows)

    def build_index(self) -> None:
        """Flush, build the vector index (waiting for it) and load the collection for search."""
        self._client.flush(self.collection)
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type=self.index_type, metric_type=self._metric, params=self.index_params)
        self._client.create_index(self.collection, index)
        self._client.load_collection(self.collection)

    def search(self, vector: Vectors, k: int, category: int | None = None) -> list[int]:
        """Search one query (a filter expression for the category)."""
        where = "" if category is None else f"category == {category}"
        hits = self._client.search(
            self.collection,
            data=[vector.tolist()],
            limit=k,
            filter=where,
            output_fields=[],
            search_params={"params": self.search_params},
        )
        return [int(hit["id"]) for hit in hits[0]]

    def drop(self) -> None:
        """Drop the collection."""
        if self._client is not None:
            try:
                self._client.drop_collection(self.collection)
            finally:
                self._client.close()
