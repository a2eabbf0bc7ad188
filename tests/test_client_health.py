"""The engine's honesty about itself: what happens before its clock, and results where it was the limit."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import struct
import sys
import time
from typing import Any

import httpx
import pytest

from pytest_aifactory.core.metrics import summarize
from pytest_aifactory.core.records import ClientHealth, RequestRecord
from pytest_aifactory.core.slo import SLOInconclusive, assert_slo, check, parse_slo
from pytest_aifactory.load import engine as engine_module
from pytest_aifactory.load import health as health_module
from pytest_aifactory.load.engine import Clock, Engine, LoadPlan
from pytest_aifactory.load.health import LoopWatch
from pytest_aifactory.load.pacing import Pacer
from pytest_aifactory.load.schedule import Arrivals
from pytest_aifactory.load.wakeup import PM_QOS_DEVICE, low_wakeup_latency
from pytest_aifactory.load.workers import LoadInterrupted, drive
from pytest_aifactory.workloads.openai import OpenAIClient
from pytest_aifactory.workloads.prompts import Lengths, SyntheticPrompts
from pytest_aifactory.workloads.runner import LoadRunner, make_plan

pytestmark = pytest.mark.timeout(120)

PAST_THE_LIMIT = dict(prompts="synthetic:in=4,out=2", rate=100000, distribution="constant", count=8000)


class _SlowToBuild:
    """A workload whose every request takes 20 ms to build (a long prompt, a tokenizer...)."""

    def __init__(self) -> None:
        self.built_at: list[float] = []

    def request(self, index: int) -> int:
        time.sleep(0.02)
        self.built_at.append(time.monotonic())
        return index


class _Instant:
    """A client that answers at once and notes when it opened."""

    opened_at = 0.0

    async def open(self) -> None:
        await asyncio.sleep(0.05)  # like a connection pool that takes time to come up
        self.opened_at = time.monotonic()

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        record.end = clock.now()

    async def close(self) -> None:
        pass


def test_first_open_loop_request_is_not_late_by_construction() -> None:
    workload, client = _SlowToBuild(), _Instant()
    engine = Engine(client, workload, LoadPlan("open", Arrivals(50.0, "constant"), count=5))
    records = asyncio.run(engine.run())
    # Every payload was built, and the client opened, before the clock's zero.
    assert len(workload.built_at) == 5
    assert max(workload.built_at) < client.opened_at < engine.clock.t0
    # So the first request is not late by 5 x 20 ms of building plus 50 ms of opening.
    assert records[0].sent is not None
    assert records[0].sent - records[0].scheduled < 0.02


def test_health_is_reported_with_every_result(timed_server) -> None:  # type: ignore[no-untyped-def]
    result = LoadRunner().openai(timed_server, prompts="synthetic:in=4,out=2", rate=50, count=20)
    m = result.metrics()
    assert 0 < m["loop_cpu_cores"] <= m["client_cpu_cores"] * 1.01
    assert m["loop_stall_max_ms"] >= 0
    assert m["client_bound"] == 0
    assert result.client_limit == ""
    assert result.config["event_loop"].split()[0] in ("uvloop", "asyncio")


def test_engine_past_its_limit_is_client_bound_and_slo_inconclusive(timed_server) -> None:  # type: ignore[no-untyped-def]
    result = LoadRunner().openai(timed_server, **PAST_THE_LIMIT)
    m = result.metrics()
    assert m["client_bound"] == 1
    assert m["p99_lag_ms"] > 50
    assert result.client_limit.startswith(f"lag p99 {m['p99_lag_ms']:.3g} ms, CPU ")
    verdicts = check([parse_slo("p99_ttft_ms <= 1e9")], m, result.label, result.client_limit)
    assert [(v.passed, v.inconclusive, v.breached) for v in verdicts] == [(False, True, False)]
    assert "inconclusive: the load generator was the limit (lag p99 " in verdicts[0].message()
    assert verdicts[0].message().endswith("use workers=N or nodes=N")
    with pytest.raises(SLOInconclusive, match="SLO inconclusive: p99_ttft_ms <= 1e"):
        assert_slo(result, "p99_ttft_ms <= 1e9")


@pytest.mark.parametrize(
    ("lag_ms", "loop_cpu_s", "verdict"),
    [
        (120.0, 0.98, "lag p99 120 ms, CPU 0.98 core: its event loop was saturated by its own work"),
        (5.0, 0.95, "lag p99 5 ms, CPU 0.95 core: its event loop was saturated by its own work"),
        (
            120.0,
            0.01,
            "lag p99 120 ms, CPU 0.01 core: it was mostly idle, so the machine (other processes, the service) "
            "held it back",
        ),
        (120.0, 0.7, "lag p99 120 ms, CPU 0.70 core"),
        (120.0, 0.3, "lag p99 120 ms, CPU 0.30 core"),  # a short overdriven burst averages low over its window
        (5.0, 0.3, ""),
    ],
)
def test_client_bound_says_whether_the_client_or_the_machine_held_it_back(
    lag_ms: float, loop_cpu_s: float, verdict: str
) -> None:
    """Late sends from a saturated loop are the client's own doing; late sends from an idle loop are the machine's."""
    records = [RequestRecord(i, i * 0.01, sent=i * 0.01 + lag_ms / 1000, end=i * 0.01 + 0.2) for i in range(200)]
    health = [
        ClientHealth("w0", wall_s=1.0, cpu_s=loop_cpu_s, loop_cpu_s=loop_cpu_s, stall_max_ms=1.0, event_loop="uv")
    ]
    result = summarize(records, health=health)
    assert result.client_limit == verdict
    assert result.metrics()["client_bound"] == (1 if verdict else 0)


def test_server_truth_matches_the_engine_request_by_request(timed_server) -> None:  # type: ignore[no-untyped-def]
    """The synthetic server's per-request truth (keyed by X-Request-Id) is on the engine's clock."""
    url = timed_server.url().rstrip("/")
    httpx.delete(f"{url}/truth", timeout=10).raise_for_status()
    client = OpenAIClient(url, "synthetic", request_id_prefix="t-")
    prompts = SyntheticPrompts(Lengths(4, 4), Lengths(2, 2))
    result = LoadRunner().run(client, prompts, make_plan(rate=20, count=5))
    truth = httpx.get(f"{url}/truth", timeout=10).json()
    assert truth["clock"] == "monotonic"
    assert sorted(truth["requests"]) == [f"t-{i}" for i in range(5)]
    zero = result.config["clock_zero_monotonic_s"]
    for record in result.records:
        read, first_written = truth["requests"][f"t-{record.index}"]
        assert record.sent is not None
        assert record.first_token is not None
        assert zero + record.scheduled <= read  # one clock: the server read it after it was due,
        assert abs(read - (zero + record.sent)) < 0.05  # about when the client's last byte left
        # 1 ms TTFT, then the client's read (the server notes the time just after its write: 1 ms slack)
        assert read + 0.001 <= first_written <= zero + record.first_token + 0.001


@pytest.fixture(scope="module")
def timed_server(aif_shared_service):  # type: ignore[no-untyped-def]
    return aif_shared_service("synthetic-llm", ttft_ms=1.0, itl_ms=1.0)


SUITE = f"""
import pytest
from pytest_aifactory.core.slo import assert_slo

