"""The engine's thread at real-time priority during a load only (``--aif-realtime-priority``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from pytest_aifactory.core.records import RequestRecord
from pytest_aifactory.core.scheduling import NORMAL, realtime_priority
from pytest_aifactory.load.engine import Clock, Engine, LoadPlan
from pytest_aifactory.workloads.plans import make_plan
from pytest_aifactory.workloads.runner import LoadRunner

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raising a thread to SCHED_FIFO needs root here")


class _PolicyClient:
    """Notes the scheduling policy of the thread that sends each request."""

    def __init__(self) -> None:
        self.policies: list[int] = []

    async def open(self) -> None:
        pass

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        self.policies.append(os.sched_getscheduler(0))
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


@needs_root
def test_the_engine_sends_at_realtime_priority_and_gets_its_own_back() -> None:
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "this test's thread already runs at another policy"
    client = _PolicyClient()
    result = LoadRunner(realtime_priority=True).run(
        client, _Indexes(), make_plan(rate=100, count=20, distribution="constant")
    )
    assert client.policies == [os.SCHED_FIFO] * 20
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # restored with the load
    assert result.config["engine_scheduling"] == "SCHED_FIFO 10"
    assert result.config["realtime_priority"] is True


def test_without_the_option_the_engine_runs_at_its_own_priority() -> None:
    client = _PolicyClient()
    result = LoadRunner().run(client, _Indexes(), make_plan(rate=100, count=5, distribution="constant"))
    assert set(client.policies) == {os.sched_getscheduler(0)}
    assert result.config["engine_scheduling"] == NORMAL


@needs_root
def test_the_priority_is_restored_when_the_load_fails() -> None:
    plan = LoadPlan("closed", concurrency=2, count=10, realtime_priority=True)
    with pytest.raises(ValueError, match="request 3 cannot be built"):
        asyncio.run(Engine(_PolicyClient(), _Indexes(fail_at=3), plan).run())
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the thread stayed at real-time priority after a failed load"


def test_a_priority_that_cannot_be_raised_says_why() -> None:
    with realtime_priority(True, priority=1000) as ran:  # out of SCHED_FIFO's range (1-99)
        assert ran == "not raised: sched_setscheduler(SCHED_FIFO, 1000): Invalid argument"
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    with realtime_priority(False) as ran:
        assert ran == NORMAL
