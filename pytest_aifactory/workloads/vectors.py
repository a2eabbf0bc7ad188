"""Vector search: seeded datasets, exact ground truth (FAISS flat, cached), stores, recall.

The same dataset, the same k and the same metric for Milvus, Chroma, FAISS, Qdrant and
Weaviate, so that they compare side by side; filtered search (an integer ``category``
attribute, ``id % 10``) with its own exact ground truth. Every search request records its
recall@k against the ground truth (a neighbour as near as the k-th true one counts: ties are
not misses); the result reports the mean (``recall_at_K``) and the worst query
(``min_recall_at_K``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock

__all__ = [
    "DATASETS",
    "GPU_FILTER_UNSUPPORTED",
    "VECTOR_STORES",
    "ChromaStore",
    "FaissStore",
    "MilvusStore",
    "QdrantStore",
    "SearchClient",
    "VectorDataset",
    "VectorStore",
    "WeaviateStore",
    "faiss_gpus",
]

DATASETS = ("random", "clustered", "digits")
DIGITS_ROWS, DIGITS_DIM = 1797, 64  # scikit-learn's bundled copy of the UCI handwritten digits
VECTOR_STORES = ("faiss", "faiss-gpu", "milvus", "chroma", "qdrant", "weaviate")
CATEGORIES = 10
Metric = Literal["l2", "ip", "cosine"]
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class VectorDataset:
    """``count`` base vectors and ``queries`` query vectors of ``dim`` dimensions (seeded).

    ``random``: standard normal. ``clustered``: points around 32 centres (harder for
    approximate indexes, closer to embeddings). ``digits``: a small real dataset, the
    1,797 8x8 handwritten digits scikit-learn ships (dim 64; ``count + queries <= 1797``).
    """

    name: str
    count: int
    dim: int
    queries: int = 200
    metric: Metric = "l2"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(f"unknown dataset {self.name!r}; valid datasets: {', '.join(DATASETS)}")
        if self.metric not in ("l2", "ip", "cosine"):
            raise ValueError(f"unknown metric {self.metric!r}; valid: l2, ip, cosine")
        if self.name == "digits" and (self.dim != DIGITS_DIM or self.count + self.queries > DIGITS_ROWS):
            raise ValueError(
                f"dataset 'digits' has {DIGITS_ROWS} vectors of dim {DIGITS_DIM}: asked for dim {self.dim} and "
                f"count + queries = {self.count + self.queries}"
            )

    def _draw(self, n: int, stream: int) -> Vectors:
        rng = np.random.default_rng([self.seed, stream])
        if self.name == "digits":  # real data: base rows first, queries after them (disjoint)
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
        }


class VectorStore(Protocol):
    """What a vector database must do for the benchmark."""

    name: str

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
    _client: Any = field(default=None, init=False, repr=False)

    def create(self, dim: int, metric: Metric) -> None:
        """Create the collection (dropping an old one), without an index yet."""
        from pymilvus import DataType, MilvusClient

        self._client = MilvusClient(self.uri)
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
            self._client.drop_collection(self.collection)
            self._client.close()


@dataclass
class ChromaStore:
    """Chroma's HTTP server (``chroma run``), without an embedding function."""

    host: str
    port: int
    collection: str = "aif_bench"
    name: str = "chroma"
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


@dataclass
class QdrantStore:
    """Qdrant through qdrant-client: a server (``url``) or its in-process mode (``location``).

    A server's API key, when it wants one, comes from ``AIF_QDRANT_API_KEY``.
    """

    url: str | None = None
    location: str | None = None
    collection: str = "aif_bench"
    name: str = "qdrant"
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


WEAVIATE_DISTANCES = {"l2": "l2-squared", "ip": "dot", "cosine": "cosine"}


def row_uuid(row: int) -> str:
    """The Weaviate object id of row ``row`` (objects are keyed by UUID; the row is its integer)."""
    return str(uuid.UUID(int=row))


