"""Loading a store, searching it under load, and scoring recall@k against the ground truth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.workloads.vectors.datasets import CATEGORIES, Metric, VectorDataset, Vectors
from pytest_aifactory.workloads.vectors.stores.base import VectorStore

__all__ = ["QueryIndices", "SearchClient", "load_store"]


def load_store(store: VectorStore, dataset: VectorDataset, vectors: Vectors, batch: int = 1000) -> dict[str, float]:
    """Create, insert ``vectors`` (the dataset's base, drawn by the caller), build the index; the load's figures."""
    categories = dataset.categories()
    store.create(dataset.dim, dataset.metric)
    started = time.perf_counter()
    for begin in range(0, len(vectors), batch):
        ids = np.arange(begin, min(begin + batch, len(vectors)), dtype=np.int64)
        store.insert(ids, vectors[begin : begin + batch], categories[begin : begin + batch])
    inserted = time.perf_counter()
    store.build_index()
    built = time.perf_counter()
    return {"insert_vec_s": len(vectors) / (inserted - started), "index_build_s": built - inserted}


@dataclass
class SearchClient:
    """Searches in a thread pool (the store clients are synchronous); records recall@k."""

    store: VectorStore
    queries: Vectors
    truth: npt.NDArray[np.int64]
    k: int
    threads: int
    base: Vectors
    metric: Metric
    categories: Sequence[int] | None = None
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Configuration for reports."""
        return {
            "client": self.store.name,
            "k": self.k,
            "threads": self.threads,
            "filtered": self.categories is not None,
        }

    async def open(self) -> None:
        """Start the threads."""
        self._pool = ThreadPoolExecutor(self.threads)

    async def close(self) -> None:
        """Stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Search query ``payload`` and score it against the ground truth."""
        index = int(payload)
        loop = asyncio.get_running_loop()
        category = None if self.categories is None else self.categories[index]
        found = await loop.run_in_executor(self._pool, self.store.search, self.queries[index], self.k, category)
        record.end = clock.now()
        record.values[f"recall_at_{self.k}"] = self.recall(index, found)

    def recall(self, index: int, found: Sequence[int]) -> float:
        """The share of the k true neighbours matched by ``found``.

        A returned neighbour counts when it is no farther than the k-th true one (so an equally
        near vector counts, as in ann-benchmarks) and, for a filtered search, is in the
        query's category.
        """
        truth = self.truth[index]
        ids = np.fromiter(dict.fromkeys(i for i in found[: self.k] if 0 <= i < len(self.base)), dtype=np.int64)
        if self.categories is not None:
            ids = ids[ids % CATEGORIES == self.categories[index]]
        if len(ids) == 0:
            return 0.0
        query = self.queries[index]
        limit = self._distance(query, self.base[truth[self.k - 1 : self.k]])[0]
        hits = int((self._distance(query, self.base[ids]) <= limit + 1e-5 * max(1.0, abs(limit))).sum())
        return min(hits, self.k) / self.k

    def _distance(self, query: Vectors, rows: Vectors) -> npt.NDArray[np.float64]:
        wide = rows.astype(np.float64)
        distance: npt.NDArray[np.float64] = (
            ((wide - query) ** 2).sum(axis=1) if self.metric == "l2" else -(wide @ query)
        )
        return distance


@dataclass(frozen=True)
class QueryIndices:
    """Request ``index`` searches query ``index % count``."""

    count: int

    def request(self, index: int) -> int:
        """The query number of request ``index``."""
        return index % self.count
