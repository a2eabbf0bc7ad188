"""S3 workloads through boto3: PUT, GET (every byte checked), mixed and LIST.

Object contents are derived from the key (a seeded 1 MiB block, repeated), so any process can
check a GET without keeping the data: a wrong byte is an error, never a fast read. Time to
first byte is when the GET's headers arrived. Credentials come from the environment
(``AIF_S3_ACCESS_KEY``, ``AIF_S3_SECRET_KEY``) and never enter a report.

``python -m pytest_aifactory.workloads.s3 write-config FILE`` writes SeaweedFS's identity file
from those variables (used inside the service's job).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.services.connect import ACCESS_ENV, SECRET_ENV, s3_client_for

__all__ = ["ObjectOps", "S3Client", "object_bytes", "parse_size"]

_BLOCK = 1 << 20
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def parse_size(text: str | int) -> int:
    """``4KiB``, ``256MiB``, ``1m`` or a byte count."""
    if isinstance(text, int):
        return text
    digits = text.strip().lower().rstrip("s")
    number = "".join(c for c in digits if c.isdigit())
    unit = digits[len(number) :].strip()
    if not number or unit not in _UNITS:
        raise ValueError(f"object size {text!r}: expected a byte count or N with KiB, MiB or GiB")
    return int(number) * _UNITS[unit]


@lru_cache(maxsize=64)
def _block(seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(_BLOCK)


def _key_seed(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def object_bytes(key: str, size: int) -> bytes:
    """The content of object ``key``: a 1 MiB block seeded by the key, repeated to ``size``."""
    block = _block(_key_seed(key) % 64)  # 64 distinct blocks: enough to catch misplaced data
    prefix = key.encode()[:64].ljust(64, b"\0")  # makes every object distinct
    body = prefix + block * (size // _BLOCK + 1)
    return body[:size]


@lru_cache(maxsize=4096)
def _expected_digest(key: str, size: int) -> bytes:
    return hashlib.blake2b(object_bytes(key, size), digest_size=16).digest()


@dataclass(frozen=True)
class ObjectOps:
    """Which operation request ``index`` does, on which key.

    ``put`` writes key ``obj-{index % objects}``; ``get`` reads one of the ``objects``
    prefilled keys; ``mixed`` draws GET with probability ``get_fraction``, else PUT; ``list``
    lists the bucket's keys (up to 1000).
    """

    op: Literal["put", "get", "mixed", "list"]
    size: int
    objects: int = 100
    get_fraction: float = 0.7
    seed: int = 0

    def request(self, index: int) -> tuple[str, str]:
        """(operation, key) of request ``index``."""
        rng = np.random.default_rng([self.seed, index])
        op = self.op
        if op == "mixed":
            op = "get" if rng.random() < self.get_fraction else "put"
        number = index % self.objects if op == "put" else int(rng.integers(0, self.objects))
        return op, f"obj-{self.size}-{number:06d}"

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {"op": self.op, "object_size": self.size, "objects": self.objects, "get_fraction": self.get_fraction}


@dataclass
class S3Client:
    """boto3 in a thread pool as large as the load's concurrency (boto3 is synchronous)."""

    endpoint: str
    bucket: str
    size: int
    threads: int
    _client: Any = field(default=None, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Configuration for reports (no credentials)."""
        return {"client": "boto3", "endpoint": self.endpoint, "bucket": self.bucket, "threads": self.threads}

    def upload_objects(self, objects: int) -> None:
        """Create the bucket and write the missing ones of ``objects`` objects for GETs (not measured)."""
        client = s3_client_for(self.endpoint, self.threads)
        buckets = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.bucket not in buckets:
            client.create_bucket(Bucket=self.bucket)
        prefix = f"obj-{self.size}-"
        present = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            present |= {item["Key"] for item in page.get("Contents", []) if item["Size"] == self.size}
        missing = [key for n in range(objects) if (key := f"{prefix}{n:06d}") not in present]
        with ThreadPoolExecutor(self.threads) as pool:
            list(
                pool.map(
                    lambda k: client.put_object(Bucket=self.bucket, Key=k, Body=object_bytes(k, self.size)), missing
                )
            )

    async def open(self) -> None:
        """Create the client and its threads."""
        self._client = s3_client_for(self.endpoint, self.threads)
        self._pool = ThreadPoolExecutor(self.threads)

    async def close(self) -> None:
        """Stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """One operation in a worker thread."""
        assert self._pool is not None, "open() first"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._blocking, payload, record, clock)

    def _blocking(self, payload: tuple[str, str], record: RequestRecord, clock: Clock) -> None:
        op, key = payload
        if op == "put":
            self._client.put_object(Bucket=self.bucket, Key=key, Body=object_bytes(key, self.size))
            record.end = clock.now()
            record.extra["mib"] = self.size / _BLOCK
        elif op == "get":
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            record.first_token = clock.now()  # headers in: time to first byte
            digest = hashlib.blake2b(digest_size=16)
            received = 0
            for chunk in response["Body"].iter_chunks(1 << 20):
                digest.update(chunk)
                received += len(chunk)
            record.end = clock.now()
            if received != self.size or digest.digest() != _expected_digest(key, self.size):
                record.error = f"checksum mismatch on GET {key} ({received} bytes)"
                return
            record.extra["mib"] = received / _BLOCK
        else:
            self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1000)
            record.end = clock.now()
        record.status = 200


def _write_config(path: str) -> None:
    access, secret = os.environ.get(ACCESS_ENV), os.environ.get(SECRET_ENV)
    if not access or not secret:
        sys.exit(f"set {ACCESS_ENV} and {SECRET_ENV}")
    identity = {
        "name": "aifactory",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"identities": [identity]}, handle)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "write-config":
        sys.exit("usage: python -m pytest_aifactory.workloads.s3 write-config FILE")
    _write_config(sys.argv[2])
