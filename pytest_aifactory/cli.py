"""The ``aifactory`` command: cleanup after a killed run, list profiles, show a job script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_aifactory.errors import AifError
from pytest_aifactory.jobs.backends import BACKENDS, Backend, SlurmBackend
from pytest_aifactory.jobs.registry import JobRegistry
from pytest_aifactory.jobs.runner import LaunchPlan
from pytest_aifactory.profiles import Profile, available_profiles, load_profile
from pytest_aifactory.run import cancel_run_jobs
from pytest_aifactory.services.catalog import build_spec

__all__ = ["main"]


def _cleanup(args: argparse.Namespace) -> int:
    run_dir = Path(args.results_dir) / args.run_id
    registry = JobRegistry(run_dir)
    if not registry.path.exists():
        print(f"aifactory cleanup: no job registry at {registry.path}", file=sys.stderr)
        return 2
    backends: dict[str, Backend] = {
        name: cls(Profile(name=f"cleanup-{name}", executor=name))  # type: ignore[arg-type]
        for name, cls in BACKENDS.items()
    }
    pending = registry.pending()
    errors = cancel_run_jobs(registry, backends)
    for record in pending:
        print(f"cancelled {record.service}: {record.backend} job {record.job_id}")
    for line in errors:
        print(f"could not cancel {line}", file=sys.stderr)
    if not pending:
        print(f"run {args.run_id}: no job left to cancel")
    return 1 if errors else 0


def _profiles(args: argparse.Namespace) -> int:
    root = Path(args.root)
    status = 0
    for name in available_profiles(root):
        try:
            profile = load_profile(name, root)
        except AifError as exc:
            print(f"{name}: INVALID: {exc}")
            status = 1
        else:
            print(f"{name}: {profile.executor}: {profile.description}")
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
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aifactory", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cleanup = commands.add_parser("cleanup", help="cancel every job a (killed) run left behind")
    cleanup.add_argument("run_id", metavar="RUN_ID")
    cleanup.add_argument(
        "--results-dir", default="aif-results", help="results folder of the run (default: %(default)s)"
    )
    cleanup.set_defaults(func=_cleanup)
    profiles = commands.add_parser("profiles", help="list and validate the Slurm profiles")
    profiles.add_argument("--root", default=".", help="project folder holding slurm_profiles/")
    profiles.set_defaults(func=_profiles)
    render = commands.add_parser("render", help="print the sbatch script a service would be submitted with")
    render.add_argument("profile", metavar="PROFILE")
    render.add_argument("service", metavar="SERVICE")
    render.add_argument("--root", default=".", help="project folder holding slurm_profiles/")
    render.add_argument("--folder", default="aif-results/render", help="job folder named in the script")
    render.set_defaults(func=_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aifactory`` command."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except AifError as exc:
        print(f"aifactory {args.command}: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
