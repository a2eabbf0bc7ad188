"""Across nodes, for real: the three-node cluster of .ci/slurm-up.sh (profile ci-cluster).

Each compute node aif-n1..3 is a slurmd in its own network namespace with its own address; this
process is the login node, on the bridge's address. Nothing here can pass on 127.0.0.1 alone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import free_port, http_ready, registry_entries, run_pytest, wait_for
from loki_receiver import LokiReceiver

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

NODES = ("aif-n1", "aif-n2", "aif-n3")


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def login_address() -> str:
    """The login node's address on the cluster's bridge (the cluster must be up)."""
    responding = _sh("sinfo", "-h", "-N", "-r", "-p", "cluster", "-o", "%N").split()
    bridge = subprocess.run(["ip", "-4", "-o", "addr", "show", "aifbr0"], capture_output=True, text=True, check=False)
    if sorted(set(responding)) != list(NODES) or not bridge.stdout:
        pytest.fail(f"the three-node cluster is not up (responding: {responding}): run .ci/slurm-up.sh")
    return bridge.stdout.split()[3].split("/")[0]


def _node_addresses() -> dict[str, str]:
    rows = _sh("scontrol", "show", "node", ",".join(NODES), "-o").splitlines()
    fields = [dict(word.split("=", 1) for word in row.split() if "=" in word) for row in rows]
    return {f["NodeName"]: f["NodeAddr"] for f in fields}


def _run(cwd: Path, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(cwd, "--aif-profile=ci-cluster", "--aif-results-dir=res", f"--aif-run-id={run_id}", *args)


def _assert_no_job_left(run_dir: Path) -> None:
    submitted = {e["job_id"] for e in registry_entries(run_dir) if e["event"] == "submitted"}
    stopped = {e["job_id"] for e in registry_entries(run_dir) if e["event"] == "stopped"}
    assert submitted, "the run submitted no job"
    assert submitted == stopped
    queue = _sh("squeue", "-h", "-o", "%i").split()
    assert not set(queue) & submitted, f"jobs of the run still in squeue: {set(queue) & submitted}"


@pytest.fixture
def login_pushgateway(login_address: str, tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway listening on the login node's address only."""
    url = f"http://{login_address}:{free_port()}"
    process = subprocess.Popen(
        [
            "prometheus-pushgateway",
            f"--web.listen-address={url.removeprefix('http://')}",
            f"--persistence.file={tmp_path / 'gateway.state'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("the Pushgateway", lambda: http_ready(f"{url}/-/ready"), timeout_s=30)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_service_on_a_node_serves_the_login_node_and_client_nodes(
    pytester: pytest.Pytester, login_address: str, login_pushgateway: str
) -> None:
    """Bound to its node's address; load from two client jobs on the other nodes; telemetry to the login node."""
    loki = LokiReceiver(login_address)
    seen = pytester.path / "seen.json"
    pytester.makepyfile(
        f"""
        import json
        import httpx

        def test_across(synthetic_llm_service, aif_load, aif_run):
            service = synthetic_llm_service
            assert httpx.get(service.url("/v1/models")).status_code == 200  # from the login node
            result = aif_load.openai(service, prompts="synthetic:in=4,out=2", rate=20, count=40, nodes=2)
            assert result.metrics()["error_rate"] == 0
            assert sorted(r.index for r in result.records) == list(range(40))
            shards = [r.job_id for r in aif_run.registry.records() if r.service == "load-shard"]
            open({str(seen)!r}, "w").write(json.dumps({{"node": service.node, "host": service.host, "shards": shards}}))
        """
    )
    try:
        done = _run(
            pytester.path,
            "across",
            f"--aif-pushgateway={login_pushgateway}",
            "--aif-pushgateway-interval=0.5",
            f"--aif-loki={loki.url}",
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        facts = json.loads(seen.read_text())
        assert facts["node"] in NODES
        assert facts["host"] == _node_addresses()[facts["node"]]
        shard_nodes = _sh("sacct", "-n", "-X", "-P", "-j", ",".join(facts["shards"]), "-o", "NodeList").split()
        assert sorted(shard_nodes) == sorted(set(NODES) - {facts["node"]}), shard_nodes
        metrics = httpx.get(f"{login_pushgateway}/metrics").text
        samples = [line for line in metrics.splitlines() if line.startswith("aifactory_service_memory_bytes{")]
        assert any(f'node="{facts["node"]}"' in line for line in samples), samples
        assert loki.errors == []
        forwarded = [line for line in loki.lines if line["metadata"].get("node") == facts["node"]]
        assert any(line["line"].startswith("service synthetic-llm started on") for line in forwarded)
    finally:
        loki.close()
    _assert_no_job_left(pytester.path / "res" / "across")


def test_service_bound_to_loopback_is_reported_unreachable(pytester: pytest.Pytester, login_address: str) -> None:
    pytester.makepyfile(
        """
        from pytest_aifactory.services.spec import HttpProbe, ServiceSpec

        def test_loopback(aif_service):
            aif_service(ServiceSpec(
                name="loopback",
                command=("{python}", "-m", "http.server", "-b", "127.0.0.1", "{ports.http}"),
                probe=HttpProbe(),
                readiness_timeout_s=50,
            ))
        """
    )
    done = _run(pytester.path, "loopback")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "service 'loopback' listens on 127.0.0.1:" in done.stdout
    assert "only, on node aif-n" in done.stdout
    assert "it cannot be reached from other nodes" in done.stdout
    assert "was not ready within" not in done.stdout  # said at once, not after the deadline
    _assert_no_job_left(pytester.path / "res" / "loopback")


def test_node_cut_off_mid_test_fails_naming_it(pytester: pytest.Pytester, login_address: str) -> None:
    """The service's node loses its link during the test; Slurm declares it down; no job stays."""
    cut = pytester.path / "cut.txt"
    pytester.makepyfile(
        f"""
        import subprocess
        import httpx

        def test_node_goes_away(http_service):
            open({str(cut)!r}, "w").write(http_service.node)
            subprocess.run(["ip", "link", "set", "v-" + http_service.node, "down"], check=True)
            httpx.get(http_service.url("/index.txt"), timeout=2)
        """
    )
    try:
        done = _run(pytester.path, "cut")
    finally:
        node = cut.read_text() if cut.exists() else ""
        if node:
            subprocess.run(["ip", "link", "set", f"v-{node}", "up"], check=True)
            # Back in service now rather than at slurmctld's next ping of a down node (up to 30 s later):
            # resuming a down node makes slurmctld ping it at once. It fails harmlessly if it is up already.
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, check=False)
    assert done.returncode == 1, done.stdout[-3000:]
    assert f"service 'http' on node {node} (" in done.stdout, done.stdout[-3000:]
    assert "stopped answering" in done.stdout
    _assert_no_job_left(pytester.path / "res" / "cut")
    states = [""]

    def back_in_service() -> bool:
        states.append(_sh("sinfo", "-h", "-N", "-n", node, "-o", "%T").strip())
        return states[-1] == "idle"

    try:
        wait_for(f"{node} to be back in service", back_in_service, timeout_s=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last state: {states[-1]})") from None


def _profile(path: Path, extra_slurm: str) -> Path:
    """ci-cluster with more sbatch settings."""
    text = (Path(__file__).resolve().parent.parent / "slurm_profiles" / "ci-cluster.yaml").read_text()
    path.write_text(text.replace("name: ci-cluster", "name: planted").replace("slurm:\n", f"slurm:\n{extra_slurm}"))
    return path


SLEEPER = """
from pytest_aifactory.services.spec import HttpProbe, Resources, ServiceSpec

def test_sleeper(aif_service):
    aif_service(ServiceSpec(
        name="sleeper", command=("sleep", "600"), probe=HttpProbe(), readiness_timeout_s=4,
        resources=Resources(time_min={time_min}),
    ))
"""


def test_hopeless_pending_reason_is_cancelled_with_it(pytester: pytest.Pytester, login_address: str) -> None:
    """A time limit above the partition's (MaxTime=60) pends on PartitionConfig forever."""
    pytester.makepyfile(SLEEPER.format(time_min=90))
    done = run_pytest(pytester.path, "--aif-profile=ci-cluster", "--aif-results-dir=res", "--aif-run-id=hopeless")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "service 'sleeper' cannot start: its job is PENDING (PartitionConfig) for " in done.stdout, done.stdout
    assert "which will not resolve (the request does not fit the partition's configuration)" in done.stdout
    assert "; the job is cancelled" in done.stdout
    _assert_no_job_left(pytester.path / "res" / "hopeless")


def test_pending_past_the_readiness_deadline_says_why(pytester: pytest.Pytester, login_address: str) -> None:
    """The failure and the progress line give Slurm's pending reason and for how long."""
    profile = _profile(pytester.path / "later.yaml", "  additional: {begin: now+1hour}\n")
    pytester.makepyfile(SLEEPER.format(time_min=10))
    done = run_pytest(pytester.path, f"--aif-profile={profile}", "--aif-results-dir=res", "--aif-run-id=later")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "[aifactory] service sleeper waiting in the queue: PENDING (BeginTime) for " in done.stdout
    assert "service 'sleeper' was not ready within 4 s (last probe: job PENDING (BeginTime) for " in done.stdout
    assert ": job state PENDING (BeginTime) for " in done.stdout
    _assert_no_job_left(pytester.path / "res" / "later")
