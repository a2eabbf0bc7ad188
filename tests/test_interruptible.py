"""A coroutine run by ``run_interruptible`` is cancelled by Ctrl-C or SIGTERM, which its loop takes itself."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pytest_aifactory.load.pacing import run_interruptible


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_the_coroutine_and_is_raised_as_keyboard_interrupt(signum: int) -> None:
    cancelled: list[bool] = []

    async def runs_until_stopped() -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signum)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)  # its own cleanup runs (a pacer closed, a hold released)
            raise

    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt):
        run_interruptible(runs_until_stopped())
    assert cancelled == [True]
    assert signal.getsignal(signum) is before  # the session's handler is back


def test_a_coroutine_cancelled_without_a_signal_is_not_an_interrupt() -> None:
    async def cancelled_from_inside() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run_interruptible(cancelled_from_inside())


def test_the_result_is_returned() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_interruptible(answer()) == 42
