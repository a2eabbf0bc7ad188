"""A local stand-in for Qdrant's REST API, strict about the requests, for tests.

What the benchmark's Qdrant store uses through qdrant-client (``url=...``), as Qdrant's
OpenAPI describes it: the version endpoint the client checks, collection exists / create /
delete, ``PUT points`` (a batch, with ``wait``), ``PUT index`` (a payload index) and
``POST points/query`` with a ``must`` match filter. Searches are exact, so recall against
exact ground truth must be 1; refused requests answer as Qdrant does and are kept in ``errors``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from json_api import BadRequest, JsonApi

VERSION = "1.19.1"  # the image the qdrant service runs
DISTANCES = ("Cosine", "Euclid", "Dot", "Manhattan")
SCHEMAS = ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")
COLLECTION = re.compile(r"^/collections/([^/]+)(/.*)?$")


class QdrantCollection:
    """One collection: its vector parameters, points and payload indexes."""

    def __init__(self, config: dict[str, Any]) -> None:
        vectors = config.get("vectors")
        if not isinstance(vectors, dict) or not isinstance(vectors.get("size"), int) or vectors["size"] < 1:
            raise BadRequest(422, "Validation error in JSON body: [vectors.size: must be a positive integer]")
        if vectors.get("distance") not in DISTANCES:
            raise BadRequest(422, f"Json deserialize error: unknown variant `{vectors.get('distance')}`")
        self.size: int = vectors["size"]
        self.distance: str = vectors["distance"]
        self.points: dict[int, tuple[list[float], dict[str, Any]]] = {}
        self.indexes: dict[str, str] = {}

    def upsert(self, body: dict[str, Any]) -> None:
        """Apply a ``{"batch": {...}}`` or ``{"points": [...]}`` upsert."""
        if "batch" in body:
            batch = body["batch"]
            payloads = batch.get("payloads") or [{}] * len(batch["ids"])
            points = list(zip(batch["ids"], batch["vectors"], payloads, strict=True))
        else:
            points = [(p["id"], p["vector"], p.get("payload") or {}) for p in body["points"]]
        for point_id, vector, payload in points:
            if not isinstance(point_id, int) or point_id < 0:
                raise BadRequest(400, f"Wrong input: point id {point_id!r} is not an unsigned integer or UUID")
            if len(vector) != self.size:
                raise BadRequest(
                    400, f"Wrong input: Vector dimension error: expected dim: {self.size}, got {len(vector)}"
                )
            if self.distance == "Cosine":
                vector = list(np.asarray(vector) / np.linalg.norm(vector))
            self.points[point_id] = (vector, payload)

    def query(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Exact nearest points of ``query`` (a plain vector), after the ``filter``."""
        unknown = set(body) - {"query", "limit", "filter", "with_payload", "with_vector", "params", "score_threshold"}
        if unknown:
            raise BadRequest(422, f"Json deserialize error: unknown field `{sorted(unknown)[0]}`")
        query = body["query"]
        if isinstance(query, dict):  # a NearestQuery, {"nearest": [...]}, or a plain vector
            if set(query) != {"nearest"}:
                raise BadRequest(422, f"Json deserialize error: unsupported query {sorted(query)}")
            query = query["nearest"]
        vector = np.asarray(query, dtype=np.float64)
        if len(vector) != self.size:
            raise BadRequest(400, f"Wrong input: Vector dimension error: expected dim: {self.size}, got {len(vector)}")
        ids = [i for i, (_, payload) in self.points.items() if self._match(body.get("filter"), payload)]
        if not ids:
            return []
        base = np.asarray([self.points[i][0] for i in ids], dtype=np.float64)
        if self.distance == "Euclid":
            scores = np.sqrt(((base - vector) ** 2).sum(axis=1))
            order = np.argsort(scores, kind="stable")
        elif self.distance == "Manhattan":
            scores = np.abs(base - vector).sum(axis=1)
            order = np.argsort(scores, kind="stable")
        else:
            scores = base @ (vector / np.linalg.norm(vector) if self.distance == "Cosine" else vector)
            order = np.argsort(-scores, kind="stable")
        limit = int(body.get("limit", 10))
        return [{"id": ids[i], "version": 0, "score": float(scores[i])} for i in order[:limit]]

    def _match(self, where: dict[str, Any] | None, payload: dict[str, Any]) -> bool:
        if where is None:
            return True
        if set(where) - {"must", "should", "must_not"} or set(where) != {"must"}:
            raise BadRequest(422, f"unsupported filter {where}")
        for condition in where["must"]:
            key, match = condition.get("key"), condition.get("match")
            if not isinstance(match, dict) or set(match) != {"value"}:
                raise BadRequest(422, f"Json deserialize error: bad field condition {condition}")
            if payload.get(key) != match["value"]:
                return False
        return True


class QdrantReceiver(JsonApi):
    """Qdrant's REST API on 127.0.0.1 until ``close()``."""

    def __init__(self) -> None:
        self.collections: dict[str, QdrantCollection] = {}
        super().__init__()

    def error_body(self, message: str) -> Any:
        """Qdrant's error shape."""
        return {"status": {"error": message}, "time": 0.0}

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """The status and JSON answer of one request (Qdrant's ``result``/``status``/``time`` envelope)."""
        started = time.perf_counter()
        if (method, path) == ("GET", "/"):
            return 200, {"title": "qdrant - vector search engine", "version": VERSION, "commit": "0" * 40}
        found = COLLECTION.match(path)
        if found is None:
            raise BadRequest(404, f"Not found: {path}")
        name, rest = found.group(1), found.group(2) or ""
        result = self._collection_call(method, name, rest, query, body)
        return 200, {"result": result, "status": "ok", "time": time.perf_counter() - started}

    def _collection_call(self, method: str, name: str, rest: str, query: dict[str, str], body: Any) -> Any:
        if (method, rest) == ("GET", "/exists"):
            return {"exists": name in self.collections}
        if (method, rest) == ("DELETE", ""):
            return self.collections.pop(name, None) is not None
        if (method, rest) == ("PUT", ""):
            if name in self.collections:
                raise BadRequest(409, f"Wrong input: Collection `{name}` already exists!")
            self.collections[name] = QdrantCollection(body)
            return True
        if name not in self.collections:
            raise BadRequest(404, f"Not found: Collection `{name}` doesn't exist!")
        collection = self.collections[name]
        if (method, rest) == ("PUT", "/points"):
            if query.get("wait") not in ("true", "false", None):
                raise BadRequest(400, f"bad wait={query.get('wait')}")
            collection.upsert(body)
            return {
                "operation_id": len(self.requests),
                "status": "completed" if query.get("wait") == "true" else "acknowledged",
            }
        if (method, rest) == ("PUT", "/index"):
            if body.get("field_schema") not in SCHEMAS:
                raise BadRequest(422, f"Json deserialize error: unknown variant `{body.get('field_schema')}`")
            collection.indexes[body["field_name"]] = body["field_schema"]
            return {"operation_id": len(self.requests), "status": "acknowledged"}
        if (method, rest) == ("POST", "/points/query"):
            return {"points": collection.query(body)}
        raise BadRequest(404, f"Not found: {method} /collections/{name}{rest}")
