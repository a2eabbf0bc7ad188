"""In-process FAISS, on the CPU or on every visible GPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.vectors.datasets import Metric, Vectors

__all__ = ["GPU_FILTER_UNSUPPORTED", "FaissStore", "faiss_gpus"]


GPU_FILTER_UNSUPPORTED = "FAISS GPU indexes ignore IDSelector filters (facebookresearch/faiss#3924): no filtered search"


def faiss_gpus() -> int:
    """How many GPUs this process's FAISS build can use (0 with faiss-cpu)."""
    import faiss

    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


@dataclass
class FaissStore:
    """In-process FAISS: any ``index_factory`` string, on the CPU or on every visible GPU.

    ``HNSW32`` (``ef_search`` candidates) on the CPU by default, ``Flat`` (exact) on GPUs.
    Indexes that need training (``IVF...``, searched with ``nprobe`` lists) are trained on
    the inserted vectors at ``build_index``, and that time is the index build time.
    """

    index_type: str = ""
    ef_search: int = 128
    nprobe: int = 16
    device: Literal["cpu", "gpu"] = "cpu"
    name: str = "faiss"
    service: RunningService | None = field(default=None, repr=False)  # in-process: none (no energy figure)
    _index: Any = field(default=None, init=False, repr=False)
    _pending: list[Vectors] = field(default_factory=list, init=False, repr=False)
    _categories: list[npt.NDArray[np.int64]] = field(default_factory=list, init=False, repr=False)
    _selectors: dict[int, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"FAISS device {self.device!r}; valid: cpu, gpu")
        self.index_type = self.index_type or ("Flat" if self.device == "gpu" else "HNSW32")
        if self.device == "gpu":
            self.name = "faiss-gpu"

    @property
    def _ivf(self) -> bool:
        return "IVF" in self.index_type

    def create(self, dim: int, metric: Metric) -> None:
        """Create the index object (copied to every GPU for ``device="gpu"``)."""
        import faiss

        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.index_factory(dim, self.index_type, kind)
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = self.ef_search
        if self._ivf:
            faiss.extract_index_ivf(index).nprobe = self.nprobe
        if self.device == "gpu":
            if faiss_gpus() == 0:
                raise RuntimeError("FAISS device 'gpu': this FAISS build sees no GPU (faiss-cpu, or no GPU visible)")
            index = faiss.index_cpu_to_all_gpus(index)
        self._index = index

    def insert(self, ids: npt.NDArray[np.int64], vectors: Vectors, categories: npt.NDArray[np.int64]) -> None:
        """Add vectors (ids are row numbers, in order); kept until ``build_index`` if it must train."""
        if self._index.is_trained:
            self._index.add(vectors)
        else:
            self._pending.append(vectors)
        self._categories.append(categories)

    def build_index(self) -> None:
        """Train on the inserted vectors and add them (FAISS builds HNSW and flat indexes as it adds)."""
        if self._pending:
            vectors = np.concatenate(self._pending)
            self._index.train(vectors)
            self._index.add(vectors)
            self._pending.clear()

    def search(self, vector: Vectors, k: int, category: int | None = None) -> list[int]:
        """Search one query; a category filter is an ``IDSelectorBatch``."""
        import faiss

        params = None
        if category is not None:
            if self.device == "gpu":
                raise RuntimeError(GPU_FILTER_UNSUPPORTED)
            if category not in self._selectors:
                members = np.flatnonzero(np.concatenate(self._categories) == category).astype(np.int64)
                self._selectors[category] = faiss.IDSelectorBatch(members)
            params = faiss.SearchParameters()
            if self._ivf:
                params = faiss.SearchParametersIVF()
                params.nprobe = self.nprobe
            params.sel = self._selectors[category]
        _, ids = self._index.search(vector.reshape(1, -1), k, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    def drop(self) -> None:
        """Free the index."""
        self._index = None
