"""The ``aifactory`` command: cleanup, profiles, render, resend, compare, report, control."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_aifactory.core.errors import AifError
from pytest_aifactory.core.profiles import (
    describe_search_path,
    find_profile,
    find_profiles,
    load_profile,
)
from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.delivery.loki import LokiPusher
from pytest_aifactory.delivery.pushgateway import GatewayTarget, Pushgateway
from pytest_aifactory.export.compare import compare_reports, differences, format_comparison, unmatched
from pytest_aifactory.export.html import write_html
from pytest_aifactory.export.report import read_report
from pytest_aifactory.jobs.backends import BACKENDS, SlurmBackend
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.run import cleanup_run, every_backend
from pytest_aifactory.jobs.runner import LaunchPlan, command_argv
from pytest_aifactory.services.catalog import build_spec

__all__ = ["main"]


def _cleanup(args: argparse.Namespace) -> int:
    run_dir = Path(args.results_dir) / args.run_id
    registry = JobRegistry(run_dir)
    if not registry.path.exists():
        print(f"aifactory cleanup: no job registry at {registry.path}", file=sys.stderr)
        return 2
    done, errors = cleanup_run(registry, every_backend())
    for line in done:
        print(line)
    for line in errors:
        print(f"could not cancel {line}", file=sys.stderr)
    if not done and not errors:
        print(f"run {args.run_id}: no job left to cancel")
    return 1 if errors else 0


def _copy_profile(name: str, dest_dir: Path, root: Path, force: bool) -> int:
    found = find_profile(name, root)
    if dest_dir.exists() and not dest_dir.is_dir():
        raise AifError(f"--copy: destination {dest_dir} is not a folder")
    target = dest_dir / f"{found.name}.yaml"
    if target.exists() and target.resolve() == found.path.resolve():
        raise AifError(f"--copy: {target} is the profile {found.name!r} itself; give another folder")
    if target.exists() and not force:
        raise AifError(f"--copy: {target} exists; pass --force to overwrite it")
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found.path, target)
    print(f"copied {found.origin} profile {found.name} from {found.path} to {target}")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.copy:
        return _copy_profile(args.copy[0], Path(args.copy[1]), root, args.force)
    if args.force:
        raise AifError("--force only applies with --copy NAME DEST_DIR")
    found = find_profiles(root)
    if not found:
        print(f"aifactory profiles: no profile found; looked in {describe_search_path(root)}", file=sys.stderr)
        return 1
    status = 0
    for entry in found:
        where = f"[{entry.origin}: {entry.path}]"
        try:
            profile = load_profile(str(entry.path))
        except AifError as exc:
            print(f"{entry.name}: INVALID {where}: {exc}")
            status = 1
        else:
            print(f"{entry.name}: {profile.executor}: {profile.description} {where}")
    return status


def _render(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile, Path(args.root))
    spec = build_spec(args.service, profile)
    plan = LaunchPlan(spec=spec, folder=Path(args.folder), host_mode=profile.service_host, container=profile.container)
    backend = BACKENDS[profile.executor](profile)
    if not isinstance(backend, SlurmBackend):
        print(f"profile {profile.name!r} runs services as local processes: there is no job script", file=sys.stderr)
        return 2
    print(backend.render_sbatch(plan))
    print("# inside the job ({host}, {ports.NAME}, {workdir}, {cache} are filled in on the node):")
    for target, source in spec.env_from.items():
        print(f"#   env: {target} from ${source} of the submitting environment")
    for step in spec.setup:
        print(f"#   setup: {shlex.join(command_argv(plan, step))}")
    print(f"#   start: {shlex.join(command_argv(plan, spec.command))}")
    return 0


def _resend(args: argparse.Namespace) -> int:
    run_dir = Path(args.results_dir) / args.run_id
    if not (args.pushgateway or args.loki):
        print("aifactory resend: give --pushgateway URL and/or --loki URL", file=sys.stderr)
        return 2
    outboxes: list[tuple[str, Pushgateway | LokiPusher]] = []
    if args.pushgateway:
        target = GatewayTarget(url=args.pushgateway, username=args.user, ca_file=args.ca, insecure=args.insecure)
        outboxes.append(
            (args.pushgateway, Pushgateway(target, args.run_id, run_dir / "spool" / "pushgateway", Redactor()))
        )
    if args.loki:
        loki = LokiPusher(args.loki, args.run_id, run_dir / "spool" / "loki", Redactor())
        loki.close()
        outboxes.append((args.loki, loki))
    left_total = 0
    for url, outbox in outboxes:
        if not outbox.spooled():
            print(f"run {args.run_id}: nothing spooled for {url}")
            continue
        sent, left = outbox.resend()
        left_total += left
        print(f"run {args.run_id}: sent {sent} spooled push(es) to {url}; {left} left")
        for failure in outbox.failures:
            print(f"not delivered: {failure}", file=sys.stderr)
    return 1 if left_total else 0


def _report_path(value: str, results_dir: str) -> Path:
    path = Path(value)
    if path.is_file():
        return path
    candidate = Path(results_dir) / value / "report.json"
    if candidate.is_file():
        return candidate
    raise AifError(f"no report at {value!r} (a report.json path, or a run id under {results_dir})")


def _compare(args: argparse.Namespace) -> int:
    old = json.loads(_report_path(args.baseline, args.results_dir).read_text(encoding="utf-8"))
    new = json.loads(_report_path(args.candidate, args.results_dir).read_text(encoding="utf-8"))
    differing = differences(old, new)
    if differing:
        print(f"not comparable: {old['run_id']} and {new['run_id']}", *(f"  {d}" for d in differing), sep="\n")
        return 2
    rows = compare_reports(old, new, args.margin / 100)
    print(format_comparison(rows, old["run_id"], new["run_id"], *unmatched(old, new)))
    if not rows:
        return 2
    regressions = [r for r in rows if r.regression]
    if regressions:
        print(f"\n{len(regressions)} regression(s) beyond the {args.margin:g} % margin and the noise:")
        print("\n".join(f"  {r.test.split('::', 1)[-1]} {r.message()}" for r in regressions))
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    reports = [read_report(_report_path(run, args.results_dir)) for run in args.runs]
    path = write_html(reports, Path(args.output), args.margin / 100)
    print(f"aifactory report: {path} ({path.stat().st_size / 2**20:.1f} MiB, {len(reports)} run(s))")
    return 0


def _control(args: argparse.Namespace) -> int:
    from pytest_aifactory.apps.control import serve

    return serve(args.host, args.port, Path(args.root), Path(args.results_dir))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aifactory", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cleanup = commands.add_parser("cleanup", help="cancel every job a (killed) run left behind")
    cleanup.add_argument("run_id", metavar="RUN_ID")
    cleanup.add_argument(
        "--results-dir", default="aif-results", help="results folder of the run (default: %(default)s)"
    )
    cleanup.set_defaults(func=_cleanup)
    profiles = commands.add_parser(
        "profiles", help="list and validate the Slurm profiles, saying where each was found; or copy one"
    )
    profiles.add_argument("--root", default=".", help="project folder holding slurm_profiles/")
    profiles.add_argument(
        "--copy",
        nargs=2,
        metavar=("NAME", "DEST_DIR"),
        help="copy profile NAME to DEST_DIR/NAME.yaml to start your own",
    )
    profiles.add_argument("--force", action="store_true", help="with --copy: overwrite an existing file")
    profiles.set_defaults(func=_profiles)
    render = commands.add_parser("render", help="print the sbatch script a service would be submitted with")
    render.add_argument("profile", metavar="PROFILE")
    render.add_argument("service", metavar="SERVICE")
    render.add_argument("--root", default=".", help="project folder holding slurm_profiles/")
    render.add_argument("--folder", default="aif-results/render", help="job folder named in the script")
    render.set_defaults(func=_render)
    resend = commands.add_parser("resend", help="deliver a run's spooled Pushgateway pushes and Loki batches")
    resend.add_argument("run_id", metavar="RUN_ID")
    resend.add_argument("--results-dir", default="aif-results", help="results folder of the run (default: %(default)s)")
    resend.add_argument("--pushgateway", metavar="URL", help="Pushgateway to send the spooled metrics to")
    resend.add_argument("--loki", metavar="URL", help="Loki to send the spooled log lines to")
    resend.add_argument("--user", default=None, help="basic-auth user (password from AIF_PUSHGATEWAY_PASSWORD)")
    resend.add_argument("--ca", default=None, help="CA bundle for TLS")
    resend.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    resend.set_defaults(func=_resend)
    compare = commands.add_parser(
        "compare", help="compare two runs' reports; exit 1 on a regression, 2 when they are not comparable"
    )
    compare.add_argument("baseline", metavar="RUN_A", help="report.json path or run id (the reference)")
    compare.add_argument("candidate", metavar="RUN_B", help="report.json path or run id (the new run)")
    compare.add_argument("--results-dir", default="aif-results", help="where run ids are looked up")
    compare.add_argument("--margin", type=float, default=5.0, help="allowed change in percent (default: %(default)s)")
    compare.set_defaults(func=_compare)
    report = commands.add_parser(
        "report", help="write the HTML report of one or more runs (several: compared with the first)"
    )
    report.add_argument("runs", nargs="+", metavar="RUN", help="report.json path or run id")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: %(default)s)")
    report.add_argument("--results-dir", default="aif-results", help="where run ids are looked up")
    report.add_argument(
        "--margin", type=float, default=5.0, help="change in percent below which nothing is said (default: %(default)s)"
    )
    report.set_defaults(func=_report)
    control = commands.add_parser("control", help="HTTP API to start/stop runs and services (token: AIF_CONTROL_TOKEN)")
    control.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    control.add_argument("--port", type=int, default=8088, help="port (default: %(default)s)")
    control.add_argument("--root", default=".", help="project folder with benchmarks/ and slurm_profiles/")
    control.add_argument("--results-dir", default="aif-results", help="where runs write their results")
    control.set_defaults(func=_control)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aifactory`` command."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except AifError as exc:
        print(f"aifactory {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`aifactory profiles | head -3`): stop quietly
        # as the Python docs advise: the interpreter's own flush at exit would fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
