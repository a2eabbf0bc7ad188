"""Data services: PostgreSQL, S3, Milvus, Chroma, Qdrant and Weaviate.

S3 is SeaweedFS locally (an existing endpoint or MinIO on the cluster). Every probe is a real
client call (``SELECT 1``, a PUT, a collection listing, a heartbeat), not an open port.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Mapping

from pytest_aifactory.errors import ServiceConfigError
from pytest_aifactory.profiles import SettingValue
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
        probe=CallProbe("pytest_aifactory.workloads.sql:probe"),
        resources=Resources(cpus=2, mem_gb=4),
        image="docker://postgres:16",
        readiness_timeout_s=60,
        stop_timeout_s=30,
        meta={"protocol": "postgresql", "user": "aif", "dbname": "postgres"},
    )


# ``endpoint``: use an existing S3 endpoint (or AIF_S3_ENDPOINT); credentials from the environment.
S3: dict[str, SettingValue] = {"endpoint": "", "volume_size_mb": 512, "max_volumes": 200}


def s3(settings: Mapping[str, SettingValue]) -> ServiceSpec:
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
            "-dir={workdir}",
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
        probe=CallProbe("pytest_aifactory.workloads.s3:probe"),
        resources=Resources(cpus=2, mem_gb=4),
        readiness_timeout_s=90,
        stop_timeout_s=30,
        meta={"protocol": "s3", "access_key_env": "AIF_S3_ACCESS_KEY", "secret_key_env": "AIF_S3_SECRET_KEY"},
    )


MILVUS: dict[str, SettingValue] = {}


def milvus(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """milvus-lite's gRPC server locally (Milvus standalone from an image on the cluster)."""
    return ServiceSpec(
        name="milvus",
        command=("milvus-lite", "server", "--data-dir", "{workdir}", "--host", "{host}", "--port", "{ports.grpc}"),
        ports=("grpc",),
        probe=CallProbe("pytest_aifactory.workloads.vectors:milvus_probe"),
        resources=Resources(cpus=2, mem_gb=4),
        readiness_timeout_s=60,
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
        meta={"protocol": "chroma"},
    )


QDRANT: dict[str, SettingValue] = {}


def qdrant(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Qdrant from its image (cluster profiles: no server can be installed locally)."""
    return ServiceSpec(
        name="qdrant",
        command=(
            "env",
            "QDRANT__SERVICE__HOST={host}",
            "QDRANT__SERVICE__HTTP_PORT={ports.http}",
            "QDRANT__SERVICE__GRPC_PORT={ports.grpc}",
            "QDRANT__STORAGE__STORAGE_PATH={workdir}",
            "/qdrant/qdrant",
        ),
        ports=("http", "grpc"),
        probe=HttpProbe(path="/readyz"),
        resources=Resources(cpus=8, mem_gb=32),
        image="docker://qdrant/qdrant:v1.13.4",
        meta={"protocol": "qdrant", "local_reason": "Qdrant ships as a container image; no Docker or Apptainer here"},
    )


WEAVIATE: dict[str, SettingValue] = {}


def weaviate(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """Weaviate from its image (cluster profiles only)."""
    return ServiceSpec(
        name="weaviate",
        command=(
            "env",
            "PERSISTENCE_DATA_PATH={workdir}",
            "DEFAULT_VECTORIZER_MODULE=none",
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true",
            "GRPC_PORT={ports.grpc}",
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
