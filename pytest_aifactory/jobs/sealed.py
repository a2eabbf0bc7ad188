"""The secrets of a job travel in its environment, never in its pickled arguments.

submitit pickles a job's function and arguments into the job folder (``{id}_submitted.pkl``),
which outlives the run. Before a ``LaunchPlan`` is submitted, ``seal`` takes out what is
secret in it: env values under secret names (the profile's ``env``, the service's) and the
passwords of the telemetry URLs (``--aif-pushgateway https://user:pw@...``). They are put in
one variable of the submitting environment, ``AIF_JOB_SECRETS`` (JSON), for the time of the
submit: a local job inherits it, sbatch exports it into the Slurm job (``exporting`` keeps it in
a profile's ``--export``). ``unseal``, inside the job, puts them back and removes the variable,
so that the service does not inherit it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pytest_aifactory.core.secrets import is_secret_name, redact_url

if TYPE_CHECKING:
    from pytest_aifactory.jobs.runner import LaunchPlan

__all__ = ["SECRETS_VARIABLE", "exported", "exporting", "seal", "unseal"]

SECRETS_VARIABLE = "AIF_JOB_SECRETS"
SBATCH_EXPORT = "SBATCH_EXPORT"  # sbatch's --export from the environment
_ENVIRON = threading.Lock()  # one submit at a time changes os.environ


def _split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(values under ordinary names, values under secret names)."""
    secret = {name: value for name, value in env.items() if is_secret_name(name)}
    return {name: value for name, value in env.items() if name not in secret}, secret


def seal(plan: LaunchPlan) -> tuple[LaunchPlan, dict[str, Any]]:
    """``plan`` without its secrets (URL passwords shown as ``***``), and the secrets taken out."""
    env, env_secrets = _split(dict(plan.env))
    spec_env, spec_secrets = _split(plan.spec.env)
    secrets: dict[str, Any] = {"env": env_secrets, "spec_env": spec_secrets}
    telemetry = plan.telemetry
    if telemetry is not None:
        if telemetry.loki_url:
            secrets["loki_url"] = telemetry.loki_url
            telemetry = dataclasses.replace(telemetry, loki_url=redact_url(telemetry.loki_url))
        if telemetry.pushgateway is not None:
            secrets["pushgateway_url"] = telemetry.pushgateway.url
            target = dataclasses.replace(telemetry.pushgateway, url=redact_url(telemetry.pushgateway.url))
            telemetry = dataclasses.replace(telemetry, pushgateway=target)
    public = dataclasses.replace(
        plan, env=tuple(env.items()), spec=dataclasses.replace(plan.spec, env=spec_env), telemetry=telemetry
    )
    return public, secrets


def unseal(plan: LaunchPlan) -> LaunchPlan:
    """Inside the job: ``plan`` with the secrets of ``AIF_JOB_SECRETS`` back (the variable is removed)."""
    raw = os.environ.pop(SECRETS_VARIABLE, None)
    if raw is None:
        return plan
    secrets = json.loads(raw)
    telemetry = plan.telemetry
    if telemetry is not None:
        if "loki_url" in secrets:
            telemetry = dataclasses.replace(telemetry, loki_url=secrets["loki_url"])
        if telemetry.pushgateway is not None and "pushgateway_url" in secrets:
            target = dataclasses.replace(telemetry.pushgateway, url=secrets["pushgateway_url"])
            telemetry = dataclasses.replace(telemetry, pushgateway=target)
    spec = dataclasses.replace(plan.spec, env={**plan.spec.env, **secrets["spec_env"]})
    return dataclasses.replace(plan, env=(*plan.env, *secrets["env"].items()), spec=spec, telemetry=telemetry)


@contextlib.contextmanager
def exported(secrets: Mapping[str, Any]) -> Iterator[None]:
    """``AIF_JOB_SECRETS`` set to ``secrets`` in this process's environment while a job is submitted.

    An ``SBATCH_EXPORT`` of the environment (it overrides the script's ``--export``) is made to
    pass it too for that time (``exporting``).
    """
    with _ENVIRON:
        before = {name: os.environ.get(name) for name in (SECRETS_VARIABLE, SBATCH_EXPORT)}
        os.environ[SECRETS_VARIABLE] = json.dumps(secrets)
        if export := before[SBATCH_EXPORT]:
            os.environ[SBATCH_EXPORT] = exporting(export)
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def exporting(export: str) -> str:
    """An sbatch ``--export`` value that passes what ``export`` does, and ``AIF_JOB_SECRETS``.

    ``ALL`` (sbatch's default) passes it already; ``NONE`` (only ``SLURM_*``, which a profile
    may ask for) becomes ``AIF_JOB_SECRETS`` (``SLURM_*`` and it: sbatch allows no name after
    ``NONE``); a list of names gets it added. Only the name is given: sbatch takes the value
    from the submitting environment, so it is in no script or command line.
    """
    names = [name.strip() for name in export.split(",") if name.strip()]
    if not names or names[0].upper() == "ALL" or SECRETS_VARIABLE in names:
        return export
    if [name.upper() for name in names] == ["NONE"]:
        return SECRETS_VARIABLE
    return ",".join([*names, SECRETS_VARIABLE])