@dataclass
class WeaviateStore:
    """Weaviate through its REST API (schema, batch import) and GraphQL (``nearVector`` search).

    ``index_type`` is ``hnsw`` (with ``ef_search``) or ``flat``. An API key, when the server
    wants one, comes from ``AIF_WEAVIATE_API_KEY`` (never from a profile). Batch errors and
    GraphQL errors are raised, so they count as failed requests, not as empty results.
    """

    url: str
    collection: str = "AifBench"
    index_type: str = "hnsw"
    ef_search: int = 128
    timeout_s: float = 30.0
    name: str = "weaviate"
    _client: Any = field(default=None, init=False, repr=False)
    _inserted: int = field(default=0, init=False, repr=False)

    def _call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        response = self._client.request(method, path, json=body)
        if response.status_code not in ok:
            raise RuntimeError(f"weaviate {method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def _graphql(self, query: str) -> dict[str, Any]:
        answer = self._call("POST", "/v1/graphql", {"query": query})
        if answer.get("errors"):
            raise RuntimeError(f"weaviate GraphQL: {answer['errors'][0].get('message', answer['errors'][0])}")
        data: dict[str, Any] = answer["data"]
        return data

    def create(self, dim: int, metric: Metric) -> None:
        """Create the class (dropping an old one): no vectorizer, an integer ``category`` property."""
        import httpx

        key = os.environ.get("AIF_WEAVIATE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s)
        self._call("DELETE", f"/v1/schema/{self.collection}", ok=(200, 404))
        index_config: dict[str, Any] = {"distance": WEAVIATE_DISTANCES[metric]}
        if self.index_type == "hnsw":
            index_config["ef"] = self.ef_search
        schema = {
            "class": self.collection,
            "vectorizer": "none",
            "vectorIndexType": self.index_type,
            "vectorIndexConfig": index_config,
            "properties": [{"name": "category", "dataType": ["int"]}],
        }
        self._call("POST", "/v1/schema", schema)
        self._inserted = 0

    def insert(self, ids: npt.NDArray[np.int64], vectors: Vectors, categories: npt.NDArray[np.int64]) -> None:
        """Import one batch; any object the server refuses fails the load."""
        objects = [
            {"class": self.collection, "id": row_uuid(int(i)), "properties": {"category": int(c)}, "vector": v.tolist()}
            for i, v, c in zip(ids, vectors, categories, strict=True)
        ]
        results = self._call("POST", "/v1/batch/objects", {"objects": objects})
        for result in results:
            errors = (result.get("result") or {}).get("errors")
            if errors:
                raise RuntimeError(f"weaviate refused object {result.get('id')}: {errors['error'][0]['message']}")
        self._inserted += len(objects)

    def build_index(self) -> None:
        """Wait until every imported object is counted (Weaviate indexes as objects arrive)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            data = self._graphql(f"{{ Aggregate {{ {self.collection} {{ meta {{ count }} }} }} }}")
            count = int(data["Aggregate"][self.collection][0]["meta"]["count"])
            if count >= self._inserted:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"weaviate counts {count} of {self._inserted} objects after {self.timeout_s} s")
            time.sleep(0.1)

    def search(self, vector: Vectors, k: int, category: int | None = None) -> list[int]:
        """Search one query (a ``where`` filter on the category)."""
        values = ", ".join(repr(float(x)) for x in vector)
        where = "" if category is None else f', where: {{path: ["category"], operator: Equal, valueInt: {category}}}'
        query = (
            f"{{ Get {{ {self.collection}(nearVector: {{vector: [{values}]}}, limit: {k}{where}) "
            "{ _additional { id } } } }"
        )
        hits = self._graphql(query)["Get"][self.collection]
        return [uuid.UUID(hit["_additional"]["id"]).int for hit in hits]

    def drop(self) -> None:
        """Delete the class."""
        if self._client is not None:
            self._call("DELETE", f"/v1/schema/{self.collection}", ok=(200, 404))
            self._client.close()


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
