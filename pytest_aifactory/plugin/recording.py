"""The pytest side of the exporters: JSON report, live and final Pushgateway pushes.

Registered by the plugin. Pushes happen in the process that runs the test (an xdist worker or
the only process) from a background thread, so a slow or dead gateway never delays a load;
the report is written by the controlling process, after every test and at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.delivery.loki import LokiPusher
from pytest_aifactory.delivery.pushgateway import GatewayTarget, Pushgateway
from pytest_aifactory.export.html import write_html
from pytest_aifactory.export.prometheus import final_registry, live_registry
from pytest_aifactory.export.report import RunReport, read_report
from pytest_aifactory.export.views import verdict_outcome
from pytest_aifactory.jobs.run import RunContext
from pytest_aifactory.jobs.telemetry import Telemetry
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.plugin.options import setting
from pytest_aifactory.plugin.outcomes import result_rows, terminal_lines

__all__ = ["LivePusher", "Recorder", "gateway_target"]

_STATUS = {0: "passed", 1: "failed", 2: "interrupted"}


def loki_url(config: pytest.Config) -> str | None:
    """The Loki base URL the options name, if any."""
    url = setting(config, "aif_loki")
    return str(url) if url else None


def telemetry(config: pytest.Config, run_id: str, run_dir: Path) -> Telemetry:
    """What service jobs send where: logs to Loki, resource samples to the Pushgateway."""
    interval = float(setting(config, "aif_pushgateway_interval"))
    return Telemetry(run_id, run_dir / "spool", loki_url(config), gateway_target(config), interval)


def gateway_target(config: pytest.Config) -> GatewayTarget | None:
    """The Pushgateway the options name, if any."""
    url = setting(config, "aif_pushgateway")
    if not url:
        return None
    return GatewayTarget(
        url=str(url),
        username=setting(config, "aif_pushgateway_user") or None,
        ca_file=setting(config, "aif_pushgateway_ca") or None,
        insecure=bool(setting(config, "aif_pushgateway_insecure")),
    )


class LivePusher:
    """Pushes the running loads' snapshots every ``interval_s`` from a daemon thread."""

    def __init__(self, gateway: Pushgateway, interval_s: float) -> None:
        self.gateway = gateway
        self.interval_s = interval_s
        self._state: dict[str, dict[str, Progress]] = {}
        self._lock = threading.Lock()  # guards the snapshots; taken by the engine's callback
        self._pushing = threading.Lock()  # held while pushing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aifactory-live-push", daemon=True)
        self._thread.start()

    def progress(self, test: str) -> Callable[[str], Callable[[Progress], None]]:
        """A progress factory for ``aif_load`` that records snapshots of ``test``."""

        def factory(label: str) -> Callable[[Progress], None]:
            def update(snapshot: Progress) -> None:
                with self._lock:
                    self._state.setdefault(test, {})[label] = snapshot

            return update

        return factory

    def finish(self, test: str) -> None:
        """Stop pushing live figures of ``test`` (its final figures come next).

        Waits for a push under way, so that no live push can land after the final one.
        """
        with self._lock:
            self._state.pop(test, None)
        with self._pushing:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        """Push every running test's snapshots now.

        Only the copy is made under the lock: the engine's progress callback takes it from
        inside the event loop, so a slow gateway must never be waited for while holding it.
        """
        with self._pushing:
            with self._lock:
                state = {test: dict(snapshots) for test, snapshots in self._state.items()}
            for test, snapshots in state.items():
                self.gateway.push(test, live_registry(snapshots))

    def close(self) -> list[str]:
        """Stop the thread; returns the tests still live (interrupted: their live groups are stale)."""
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 10)
        with self._lock:
            return list(self._state)


