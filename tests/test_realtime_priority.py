"""The engine's thread at real-time priority during a load only (``--aif-realtime-priority``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port, http_ready, wait_for

from pytest_aifactory.core import softirq
from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.core.scheduling import NORMAL, realtime_priority
from pytest_aifactory.core.softirq import cpu_list, softirq_threads_above
from pytest_aifactory.load.engine import Clock, Engine, LoadPlan
from pytest_aifactory.workloads.plans import make_plan
from pytest_aifactory.workloads.runner import LoadRunner

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raising a thread to SCHED_FIFO needs root here")


def _policy() -> int:
    return os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK


def _policy_of_a_new_thread() -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(_policy()))
    thread.start()
    thread.join()
    return seen[0]


class _PolicyClient:
    """Notes the scheduling policy of the thread that sends each request, and of a thread started by the first."""

    def __init__(self) -> None:
        self.policies: list[int] = []
        self.new_thread_policy: int | None = None

    async def open(self) -> None:
        pass

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        await asyncio.sleep(0)  # as any client that waits for a server (a closed loop's slots take turns)
        self.policies.append(_policy())
        if self.new_thread_policy is None:  # as a pool of blocking calls, or the resolver's, starts one
            self.new_thread_policy = _policy_of_a_new_thread()
        record.end = clock.now()

    async def close(self) -> None:
        pass


class _Indexes:
    """Request i is i; request ``fail_at`` cannot be built (the load itself fails)."""

    def __init__(self, fail_at: int = -1) -> None:
        self.fail_at = fail_at

    def request(self, index: int) -> int:
        if index == self.fail_at:
            raise ValueError(f"request {index} cannot be built")
        return index


@pytest.fixture(autouse=True)
def own_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own records of raised softirq threads (its server and holders inherit it), not the machine's."""
    monkeypatch.setenv(softirq.REGISTRY_ENV, str(tmp_path / "own-registry"))


@pytest.fixture
def normal_thread() -> Iterator[None]:
    """This test's thread at the normal policy before and after (whatever the test did)."""
    assert _policy() == os.SCHED_OTHER, "this test's thread already runs at another policy"
    yield
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _softirq_pids() -> dict[int, int]:
    """The pid of the softirq thread of each CPU this test may run on, read from /proc."""
    by_name = {comm.read_text().strip(): int(comm.parent.name) for comm in Path("/proc").glob("[0-9]*/comm")}
    return {cpu: by_name[f"ksoftirqd/{cpu}"] for cpu in os.sched_getaffinity(0)}


def _policies(pids: dict[int, int]) -> dict[int, tuple[int, int]]:
    return {cpu: (os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority) for cpu, pid in pids.items()}


@pytest.fixture
def softirq_threads() -> Iterator[dict[int, int]]:
    """The softirq threads of this test's CPUs (by CPU), at their own policy again after the test."""
    pids = _softirq_pids()
    before = _policies(pids)
    if set(before.values()) != {(os.SCHED_OTHER, 0)}:
        pytest.skip(f"this machine's ksoftirqd threads are not all at SCHED_OTHER: {before} (a tuned node?)")
    yield pids
    for cpu, (policy, priority) in before.items():
        os.sched_setscheduler(pids[cpu], policy, os.sched_param(priority))


@needs_root
@pytest.mark.usefixtures("normal_thread")
def test_the_engine_sends_at_realtime_priority_and_gets_its_own_back(softirq_threads: dict[int, int]) -> None:
    client = _PolicyClient()
    result = LoadRunner(realtime_priority=True).run(
        client, _Indexes(), make_plan(rate=100, count=20, distribution="constant")
    )
    assert client.policies == [os.SCHED_FIFO] * 20
    assert client.new_thread_policy == os.SCHED_OTHER  # a thread started during the load is not real-time
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # restored with the load
    assert result.config["engine_scheduling"].startswith("SCHED_FIFO 10 (ksoftirqd of CPU")
    assert result.config["realtime_priority"] is True
    assert set(_policies(softirq_threads).values()) == {(os.SCHED_OTHER, 0)}  # restored with the load


