"""The job side: what runs inside a service's job (a Slurm job or a local process).

``serve(plan)`` is the function submitit pickles and runs. It picks free ports on its node,
runs the service's setup steps, starts the service (inside a container when the profile
says so), publishes the endpoint in the job folder, and supervises the service until it
exits or the job is cancelled, stopping the whole process group on the way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pytest_aifactory.core.errors import JobError
from pytest_aifactory.core.profiles import ContainerSettings
from pytest_aifactory.core.secrets import Redactor
from pytest_aifactory.jobs.energy import ENERGY_FILE
from pytest_aifactory.jobs.listening import LISTENING_FILE, listening
from pytest_aifactory.jobs.node_files import (
    NODE_FILES,
    NODE_TMP_PREFIX,
    bound_unix_sockets,
    made_folder,
    mapped_shared_memory,
    remove_left,
)
from pytest_aifactory.jobs.processes import group_members, pid_alive, process_start, process_tree
from pytest_aifactory.jobs.sealed import unseal
from pytest_aifactory.jobs.telemetry import MONITOR_FILE, Telemetry, TelemetryThreads
from pytest_aifactory.services.spec import ServiceSpec, render, render_context

__all__ = [
    "ENDPOINT_FILE",
    "EXIT_FILE",
    "PROCESS_FILE",
    "LaunchPlan",
    "Owner",
    "read_json",
    "serve",
    "tail",
]

ENDPOINT_FILE = "endpoint.json"
EXIT_FILE = "exit.json"
STDOUT_FILE = "service.out"
STDERR_FILE = "service.err"
PROCESS_FILE = "{job_id}_process.json"  # a local job's pid and start time, beside submitit's files


@dataclass(frozen=True)
class Owner:
    """The test process that started a job: the job stops when it is gone (same host only)."""

    host: str
    pid: int

    def gone(self) -> bool:
        """True when the owner runs on this host and has exited."""
        if self.host != socket.gethostname():
            return False
        return not pid_alive(self.pid)


@dataclass(frozen=True)
class LaunchPlan:
    """A ``ServiceSpec`` plus where and how it runs: everything the job needs."""

    spec: ServiceSpec
    folder: Path
    host_mode: str = "loopback"
    container: ContainerSettings | None = None
    env: tuple[tuple[str, str], ...] = ()
    owner: Owner | None = None
    telemetry: Telemetry | None = None
    cache_dir: Path | None = None


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None while it does not exist yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers never see a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(
    host: str, port_range: tuple[int, int] = (0, 0), offset_free: int = 0, taken: frozenset[int] = frozenset()
) -> int:
    """A TCP port free on ``host`` now: any, or in ``port_range`` with ``port + offset_free`` free too."""
    if port_range == (0, 0) and not offset_free:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    low, high = port_range if port_range != (0, 0) else (20000, 65535 - offset_free)
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(low, high)
        candidates = {port, port + offset_free}
        if not candidates & taken and all(_bindable(host, p) for p in candidates):
            return port
    raise JobError(f"no free port in {low}-{high} on {host} (with port+{offset_free} free)")


def node_address() -> str:
    """This node's address as other nodes reach it (``hostname -i``)."""
    return socket.gethostbyname(socket.gethostname())