class Recorder:
    """Report writer (controller) and Pushgateway pusher (where tests run)."""

    def __init__(self, config: pytest.Config, run: RunContext, is_worker: bool) -> None:
        self.config = config
        self.run = run
        self.is_worker = is_worker
        self.redactor = Redactor(named=run.profile.env)
        self.distributed = is_worker or bool(getattr(config.option, "numprocesses", None))
        target = gateway_target(config)
        self.gateway = (
            Pushgateway(target, run.run_id, run.run_dir / "spool" / "pushgateway", self.redactor) if target else None
        )
        interval = float(setting(config, "aif_pushgateway_interval"))
        self.live = LivePusher(self.gateway, interval) if self.gateway else None
        url = loki_url(config)
        source = f"pytest-{config.workerinput['workerid']}" if is_worker else "pytest"  # type: ignore[attr-defined]
        self.loki = LokiPusher(url, run.run_id, run.run_dir / "spool" / "loki", self.redactor, source) if url else None
        run.services.telemetry = telemetry(config, run.run_id, run.run_dir)
        run.services.on_event = self.service_event
        run.services.on_progress = terminal_lines(config)
        self.pushed_tests: list[str] = []
        self.report: RunReport | None = None
        self.html: Path | None = None
        self.html_error = ""
        if not is_worker:
            path = setting(config, "aif_report")
            self.report = RunReport(
                Path(path) if path else run.run_dir / "report.json",
                run.run_id,
                run.profile,
                run.registry,
                config.rootpath,
                self.redactor,
            )

    def service_event(self, service: str, message: str, level: str) -> None:
        """A service's lifecycle event (submitted, ready, died, stopped) to Loki."""
        if self.loki is not None:
            self.loki.log(message, service=service, level=level, source="aifactory")

    def run_started(self) -> None:
        """The run's first event and report (the recorder is created when the run starts)."""
        if self.report is not None:
            self.report.write()
        if self.loki is not None and not self.is_worker:
            self.loki.log(f"run {self.run.run_id} started on profile {self.run.profile.name}", event="session_start")

    def result_measured(self, nodeid: str, result: LoadResult) -> None:
        """A result as soon as it is measured: into the report, written now (a killed run keeps it)."""
        if self.report is not None:
            self.report.add_result(nodeid, result.to_json())
            self.report.write()

    def progress(self, test: str) -> Callable[[str], Callable[[Progress], None]] | None:
        """The live-push progress factory for a test (None without a Pushgateway)."""
        return self.live.progress(test) if self.live else None

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        """Note the test in the report before it runs, and in Loki where it runs."""
        if self.report is not None:
            self.report.test_started(nodeid, [])
            self.report.write()
        if self.loki is not None and (self.is_worker or not self.distributed):
            self.loki.log(f"test started: {nodeid}", event="test_start", test=nodeid)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Final push where the test ran; report entry in the controller."""
        rows = result_rows(report)
        runs_here = self.is_worker or not self.distributed
        if runs_here and self.loki is not None:
            self._log_outcome(report, rows)
        if report.when == "call" and runs_here and self.gateway is not None and self.live is not None:
            test = report.nodeid.split("::", 1)[-1]
            self.live.finish(test)
            if rows:
                self.gateway.push(test, final_registry(rows))
                self.pushed_tests.append(test)
        if self.report is None:
            return
        error = str(report.longrepr) if report.failed and report.longrepr else None
        self.report.test_phase(report.nodeid, report.when, report.outcome, report.duration, error)
        if report.when == "call" and rows:
            self.report.set_results(report.nodeid, rows)
        if report.when == "teardown":
            self.report.write()

    def _log_outcome(self, report: pytest.TestReport, rows: list[dict[str, Any]]) -> None:
        assert self.loki is not None
        for row in rows:
            for verdict in row["verdicts"]:
                outcome = verdict_outcome(verdict)
                level = {"held": "info", "inconclusive": "warning", "breached": "error"}[outcome]
                self.loki.log(f"SLO {outcome}: {verdict['message']}", level=level, event="slo", test=report.nodeid)
        if report.when == "teardown" or report.outcome != "passed":
            level = {"passed": "info", "skipped": "warning"}.get(report.outcome, "error")
            self.loki.log(
                f"test {report.when} {report.outcome}: {report.nodeid}",
                level=level,
                event="test_end",
                test=report.nodeid,
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Deliver what was spooled, delete groups if asked, write the final report."""
        status = _STATUS.get(int(exitstatus), "error")
        if self.loki is not None:
            if not self.is_worker:
                self.loki.log(
                    f"run {self.run.run_id} finished: {status}",
                    event="session_end",
                    level="info" if status == "passed" else "error",
                )
            self.loki.close()
            if not self.is_worker:
                self.loki.resend()
        stale = self.live.close() if self.live is not None else []
        if self.gateway is not None:
            for test in stale:  # the live figures of an interrupted test would stay in the gateway forever
                self.gateway.delete(test)
            if setting(self.config, "aif_pushgateway_delete"):
                for test in self.pushed_tests:
                    self.gateway.delete(test)
            self.gateway.resend()
        if self.report is not None:
            self.report.write(status=status, exit_status=int(exitstatus))
            html = setting(self.config, "aif_html")
            if html:
                try:
                    self.html = write_html([read_report(self.report.path)], Path(html))
                except AifError as exc:
                    self.html_error = f"--aif-html {html}: {exc}"

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Say where the report is and what was not delivered."""
        if self.report is not None:
            terminalreporter.write_line(f"aifactory report: {self.report.path}")
        if self.html is not None:
            terminalreporter.write_line(f"aifactory HTML report: {self.html}")
        if self.html_error:
            terminalreporter.write_line(f"aifactory: no HTML report: {self.html_error}", red=True)
        delivered = []
        if self.gateway is not None:
            delivered.append(f"{self.gateway.delivered} Pushgateway push(es)")
        if self.loki is not None:
            delivered.append(f"{self.loki.delivered} log line(s) to Loki ({self.loki.failed_batches} batch(es) failed)")
        if delivered and not self.distributed:
            terminalreporter.write_line(f"aifactory delivered: {', '.join(delivered)}")
        if self.loki is not None and self.loki.spooled():
            terminalreporter.section("aifactory: Loki deliveries that failed", yellow=True)
            terminalreporter.write_line(
                f"{len(self.loki.spooled())} batch(es) of log lines spooled in {self.loki.spool_dir}; send them with: "
                f"aifactory resend {self.run.run_id} --results-dir {self.run.run_dir.parent} --loki URL"
            )
        if self.gateway is None:
            return
        left = self.gateway.spooled()
        if self.gateway.failures or left:
            terminalreporter.section("aifactory: Pushgateway deliveries that failed", yellow=True)
            for line in self.gateway.failures[-5:]:
                terminalreporter.write_line(line)
            terminalreporter.write_line(
                f"{len(self.gateway.failures)} push(es) failed; {len(left)} group(s) still spooled in "
                f"{self.gateway.spool_dir}; send them with: aifactory resend {self.run.run_id} "
                f"--results-dir {self.run.run_dir.parent} --pushgateway URL"
            )
