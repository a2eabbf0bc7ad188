"""Seeded vector datasets and their exact ground truth (FAISS flat, cached)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pytest_aifactory.core.errors import LoadConfigError

__all__ = ["CATEGORIES", "DATASETS", "DIGITS_DIM", "DIGITS_ROWS", "Metric", "VectorDataset", "Vectors"]


DATASETS = ("random", "clustered", "digits", "embedded")
DIGITS_ROWS, DIGITS_DIM = 1797, 64  # scikit-learn's bundled copy of the UCI handwritten digits
CATEGORIES = 10
Metric = Literal["l2", "ip", "cosine"]
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class VectorDataset:
    """``count`` base vectors and ``queries`` query vectors of ``dim`` dimensions (seeded).

    ``random``: standard normal. ``clustered``: points around 32 centres (harder for
    approximate indexes, closer to embeddings). ``digits``: a small real dataset, the
    1,797 8x8 handwritten digits scikit-learn ships (dim 64; ``count + queries <= 1797``).
    ``embedded``: real embeddings, the rows of the ``.npy`` file ``source`` (e.g. the text
    corpus embedded by the embedding service: ``workloads.embeddings.corpus_vectors``); base
    rows first, queries after them.
    """

    name: str
    count: int
    dim: int
    queries: int = 200
    metric: Metric = "l2"
    seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        """A bad name, metric or size is a ``LoadConfigError`` (one paragraph) saying what is accepted."""
        if self.name not in DATASETS:
            raise LoadConfigError(f"unknown dataset {self.name!r}; valid datasets: {', '.join(DATASETS)}")
        if self.metric not in ("l2", "ip", "cosine"):
            raise LoadConfigError(f"unknown metric {self.metric!r}; valid: l2, ip, cosine")
        if self.name == "digits" and (self.dim != DIGITS_DIM or self.count + self.queries > DIGITS_ROWS):
            raise LoadConfigError(
                f"dataset 'digits' has {DIGITS_ROWS} vectors of dim {DIGITS_DIM}: asked for dim {self.dim} and "
                f"count + queries = {self.count + self.queries}"
            )
        if self.name == "embedded":
            shape = np.load(self.source, mmap_mode="r").shape if Path(self.source).is_file() else None
            if shape is None or shape[1] != self.dim or self.count + self.queries > shape[0]:
                raise LoadConfigError(
                    f"dataset 'embedded' needs a .npy of at least count + queries = {self.count + self.queries} "
                    f"rows of dim {self.dim} in source={self.source!r}; found {shape or 'no such file'}"
                )

    def _draw(self, n: int, stream: int) -> Vectors:
        rng = np.random.default_rng([self.seed, stream])
        if self.name == "embedded":
            rows = np.load(self.source)
            data = rows[: self.count] if stream == 0 else rows[self.count : self.count + n]
        elif self.name == "digits":  # real data: base rows first, queries after them (disjoint)
            from sklearn.datasets import load_digits

            rows = load_digits().data
            data = rows[: self.count] if stream == 0 else rows[self.count : self.count + n]
        elif self.name == "random":
            data = rng.standard_normal((n, self.dim))
        else:
            centres = np.random.default_rng([self.seed, 99]).standard_normal((32, self.dim)) * 4
            data = centres[rng.integers(0, 32, n)] + rng.standard_normal((n, self.dim))
        vectors: Vectors = data.astype(np.float32)
        if self.metric == "cosine":
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def base(self) -> Vectors:
        """The vectors to insert (id = row number)."""
        return self._draw(self.count, 0)

    def query_vectors(self) -> Vectors:
        """The query vectors."""
        return self._draw(self.queries, 1)

    def key(self) -> str:
        """A stable name for caches."""
        text = f"{self.name}-{self.count}-{self.dim}-{self.queries}-{self.metric}-{self.seed}"
        text += f"-{self.source}" if self.source else ""
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def categories(self) -> npt.NDArray[np.int64]:
        """The filter attribute of every base vector: ``id % CATEGORIES``."""
        return np.arange(self.count, dtype=np.int64) % CATEGORIES

    def query_category(self, query: int) -> int:
        """The category a filtered search of query ``query`` asks for."""
        return query % CATEGORIES

    def ground_truth(self, k: int, cache_dir: Path, filtered: bool = False) -> npt.NDArray[np.int64]:
        """Exact k nearest neighbours of every query (FAISS flat), computed once and cached.

        ``filtered``: among the base vectors of the query's category only.
        """
        path = cache_dir / f"gt-{self.key()}-k{k}{'-filtered' if filtered else ''}.npy"
        if path.exists():
            cached: npt.NDArray[np.int64] = np.load(path)
            return cached
        import faiss

        base, queries, categories = self.base(), self.query_vectors(), self.categories()
        truth = np.empty((self.queries, k), dtype=np.int64)
        groups = range(CATEGORIES) if filtered else [None]
        for group in groups:
            members = np.arange(self.count) if group is None else np.flatnonzero(categories == group)
            rows = [q for q in range(self.queries) if group is None or self.query_category(q) == group]
            index = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
            index.add(base[members])
            _, found = index.search(queries[rows], k)
            truth[rows] = members[found]
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, truth)
        return truth

    def describe(self) -> dict[str, Any]:
        """The dataset as JSON-ready configuration."""
        return {
            "dataset": self.name,
            "count": self.count,
            "dim": self.dim,
            "queries": self.queries,
            "metric": self.metric,
            **({"source": self.source} if self.source else {}),
        }
