"""Slurm profiles: shipped ones load; malformed ones are rejected naming the file and key; the
search order (project, $AIF_PROFILES_DIR, packaged) and the ``aifactory profiles`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import aifactory, run_pytest

from pytest_aifactory.core.errors import ProfileError, ServiceConfigError
from pytest_aifactory.core.profiles import available_profiles, find_profile, find_profiles, load_profile
from pytest_aifactory.jobs.backends import SlurmBackend
from pytest_aifactory.jobs.runner import LaunchPlan, command_argv
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.services.spec import render_context

SHIPPED = ["ci-cluster", "ci-slurm", "local", "meluxina-cpu", "meluxina-gpu", "meluxina-largemem"]


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


def test_unknown_profile_name_lists_valid_ones_and_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'.*ci-slurm, local, meluxina-cpu") as info:
        load_profile("nope", tmp_path)
    assert f"looked in {tmp_path / 'slurm_profiles'} (project), " in str(info.value)
    assert str(info.value).endswith("slurm_profiles (packaged)")


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
    with pytest.raises(
        ServiceConfigError, match="unknown service 'nope'; known services: chroma, embeddings, http, llamacpp"
    ):
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


ROOT = Path(__file__).resolve().parent.parent


def _profile(folder: Path, name: str, description: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nexecutor: local\ndescription: {description}\n")
    return path


def test_the_packaged_profiles_are_the_top_level_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """One source: the package's slurm_profiles is a link to the top-level folder, not a copy."""
    monkeypatch.delenv("AIF_PROFILES_DIR", raising=False)
    packaged = ROOT / "pytest_aifactory" / "slurm_profiles"
    assert packaged.is_symlink()
    assert packaged.resolve() == (ROOT / "slurm_profiles").resolve()
    assert {f.origin for f in find_profiles(ROOT)} == {"project"}  # the same folder counts once, first


def test_search_order_project_then_profiles_dir_then_packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    _profile(project / "slurm_profiles", "local", "the project's")
    first, second = tmp_path / "first", tmp_path / "second"
    _profile(first, "local", "hidden by the project's")
    _profile(first, "mine", "from the first folder")
    _profile(second, "mine", "hidden by the first folder")
    _profile(second, "theirs", "from the second folder")
    monkeypatch.setenv("AIF_PROFILES_DIR", f"{first}{os.pathsep}{second}")
    found = {f.name: f for f in find_profiles(project)}
    assert (found["local"].origin, found["local"].path) == ("project", project / "slurm_profiles" / "local.yaml")
    assert (found["mine"].origin, found["mine"].path) == ("AIF_PROFILES_DIR", first / "mine.yaml")
    assert found["theirs"].path == second / "theirs.yaml"
    assert found["meluxina-cpu"].origin == "packaged"
    assert found["meluxina-cpu"].path.parts[-3:] == ("pytest_aifactory", "slurm_profiles", "meluxina-cpu.yaml")
    assert load_profile("local", project).description == "the project's"
    assert load_profile("mine", project).source == str(first / "mine.yaml")
    given = find_profile(str(second / "mine.yaml"), project)
    assert (given.origin, given.name) == ("path", "mine")


def test_a_profiles_dir_that_is_not_a_folder_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIF_PROFILES_DIR", str(tmp_path / "nope"))
    with pytest.raises(ProfileError, match=r"AIF_PROFILES_DIR: '.*nope' is not a folder; give folders of NAME\.yaml"):
        load_profile("local")


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``aifactory ARGS`` run from ``cwd``, without this checkout's AIF_PROFILES_DIR, if any."""
    base = {k: v for k, v in os.environ.items() if k != "AIF_PROFILES_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "pytest_aifactory.apps.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        check=False,
    )