@pytest.mark.slo("p99_ttft_ms <= 1e9")
def test_overdriven(synthetic_llm_service, aif_load):
    aif_load.openai(synthetic_llm_service, **{PAST_THE_LIMIT!r})

def test_overdriven_judged_in_the_body(synthetic_llm_service, aif_load):
    assert_slo(aif_load.openai(synthetic_llm_service, **{PAST_THE_LIMIT!r}), "p99_ttft_ms <= 1e9")
"""


@pytest.mark.parametrize("strict", [False, True])
def test_inconclusive_slo_skips_or_fails_when_strict(pytester: pytest.Pytester, strict: bool) -> None:
    pytester.makepyfile(SUITE)
    args = ["-o", "aif_fail_inconclusive=true"] if strict else []
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--aif-html=r.html", *args)
    # assert_slo in a test's body is judged like the marker: a skip, or a failure when strict
    result.assert_outcomes(failed=2) if strict else result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [
            "*aifactory results (latencies in ms)*",
            "test_overdriven*rate=100000/s*INCONCLUSIVE(1)*",
            "! test_overdriven ?rate=100000/s?: client-bound (lag p99 *): the load generator was the limit*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*SLO inconclusive: p99_ttft_ms <= 1e+09*",
            "*inconclusive: the load generator was the limit (lag p99 * ms, CPU *); use workers=N or nodes=N*",
        ]
    )
    # The HTML report shows the point and its verdict as inconclusive, with a finding that says so, not a breach.
    page = (pytester.path / "r.html").read_text()
    assert "<span class=inconclusive>INCONCLUSIVE</span>" in page
    assert "<td class=inconclusive>inconclusive</td>" in page
    assert "test_overdriven [rate=100000/s]: SLO inconclusive: p99_ttft=" in page
    assert "SLO breached" not in page
    assert "<span class=fail>" not in page
    assert "no point met every SLO" not in page  # none was judged


def _pm_qos_value() -> int:
    with open(PM_QOS_DEVICE, "rb") as device:
        return int(struct.unpack("i", device.read(4))[0])


@pytest.mark.skipif(not os.access(PM_QOS_DEVICE, os.W_OK), reason=f"{PM_QOS_DEVICE} needs root")
def test_low_wakeup_latency_is_held_during_the_load_only(timed_server) -> None:  # type: ignore[no-untyped-def]
    default = _pm_qos_value()
    assert default > 0, "another process already holds the wake-up latency at 0: this test cannot tell"
    during: list[int] = []

    def progress(_: Any) -> None:
        during.append(_pm_qos_value())

    result = LoadRunner(low_wakeup_latency=True, progress=lambda label: progress).openai(
        timed_server, prompts="synthetic:in=4,out=2", rate=20, duration_s=1.5
    )
    # Held while requests ran; the engine's last report comes after the load, when it is released.
    assert len(during) >= 2
    assert set(during[:-1]) == {0}
    assert during[-1] == default
    assert _pm_qos_value() == default  # released with the load
    assert result.config["cpu_wakeup_latency"] == f"held at 0 us ({PM_QOS_DEVICE})"
    assert result.config["low_wakeup_latency"] is True


class _Closing(_Instant):
    """An instant client that takes 10 ms per request, and notes that it was closed."""

    closed = False

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        await asyncio.sleep(0.01)
        record.end = clock.now()

    async def close(self) -> None:
        self.closed = True


class _FailsAt:
    """A workload whose request ``index`` cannot be built."""

    def __init__(self, index: int) -> None:
        self.index = index

    def request(self, index: int) -> int:
        if index == self.index:
            raise ValueError(f"request {index} cannot be built")
        return index


def _fail(_: Any) -> None:
    raise RuntimeError("the progress reporter failed")


def _ended_cleanly(engine: Engine, client: _Closing, loop: asyncio.AbstractEventLoop) -> None:
    assert client.closed, "the connections were left open"
    assert gc.isenabled(), "the garbage collector stayed off"
    assert [task for task in asyncio.all_tasks(loop) if not task.done()] == [], "tasks still running"


def test_a_failing_progress_reporter_fails_the_load_after_a_clean_end() -> None:
    client = _Closing()
    plan = LoadPlan("open", Arrivals(100.0, "constant"), count=20)
    engine = Engine(client, _FailsAt(-1), plan, progress=_fail, progress_interval_s=0.02)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="the progress reporter failed"):
            loop.run_until_complete(engine.run())
        _ended_cleanly(engine, client, loop)
        assert engine.health is not None  # the load itself ran to its end
        assert len(engine.records) == 20
    finally:
        loop.close()


def test_a_load_that_fails_ends_its_requests_in_flight_and_keeps_its_own_error() -> None:
    """Request 3 of a closed loop cannot be built: the other slot's request is ended, not left running."""
    client = _Closing()
    plan = LoadPlan("closed", concurrency=2, duration_s=30)
    engine = Engine(client, _FailsAt(3), plan, progress=_fail, progress_interval_s=0.001)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="request 3 cannot be built"):  # not the reporter's error
            loop.run_until_complete(engine.run())
        _ended_cleanly(engine, client, loop)
    finally:
        loop.close()


