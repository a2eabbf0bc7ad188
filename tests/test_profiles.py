"""Slurm profiles: shipped ones load; malformed ones are rejected naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import aifactory

from pytest_aifactory.core.errors import ProfileError, ServiceConfigError
from pytest_aifactory.core.profiles import available_profiles, load_profile
from pytest_aifactory.jobs.backends import SlurmBackend
from pytest_aifactory.jobs.runner import LaunchPlan, command_argv
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.services.spec import render_context

SHIPPED = ["ci-slurm", "local", "meluxina-cpu", "meluxina-gpu", "meluxina-largemem"]


def test_shipped_profiles_are_found_and_valid() -> None:
    assert set(SHIPPED) <= set(available_profiles())
    for name in SHIPPED:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.source.endswith(f"{name}.yaml")


def test_meluxina_gpu_profile_facts() -> None:
    profile = load_profile("meluxina-gpu")
    assert profile.executor == "slurm"
    assert profile.slurm.partition == "gpu"
    assert profile.slurm.gpus_per_node == 4
    assert profile.service_host == "node"
    assert profile.container is not None
    assert profile.container.runtime == "apptainer"
    assert "module load env/release/2024.1" in profile.slurm.setup


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\nexecutor: local\nservice_hots: node\n",
            "key 'service_hots' is not a valid key; valid keys: container,",
        ),
        (
            "name: x\nexecutor: slurm\nslurm:\n  partiton: gpu\n",
            "key 'slurm.partiton' is not a valid key; valid keys: account,",
        ),
        (
            "name: x\nexecutor: slurm\nslurm:\n  time_min: '60'\n",
            "key 'slurm.time_min': Input should be a valid integer",
        ),
        ("name: x\nexecutor: kubernetes\n", "key 'executor': Input should be 'local' or 'slurm'"),
        ("executor: local\n", "required key 'name' is missing"),
        (
            "name: x\nexecutor: local\nservices:\n  http:\n    gpu: 1\n",
            "key 'services.http.gpu' is not a valid key; valid keys: cpus, env, gpus,",
        ),
        ("name: x\nexecutor: local\nslurm: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "a profile must be a mapping"),
    ],
)
def test_malformed_profile_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith(str(path))
    assert expected in message


def test_unknown_profile_name_lists_valid_ones() -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'.*ci-slurm, local, meluxina-cpu"):
        load_profile("nope")


def test_malformed_profile_is_a_usage_error(pytester: pytest.Pytester) -> None:
    bad = pytester.path / "broken.yaml"
    bad.write_text("name: broken\nexecutor: slurm\nslurm:\n  gpus_per_node: four\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--aif-profile={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --aif-profile: {bad}: invalid profile: key 'slurm.gpus_per_node': Input should be a valid integer*"]
    )


def test_profile_service_overrides_then_call_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: t\nexecutor: slurm\nslurm: {partition: cpu, account: p1}\ncontainer: {binds: [/a, /b]}\n"
        "services:\n  http:\n    gpus: 2\n    image: docker://x/y:1\n    settings: {index_text: hi}\n",
    )
    profile = load_profile(str(path))
    spec = build_spec("http", profile)
    assert spec.resources.gpus == 2
    assert spec.image == "docker://x/y:1"
    assert spec.setup[0][-1].endswith("write('hi')")
    spec = build_spec("http", profile, gpus=1, time_min=5, index_text="call")
    assert (spec.resources.gpus, spec.resources.time_min) == (1, 5)
    assert spec.setup[0][-1].endswith("write('call')")
    with pytest.raises(ServiceConfigError, match="service 'http' has no setting colour; valid: cpus, env, gpus"):
        build_spec("http", profile, colour="red")
    with pytest.raises(ServiceConfigError, match="unknown service 'nope'; known services: chroma, http, llamacpp"):
        build_spec("nope", profile)


def test_sbatch_script_and_container_command_for_meluxina(tmp_path: Path) -> None:
    """What would be submitted on MeluXina: checked without a cluster."""
    profile = load_profile("meluxina-gpu")
    spec = build_spec("http", profile, image="docker://python:3.11-slim", gpus=4)
    plan = LaunchPlan(spec=spec, folder=tmp_path, host_mode=profile.service_host, container=profile.container)
    script = SlurmBackend(profile).render_sbatch(plan)
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=pXXXXXX",
        "#SBATCH --qos=default",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=64",
        "#SBATCH --hint=nomultithread",
        "module load env/release/2024.1",
    ):
        assert line in script
    argv = command_argv(plan, ["python", "-m", "http.server"])
    assert argv[:3] == ["apptainer", "exec", "--nv"]
    assert argv[3:5] == ["--bind", "/mnt/tier1,/mnt/tier2,/project/scratch/pXXXXXX,/project/home/pXXXXXX"]
    assert argv[5:] == ["--writable-tmpfs", "docker://python:3.11-slim", "python", "-m", "http.server"]


def _submitted(name: str, profile_name: str, tmp_path: Path) -> tuple[list[list[str]], list[str]]:
    """The setup steps and the command of service ``name`` as its job would start them."""
    profile = load_profile(profile_name)
    spec = build_spec(name, profile)
    plan = LaunchPlan(spec=spec, folder=tmp_path, host_mode=profile.service_host, container=profile.container)
    context = render_context(
        "10.3.1.7", {p: 40000 + i for i, p in enumerate(spec.ports)}, "/scratch/w", "py", "mel0001"
    )
    return [command_argv(plan, step, context) for step in spec.setup], command_argv(plan, spec.command, context)


@pytest.mark.parametrize("profile_name", ["meluxina-cpu", "meluxina-gpu", "meluxina-largemem"])
def test_data_servers_on_meluxina_run_from_their_images(tmp_path: Path, profile_name: str) -> None:
    """MinIO, Milvus standalone, Qdrant and Weaviate: what their jobs would run (no cluster here)."""
    apptainer = ["apptainer", "exec", "--bind", "/mnt/tier1,/mnt/tier2,/project/scratch/pXXXXXX,/project/home/pXXXXXX"]
    apptainer += ["--writable-tmpfs"]

    _, minio = _submitted("s3", profile_name, tmp_path)
    assert minio[:6] == [*apptainer[:4], "--writable-tmpfs", "docker://minio/minio:RELEASE.2025-04-22T22-12-26Z"]
    assert minio[6:] == [
        "minio",
        "server",
        "/scratch/w/data",
        "--address",
        "10.3.1.7:40000",
        "--console-address",
        "10.3.1.7:40001",
    ]
    spec = build_spec("s3", load_profile(profile_name))
    assert spec.env_from == {"MINIO_ROOT_USER": "AIF_S3_ACCESS_KEY", "MINIO_ROOT_PASSWORD": "AIF_S3_SECRET_KEY"}

    setup, milvus = _submitted("milvus", profile_name, tmp_path)
    assert milvus[2:4] == ["--bind", f"{apptainer[3]},/scratch/w/milvus:/var/lib/milvus"]
    assert milvus[4:6] == ["--writable-tmpfs", "docker://milvusdb/milvus:v2.6.9"]
    assert milvus[-3:] == ["milvus", "run", "standalone"]
    assert {"ETCD_USE_EMBED=true", "PROXY_PORT=40000", "ETCD_ENDPOINTS=127.0.0.1:40001"} <= set(milvus)
    assert "ETCD_CONFIG_PATH=/scratch/w/embedEtcd.yaml" in milvus
    assert setup[0][-3:-1] == ["sh", "-c"]
    assert setup[0][-1].endswith("> /scratch/w/embedEtcd.yaml")
    assert "'listen-client-urls: http://127.0.0.1:40001'" in setup[0][-1]

    _, qdrant = _submitted("qdrant", profile_name, tmp_path)
    assert "QDRANT__SERVICE__HTTP_PORT=40000" in qdrant
    assert qdrant[-3:] == ["sh", "-c", "cd /qdrant && exec ./qdrant"]
    _, weaviate = _submitted("weaviate", profile_name, tmp_path)
    assert weaviate[-7:] == ["/bin/weaviate", "--host", "10.3.1.7", "--port", "40000", "--scheme", "http"]


def test_data_server_choice_is_checked(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: p\nexecutor: local\nservices:\n  s3:\n    settings: {server: ceph}\n")
    profile = load_profile(str(tmp_path / "p.yaml"))
    with pytest.raises(
        ServiceConfigError, match=r"p\.yaml: service 's3': settings\.server is 'ceph'; valid: seaweedfs, minio"
    ):
        build_spec("s3", profile)
    with pytest.raises(
        ServiceConfigError, match=r"service 'milvus': settings\.server is 'big'; valid: lite, standalone"
    ):
        build_spec("milvus", profile, server="big")


def test_render_prints_the_job_script_and_the_command_inside_it(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    done = aifactory("render", "meluxina-cpu", "s3", "--root", str(root), "--folder", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --partition=cpu" in done.stdout
    start = [line for line in done.stdout.splitlines() if line.startswith("#   start: ")]
    assert start == [
        "#   start: apptainer exec --bind /mnt/tier1,/mnt/tier2,/project/scratch/pXXXXXX,/project/home/pXXXXXX "
        "--writable-tmpfs docker://minio/minio:RELEASE.2025-04-22T22-12-26Z minio server '{workdir}/data' "
        "--address '{host}:{ports.s3}' --console-address '{host}:{ports.console}'"
    ]
    local = aifactory("render", "local", "s3", "--root", str(root))
    assert local.returncode == 2
    assert "runs services as local processes: there is no job script" in local.stderr