class _SoftirqPolicyClient(_PolicyClient):
    """Also notes the policy of its CPUs' softirq threads while it sends."""

    def __init__(self, softirq: dict[int, int]) -> None:
        super().__init__()
        self.softirq, self.softirq_policies = softirq, set[tuple[int, int]]()

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        self.softirq_policies.update(_policies(self.softirq).values())
        await super().send(payload, record, clock)


@needs_root
@pytest.mark.usefixtures("normal_thread")
def test_the_softirq_threads_of_the_engines_cpus_run_above_it_during_the_load(softirq_threads: dict[int, int]) -> None:
    # Loopback receive work deferred to a ksoftirqd held off by the real-time engine made the server see
    # requests late that the engine had sent on time.
    assert set(_policies(softirq_threads).values()) == {(os.SCHED_OTHER, 0)}
    client = _SoftirqPolicyClient(softirq_threads)
    result = LoadRunner(realtime_priority=True).run(client, _Indexes(), make_plan(rate=100, count=5))
    assert client.softirq_policies == {(os.SCHED_FIFO, 11)}
    assert set(_policies(softirq_threads).values()) == {(os.SCHED_OTHER, 0)}
    listed = cpu_list(softirq_threads)
    assert result.config["engine_scheduling"] == f"SCHED_FIFO 10 (ksoftirqd of {listed} at SCHED_FIFO 11)"


@needs_root
def test_a_softirq_thread_already_as_high_is_left_and_a_missing_one_is_named(
    softirq_threads: dict[int, int], tmp_path: Path
) -> None:
    cpu = min(softirq_threads)
    os.sched_setscheduler(softirq_threads[cpu], os.SCHED_FIFO, os.sched_param(50))  # as an RT-tuned node may set it
    with softirq_threads_above(10, [cpu, 4095], registry=str(tmp_path / "registry")) as done:
        assert done == (
            f"ksoftirqd of CPU {cpu} left at SCHED_FIFO 50; "
            "ksoftirqd of CPU 4095 not raised: no kernel thread of that name in /proc"
        )
    assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_FIFO, 50)


def test_without_the_option_the_engine_runs_at_its_own_priority() -> None:
    client = _PolicyClient()
    result = LoadRunner().run(client, _Indexes(), make_plan(rate=100, count=5, distribution="constant"))
    assert set(client.policies) == {_policy()}
    assert result.config["engine_scheduling"] == NORMAL


@pytest.mark.usefixtures("normal_thread")
def test_without_the_option_the_result_names_the_threads_own_policy() -> None:
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # as under `chrt --batch` (a lowering: no privilege)
    result = LoadRunner().run(_PolicyClient(), _Indexes(), make_plan(rate=100, count=5, distribution="constant"))
    assert result.config["engine_scheduling"] == "SCHED_BATCH"  # (it said "normal (SCHED_OTHER)")


@needs_root
@pytest.mark.usefixtures("normal_thread")
def test_the_priority_is_restored_when_the_load_fails() -> None:
    # A closed loop with a duration builds each payload as it goes: request 3 fails the load under way.
    plan = LoadPlan("closed", concurrency=2, duration_s=30, realtime_priority=True)
    client = _PolicyClient()
    with pytest.raises(ValueError, match="request 3 cannot be built"):
        asyncio.run(Engine(client, _Indexes(fail_at=3), plan).run())
    assert set(client.policies) == {os.SCHED_FIFO}  # raised while it ran (requests 0-2 were sent)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the thread stayed at real-time priority after a failed load"


@needs_root
@pytest.mark.usefixtures("normal_thread")
def test_a_thread_already_at_a_higher_priority_is_left_there() -> None:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
    with realtime_priority(True) as ran:
        assert ran == "SCHED_FIFO 20"
        assert os.sched_getparam(0).sched_priority == 20
    assert os.sched_getparam(0).sched_priority == 20


def test_a_priority_that_cannot_be_raised_says_why() -> None:
    with realtime_priority(True, priority=1000) as ran:  # out of SCHED_FIFO's range (1-99)
        assert ran == "not raised: sched_setscheduler(SCHED_FIFO, 1000): Invalid argument"
        assert _policy() == os.SCHED_OTHER
    with realtime_priority(False) as ran:
        assert ran == NORMAL