class _FailsToClose(_Closing):
    """A client whose close raises (after noting it was closed)."""

    async def close(self) -> None:
        self.closed = True
        raise ConnectionError("the client could not close")


def test_a_client_that_cannot_close_fails_a_good_load_but_not_over_a_failed_one() -> None:
    good = LoadPlan("open", Arrivals(100.0, "constant"), count=5)
    with pytest.raises(ConnectionError, match="the client could not close"):
        asyncio.run(Engine(_FailsToClose(), _FailsAt(-1), good).run())
    failing = LoadPlan("closed", concurrency=2, duration_s=30)
    with pytest.raises(ValueError, match="request 3 cannot be built") as failed:  # the load's own error, not close's
        asyncio.run(Engine(_FailsToClose(), _FailsAt(3), failing).run())
    if sys.version_info >= (3, 11):  # and close's beside it
        assert failed.value.__notes__ == ["then, ending the load: ConnectionError: the client could not close"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 cannot tell a caller's cancellation apart")
def test_the_loop_watch_does_not_swallow_its_callers_cancellation() -> None:
    async def cancelled_while_stopping() -> None:
        watch = LoopWatch("w", time.monotonic(), "machine default", "normal (SCHED_OTHER)")
        watch.start()
        stopping = asyncio.ensure_future(watch.stop())
        await asyncio.sleep(0)
        stopping.cancel()  # the caller of stop() is cancelled while it waits for the watch to end
        await stopping

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled_while_stopping())


