"""The service specs the MeluXina profiles start from images run only what is in their image.

A stricter stand-in ``apptainer`` (``tests/fake_apptainer`` with ``$FAKE_APPTAINER_IMAGES``)
refuses a command that names a host path that is neither in the image's declared contents nor
bound; what passes is run with host programs standing in for the image's.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_pytest

pytestmark = pytest.mark.timeout(240)

BUSYBOX_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]


def declared_images() -> dict[str, dict[str, object]]:
    """What the images contain, from their Dockerfiles (and which host program stands in for each)."""
    host_pg = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return {
        "docker://postgres:16": {  # Debian image; PATH ends with the server's bin folder
            "path": [*BUSYBOX_PATH, "/usr/lib/postgresql/16/bin"],
            "contents": [
                "/usr/lib/postgresql/16",
                "/usr/share/postgresql",
                "/usr/local/bin/docker-entrypoint.sh",
                "/bin/sh",
                "/usr/bin/env",
                "/var/lib/postgresql",
                "/var/run/postgresql",
            ],
            "stand_ins": {"/usr/lib/postgresql/16/bin": host_pg[-1] if host_pg else "/nonexistent"},
        },
        "docker://prom/prometheus:v2.53.3": {  # busybox: no Python
            "path": BUSYBOX_PATH,
            "contents": [
                "/bin/prometheus",
                "/bin/promtool",
                "/bin/sh",
                "/etc/prometheus",
                "/usr/share/prometheus",
                "/prometheus",
            ],
            "stand_ins": {"/bin/prometheus": "/usr/bin/prometheus"},
        },
        "docker://prom/pushgateway:v1.11.0": {
            "path": BUSYBOX_PATH,
            "contents": ["/bin/pushgateway", "/bin/sh"],
            "stand_ins": {"/bin/pushgateway": "/usr/bin/prometheus-pushgateway"},
        },
    }


@pytest.fixture
def strict_apptainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The strict stand-in on PATH, in a folder the services' own users (postgres) can read."""
    folder = Path(tempfile.mkdtemp(prefix="aif-apptainer-"))
    folder.chmod(0o755)
    (folder / "apptainer").symlink_to(Path(__file__).resolve().parent / "fake_apptainer")
    (folder / "images.json").write_text(json.dumps(declared_images()))
    log = folder / "calls.jsonl"
    log.touch()
    log.chmod(0o666)
    monkeypatch.setenv("FAKE_APPTAINER_IMAGES", str(folder / "images.json"))
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    yield log
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/postgres"), reason="needs Debian's postgresql")
def test_postgres_prometheus_and_pushgateway_run_in_their_images(
    pytester: pytest.Pytester, strict_apptainer: Path
) -> None:
    profile = pytester.path / "boxed.yaml"
    profile.write_text(
        "name: boxed\nexecutor: local\ncontainer: {runtime: apptainer, binds: [/tmp], options: [--writable-tmpfs]}\n"
    )
    pytester.makepyfile(
        """
        import httpx

        def test_pushgateway(aif_service):
            aif_service("pushgateway")

        def test_prometheus(aif_service):
            prometheus = aif_service("prometheus", pushgateway="127.0.0.1:9")
            assert httpx.get(prometheus.url("/api/v1/targets")).json()["status"] == "success"

        def test_postgres(aif_service):
            aif_service("postgres")
        """
    )
    done = run_pytest(pytester.path, f"--aif-profile={profile}", "--aif-results-dir=res")
    calls = [json.loads(line) for line in strict_apptainer.read_text().splitlines()]
    assert done.returncode == 0, "\n".join(line for line in done.stdout.splitlines() if "FATAL" in line)
    assert [(call["image"].split("/")[-1], call["argv"][0]) for call in calls] == [
        ("pushgateway:v1.11.0", "pushgateway"),
        ("prometheus:v2.53.3", "prometheus"),
        ("postgres:16", "initdb"),
        ("postgres:16", "postgres"),
    ]
    assert all(sys.executable not in " ".join(call["argv"]) for call in calls)
