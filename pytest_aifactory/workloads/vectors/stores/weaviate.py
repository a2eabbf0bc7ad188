"""Weaviate through its REST API and GraphQL."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.vectors.datasets import Metric, Vectors

__all__ = ["WEAVIATE_DISTANCES", "WeaviateStore", "row_uuid"]


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
    service: RunningService | None = field(default=None, repr=False)  # where it runs (energy)
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