def _job_id() -> str:
    for var in ("SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if var in os.environ:
            return os.environ[var]
    return str(os.getpid())


def container_argv(
    container: ContainerSettings, image: str, gpus: int, argv: Sequence[str], binds: Sequence[str] = ()
) -> list[str]:
    """``apptainer exec [--nv] [--bind ...] [options] IMAGE argv...`` (the profile's binds, then ``binds``)."""
    words = [container.runtime, "exec"]
    if gpus > 0 and container.gpu_flag:
        words.append(container.gpu_flag)
    every_bind = [*container.binds, *binds]
    if every_bind:
        words += ["--bind", ",".join(every_bind)]
    words += [*container.options, image, *argv]
    return words


def command_argv(plan: LaunchPlan, argv: Sequence[str], context: Mapping[str, Any] | None = None) -> list[str]:
    """The command as it is really started: in the container, as the service user.

    With ``context``, placeholders in ``argv`` and in the spec's binds are filled in;
    without, they are shown as they are (``aifactory render``).
    """
    words = [render(word, context) if context else word for word in argv]
    if plan.container is not None and plan.spec.image:
        binds = [render(bind, context) if context else bind for bind in plan.spec.binds]
        words = container_argv(plan.container, plan.spec.image, plan.spec.resources.gpus, words, binds)
    elif words and words[0] in plan.spec.host_commands:
        words = [_host_command(words[0], plan.spec.host_commands[words[0]]), *words[1:]]
    if plan.spec.run_as and os.geteuid() == 0:
        words = ["runuser", "-u", plan.spec.run_as, "--", *words]
    return words


def _host_command(word: str, target: str) -> str:
    """What ``word`` is on this node: ``target``, or its newest match if a glob (none: ``word`` itself)."""
    if not any(char in target for char in "*?["):
        return target
    found = sorted(glob.glob(target))
    return found[-1] if found else word


def _executable(argv: Sequence[str]) -> str:
    """The program a command runs: after ``env VAR=value ...``, the first word that is no assignment."""
    if argv[0] != "env":
        return argv[0]
    return next((word for word in argv[1:] if "=" not in word), argv[0])


def _die_with_parent() -> None:
    """In the service process: get SIGTERM when the job process dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _NodeFiles:
    """What the job keeps on its node outside its folder, recorded in ``NODE_FILES`` as it appears."""

    folder: Path
    node: str
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, made: Mapping[str, dict[str, Any]]) -> None:
        """Record ``made`` too (path -> what identifies it; the file is rewritten only when one is new)."""
        if new := {path: entry for path, entry in made.items() if self.paths.get(path) != entry}:
            self.paths.update(new)
            write_json_atomic(self.folder / NODE_FILES, {"node": self.node, "paths": self.paths})


@contextlib.contextmanager
def _node_tmp(name: str, run_as: str | None, node_files: _NodeFiles) -> Iterator[Path]:
    """A private folder in the node's tmp (owned by ``run_as`` when root starts the job), removed at the end.

    It is recorded first: a killed job leaves it for the side that cancels the job to remove.
    """
    base = os.environ.get("SLURM_TMPDIR") or tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=NODE_TMP_PREFIX + name, dir=base))
    if run_as and os.geteuid() == 0:
        user = pwd.getpwnam(run_as)
        os.chown(path, user.pw_uid, user.pw_gid)
    node_files.add(made_folder(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _workdir(plan: LaunchPlan, node_files: _NodeFiles) -> Iterator[Path]:
    """A private scratch folder; for a ``run_as`` user, one in the node's tmp it can reach."""
    if not (plan.spec.run_as and os.geteuid() == 0):
        path = plan.folder / "work"
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with _node_tmp(f"{plan.spec.name}-", plan.spec.run_as, node_files) as path:
        yield path


def _wait_group(child: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until the service and every process of its group are gone, or the deadline passed.

    A server's helpers may outlive its main process by a moment (vLLM's engine core and
    its resource tracker, which removes its ``/dev/shm`` segments): the SIGKILL that follows
    must not catch them half-way.
    """
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(max(deadline - time.monotonic(), 0))
    while group_members(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class _StopRequest:
    """Set by SIGTERM/SIGINT/SIGUSR2 (scancel, submitit's local cancel, a time limit)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum


def _run_setup(plan: LaunchPlan, context: dict[str, Any], env: dict[str, str], out: Any, err: Any) -> None:
    """Run the spec's setup steps in the workdir; the first that fails fails the job (its log tail masked)."""
    for step in plan.spec.setup:
        argv = command_argv(plan, step, context)
        out.write(f"[aifactory] setup: {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, stdout=out, stderr=err, env=env, cwd=context["workdir"], check=False).returncode
        if code != 0:
            err.flush()
            raise JobError(
                f"setup step {' '.join(argv)!r} of service {plan.spec.name!r} exited with {code}\n"
                f"{Redactor(environ=env).text(tail(plan.folder / STDERR_FILE))}"
            )


def serve(plan: LaunchPlan) -> int:
    """Run the service of ``plan`` until it exits or the job is stopped; returns its exit code."""
    stop = _StopRequest()
    plan = unseal(plan)
    spec = plan.spec
    node = socket.gethostname()
    host = "127.0.0.1" if plan.host_mode == "loopback" else node_address()
    ports: dict[str, int] = {}
    for name in spec.ports:
        taken = frozenset(p + d for p in ports.values() for d in (0, spec.port_offset_free))
        ports[name] = free_port(host, spec.port_range, spec.port_offset_free, taken)
    env = {**os.environ, **dict(plan.env), **spec.env}
    # Executables installed with the package (chroma, weed, milvus-lite) live beside the interpreter
    # running this job, whether or not its virtualenv was activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    missing = [source for source in spec.env_from.values() if source not in os.environ]
    if missing:
        raise JobError(f"service {spec.name!r} needs environment variable(s) {', '.join(missing)} (not set)")
    env.update({target: os.environ[source] for target, source in spec.env_from.items()})
    stdout_path, stderr_path = plan.folder / STDOUT_FILE, plan.folder / STDERR_FILE
    node_files = _NodeFiles(plan.folder, node)
    with (
        _workdir(plan, node_files) as workdir,
        _node_tmp("", plan.spec.run_as, node_files) as tmp,  # {tmp}: short, for Unix sockets
        stdout_path.open("a") as out,
        stderr_path.open("a") as err,
        contextlib.ExitStack() as on_exit,
    ):
        cache = str(plan.cache_dir or "")
        gpus = spec.resources.gpus
        context = render_context(host, ports, str(workdir), sys.executable, node, gpus, cache, str(tmp))
        for secret_file in spec.secret_files:  # the credentials a setup step wrote go with the job
            on_exit.callback(Path(render(secret_file, context)).unlink, missing_ok=True)
        for path, text in spec.files.items():
            Path(render(path, context)).write_text(text, encoding="utf-8")
        for bind in spec.binds:  # a bind's source must exist before the container starts
            Path(render(bind, context).split(":", 1)[0]).mkdir(parents=True, exist_ok=True)
        _run_setup(plan, context, env, out, err)
        argv = command_argv(plan, spec.command, context)
        executable = _executable(argv)
        if shutil.which(executable, path=env["PATH"]) is None:
            provider = spec.meta.get("provided_by")
            hint = f"; it is provided by {provider}" if provider else ""
            raise JobError(f"service {spec.name!r}: executable {executable!r} not found on PATH ({env['PATH']}){hint}")
        out.write(f"[aifactory] start: {' '.join(argv)}\n")
        out.flush()
        child = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            env=env,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        write_json_atomic(
            plan.folder / ENDPOINT_FILE,
            {
                "host": host,
                "ports": ports,
                "job_id": _job_id(),
                "node": node,
                "pid": child.pid,
                "pid_start": process_start(child.pid),
                "stdout": str(stdout_path),
                "stderr": str(stderr_path),
                "started_at": time.time(),
                "stop_timeout_s": spec.stop_timeout_s,  # how long its stop may take (cancel waits that long)
            },
        )
        threads = (
            TelemetryThreads(
                plan.telemetry,
                spec.name,
                _job_id(),
                child.pid,
                {"stdout": stdout_path, "stderr": stderr_path},
                env,
                samples_file=plan.folder / MONITOR_FILE,
                energy_file=plan.folder / ENERGY_FILE,
            )
            if plan.telemetry is not None
            else None
        )
        if threads is not None:
            threads.event(f"service {spec.name} started on {node}: pid {child.pid}, ports {ports}")
        reason, sockets, next_look = "exited", None, 0.0
        while (code := child.poll()) is None:
            if time.monotonic() >= next_look:  # what it maps and listens on, for the login node
                next_look = time.monotonic() + 1.0
                tree = process_tree(child.pid)
                node_files.add({**mapped_shared_memory(tree), **bound_unix_sockets(tree)})
                if host != "127.0.0.1" and (found := listening(tree)) != sockets:
                    sockets = found
                    write_json_atomic(plan.folder / LISTENING_FILE, {"node": node, "sockets": sockets})
            if stop.signum is not None:
                reason = f"stopped by signal {signal.Signals(stop.signum).name}"
            elif plan.owner is not None and plan.owner.gone():
                reason = f"stopped: owner process {plan.owner.pid} is gone"
            else:
                time.sleep(0.1)
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            _wait_group(child, time.monotonic() + spec.stop_timeout_s)
            break
        if reason == "exited" and stop.signum is not None:  # scancel signals the whole step: the child can
            reason = f"stopped by signal {signal.Signals(stop.signum).name}"  # die of it before this loop looks
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever the service left in its group
        code = child.wait()
        write_json_atomic(plan.folder / EXIT_FILE, {"exit_code": code, "reason": reason, "at": time.time()})
        _wait_group(child, time.monotonic() + 5)  # the SIGKILLed members' sockets close as they exit
        remove_left({"node": node, "paths": node_files.paths})  # what its processes left
        if threads is not None:
            failed = reason == "exited" and code != 0
            threads.event(f"service {spec.name} {reason} (exit code {code})", level="error" if failed else "info")
            threads.stop()
    if reason == "exited" and code != 0:
        masked = Redactor(environ=env).text(tail(stderr_path))
        raise JobError(f"service {spec.name!r} exited with code {code}\n{masked}")
    return code
