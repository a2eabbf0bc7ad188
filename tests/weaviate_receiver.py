"""A local stand-in for Weaviate's REST and GraphQL API, strict about the requests, for tests.

It implements what the benchmark's Weaviate store uses, as Weaviate documents it: the
readiness endpoint, ``/v1/schema`` (create, get, delete a class), ``/v1/batch/objects``
(per-object results, errors reported inside a 200 answer) and ``/v1/graphql`` with
``Get {Class(nearVector: {vector: [...]}, limit: N, where: {...})}`` and
``Aggregate {Class {meta {count}}}``, parsed with graphql-core. Searches are exact (NumPy),
so recall against exact ground truth must be 1. Anything else answers the way Weaviate
answers a bad request, and is kept in ``errors`` so a test can assert there were none.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import numpy as np
from graphql import GraphQLError, parse, value_from_ast_untyped
from graphql.language import FieldNode, OperationDefinitionNode
from json_api import BadRequest, JsonApi

CLASS_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")
DISTANCES = ("cosine", "dot", "l2-squared", "hamming", "manhattan")
INDEX_TYPES = ("hnsw", "flat", "dynamic")
DATA_TYPES = {"int": int, "number": float, "text": str, "boolean": bool}
OPERATORS = {"Equal": np.equal, "NotEqual": np.not_equal, "GreaterThan": np.greater, "LessThan": np.less}


class WeaviateClass:
    """One class: its schema and its objects."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.types = {p["name"]: DATA_TYPES[p["dataType"][0]] for p in schema.get("properties", [])}
        self.ids: list[str] = []
        self.vectors: list[list[float]] = []
        self.properties: dict[str, list[Any]] = {name: [] for name in self.types}

    def add(self, obj: dict[str, Any]) -> str | None:
        """Store one object; the reason it is refused, if it is."""
        try:
            uuid.UUID(obj.get("id", ""))
        except ValueError:
            return f"id {obj.get('id')!r} is not a valid uuid"
        vector = obj.get("vector")
        if not isinstance(vector, list) or not vector:
            return "vectorizer is none: the object needs a vector"
        if self.vectors and len(vector) != len(self.vectors[0]):
            existing = len(self.vectors[0])
            return (
                f"new node has a vector with length {len(vector)}. Existing nodes have vectors with length {existing}"
            )
        props = obj.get("properties", {})
        for name, value in props.items():
            if name not in self.types:
                return f"no such prop with name '{name}' found in class '{self.schema['class']}'"
            if not isinstance(value, self.types[name]) or isinstance(value, bool) != (self.types[name] is bool):
                return f"invalid {name}: wrong type {type(value).__name__}"
        self.ids.append(obj["id"])
        self.vectors.append(vector)
        for name in self.types:
            self.properties[name].append(props.get(name))
        return None

    def near_vector(self, vector: list[float], limit: int, where: dict[str, Any] | None) -> list[str]:
        """The ``limit`` nearest objects (exact), among those matching ``where``."""
        if not self.vectors:
            return []
        base = np.asarray(self.vectors, dtype=np.float64)
        query = np.asarray(vector, dtype=np.float64)
        if len(query) != base.shape[1]:
            raise GraphQLError(f"vector lengths don't match: {len(query)} vs {base.shape[1]}")
        distance = self.schema["vectorIndexConfig"]["distance"]
        if distance == "l2-squared":
            scores = ((base - query) ** 2).sum(axis=1)
        elif distance == "dot":
            scores = -(base @ query)
        else:
            scores = 1 - (base @ query) / (np.linalg.norm(base, axis=1) * np.linalg.norm(query))
        keep = np.ones(len(base), dtype=bool) if where is None else self._match(where)
        rows = np.flatnonzero(keep)
        order = rows[np.argsort(scores[rows], kind="stable")[:limit]]
        return [self.ids[i] for i in order]

    def _match(self, where: dict[str, Any]) -> Any:
        path, operator = where.get("path"), where.get("operator")
        if operator not in OPERATORS or not isinstance(path, list) or len(path) != 1 or path[0] not in self.types:
            raise GraphQLError(f"invalid where filter {where}")
        value = where.get("valueInt")
        if value is None or self.types[path[0]] is not int:
            raise GraphQLError(f"where filter on {path[0]} needs valueInt of an int property")
        return OPERATORS[operator](np.asarray(self.properties[path[0]]), value)


