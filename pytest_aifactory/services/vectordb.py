"""Vector databases: Milvus (lite or standalone), Chroma, Qdrant and Weaviate.

Every probe is a real client call (a collection listing, a heartbeat), not an open port.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.settings import choice
from pytest_aifactory.services.spec import CallProbe, HttpProbe, Resources, ServiceSpec

__all__ = ["CHROMA", "MILVUS", "QDRANT", "WEAVIATE", "chroma", "milvus", "qdrant", "weaviate"]

# ``server``: ``lite`` (PyPI milvus-lite's server, no container) or ``standalone`` (Milvus's image).
MILVUS: dict[str, SettingValue] = {"server": "lite"}
MILVUS_PROBE = CallProbe("pytest_aifactory.services.readiness:milvus_ready")

# Milvus standalone's embedded etcd (as upstream's standalone_embed.sh writes it), on a free port.
EMBED_ETCD = (
    "listen-client-urls: http://127.0.0.1:{ports.etcd}",
    "advertise-client-urls: http://127.0.0.1:{ports.etcd}",
    "quota-backend-bytes: 4294967296",
    "auto-compaction-mode: revision",
    "auto-compaction-retention: '1000'",
)


def milvus(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The Milvus server named by ``settings.server``."""
    if choice("milvus", "server", settings, ("lite", "standalone")) == "standalone":
        return milvus_standalone()
    return ServiceSpec(
        name="milvus",
        command=("milvus-lite", "server", "--data-dir", "{workdir}", "--host", "{host}", "--port", "{ports.grpc}"),
        ports=("grpc",),
        probe=MILVUS_PROBE,
        resources=Resources(cpus=2, mem_gb=4),
        readiness_timeout_s=60,
        meta={"protocol": "milvus", "provided_by": "the PyPI package milvus-lite (pytest-aifactory[data])"},
    )


def milvus_standalone() -> ServiceSpec:
    """Milvus standalone from its image: embedded etcd, local storage; ``/var/lib/milvus`` in the scratch folder.

    Configuration goes through Milvus's environment overrides (``ETCD_USE_EMBED`` and friends,
    as upstream's ``standalone_embed.sh``; any ``section.key`` is ``SECTION_KEY``). The proxy
    (gRPC, the clients' port) and etcd get free ports; Milvus's internal ports keep their
    defaults, which a whole-node job (MeluXina) has to itself.
    """
    etcd_config = "{workdir}/embedEtcd.yaml"
    return ServiceSpec(
        name="milvus",
        setup=(("sh", "-c", shlex.join(["printf", "%s\\n", *EMBED_ETCD]) + f" > {etcd_config}"),),
        command=(
            "env",
            "DEPLOY_MODE=STANDALONE",
            "ETCD_USE_EMBED=true",
            "ETCD_DATA_DIR=/var/lib/milvus/etcd",
            f"ETCD_CONFIG_PATH={etcd_config}",
            "ETCD_ENDPOINTS=127.0.0.1:{ports.etcd}",
            "COMMON_STORAGETYPE=local",
            "PROXY_PORT={ports.grpc}",
            "milvus",
            "run",
            "standalone",
        ),
        ports=("grpc", "etcd"),
        binds=("{workdir}/milvus:/var/lib/milvus",),  # all of Milvus's state, as upstream's volume
        probe=MILVUS_PROBE,
        resources=Resources(cpus=16, mem_gb=64),
        image="docker://milvusdb/milvus:v2.6.9",
        readiness_timeout_s=300,
        stop_timeout_s=60,
        meta={"protocol": "milvus"},
    )


CHROMA: dict[str, SettingValue] = {}


def chroma(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """``chroma run`` on a scratch folder."""
    return ServiceSpec(
        name="chroma",
        command=("chroma", "run", "--host", "{host}", "--port", "{ports.http}", "--path", "{workdir}"),
        probe=HttpProbe(path="/api/v2/heartbeat"),
        resources=Resources(cpus=2, mem_gb=4),
        readiness_timeout_s=60,
        meta={"protocol": "chroma", "provided_by": "the PyPI package chromadb (pytest-aifactory[data])"},
    )


# ``url``: an existing server instead (or AIF_QDRANT_URL; an API key in AIF_QDRANT_API_KEY).
QDRANT: dict[str, SettingValue] = {"url": ""}


def qdrant(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Qdrant from its image (cluster profiles), or an existing server by ``url``."""
    return ServiceSpec(
        name="qdrant",
        command=(
            "env",
            "QDRANT__SERVICE__HOST={host}",
            "QDRANT__SERVICE__HTTP_PORT={ports.http}",
            "QDRANT__SERVICE__GRPC_PORT={ports.grpc}",
            "QDRANT__STORAGE__STORAGE_PATH={workdir}/storage",
            "QDRANT__STORAGE__SNAPSHOTS_PATH={workdir}/snapshots",
            "QDRANT__TELEMETRY_DISABLED=true",
            "sh",
            "-c",
            "cd /qdrant && exec ./qdrant",  # its image reads config/ relative to /qdrant
        ),
        ports=("http", "grpc"),
        probe=HttpProbe(path="/readyz"),
        resources=Resources(cpus=8, mem_gb=32),
        image="docker://qdrant/qdrant:v1.19.1",  # qdrant-client warns beyond one minor version apart
        meta={"protocol": "qdrant", "local_reason": "Qdrant ships as a container image; no Docker or Apptainer here"},
    )


# ``url``: an existing server instead (or AIF_WEAVIATE_URL; an API key in AIF_WEAVIATE_API_KEY).
WEAVIATE: dict[str, SettingValue] = {"url": ""}


def weaviate(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Weaviate from its image (cluster profiles), or an existing server by ``url``."""
    return ServiceSpec(
        name="weaviate",
        command=(
            "env",
            "PERSISTENCE_DATA_PATH={workdir}",
            "DEFAULT_VECTORIZER_MODULE=none",
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true",
            "GRPC_PORT={ports.grpc}",
            "CLUSTER_HOSTNAME=node1",  # one node: gossip and Raft ports keep their defaults (whole-node jobs)
            "RAFT_BOOTSTRAP_EXPECT=1",
            "DISABLE_TELEMETRY=true",
            "/bin/weaviate",
            "--host",
            "{host}",
            "--port",
            "{ports.http}",
            "--scheme",
            "http",
        ),
        ports=("http", "grpc"),
        probe=HttpProbe(path="/v1/.well-known/ready"),
        resources=Resources(cpus=8, mem_gb=32),
        image="docker://semitechnologies/weaviate:1.28.4",
        meta={
            "protocol": "weaviate",
            "local_reason": "Weaviate ships as a container image; no Docker or Apptainer here",
        },
    )