class _Interrupting(_Closing):
    """Sends SIGINT to this process with request 20, as Ctrl-C would (``drive``'s loop takes it)."""

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        if record.index == 20:
            os.kill(os.getpid(), signal.SIGINT)
        await super().send(payload, record, clock)


@pytest.mark.parametrize("tells_a_cancel_apart", [True, False], ids=["python-3.11", "python-3.10"])
def test_sigint_during_a_load_is_an_interruption_with_what_was_completed(
    monkeypatch: pytest.MonkeyPatch, tells_a_cancel_apart: bool
) -> None:
    """Python 3.10 cannot tell the interrupt's cancel from a stop: it must not become a normal result."""
    if not tells_a_cancel_apart:
        for module in (engine_module, health_module):
            monkeypatch.setattr(module, "cancelled_from_outside", lambda: False)
    client = _Interrupting()
    engine = Engine(client, _FailsAt(-1), LoadPlan("open", Arrivals(100.0, "constant"), count=200))
    with pytest.raises(LoadInterrupted) as interrupted:
        drive(engine)
    assert 15 <= len(interrupted.value.run.records) < 200
    assert client.closed


@pytest.mark.skipif(not os.access(PM_QOS_DEVICE, os.W_OK), reason=f"{PM_QOS_DEVICE} needs root")
def test_low_wakeup_latency_is_released_when_the_load_fails() -> None:
    default = _pm_qos_value()
    assert default > 0, "another process already holds the wake-up latency at 0: this test cannot tell"
    plan = LoadPlan("closed", concurrency=2, duration_s=30, low_wakeup_latency=True)
    engine = Engine(_Closing(), _FailsAt(3), plan)
    with pytest.raises(ValueError, match="request 3 cannot be built"):
        asyncio.run(engine.run())
    assert _pm_qos_value() == default, "the system-wide hold outlived the failed load"


def test_low_wakeup_latency_says_why_it_was_not_held(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with low_wakeup_latency(True, str(tmp_path / "missing")) as held:
        assert held.startswith(f"not held: {tmp_path / 'missing'}: No such file")
    with low_wakeup_latency(False) as held:
        assert held == "machine default"


class _BusyLoopClient:
    """A client whose event loop always has work ready: a callback that runs once per loop round.

    ``rounds`` counts the loop's rounds; each send notes the round it began in.
    """

    def __init__(self) -> None:
        self.rounds = 0
        self.sent_in_round: list[int] = []
        self._open = True

    async def open(self) -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.rounds += 1
            if self._open:
                loop.call_soon(tick)

        loop.call_soon(tick)

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        self.sent_in_round.append(self.rounds)
        record.end = clock.now()

    async def close(self) -> None:
        self._open = False


def test_a_request_is_sent_in_the_loop_round_after_its_timer_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy loop, every extra step between the timer and the send waits behind a whole round of callbacks."""
    client = _BusyLoopClient()
    fired_in_round: list[int] = []
    fired = Pacer._fired

    def noting(pacer: Pacer) -> None:
        fired_in_round.append(client.rounds)
        fired(pacer)

    monkeypatch.setattr(Pacer, "_fired", noting)
    engine = Engine(client, SyntheticPrompts(Lengths(4, 4), Lengths(2, 2)), LoadPlan("open", Arrivals(200.0), count=20))
    records = asyncio.run(engine.run())
    assert len(records) == 20
    assert len(fired_in_round) >= 15, "the timer fired for most requests (the rest were already due)"
    sent = set(client.sent_in_round)
    late = [round_ for round_ in fired_in_round if round_ + 1 not in sent]
    assert not late, f"sends more than one round after their timer fired (rounds {late}; sends in {sorted(sent)})"
