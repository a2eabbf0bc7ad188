"""Chroma's HTTP server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.vectors.datasets import Metric, Vectors

__all__ = ["ChromaStore"]


@dataclass
class ChromaStore:
    """Chroma's HTTP server (``chroma run``), without an embedding function."""

    host: str
    port: int
    collection: str = "aif_bench"
    name: str = "chroma"
    service: RunningService | None = field(default=None, repr=False)  # where it runs (energy)
    _client: Any = field(default=None, init=False, repr=False)
    _collection: Any = field(default=None, init=False, repr=False)

    def create(self, dim: int, metric: Metric) -> None:
        """Create the collection (dropping an old one)."""
        import chromadb

        self._client = chromadb.HttpClient(host=self.host, port=self.port)
        if self.collection in [c.name for c in self._client.list_collections()]:
            self._client.delete_collection(self.collection)
        space = {"l2": "l2", "ip": "ip", "cosine": "cosine"}[metric]
        self._collection = self._client.create_collection(
            self.collection, embedding_function=None, metadata={"hnsw:space": space}
        )

    def insert(self, ids: npt.NDArray[np.int64], vectors: Vectors, categories: npt.NDArray[np.int64]) -> None:
        """Insert one batch (the category is metadata)."""
        metadatas = [{"category": int(c)} for c in categories]
        self._collection.add(ids=[str(int(i)) for i in ids], embeddings=vectors, metadatas=metadatas)

    def build_index(self) -> None:
        """Nothing to do: Chroma indexes (HNSW) as it adds."""

    def search(self, vector: Vectors, k: int, category: int | None = None) -> list[int]:
        """Search one query (a ``where`` clause for the category)."""
        where = None if category is None else {"category": category}
        found = self._collection.query(query_embeddings=[vector], n_results=k, where=where, include=[])
        return [int(i) for i in found["ids"][0]]

    def drop(self) -> None:
        """Delete the collection and close the client's connections."""
        if self._collection is not None:
            self._client.delete_collection(self.collection)
            self._client.close()
            # close() stops chromadb's system but leaves the HTTP sessions of the client and of its
            # admin client open: their sockets would warn (fail, under filterwarnings=error) when collected.
            for owner in (self._client, getattr(self._client, "_admin_client", None)):
                session = getattr(getattr(owner, "_server", None), "_session", None)
                if session is not None:
                    session.close()
