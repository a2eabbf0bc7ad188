"""Readiness checks that need a protocol client: a SQL ``SELECT 1``, a real S3 PUT, a Milvus call.

Named by ``CallProbe("pytest_aifactory.services.readiness:NAME")`` in the data service specs.
"""

from __future__ import annotations

from pytest_aifactory.services.connect import dsn_of, milvus_client, milvus_uri, s3_client_for
from pytest_aifactory.services.spec import RunningService

__all__ = ["milvus_ready", "postgres_ready", "s3_ready"]


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
