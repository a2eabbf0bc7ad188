"""The event loop a load runs in, how it takes Ctrl-C, and a precise wait for the next send that does not spin.

uvloop, where installed, costs less CPU per request than asyncio's loop. Both loops wake a
timer to about a millisecond (epoll and libuv count in milliseconds), which at hundreds of
requests per second would become schedule lag; spinning through the last millisecond instead
burns a core. On Linux ``Pacer`` arms a ``timerfd`` at the absolute due time (CLOCK_MONOTONIC,
the clock of ``time.monotonic``) and lets the event loop wait on its file descriptor, which
wakes within tens of microseconds at no cost in between; elsewhere it falls back on the loop's
timer. ``os.timerfd_create`` arrives with Python 3.13, so the two calls go through ctypes.

A KeyboardInterrupt that Python's own SIGINT handler raises inside uvloop's callbacks can be
lost, and the loop would run on: ``signals_cancel`` lets the loop take SIGINT and SIGTERM
itself and cancel its task; ``run_interruptible`` runs a coroutine that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib.metadata
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["Pacer", "event_loop_name", "new_event_loop", "run_interruptible", "signals_cancel"]

T = TypeVar("T")

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK, TFD_CLOEXEC have these values


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def event_loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop 0.21.0`` or ``asyncio``: which event loop implementation ``loop`` is."""
    if type(loop).__module__.split(".")[0] == "uvloop":
        return f"uvloop {importlib.metadata.version('uvloop')}"
    return "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@contextlib.contextmanager
def signals_cancel(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], before_cancel: Callable[[], None] = lambda: None
) -> Iterator[list[int]]:
    """While open, SIGINT and SIGTERM cancel ``task`` from inside ``loop`` (main thread only): the signals taken.

    ``before_cancel`` runs at the first signal, before the cancel. The handlers they replaced
    (the session's) are back when it closes.
    """
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        if not signals:
            before_cancel()
        signals.append(signum)
        task.cancel()

    replaced: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            before = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            replaced[signum] = before
    try:
        yield signals
    finally:
        for taken, handler in replaced.items():
            loop.remove_signal_handler(taken)
            signal.signal(taken, handler)


def run_interruptible(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new event loop; SIGINT or SIGTERM cancels it and raises KeyboardInterrupt."""
    loop = new_event_loop()
    task = loop.create_task(coroutine)
    try:
        with signals_cancel(loop, task) as signals:
            try:
                result = loop.run_until_complete(task)
            except asyncio.CancelledError:
                if not signals:
                    raise
                raise KeyboardInterrupt from None
            if signals:  # it ended on its own before the cancel reached it
                raise KeyboardInterrupt
            return result
    finally:
        loop.close()


class Pacer:
    """Waits until a ``time.monotonic()`` instant: a timerfd in the event loop on Linux, else its timer."""

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None
        self._fd = -1
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def precise(self) -> bool:
        """Whether waits go through a timerfd (microseconds) rather than the loop's timer (a millisecond)."""
        return self._fd >= 0

    def open(self) -> None:
        """Create the timer in the running loop (no timerfd: the loop's timer is used)."""
        self._loop = asyncio.get_running_loop()
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_FLAGS)
        if fd < 0:
            return
        self._libc, self._fd = libc, fd
        self._loop.add_reader(fd, self._fired)

    def close(self) -> None:
        """Release the timer."""
        if self._fd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
        self._fd = -1

    async def until(self, when: float) -> None:
        """Return at ``when`` (monotonic seconds), or now if it has passed."""
        await self.arm(when)

    def arm(self, when: float) -> asyncio.Future[None]:
        """A future that ends at ``when`` (monotonic seconds), or has ended if it has passed.

        One wait at a time: arming again replaces the previous wait (its future never ends).
        """
        assert self._loop is not None, "open() first"
        waiter: asyncio.Future[None] = self._loop.create_future()
        if when <= time.monotonic():
            waiter.set_result(None)
            return waiter
        if self._fd < 0 or self._libc is None:
            self._loop.call_later(when - time.monotonic(), _end, waiter)
            return waiter
        fraction, seconds = math.modf(when)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(int(seconds), int(fraction * 1e9)))
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._waiter = waiter
        return waiter

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # rearmed before the loop read the previous expiry
            return
        if self._waiter is not None:
            _end(self._waiter)
            self._waiter = None


def _end(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
