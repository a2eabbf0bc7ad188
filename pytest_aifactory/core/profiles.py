"""Slurm profiles: where and how services run, loaded from YAML into frozen dataclasses.

A profile is found by name in ``slurm_profiles/`` (the project's, then the copy shipped with
the package) or given as a path. Unknown keys, wrong types and missing required fields are
rejected with the file, the key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from pytest_aifactory.core.errors import ProfileError

__all__ = [
    "ContainerSettings",
    "Profile",
    "ServiceOverride",
    "SlurmSettings",
    "available_profiles",
    "load_profile",
    "profile_search_path",
]

_STRICT = ConfigDict(extra="forbid", strict=True)

SettingValue = str | int | float | bool


@dataclass(frozen=True, config=_STRICT)
class SlurmSettings:
    """Scheduler settings for every job of a profile (sbatch options)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    nodes: int = 1
    cpus_per_task: int = 1
    mem_gb: float | int | None = None
    gpus_per_node: int = 0
    reservation: str | None = None
    constraint: str | None = None
    setup: list[str] = dataclasses.field(default_factory=list)
    additional: dict[str, SettingValue] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class ContainerSettings:
    """How a service with a container image is started (Apptainer on the cluster)."""

    runtime: Literal["apptainer", "singularity"] = "apptainer"
    binds: list[str] = dataclasses.field(default_factory=list)
    options: list[str] = dataclasses.field(default_factory=list)
    gpu_flag: str = "--nv"


@dataclass(frozen=True, config=_STRICT)
class ServiceOverride:
    """Per-service changes to the profile's defaults."""

    image: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | int | None = None
    time_min: int | None = None
    partition: str | None = None
    readiness_timeout_s: float | int | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    settings: dict[str, SettingValue] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class Profile:
    """A validated Slurm profile."""

    name: str
    executor: Literal["local", "slurm"]
    description: str = ""
    service_host: Literal["loopback", "node"] = "loopback"
    readiness_timeout_s: float | int = 120
    job_dir: str | None = None
    llm: str = "llamacpp"
    vars: dict[str, SettingValue | list[float | int]] = dataclasses.field(default_factory=dict)
    slurm: SlurmSettings = dataclasses.field(default_factory=SlurmSettings)
    container: ContainerSettings | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    services: dict[str, ServiceOverride] = dataclasses.field(default_factory=dict)
    source: str = ""

    def var(self, name: str, default: Any) -> Any:
        """A suite variable (``vars.NAME``): sizes and thresholds that differ per machine."""
        return self.vars.get(name, default)

    def override(self, service: str) -> ServiceOverride:
        """The overrides this profile sets for ``service`` (empty when none)."""
        return self.services.get(service, ServiceOverride())


_ADAPTER = TypeAdapter(Profile)
_MODELS: dict[str, type[Any]] = {
    "": Profile,
    "slurm": SlurmSettings,
    "container": ContainerSettings,
    "services.*": ServiceOverride,
}


def profile_search_path(project_root: Path | None = None) -> list[Path]:
    """Folders searched for ``NAME.yaml``: the project's ``slurm_profiles/``, then this checkout's."""
    folders = []
    if project_root is not None:
        folders.append(project_root / "slurm_profiles")
    shipped = Path(__file__).resolve().parents[2] / "slurm_profiles"
    if shipped not in folders:
        folders.append(shipped)
    return folders


def available_profiles(project_root: Path | None = None) -> list[str]:
    """Names of every profile found on the search path."""
    names = {p.stem for folder in profile_search_path(project_root) for p in folder.glob("*.yaml")}
    return sorted(names)


def _resolve(name_or_path: str, project_root: Path | None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"profile file {candidate} does not exist")
        return candidate
    for folder in profile_search_path(project_root):
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    valid = ", ".join(available_profiles(project_root)) or "(none found)"
    raise ProfileError(f"unknown profile {name_or_path!r}: give a profile name ({valid}) or a path to a YAML file")


def _model_at(loc: tuple[str | int, ...]) -> type[Any] | None:
    """The dataclass that owns the last key of ``loc`` (for listing valid keys)."""
    parts = [str(p) for p in loc[:-1]]
    if len(parts) >= 2 and parts[0] == "services":
        parts = ["services.*", *parts[2:]]
    return _MODELS.get(".".join(parts))


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] in {"extra_forbidden", "unexpected_keyword_argument"}:
        model = _model_at(loc)
        valid = sorted(f.name for f in dataclasses.fields(model) if f.name != "source") if model else []
        return f"key {key!r} is not a valid key; valid keys: {', '.join(valid)}"
    if error["type"] in {"missing", "missing_argument"}:
        return f"required key {key!r} is missing"
    return f"key {key!r}: {error['msg']} (got {error.get('input')!r})"


def parse_profile(data: object, source: str) -> Profile:
    """Validate already-parsed YAML ``data``; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a mapping of keys to values, got {type(data).__name__}")
    try:
        # JSON mode: strict types, yet mappings become dataclasses (YAML data is JSON data).
        profile = _ADAPTER.validate_json(json.dumps({**data, "source": source}, default=str))
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ProfileError(f"{source}: invalid profile: {problems}") from None
    if profile.executor == "slurm" and profile.slurm.time_min <= 0:
        raise ProfileError(f"{source}: key 'slurm.time_min' must be a positive number of minutes")
    return profile


def load_profile(name_or_path: str, project_root: Path | None = None) -> Profile:
    """Load and validate a profile by name (``slurm_profiles/NAME.yaml``) or path."""
    path = _resolve(name_or_path, project_root)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return parse_profile(data, str(path))
