"""Pushes to a Prometheus Pushgateway, spooled to disk when it cannot be reached.

Groups are ``job="aifactory"``, ``run_id`` and ``test`` (the test's name, base64 in the URL
path); each sweep point is a ``point`` label, so cardinality stays at the size of a sweep.
What is pushed (the metric families) is built by ``pytest_aifactory.export.prometheus``.

A push that fails (gateway down, slow, refusing) is written to the spool folder, keyed by its
group, so the latest state of every group survives; ``Pushgateway.resend()`` (at the end of
the run, and ``aifactory resend RUN_ID``) delivers what is spooled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from pytest_aifactory.core.secrets import Redactor

__all__ = ["GROUP_LABELS", "GatewayTarget", "Pushgateway"]

GROUP_LABELS = ("job", "run_id", "test")


@dataclass(frozen=True)
class GatewayTarget:
    """Where and how to push: URL, basic auth (password from an environment variable), TLS."""

    url: str
    username: str | None = None
    password_env: str = "AIF_PUSHGATEWAY_PASSWORD"
    ca_file: str | None = None
    insecure: bool = False
    timeout_s: float = 5.0


def _segment(name: str, value: str) -> str:
    encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=") or "="
    return f"{name}@base64/{encoded}"


class _Redacted:
    """``registry``'s metric families with every label value masked (values are numbers: never)."""

    def __init__(self, registry: CollectorRegistry, redactor: Redactor) -> None:
        self.registry = registry
        self.redactor = redactor

    def collect(self) -> Iterable[Metric]:
        """The families, copied, with their samples' label values masked."""
        for family in self.registry.collect():
            clean = Metric(family.name, family.documentation, family.type, family.unit)
            clean.samples = [
                sample._replace(labels={k: self.redactor.text(v) for k, v in sample.labels.items()})
                for sample in family.samples
            ]
            yield clean


class Pushgateway:
    """Pushes groups of one run; spools what it cannot deliver."""

    def __init__(self, target: GatewayTarget, run_id: str, spool_dir: Path, redactor: Redactor) -> None:
        self.target = target
        self.run_id = run_id
        self.spool_dir = spool_dir
        self.redactor = redactor
        self.delivered = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def path(self, test: str, extra_labels: Mapping[str, str] | None = None) -> str:
        """The group's URL path (``extra_labels`` are more grouping labels)."""
        labels = {"run_id": self.run_id, "test": test, **dict(sorted((extra_labels or {}).items()))}
        return "/metrics/job/aifactory" + "".join(f"/{_segment(k, self.redactor.text(v))}" for k, v in labels.items())

    def _client(self) -> httpx.Client:
        auth = None
        if self.target.username:
            auth = httpx.BasicAuth(self.target.username, os.environ.get(self.target.password_env, ""))
        verify: bool | str = False if self.target.insecure else (self.target.ca_file or True)
        return httpx.Client(
            base_url=self.target.url.rstrip("/"), auth=auth, verify=verify, timeout=self.target.timeout_s
        )

    def _send(self, method: str, path: str, body: bytes) -> None:
        with self._client() as client:
            response = client.request(method, path, content=body, headers={"Content-Type": "text/plain; version=0.0.4"})
        if response.status_code >= 300:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}: {response.text[:200]}", request=response.request, response=response
            )

    def push(
        self, test: str, registry: CollectorRegistry, method: str = "PUT", extra_labels: Mapping[str, str] | None = None
    ) -> bool:
        """Push a group (PUT replaces it); on failure spool it and return False."""
        body = generate_latest(_Redacted(registry, self.redactor))
        return self._deliver(method, self.path(test, extra_labels), body)

    def delete(self, test: str) -> bool:
        """Delete a group (the Pushgateway never forgets one by itself)."""
        return self._deliver("DELETE", self.path(test), b"")

    def _deliver(self, method: str, path: str, body: bytes) -> bool:
        try:
            self._send(method, path, body)
        except httpx.HTTPError as exc:
            with self._lock:
                self._failed(method, path, exc)
                self._spool(method, path, body)
            return False
        with self._lock:
            self.delivered += 1
            self._unspool(path)
        return True

    def _failed(self, method: str, path: str, exc: httpx.HTTPError, kept: Path | None = None) -> None:
        where = f" (kept in {kept})" if kept is not None else ""
        self.failures.append(f"{method} {path}{where}: {type(exc).__name__}: {self.redactor.text(str(exc))[:300]}")

    def _spool_file(self, path: str) -> Path:
        return self.spool_dir / f"{hashlib.sha256(path.encode()).hexdigest()[:20]}.json"

    def _spool(self, method: str, path: str, body: bytes) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        file = self._spool_file(path)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"method": method, "path": path, "body": body.decode()}), encoding="utf-8")
        os.replace(tmp, file)

    def _unspool(self, path: str) -> None:
        self._spool_file(path).unlink(missing_ok=True)

    def spooled(self) -> list[Path]:
        """Spooled pushes not yet delivered."""
        return sorted(self.spool_dir.glob("*.json")) if self.spool_dir.exists() else []

    def resend(self) -> tuple[int, int]:
        """Deliver the spool: (sent, still spooled); why each push was not delivered goes to ``failures``.

        A push the gateway rejects (HTTP 400: a malformed body) stays spooled, with the gateway's reason.
        """
        sent = 0
        for file in self.spooled():
            entry = json.loads(file.read_text(encoding="utf-8"))
            try:
                self._send(entry["method"], entry["path"], entry["body"].encode())
            except httpx.HTTPError as exc:
                self._failed(entry["method"], entry["path"], exc, kept=file)
                continue
            file.unlink(missing_ok=True)
            sent += 1
        return sent, len(self.spooled())