class _UnprivilegedKernel:
    """sched_setscheduler as Linux treats a thread without CAP_SYS_NICE but with an RLIMIT_RTPRIO:
    it may raise its priority up to the limit, but never clear the reset-on-fork flag."""

    def __init__(self) -> None:
        self.policy, self.priority = os.SCHED_OTHER, 0

    def getscheduler(self, pid: int) -> int:
        return self.policy if pid == 0 else os.SCHED_OTHER

    def getparam(self, pid: int) -> os.sched_param:
        return os.sched_param(self.priority if pid == 0 else 0)

    def setscheduler(self, pid: int, policy: int, param: os.sched_param) -> None:
        if pid != 0:  # another user's thread (the kernel's softirq threads)
            raise PermissionError(1, "Operation not permitted")
        if self.policy & os.SCHED_RESET_ON_FORK and not policy & os.SCHED_RESET_ON_FORK:
            raise PermissionError(1, "Operation not permitted")
        self.policy, self.priority = policy, param.sched_priority


def test_an_unprivileged_thread_gets_its_own_policy_back(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = _UnprivilegedKernel()
    monkeypatch.setattr(softirq, "_softirq_threads", lambda cpus, proc: {cpu: 40000 + cpu for cpu in cpus})
    for name in ("getscheduler", "getparam", "setscheduler"):
        monkeypatch.setattr(os, f"sched_{name}", getattr(kernel, name))
    with realtime_priority(True) as ran:
        assert (
            ran
            == f"SCHED_FIFO 10 (ksoftirqd of {cpu_list(os.sched_getaffinity(0))} not raised: Operation not permitted)"
        )
    assert (kernel.policy & ~os.SCHED_RESET_ON_FORK, kernel.priority) == (os.SCHED_OTHER, 0)


@needs_root
def test_a_realtime_server_stopped_by_its_job_gives_its_softirq_thread_back(softirq_threads: dict[int, int]) -> None:
    # SIGTERM (the job's stop) used to end the server at once: its core's ksoftirqd stayed at SCHED_FIFO 11.
    cpu, port = max(softirq_threads), free_port()
    module = "pytest_aifactory.services.synthetic_llm"
    server = subprocess.Popen([sys.executable, "-m", module, f"--port={port}", f"--cpu={cpu}", "--realtime"])
    try:
        wait_for("the synthetic server", lambda: http_ready(f"http://127.0.0.1:{port}/health"), timeout_s=30)
        assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_FIFO, 11)
        with httpx.Client() as client:  # a client that keeps its connection open does not hold the stop up
            client.get(f"http://127.0.0.1:{port}/health").raise_for_status()
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
    finally:
        server.kill()
        server.wait()
    assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_OTHER, 0)


_HOLDER = """
import sys
from pytest_aifactory.core.softirq import softirq_threads_above
with softirq_threads_above(10, [int(sys.argv[1])], registry=sys.argv[2]) as done:
    print(done, flush=True)
    sys.stdin.readline()
"""


class _Holder:
    """Another process that holds one CPU's softirq thread raised until it is let go (or killed)."""

    def __init__(self, cpu: int, registry: Path) -> None:
        command = [sys.executable, "-c", _HOLDER, str(cpu), str(registry)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.said = self.process.stdout.readline().strip()  # (once it holds)

    def let_go(self) -> None:
        self.process.communicate("\n", timeout=30)
        assert self.process.returncode == 0


@pytest.fixture
def holders() -> Iterator[Callable[[int, Path], _Holder]]:
    """Starts holders; any still holding when the test ends (it failed) is killed."""
    started: list[_Holder] = []

    def start(cpu: int, registry: Path) -> _Holder:
        started.append(_Holder(cpu, registry))
        return started[-1]

    yield start
    for holder in started:
        if holder.process.poll() is None:
            holder.process.kill()
            holder.process.communicate()


@needs_root
@pytest.mark.parametrize("first_to_end", ["the process that raised it", "the one that joined"])
def test_the_last_process_to_end_gives_the_softirq_thread_back(
    softirq_threads: dict[int, int], tmp_path: Path, first_to_end: str, holders: Callable[[int, Path], _Holder]
) -> None:
    # Each process restored what it had raised: the first to end lowered it under the other (workers=N).
    cpu = max(softirq_threads)
    policy = {cpu: softirq_threads[cpu]}
    other = holders(cpu, tmp_path / "registry") if first_to_end == "the one that joined" else None
    with softirq_threads_above(10, [cpu], registry=str(tmp_path / "registry")) as done:
        assert done == f"ksoftirqd of CPU {cpu} at SCHED_FIFO 11"
        if other is None:
            other = holders(cpu, tmp_path / "registry")
        assert other.said == f"ksoftirqd of CPU {cpu} at SCHED_FIFO 11"
        if first_to_end == "the one that joined":
            other.let_go()
        assert _policies(policy)[cpu] == (os.SCHED_FIFO, 11)
    if first_to_end == "the process that raised it":
        assert _policies(policy)[cpu] == (os.SCHED_FIFO, 11), "lowered under the process still holding it"
        other.let_go()
    assert _policies(policy)[cpu] == (os.SCHED_OTHER, 0)


@needs_root
def test_a_softirq_thread_left_raised_by_a_killed_holder_gets_its_policy_back(
    softirq_threads: dict[int, int], tmp_path: Path, holders: Callable[[int, Path], _Holder]
) -> None:
    cpu = max(softirq_threads)
    killed = holders(cpu, tmp_path / "registry")
    killed.process.kill()
    killed.process.communicate()
    assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_FIFO, 11)  # (SIGKILL: nothing ran)
    with softirq_threads_above(10, [cpu], registry=str(tmp_path / "registry")) as done:
        assert done == f"ksoftirqd of CPU {cpu} at SCHED_FIFO 11"  # (raised by this process, not "left at")
    assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_OTHER, 0)


