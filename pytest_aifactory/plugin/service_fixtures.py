"""Fixtures of the services under test, one per kind: ``llm_service``, ``postgres_service``, ``s3_service``...

Each starts its service once per run (``aif_shared_service``) under the run's profile, or
hands over an existing server the environment or the profile names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import pytest

from pytest_aifactory.core.profiles import Profile
from pytest_aifactory.plugin.fixtures import ServiceFactory
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.services.connect import milvus_uri
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads.sql import connect_check
from pytest_aifactory.workloads.vectors.stores.base import VECTOR_STORES, VectorStore
from pytest_aifactory.workloads.vectors.stores.chroma import ChromaStore
from pytest_aifactory.workloads.vectors.stores.faiss import FaissStore, faiss_gpus
from pytest_aifactory.workloads.vectors.stores.milvus import MilvusStore
from pytest_aifactory.workloads.vectors.stores.qdrant import QdrantStore
from pytest_aifactory.workloads.vectors.stores.weaviate import WeaviateStore


def _named(service: str, doc: str) -> Callable[..., RunningService]:
    def fixture(aif_shared_service: ServiceFactory) -> RunningService:
        return aif_shared_service(service)

    fixture.__doc__ = doc
    return fixture


http_service = pytest.fixture(scope="session", name="http_service")(
    _named("http", "The run's static HTTP server (the 'http' service).")
)
synthetic_llm_service = pytest.fixture(scope="session", name="synthetic_llm_service")(
    _named("synthetic-llm", "The run's synthetic OpenAI-compatible server with known timing.")
)
embedding_service = pytest.fixture(scope="session", name="embedding_service")(
    _named("embeddings", "The run's OpenAI-compatible embedding server (all-MiniLM-L6-v2 on CPU locally).")
)
triton_service = pytest.fixture(scope="session", name="triton_service")(
    _named("triton", "The run's Triton server (pytriton on CPU unless the profile gives a model repository).")
)


def _existing(profile: Profile, service: str, setting: str, variable: str) -> str | None:
    value = os.environ.get(variable) or profile.override(service).settings.get(setting)
    return str(value) if value else None


@pytest.fixture(scope="session")
def postgres_service(aif_shared_service: ServiceFactory, aif_profile: Profile) -> RunningService | str:
    """The run's PostgreSQL: started in a job, or an existing server's DSN.

    An existing server comes from ``AIF_POSTGRES_DSN`` (where a password may live) or the
    profile's ``services.postgres.settings.dsn``; one that does not connect fails naming it.
    """
    dsn = _existing(aif_profile, "postgres", "dsn", "AIF_POSTGRES_DSN")
    if dsn is None:
        return aif_shared_service("postgres")
    try:
        connect_check(dsn)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)
    return dsn


@pytest.fixture(scope="session")
def s3_service(aif_shared_service: ServiceFactory, aif_profile: Profile) -> RunningService | str:
    """The run's S3: SeaweedFS in a job, or an existing endpoint (``AIF_S3_ENDPOINT`` or the profile).

    Credentials always come from ``AIF_S3_ACCESS_KEY`` and ``AIF_S3_SECRET_KEY``.
    """
    return _existing(aif_profile, "s3", "endpoint", "AIF_S3_ENDPOINT") or aif_shared_service("s3")


milvus_service = pytest.fixture(scope="session", name="milvus_service")(
    _named("milvus", "The run's Milvus server (milvus-lite locally).")
)
chroma_service = pytest.fixture(scope="session", name="chroma_service")(_named("chroma", "The run's Chroma server."))


@pytest.fixture(scope="session")
def aif_vector_store(aif_shared_service: ServiceFactory, aif_profile: Profile) -> Callable[[str], VectorStore]:
    """``aif_vector_store("milvus")``: a store client on the run's server of that kind.

    FAISS runs in-process (``faiss-gpu``: on the GPUs, on a profile whose FAISS build sees
    them). Qdrant and Weaviate run from container images, or are existing servers given by
    ``AIF_QDRANT_URL`` / ``AIF_WEAVIATE_URL`` or the profile's ``services.NAME.settings.url``;
    on a profile with neither a container runtime nor a URL the test is skipped, saying why.
    """

    def make(name: str, **options: Any) -> VectorStore:
        if name not in VECTOR_STORES:
            pytest.fail(f"unknown vector store {name!r}; valid: {', '.join(VECTOR_STORES)}", pytrace=False)
        if name in ("faiss", "faiss-gpu"):
            device: Literal["cpu", "gpu"] = "gpu" if name == "faiss-gpu" else "cpu"
            if device == "gpu" and faiss_gpus() == 0:
                pytest.skip(
                    "faiss-gpu: this FAISS build sees no GPU here; run pytest on a GPU node "
                    "(e.g. as a Slurm job) with faiss-gpu-cu12 installed"
                )
            return FaissStore(device=device, **options)
        if name in ("qdrant", "weaviate"):
            url = _existing(aif_profile, name, "url", f"AIF_{name.upper()}_URL")
            if url is None:
                if aif_profile.container is None:
                    spec = build_spec(name, aif_profile)
                    pytest.skip(
                        f"{name}: {spec.meta['local_reason']} (profile {aif_profile.name!r}); "
                        f"set AIF_{name.upper()}_URL to use a running server"
                    )
                started = aif_shared_service(name)
                url, options = started.url(), {"service": started, **options}
            return QdrantStore(url=url, **options) if name == "qdrant" else WeaviateStore(url, **options)
        service = aif_shared_service(name)
        if name == "milvus":
            return MilvusStore(milvus_uri(service), service=service, **options)
        return ChromaStore(service.host, service.port, service=service, **options)

    return make


@pytest.fixture(scope="session")
def llm_service(aif_shared_service: ServiceFactory, aif_profile: Profile) -> RunningService:
    """The run's LLM server: the profile's ``llm`` service (llama.cpp locally, vLLM on GPU nodes)."""
    return aif_shared_service(aif_profile.llm)