def test_profiles_command_says_where_each_profile_came_from(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    _profile(shared, "team", "the team's")
    (tmp_path / "work").mkdir()
    _profile(tmp_path / "work" / "slurm_profiles", "meluxina-cpu", "my own")
    done = _cli(tmp_path / "work", "profiles", env={"AIF_PROFILES_DIR": str(shared)})
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["meluxina-cpu"] == "local: my own [project: slurm_profiles/meluxina-cpu.yaml]"
    assert lines["team"] == f"local: the team's [AIF_PROFILES_DIR: {shared / 'team.yaml'}]"
    assert lines["meluxina-gpu"].startswith("slurm: MeluXina GPU partition")
    assert lines["meluxina-gpu"].endswith("pytest_aifactory/slurm_profiles/meluxina-gpu.yaml]")
    assert "[packaged: " in lines["meluxina-gpu"]


def test_an_invalid_profile_is_listed_as_such(tmp_path: Path) -> None:
    (tmp_path / "slurm_profiles").mkdir()
    (tmp_path / "slurm_profiles" / "broken.yaml").write_text("name: broken\nexecutor: pbs\n")
    done = _cli(tmp_path, "profiles")
    assert done.returncode == 1
    assert "broken: INVALID [project: slurm_profiles/broken.yaml]: slurm_profiles/broken.yaml: invalid" in done.stdout


def test_copy_a_packaged_profile_to_start_ones_own(tmp_path: Path) -> None:
    done = _cli(tmp_path, "profiles", "--copy", "meluxina-gpu", "slurm_profiles")
    assert done.returncode == 0, done.stderr
    copied = tmp_path / "slurm_profiles" / "meluxina-gpu.yaml"
    assert copied.read_text() == (ROOT / "slurm_profiles" / "meluxina-gpu.yaml").read_text()
    assert done.stdout.startswith("copied packaged profile meluxina-gpu from ")
    assert done.stdout.rstrip().endswith(" to slurm_profiles/meluxina-gpu.yaml")
    assert "[project: slurm_profiles/meluxina-gpu.yaml]" in _cli(tmp_path, "profiles").stdout

    copied.write_text("name: meluxina-gpu\nexecutor: slurm\n")
    again = _cli(tmp_path, "profiles", "--copy", "meluxina-gpu", "elsewhere")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("copied project profile meluxina-gpu from slurm_profiles/meluxina-gpu.yaml to ")
    refused = _cli(tmp_path, "profiles", "--copy", "meluxina-gpu", "elsewhere")
    assert refused.returncode == 2
    assert (
        refused.stderr
        == "aifactory profiles: --copy: elsewhere/meluxina-gpu.yaml exists; pass --force to overwrite it\n"
    )
    assert (
        _cli(tmp_path, "profiles", "--copy", str(ROOT / "slurm_profiles" / "local.yaml"), "elsewhere").returncode == 0
    )
    forced = _cli(tmp_path, "profiles", "--copy", "local", "elsewhere", "--force", "--root", "/nonexistent")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "elsewhere" / "local.yaml").read_text() == (ROOT / "slurm_profiles" / "local.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--copy", "meluxina-gpu", "slurm_profiles"], "--copy: slurm_profiles/meluxina-gpu.yaml is the profile "),
        (["--copy", "meluxina-gpu", "afile"], "--copy: destination afile is not a folder"),
        (["--copy", "nope", "x"], "unknown profile 'nope': give a profile name (ci-cluster, ci-slurm, "),
        (["--force"], "--force only applies with --copy NAME DEST_DIR"),
    ],
)
def test_copy_errors_are_clear(tmp_path: Path, args: list[str], message: str) -> None:
    _profile(tmp_path / "slurm_profiles", "meluxina-gpu", "mine")
    (tmp_path / "afile").write_text("")
    done = _cli(tmp_path, "profiles", *args, "--force")
    assert done.returncode == 2
    assert done.stderr.startswith(f"aifactory profiles: {message}"), done.stderr
    assert not (tmp_path / "x").exists()


def test_no_profile_found_says_where_it_looked(tmp_path: Path) -> None:
    """Only when the packaged folder is gone (a broken install): simulated by hiding it."""
    script = (
        "import sys\nfrom pathlib import Path\nfrom pytest_aifactory.core import profiles\n"
        f"profiles._packaged_folder = lambda: Path({str(tmp_path / 'gone')!r})\n"
        "from pytest_aifactory.apps.cli import main\nsys.exit(main(['profiles']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr == (
        f"aifactory profiles: no profile found; looked in slurm_profiles (project), {tmp_path / 'gone'} (packaged)\n"
    )


def test_render_a_meluxina_profile_from_an_unrelated_folder(tmp_path: Path) -> None:
    done = _cli(tmp_path, "render", "meluxina-cpu", "s3")
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --partition=cpu" in done.stdout
    assert list(tmp_path.iterdir()) == []


_LOAD = """
def test_load(synthetic_llm_service, aif_load):
    aif_load.openai(synthetic_llm_service, prompts="synthetic:in=4,out=4", rate=20, count=10)
"""


def test_a_profile_path_after_a_space_keeps_results_in_the_invocation_folder(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """``--aif-profile /elsewhere/x.yaml`` (a space) makes pytest's rootdir the profile's folder; results stay here."""
    profile = _profile(tmp_path / "elsewhere", "spaced", "a profile in another project")
    (profile.parent / "pytest.ini").write_text("[pytest]\n")  # that project's pytest configuration
    pytester.makepyfile(_LOAD)
    done = run_pytest(pytester.path, "--aif-profile", str(profile), "--aif-run-id=spaced")
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"rootdir: {profile.parent}" in done.stdout  # what pytest does with the space
    assert (pytester.path / "aif-results" / "spaced" / "report.json").is_file()
    assert sorted(p.name for p in profile.parent.iterdir()) == ["pytest.ini", "spaced.yaml"]


def test_a_profile_path_after_a_space_without_ini_files_keeps_results_in_the_invocation_folder(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    profile = _profile(tmp_path / "elsewhere", "spaced", "a profile outside the project")
    pytester.makepyfile(_LOAD)
    done = run_pytest(pytester.path, "--aif-profile", str(profile), "--aif-run-id=spaced")
    assert done.returncode == 0, done.stdout[-3000:]
    assert (pytester.path / "aif-results" / "spaced" / "report.json").is_file()


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path: Path) -> None:
    # `aifactory profiles | head -3` ended in a BrokenPipeError traceback; here the reader is gone before the write
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_aifactory.apps.cli", "profiles"],
            cwd=tmp_path,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1
