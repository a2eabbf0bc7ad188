"""Readiness checks that need a client: ``SELECT 1``, an S3 PUT, a Milvus call, Prometheus's first scrape.

Named by ``CallProbe("pytest_aifactory.services.readiness:NAME")`` in the data service specs.
"""

from __future__ import annotations

import httpx

from pytest_aifactory.services.connect import dsn_of, milvus_client, milvus_uri, s3_client_for
from pytest_aifactory.services.spec import RunningService

__all__ = ["milvus_ready", "postgres_ready", "prometheus_ready", "s3_ready"]


def postgres_ready(service: RunningService) -> str | None:
    """Ready when a connection answers ``SELECT 1``."""
    import psycopg

    with psycopg.connect(dsn_of(service), connect_timeout=3) as conn:
        conn.execute("SELECT 1").fetchone()
    return None


def s3_ready(service: RunningService) -> str | None:
    """Ready when a bucket can be created and a small object written and read back."""
    client = s3_client_for(service.url(port="s3").rstrip("/"))
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if "aif-probe" not in existing:
        client.create_bucket(Bucket="aif-probe")
    client.put_object(Bucket="aif-probe", Key="ready", Body=b"ready")
    body = client.get_object(Bucket="aif-probe", Key="ready")["Body"].read()
    return None if body == b"ready" else f"read back {body!r}"


def milvus_ready(service: RunningService) -> str | None:
    """Ready when the server lists its collections."""
    client = milvus_client(milvus_uri(service), timeout=5)
    try:
        client.list_collections()
    finally:
        client.close()
    return None


def prometheus_ready(service: RunningService) -> str | None:
    """Ready when Prometheus has scraped each of its targets once (answered or not) and stored it.

    ``/-/ready`` comes seconds earlier: Prometheus hands discovered targets to its scrapers at
    most every 5 s, and until then a run's first figures are never scraped. A scrape is stored
    after its target's ``lastScrape`` is set: each target's ``up`` series says it is queryable.
    """
    response = httpx.get(service.url("/api/v1/targets"), params={"state": "active"}, timeout=5.0)
    response.raise_for_status()
    targets = response.json()["data"]["activeTargets"]
    if not targets:
        return "Prometheus has no scrape target yet"
    up = httpx.get(service.url("/api/v1/query"), params={"query": "up"}, timeout=5.0)
    up.raise_for_status()
    stored = {series["metric"].get("instance") for series in up.json()["data"]["result"]}
    waiting = [t["scrapeUrl"] for t in targets if t["labels"].get("instance") not in stored]
    return f"Prometheus has not scraped {', '.join(waiting)} yet" if waiting else None