def test_only_kernel_threads_of_that_name_are_taken_and_an_unreadable_proc_is_said(tmp_path: Path) -> None:
    for pid, name, flags in ((7, "ksoftirqd/0", 0x00208040), (9, "ksoftirqd/1", 0x00400100), (11, "bash", 0)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({name}) S 2 0 0 0 -1 {flags} 0 0 0 0 0\n")
    assert softirq._softirq_threads([0, 1], str(tmp_path)) == {0: 7}  # (9 named itself so: not a kernel thread)
    with softirq_threads_above(10, [0], proc=str(tmp_path / "none"), registry=str(tmp_path / "registry")) as done:
        assert done == f"ksoftirqd of CPU 0 not raised: {tmp_path / 'none'} not readable: No such file or directory"


@needs_root
def test_one_process_holding_a_cpu_twice_keeps_it_raised_until_its_last_block_ends(
    softirq_threads: dict[int, int], tmp_path: Path
) -> None:
    cpu, registry = max(softirq_threads), str(tmp_path / "registry")
    policy = {cpu: softirq_threads[cpu]}
    with softirq_threads_above(10, [cpu], registry=registry):
        with softirq_threads_above(10, [cpu], registry=registry) as inner:
            assert inner == f"ksoftirqd of CPU {cpu} at SCHED_FIFO 11"
        assert _policies(policy)[cpu] == (os.SCHED_FIFO, 11)
    assert _policies(policy)[cpu] == (os.SCHED_OTHER, 0)


@needs_root
def test_records_others_could_write_are_refused_and_a_record_that_is_not_one_is_none(
    softirq_threads: dict[int, int], tmp_path: Path
) -> None:
    cpu = max(softirq_threads)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # (as a directory another user made first in a world-writable place)
    with softirq_threads_above(10, [cpu], registry=str(shared)) as done:
        assert (
            done == f"ksoftirqd of CPU {cpu} not raised: {shared} is not a directory of this user's alone (mode 0700)"
        )
        assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_OTHER, 0)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = tmp_path / "passwd"
    target.write_text("keep\n")
    (private / f"ksoftirqd-{cpu}.lock").symlink_to(target)  # (a link is not followed: the file it names is kept)
    with softirq_threads_above(10, [cpu], registry=str(private)) as done:
        assert done == f"ksoftirqd of CPU {cpu} not raised: Too many levels of symbolic links"
    assert target.read_text() == "keep\n"
    (private / f"ksoftirqd-{cpu}.lock").unlink()
    (private / f"ksoftirqd-{cpu}.json").write_text("[]")
    with softirq_threads_above(10, [cpu], registry=str(private)) as done:
        assert done == f"ksoftirqd of CPU {cpu} at SCHED_FIFO 11"
    assert _policies({cpu: softirq_threads[cpu]})[cpu] == (os.SCHED_OTHER, 0)
