"""What a vector database must do for the benchmark, and the stores there are."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.vectors.datasets import Metric, Vectors

__all__ = ["VECTOR_STORES", "VectorStore"]


VECTOR_STORES = ("faiss", "faiss-gpu", "milvus", "chroma", "qdrant", "weaviate")


class VectorStore(Protocol):
    """What a vector database must do for the benchmark."""

    name: str
    service: RunningService | None  # the run's service it is a client of (None: in-process or external)

    def create(self, dim: int, metric: Metric) -> None:
        """Create an empty collection."""

    def insert(self, ids: npt.NDArray[np.int64], vectors: Vectors, categories: npt.NDArray[np.int64]) -> None:
        """Insert one batch, each vector with its integer ``category`` attribute."""

    def build_index(self) -> None:
        """Build the search index (and flush) after inserting."""

    def search(self, vector: Vectors, k: int, category: int | None = None) -> list[int]:
        """Ids of the k nearest neighbours of one query (among ``category`` when given)."""

    def drop(self) -> None:
        """Delete the collection."""
