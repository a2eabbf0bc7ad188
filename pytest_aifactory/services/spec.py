"""What a service is (``ServiceSpec``) and what a started one offers (``RunningService``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = [
    "CallProbe",
    "CommandProbe",
    "HttpProbe",
    "Probe",
    "Resources",
    "RunningService",
    "ServiceSpec",
    "TcpProbe",
    "render",
]


@dataclass(frozen=True)
class HttpProbe:
    """Ready when ``METHOD http://host:port/path`` answers with an expected status.

    ``json`` sends a body: a first tiny request proves a server can serve, not just listen.
    """

    path: str = "/"
    port: str = "http"
    method: str = "GET"
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    expect_status: tuple[int, ...] = (200,)


@dataclass(frozen=True)
class TcpProbe:
    """Ready when a TCP connection to the named port succeeds."""

    port: str = "http"


@dataclass(frozen=True)
class CommandProbe:
    """Ready when this command (placeholders rendered) exits 0; runs where the tests run."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class CallProbe:
    """Ready when ``module:function(service)`` returns None (else it returns the reason).

    For protocols that need a client: a real S3 PUT, a SQL ``SELECT 1``, a vector-DB call.
    """

    target: str


Probe = HttpProbe | TcpProbe | CommandProbe | CallProbe


@dataclass(frozen=True)
class Resources:
    """What one service job asks the scheduler for."""

    cpus: int = 1
    mem_gb: float | None = None
    gpus: int = 0
    time_min: int = 60
    partition: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """Everything needed to start one service, wherever it runs.

    ``command`` and ``setup`` may use placeholders filled in inside the job:
    ``{host}``, ``{ports.NAME}`` (a free port picked on the job's node for each name in
    ``ports``), ``{workdir}`` (a private scratch folder), ``{tmp}`` (a private folder with a
    short path in the node's tmp, removed when the job ends: Unix sockets' paths are limited
    to 107 bytes), ``{cache}`` (the results cache, kept across runs: generated models),
    ``{python}``, ``{node}`` and ``{gpus}`` (the GPUs the job asked for).
    ``env_from`` maps a variable of the service to one of the submitting environment
    (``{"VLLM_API_KEY": "AIF_VLLM_API_KEY"}``): the job copies the value when it starts, so
    secrets never enter the spec, the job folder's pickles, logs or reports.
    ``meta`` tells clients how to talk to the service (model name, API key variable...).
    ``port_range`` limits the ports picked (``(0, 0)``: any free one) and ``port_offset_free``
    asks that ``port + offset`` be free too (SeaweedFS binds its gRPC ports there).
    ``binds`` (``SRC:DST``, placeholders allowed) are added to the container's binds; their
    sources are created in the job (an image's data folder mapped into the scratch folder).
    With an ``image``, ``command`` and ``setup`` name only what is in the image or under a bind:
    run without a container, their first word is looked up in ``host_commands`` (a glob: the
    newest match on the job's node; none: the word itself, from PATH). ``files`` (path: text,
    placeholders in the path) are written by the job before setup, outside any container.
    ``secret_files`` (placeholders allowed) hold credentials a setup step wrote: the job
    removes them when it ends.
    """

    name: str
    command: tuple[str, ...]
    ports: tuple[str, ...] = ("http",)
    env: Mapping[str, str] = field(default_factory=dict)
    env_from: Mapping[str, str] = field(default_factory=dict)
    setup: tuple[tuple[str, ...], ...] = ()
    probe: Probe | None = None
    resources: Resources = field(default_factory=Resources)
    image: str | None = None
    readiness_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    run_as: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    port_range: tuple[int, int] = (0, 0)
    port_offset_free: int = 0
    binds: tuple[str, ...] = ()
    host_commands: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    secret_files: tuple[str, ...] = ()

    def with_overrides(self, **changes: Any) -> ServiceSpec:
        """A copy with ``changes`` applied (resources may be given as their own fields)."""
        resource_keys = {f.name for f in dataclasses.fields(Resources)}
        resources = {k: changes.pop(k) for k in list(changes) if k in resource_keys}
        if resources:
            changes["resources"] = dataclasses.replace(self.resources, **resources)
        return dataclasses.replace(self, **changes)


def render(template: str, context: Mapping[str, Any]) -> str:
    """Fill ``{host}``, ``{ports.NAME}``... placeholders of a command word."""
    return template.format_map(context)


def render_context(
    host: str,
    ports: Mapping[str, int],
    workdir: str,
    python: str,
    node: str,
    gpus: int = 0,
    cache: str = "",
    tmp: str = "",
) -> dict[str, Any]:
    """The placeholder values available to commands (``cache`` and ``tmp`` default to folders of ``workdir``)."""
    return {
        "host": host,
        "ports": SimpleNamespace(**ports),
        "workdir": workdir,
        "cache": cache or f"{workdir}/cache",
        "tmp": tmp or f"{workdir}/tmp",
        "python": python,
        "node": node,
        "gpus": gpus,
    }


@dataclass(frozen=True)
class RunningService:
    """A service that passed its readiness probe: where it is and how to find its logs."""

    name: str
    host: str
    ports: Mapping[str, int]
    backend: str
    job_id: str
    node: str
    folder: Path
    stdout: Path
    stderr: Path
    spec: ServiceSpec

    @property
    def port(self) -> int:
        """The first (main) port."""
        return self.ports[self.spec.ports[0]]

    def url(self, path: str = "", port: str | None = None, scheme: str = "http") -> str:
        """``scheme://host:port/path`` for a named port (default: the main one)."""
        number = self.ports[port] if port is not None else self.port
        return f"{scheme}://{self.host}:{number}/{path.lstrip('/')}"

    def describe(self) -> str:
        """One line for messages: name, job, node, address."""
        ports = ", ".join(f"{k}={v}" for k, v in self.ports.items())
        return f"{self.name} ({self.backend} job {self.job_id} on {self.node}, {self.host} {ports})"

    def to_json(self) -> dict[str, Any]:
        """Endpoint fields as JSON (the spec is not included: it may carry secrets)."""
        return {
            "name": self.name,
            "host": self.host,
            "ports": dict(self.ports),
            "backend": self.backend,
            "job_id": self.job_id,
            "node": self.node,
            "folder": str(self.folder),
            "stdout": str(self.stdout),
            "stderr": str(self.stderr),
        }
