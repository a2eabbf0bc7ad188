"""The liveness watcher: while a test runs, it polls the services the test uses.

When one of them is known dead (its job has left the queue, or its process has exited), it
sets its ``stop`` event, which the load engine checks: a load against a dead endpoint ends
within a few seconds instead of running to its planned end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from pytest_aifactory.core.errors import JobError
from pytest_aifactory.services.spec import RunningService

__all__ = ["LivenessWatcher"]


class LivenessWatcher:
    """Polls ``alive(service)`` for each of ``services()`` every ``interval_s`` from a daemon thread."""

    def __init__(
        self,
        services: Callable[[], Sequence[RunningService]],
        alive: Callable[[RunningService], bool],
        interval_s: float = 1.0,
    ) -> None:
        self.services = services
        self.alive = alive
        self.interval_s = interval_s
        self.stop = threading.Event()  # set once a service is known dead
        self.dead: RunningService | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aifactory-liveness", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed.wait(self.interval_s):
            for service in list(self.services()):
                try:
                    alive = self.alive(service)
                except JobError:  # the scheduler did not answer: not known dead
                    continue
                if not alive:
                    self.dead = service
                    self.stop.set()
                    return

    def close(self) -> None:
        """Stop watching."""
        self._closed.set()
        self._thread.join(timeout=self.interval_s + 60)
