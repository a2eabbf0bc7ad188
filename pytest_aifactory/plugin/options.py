"""The plugin's command-line options, each with its ini twin, and their parsed values.

Every option is in the ``aifactory`` group, prefixed ``--aif-``, defaults to None (so that a
run which passes none of them is recognisably a run that did not ask for aifactory) and is
parsed by a ``type=`` function whose error names the flag and the accepted form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_aifactory.jobs.run import parse_run_id

__all__ = ["OPTIONS", "Option", "add_options", "explicit_options", "project_root", "results_dir", "setting"]


def _whole(flag: str, minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.strip().isdigit() or int(value) < minimum:
            raise pytest.UsageError(f"{flag}: expected a whole number >= {minimum}, got {value!r}")
        return int(value)

    return parse


def _number(flag: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number >= 0:
            raise pytest.UsageError(f"{flag}: expected a number >= 0, got {value!r}")
        return number

    return parse


def _url(flag: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise pytest.UsageError(f"{flag}: expected an http:// or https:// URL, got {value!r}")
        return value

    return parse


def _run_id(value: str) -> str:
    try:
        return parse_run_id(value)
    except ValueError as exc:
        raise pytest.UsageError(f"--aif-run-id: {exc}") from None


def _text(value: str) -> str:
    return value


@dataclass(frozen=True)
class Option:
    """One ``--aif-NAME`` option; ``ini`` says whether it has an ``aif_NAME`` ini twin."""

    name: str
    metavar: str | None
    help: str
    parse: Callable[[str], Any] = _text
    ini: bool = True
    default: Any = None

    @property
    def dest(self) -> str:
        """The attribute on ``config.option`` and the ini key."""
        return "aif_" + self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return f"--aif-{self.name}"


OPTIONS: tuple[Option, ...] = (
    Option("profile", "NAME|PATH", "Slurm profile: a name or a YAML path (default: local)", default="local"),
    Option("run-id", "ID", "Id of this run, naming its results folder and labels (default: generated)", _run_id, False),
    Option(
        "results-dir",
        "DIR",
        "Folder for run results, job folders and reports (default: aif-results)",
        default="aif-results",
    ),
    Option(
        "keep-services",
        None,
        "Leave services running after the run; stop them with 'aifactory cleanup RUN_ID'",
        default=False,
    ),
    Option(
        "load-workers",
        "N",
        "Processes that drive each load together (default: 1)",
        _whole("--aif-load-workers", 1),
        default=1,
    ),
    Option(
        "low-wakeup-latency",
        None,
        "Hold the CPUs' wake-up latency at 0 during loads (/dev/cpu_dma_latency, root): less schedule lag",
        default=False,
    ),
    Option(
        "realtime-priority",
        None,
        "Run each load's engine at real-time priority (SCHED_FIFO 10, and the ksoftirqd of every CPU it may "
        "run on at 11; root, CAP_SYS_NICE or ulimit -r): ordinary tasks on its core no longer delay its sends",
        default=False,
    ),
    Option(
        "fail-inconclusive",
        None,
        "Fail, not skip, a test whose SLOs are inconclusive (the load generator was the limit, or a "
        "capacity search stopped before any breach)",
        default=False,
    ),
    Option("report", "PATH", "JSON report of the run (default: RESULTS_DIR/RUN_ID/report.json)", ini=False),
    Option("html", "PATH", "Write the run's HTML report (plots, findings) to PATH at the end of the run"),
    Option(
        "pushgateway", "URL", "Push live and final metrics to this Prometheus Pushgateway", _url("--aif-pushgateway")
    ),
    Option("pushgateway-user", "USER", "Basic-auth user for the Pushgateway; password from AIF_PUSHGATEWAY_PASSWORD"),
    Option("pushgateway-ca", "FILE", "CA bundle to verify the Pushgateway's TLS certificate"),
    Option("pushgateway-insecure", None, "Do not verify the Pushgateway's TLS certificate", default=False),
    Option(
        "pushgateway-interval",
        "SECONDS",
        "Seconds between live pushes and service samples (default: 2)",
        _number("--aif-pushgateway-interval"),
        default=2.0,
    ),
    Option("pushgateway-delete", None, "Delete the run's groups from the Pushgateway at the end", default=False),
    Option("loki", "URL", "Ship the run's events and the services' logs to this Grafana Loki", _url("--aif-loki")),
    Option("llm", "SERVICE", "Server of the llm_service fixture: llamacpp, vllm... (default: the profile's llm)"),
    Option("baseline", "REPORT|RUN_ID", "Fail tests whose results regressed against this earlier run's report"),
    Option(
        "regression-margin",
        "PERCENT",
        "Allowed change before a regression against --aif-baseline (default: 5)",
        _number("--aif-regression-margin"),
        default=5.0,
    ),
)
_BY_DEST = {option.dest: option for option in OPTIONS}


def add_options(parser: pytest.Parser) -> None:
    """Register every option in the ``aifactory`` group, and its ini twin."""
    group = parser.getgroup("aifactory", "AI Factory benchmarks (pytest-aifactory)")
    for option in OPTIONS:
        flag = isinstance(option.default, bool)
        kwargs: dict[str, Any] = {"action": "store_true"} if flag else {"metavar": option.metavar, "type": option.parse}
        group.addoption(option.flag, dest=option.dest, default=None, help=option.help, **kwargs)
        if option.ini:
            if flag:
                parser.addini(option.dest, f"Default of {option.flag}", type="bool", default=option.default)
            else:
                parser.addini(option.dest, f"Default of {option.flag}", default=option.default)


def setting(config: pytest.Config, dest: str) -> Any:
    """The value of option ``dest``: the command line, else the ini twin (parsed), else the default."""
    option = _BY_DEST[dest]
    value = config.getoption(dest)
    if value is not None:
        return value
    if not option.ini:
        return option.default
    raw = config.getini(dest)
    if isinstance(option.default, bool) or raw in ("", None):
        return raw if raw not in ("", None) else option.default
    if raw == option.default:
        return raw
    try:
        return option.parse(str(raw))
    except pytest.UsageError as exc:
        raise pytest.UsageError(f"ini {dest} (twin of {exc})") from None


def check_settings(config: pytest.Config) -> None:
    """Parse every option now (command line, else ini): a bad value is a usage error before the run starts."""
    for option in OPTIONS:
        setting(config, option.dest)


def explicit_options(config: pytest.Config) -> list[str]:
    """The ``--aif-*`` flags given on the command line (a run that names one uses aifactory)."""
    return [option.flag for option in OPTIONS if config.getoption(option.dest) is not None]


def project_root(config: pytest.Config) -> Path:
    """The user's project: pytest's rootdir, unless that is not above the folder pytest was run in.

    ``--aif-profile /elsewhere/x.yaml`` (with a space) makes pytest take the profile's folder
    (or a common ancestor) as rootdir; results and ``slurm_profiles/`` then still belong to the
    invocation folder.
    """
    invoked = config.invocation_params.dir
    if config.inipath is None:
        # No ini file: pytest takes the common ancestor of this folder and of every path given, among
        # them the values of ``--aif-profile PATH`` or ``--aif-baseline PATH`` written with a space.
        return invoked
    return config.rootpath if invoked.is_relative_to(config.rootpath) else invoked


def results_dir(config: pytest.Config) -> Path:
    """The results folder, relative to the project root when not absolute."""
    path = Path(setting(config, "aif_results_dir"))
    return path if path.is_absolute() else project_root(config) / path
