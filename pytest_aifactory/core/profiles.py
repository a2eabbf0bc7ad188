"""Slurm profiles: where and how services run, loaded from YAML into frozen dataclasses.

A profile is given as a path, or found by name: in the project's ``slurm_profiles/``, then in
the folders of ``$AIF_PROFILES_DIR``, then among the profiles packaged with the plugin. Unknown
keys, wrong types and missing required fields are rejected with the file, the key and what is
accepted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from pytest_aifactory.core.errors import ProfileError

__all__ = [
    "PROFILES_DIR_VARIABLE",
    "ContainerSettings",
    "FoundProfile",
    "Profile",
    "ProfileFolder",
    "ServiceOverride",
    "SlurmSettings",
    "available_profiles",
    "describe_search_path",
    "find_profile",
    "find_profiles",
    "load_profile",
    "profile_search_path",
]

_STRICT = ConfigDict(extra="forbid", strict=True)

SettingValue = str | int | float | bool


def _kind(value: Any) -> str:
    """What a suite variable's value is, in words (ints and floats are both numbers)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return "a list" if isinstance(value, list | tuple) else "a text" if isinstance(value, str) else type(value).__name__


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

    def var(self, name: str, default: Any, choices: Sequence[str] = ()) -> Any:
        """A suite variable (``vars.NAME``): sizes and thresholds that differ per machine.

        A value of another kind than ``default`` (a list for a list, a number for a number...)
        or not among ``choices`` is a ``ProfileError`` naming the profile and the key.
        """
        value = self.vars.get(name, default)
        where = f"profile {self.name!r} ({self.source or 'embedded'}): vars.{name} = {value!r}"
        if choices and value not in choices:
            raise ProfileError(f"{where}: expected one of {', '.join(choices)}")
        if name in self.vars and default is not None and _kind(value) != _kind(default):
            raise ProfileError(f"{where}: expected {_kind(default)}, as the default {default!r} is")
        return value

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


PROFILES_DIR_VARIABLE = "AIF_PROFILES_DIR"


@dataclasses.dataclass(frozen=True)
class ProfileFolder:
    """A folder searched for ``NAME.yaml`` and why: ``project``, ``AIF_PROFILES_DIR`` or ``packaged``."""

    path: Path
    origin: str


@dataclasses.dataclass(frozen=True)
class FoundProfile:
    """A profile file and where it came from: a folder's origin, or ``path`` when given as one."""

    name: str
    path: Path
    origin: str


def _packaged_folder() -> Path:
    # An installed package is a folder on disk (wheels are unpacked), so its resources are files.
    return Path(str(resources.files("pytest_aifactory").joinpath("slurm_profiles")))


def _env_folders() -> list[Path]:
    folders = []
    for entry in os.environ.get(PROFILES_DIR_VARIABLE, "").split(os.pathsep):
        if not entry:
            continue
        folder = Path(entry)
        if not folder.is_dir():
            raise ProfileError(
                f"{PROFILES_DIR_VARIABLE}: {entry!r} is not a folder; give folders of NAME.yaml profiles, "
                f"separated by {os.pathsep!r}"
            )
        folders.append(folder)
    return folders


def profile_search_path(project_root: Path | None = None) -> list[ProfileFolder]:
    """Folders searched for ``NAME.yaml``, in order; one reached twice counts as the first."""
    candidates = [ProfileFolder(project_root / "slurm_profiles", "project")] if project_root is not None else []
    candidates += [ProfileFolder(folder, PROFILES_DIR_VARIABLE) for folder in _env_folders()]
    candidates.append(ProfileFolder(_packaged_folder(), "packaged"))
    folders: list[ProfileFolder] = []
    for candidate in candidates:
        if all(candidate.path.resolve() != seen.path.resolve() for seen in folders):
            folders.append(candidate)
    return folders


def find_profiles(project_root: Path | None = None) -> list[FoundProfile]:
    """Every profile on the search path, by name; a name in an earlier folder hides later ones."""
    found: dict[str, FoundProfile] = {}
    for folder in profile_search_path(project_root):
        for path in sorted(folder.path.glob("*.yaml")):
            found.setdefault(path.stem, FoundProfile(path.stem, path, folder.origin))
    return [found[name] for name in sorted(found)]


def available_profiles(project_root: Path | None = None) -> list[str]:
    """Names of every profile found on the search path."""
    return [found.name for found in find_profiles(project_root)]


def describe_search_path(project_root: Path | None = None) -> str:
    """Where profiles are looked up, for messages: ``PATH (origin), ...``."""
    return ", ".join(f"{folder.path} ({folder.origin})" for folder in profile_search_path(project_root))


def find_profile(name_or_path: str, project_root: Path | None = None) -> FoundProfile:
    """The file of a profile given by name or as a path (``.yaml``/``.yml``, or any existing file)."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"profile file {candidate} does not exist")
        return FoundProfile(candidate.stem, candidate, "path")
    for found in find_profiles(project_root):
        if found.name == name_or_path:
            return found
    valid = ", ".join(available_profiles(project_root)) or "(none found)"
    raise ProfileError(
        f"unknown profile {name_or_path!r}: give a profile name ({valid}) or a path to a YAML file; "
        f"looked in {describe_search_path(project_root)}"
    )


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
    """Load and validate a profile by name (see :func:`profile_search_path`) or path."""
    path = find_profile(name_or_path, project_root).path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return parse_profile(data, str(path))