class WeaviateReceiver(JsonApi):
    """Weaviate's API on 127.0.0.1 until ``close()``."""

    def __init__(self) -> None:
        self.classes: dict[str, WeaviateClass] = {}
        super().__init__()

    def error_body(self, message: str) -> Any:
        """Weaviate's error shape."""
        return {"error": [{"message": message}]}

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """The status and JSON answer of one request."""
        if (method, path) == ("GET", "/v1/.well-known/ready"):
            return 200, None
        if (method, path) == ("POST", "/v1/schema"):
            return 200, self._create(body)
        if path.startswith("/v1/schema/") and method in ("GET", "DELETE"):
            name = path.removeprefix("/v1/schema/")
            if method == "DELETE":
                self.classes.pop(name, None)
                return 200, None
            if name not in self.classes:
                raise BadRequest(404, f"class {name} not found")
            return 200, self.classes[name].schema
        if (method, path) == ("POST", "/v1/batch/objects"):
            return 200, [self._add(obj) for obj in body["objects"]]
        if (method, path) == ("POST", "/v1/graphql"):
            try:
                return 200, {"data": self._graphql(body["query"])}
            except GraphQLError as exc:
                self.errors.append(f"graphql: {exc.message}")
                return 200, {"data": None, "errors": [{"message": exc.message}]}
        raise BadRequest(404, f"no route {method} {path}")

    def _create(self, schema: dict[str, Any]) -> dict[str, Any]:
        name = schema.get("class", "")
        if not CLASS_NAME.match(name):
            raise BadRequest(422, f"'{name}' is not a valid class name")
        if name in self.classes:
            raise BadRequest(422, f"class name {name} already exists")
        if schema.get("vectorizer") != "none":
            raise BadRequest(422, f"vectorizer {schema.get('vectorizer')!r}: no vectorizer modules are enabled")
        if schema.get("vectorIndexType", "hnsw") not in INDEX_TYPES:
            raise BadRequest(422, f"unknown vectorIndexType {schema.get('vectorIndexType')!r}")
        config = schema.setdefault("vectorIndexConfig", {})
        config.setdefault("distance", "cosine")
        if config["distance"] not in DISTANCES:
            raise BadRequest(422, f"unrecognized or unsupported distance metric {config['distance']!r}")
        for prop in schema.get("properties", []):
            if prop.get("dataType", [None])[0] not in DATA_TYPES:
                raise BadRequest(422, f"property {prop.get('name')}: unknown dataType {prop.get('dataType')}")
        self.classes[name] = WeaviateClass(schema)
        return schema

    def _add(self, obj: dict[str, Any]) -> dict[str, Any]:
        target = self.classes.get(obj.get("class", ""))
        problem = f"class {obj.get('class')!r} not present in schema" if target is None else target.add(obj)
        result: dict[str, Any] = {}
        if problem:
            self.errors.append(f"batch object {obj.get('id')}: {problem}")
            result = {"errors": {"error": [{"message": problem}]}}
        return {**obj, "result": result}

    def _graphql(self, query: str) -> dict[str, Any]:
        document = parse(query)
        operation = document.definitions[0]
        if not isinstance(operation, OperationDefinitionNode):
            raise GraphQLError("expected a query")
        root = operation.selection_set.selections[0]
        if not isinstance(root, FieldNode) or root.name.value not in ("Get", "Aggregate") or root.selection_set is None:
            raise GraphQLError("expected Get or Aggregate")
        data: dict[str, Any] = {}
        for field in root.selection_set.selections:
            if not isinstance(field, FieldNode):
                raise GraphQLError("expected a class name")
            if field.name.value not in self.classes:
                raise GraphQLError(f'Cannot query field "{field.name.value}" on type "{root.name.value}Objects"')
            target = self.classes[field.name.value]
            args = {arg.name.value: value_from_ast_untyped(arg.value) for arg in field.arguments or ()}
            if root.name.value == "Aggregate":
                data[field.name.value] = [{"meta": {"count": len(target.ids)}}]
                continue
            unknown = set(args) - {"nearVector", "limit", "where"}
            if unknown or "nearVector" not in args or set(args["nearVector"]) != {"vector"}:
                raise GraphQLError(f"unsupported arguments {sorted(args)}")
            found = target.near_vector(args["nearVector"]["vector"], int(args.get("limit", 10)), args.get("where"))
            data[field.name.value] = [{"_additional": {"id": object_id}} for object_id in found]
        return {root.name.value: data}
