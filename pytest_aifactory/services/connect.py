"""How a client reaches a started service: its DSN, its S3 client, its Milvus URI."""

from __future__ import annotations

import os
from typing import Any

from pytest_aifactory.services.spec import RunningService

__all__ = ["ACCESS_ENV", "SECRET_ENV", "dsn_of", "milvus_client", "milvus_uri", "s3_client_for"]

ACCESS_ENV, SECRET_ENV = "AIF_S3_ACCESS_KEY", "AIF_S3_SECRET_KEY"


def dsn_of(service: RunningService) -> str:
    """``postgresql://user@host:port/db`` of a started ``postgres`` service."""
    meta = service.spec.meta
    return f"postgresql://{meta['user']}@{service.host}:{service.ports['pg']}/{meta['dbname']}"


def s3_client_for(endpoint: str, max_connections: int = 10) -> Any:
    """A boto3 S3 client for ``endpoint`` with the environment's credentials (SigV4)."""
    import boto3
    from botocore.config import Config

    access, secret = os.environ.get(ACCESS_ENV), os.environ.get(SECRET_ENV)
    if not access or not secret:
        raise RuntimeError(f"S3 credentials missing: set {ACCESS_ENV} and {SECRET_ENV}")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            max_pool_connections=max_connections,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def milvus_uri(service: RunningService) -> str:
    """``http://host:port`` of a started ``milvus`` service's gRPC port."""
    return f"http://{service.host}:{service.ports['grpc']}"


def milvus_client(uri: str, **options: Any) -> Any:
    """A ``MilvusClient`` whose ``close()`` closes its gRPC channel.

    With pymilvus's connection manager (2.6.10 on) a client shares one connection per URI by
    default, which outlives every client (the process keeps pinging a server long stopped); a
    dedicated one is closed with it. Before it, ``close()`` closed the channel.
    """
    import importlib.util

    import pymilvus

    if importlib.util.find_spec("pymilvus.client.connection_manager") is not None:
        options["dedicated"] = True
    return pymilvus.MilvusClient(uri, **options)
