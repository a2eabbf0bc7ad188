"""The pytest layer: options, markers, hooks and fixtures of pytest-aifactory."""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import pytest

from pytest_aifactory.errors import AifError, ServiceConfigError, ServiceDiedError, ServiceStartupError
from pytest_aifactory.histories import Histories
from pytest_aifactory.histories import add_options as add_history_options
from pytest_aifactory.jobs.registry import JobRecord
from pytest_aifactory.load.api import LoadRunner
from pytest_aifactory.load.engine import Progress
from pytest_aifactory.metrics import LoadResult
from pytest_aifactory.outcomes import RESULTS_KEY, Outcomes, progress_printer
from pytest_aifactory.profiles import Profile, load_profile
from pytest_aifactory.recording import Recorder, add_options
from pytest_aifactory.run import RunContext, cancel_run_jobs, new_run_id, parse_run_id
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.services.manager import ServiceManager
from pytest_aifactory.services.spec import Resources, RunningService, ServiceSpec
from pytest_aifactory.workloads.sql import connect_check
from pytest_aifactory.workloads.vectors import (
    VECTOR_STORES,
    ChromaStore,
    FaissStore,
    MilvusStore,
    QdrantStore,
    VectorStore,
    WeaviateStore,
    faiss_gpus,
)

RUN_KEY = pytest.StashKey[RunContext]()
ERRORS_KEY = pytest.StashKey[list[str]]()
RECORDER_KEY = pytest.StashKey[Recorder]()
HISTORIES_KEY = pytest.StashKey[Histories]()

MARKERS = {
    "inference": "benchmarks of inference servers (vLLM, Triton, llama.cpp, Ollama)",
    "database": "benchmarks of relational databases (PostgreSQL)",
    "objectstore": "benchmarks of S3 object storage",
    "vectordb": "benchmarks of vector databases (Milvus, Chroma, FAISS, Qdrant, Weaviate)",
    "filestorage": "benchmarks of file systems (parallel file system, local disk)",
    "calibration": "calibration of the load engine itself (benchmarks/calibration)",
    "slurm": "needs a working Slurm cluster (sbatch, squeue, sacct); fails under CI=true when missing",
    "slo(*expressions)": "service-level objectives checked against every load result of the test, "
    "e.g. slo('p99_ttft_ms <= 500', 'error_rate <= 0.01')",
}


def _workers_arg(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"--aif-load-workers: expected a whole number >= 1, got {value!r}")
    return int(value)


def _run_id_arg(value: str) -> str:
    try:
        return parse_run_id(value)
    except ValueError as exc:
        raise pytest.UsageError(f"--aif-run-id: {exc}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aifactory", "AI Factory benchmarks (pytest-aifactory)")
    group.addoption(
        "--aif-profile",
        dest="aif_profile",
        metavar="NAME|PATH",
        default=None,
        help="Slurm profile: a name in slurm_profiles/ or a YAML path (default: ini aif_profile, else local)",
    )
    group.addoption(
        "--aif-run-id",
        dest="aif_run_id",
        metavar="ID",
        type=_run_id_arg,
        default=None,
        help="Id of this run, naming its results folder and labels (default: generated, unique)",
    )
    group.addoption(
        "--aif-results-dir",
        dest="aif_results_dir",
        metavar="DIR",
        default=None,
        help="Folder for run results, job folders and reports (default: ini aif_results_dir, else aif-results)",
    )
    group.addoption(
        "--aif-keep-services",
        dest="aif_keep_services",
        action="store_true",
        default=None,
        help="Leave services running after the run for debugging; stop them with 'aifactory cleanup RUN_ID'",
    )
    group.addoption(
        "--aif-load-workers",
        dest="aif_load_workers",
        metavar="N",
        type=_workers_arg,
        default=None,
        help="Processes that drive each load together (default: ini aif_load_workers, else 1)",
    )
    add_options(group, parser)
    add_history_options(group)
    parser.addini("aif_profile", "Default Slurm profile name or path", default="local")
    parser.addini("aif_load_workers", "Default number of load worker processes", default="1")
    parser.addini("aif_results_dir", "Default results folder", default="aif-results")
    parser.addini("aif_keep_services", "Leave services running after the run", type="bool", default=False)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _results_dir(config: pytest.Config) -> Path:
    value = config.getoption("aif_results_dir") or config.getini("aif_results_dir")
    path = Path(value)
    return path if path.is_absolute() else config.rootpath / path


def _keep(config: pytest.Config) -> bool:
    option = config.getoption("aif_keep_services")
    return bool(option if option is not None else config.getini("aif_keep_services"))


def _load_profile(config: pytest.Config) -> Profile:
    name = config.getoption("aif_profile") or config.getini("aif_profile")
    try:
        return load_profile(name, project_root=config.rootpath)
    except AifError as exc:
        raise pytest.UsageError(f"--aif-profile: {exc}") from None


class XdistHooks:
    """Hands the controller's run id and pid to every pytest-xdist worker."""

    def __init__(self, run: RunContext) -> None:
        self.run = run

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        """Pass the run id and the owner pid to a starting worker."""
        node.workerinput["aif_run_id"] = self.run.run_id
        node.workerinput["aif_owner_pid"] = os.getpid()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    profile = _load_profile(config)
    if _is_worker(config):
        run_id, owner_pid = config.workerinput["aif_run_id"], config.workerinput["aif_owner_pid"]  # type: ignore[attr-defined]
    else:
        run_id, owner_pid = config.getoption("aif_run_id") or new_run_id(), os.getpid()
    run = RunContext.create(run_id, _results_dir(config), profile, owner_pid, _keep(config))
    config.stash[RUN_KEY] = run
    config.stash[ERRORS_KEY] = []
    histories = Histories(config, profile, _results_dir(config), run_id)
    config.stash[HISTORIES_KEY] = histories
    config.pluginmanager.register(histories, "aifactory-histories")
    config.pluginmanager.register(Outcomes(config, profile.vars, histories.regressions), "aifactory-outcomes")
    config.stash[RECORDER_KEY] = Recorder(config, run, _is_worker(config))
    config.pluginmanager.register(config.stash[RECORDER_KEY], "aifactory-recorder")
    if _is_worker(config):
        return
    for variable in ("AIF_S3_ACCESS_KEY", "AIF_S3_SECRET_KEY"):  # the run's local S3 credentials
        os.environ.setdefault(variable, secrets.token_hex(16))
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(run), "aifactory-xdist")
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a CI timeout, scancel of a batch run) takes the Ctrl-C path: teardown runs.
        signal.signal(signal.SIGTERM, _raise_interrupt)
    atexit.register(_cancel_leftovers, run, config.stash[ERRORS_KEY])


def _cancel_leftovers(run: RunContext, errors: list[str]) -> None:
    if not run.services.keep:
        errors += cancel_run_jobs(run.registry, {run.backend.name: run.backend})


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After fixture teardown: cancel whatever the run left (shared services, xdist leftovers)."""
    config = session.config
    if RUN_KEY in config.stash and not _is_worker(config):
        _cancel_leftovers(config.stash[RUN_KEY], config.stash[ERRORS_KEY])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if RUN_KEY not in config.stash:
        return
    run = config.stash[RUN_KEY]
    errors = config.stash[ERRORS_KEY]
    write = terminalreporter.write_line
    if errors:
        terminalreporter.section("aifactory: jobs that could not be cancelled", red=True)
        for line in errors:
            write(line)
        write(f"retry with: aifactory cleanup {run.run_id} --results-dir {run.run_dir.parent}")
    pending = run.registry.pending()
    if run.services.keep and pending:
        terminalreporter.section("aifactory: services left running (--aif-keep-services)")
        for record in pending:
            write(f"{record.service}: {record.backend} job {record.job_id}, folder {record.folder}")
        write(f"stop them with: aifactory cleanup {run.run_id} --results-dir {run.run_dir.parent}")


def _services_of(item: pytest.Item) -> list[RunningService]:
    found: list[RunningService] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, RunningService):
            found.append(value)
        elif isinstance(value, ServiceFactory):
            found += value.services
    return found


def _check_services(item: pytest.Item) -> None:
    manager = item.config.stash[RUN_KEY].services
    for service in _services_of(item):
        try:
            manager.check_alive(service)
        except ServiceDiedError as exc:
            pytest.fail(str(exc), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A service that died during the test fails the test, with its state and logs."""
    try:
        yield
    except BaseException:
        _check_services(item)
        raise
    _check_services(item)
    return None


class ServiceFactory:
    """Callable fixture value: ``aif_service("name", **overrides)`` or ``aif_service(spec)``."""

    def __init__(self, run: RunContext, shared: bool) -> None:
        self._run = run
        self._shared = shared
        self.services: list[RunningService] = []

    def spec(self, service: str | ServiceSpec, **overrides: Any) -> ServiceSpec:
        """The spec a call would start (catalog name under the run's profile, or as given)."""
        if isinstance(service, ServiceSpec):
            return service.with_overrides(**overrides) if overrides else service
        try:
            return build_spec(service, self._run.profile, **overrides)
        except ServiceConfigError as exc:
            raise pytest.UsageError(str(exc)) from None

    def __call__(self, service: str | ServiceSpec, **overrides: Any) -> RunningService:
        """Start (or attach to, when shared) the service and wait until it is ready."""
        spec = self.spec(service, **overrides)
        manager: ServiceManager = self._run.services
        try:
            running = manager.shared(spec) if self._shared else manager.launch(spec)
        except ServiceStartupError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.services.append(running)
        return running

    def close(self) -> None:
        """Stop the private services this factory started."""
        if self._shared:
            return
        for service in self.services:
            self._run.services.stop(service)


@pytest.fixture(scope="session")
def aif_run(pytestconfig: pytest.Config) -> RunContext:
    """The run: id, results folder, profile, job registry and service manager."""
    return pytestconfig.stash[RUN_KEY]


@pytest.fixture(scope="session")
def aif_vars(aif_profile: Profile) -> Callable[[str, Any], Any]:
    """``aif_vars("llm_rates", [1, 2, 4])``: a suite variable from the profile, else the default."""
    return aif_profile.var


@pytest.fixture(scope="session")
def aif_profile(aif_run: RunContext) -> Profile:
    """The Slurm profile of this run (``--aif-profile``)."""
    return aif_run.profile


def _factory(run: RunContext, shared: bool) -> Iterator[ServiceFactory]:
    factory = ServiceFactory(run, shared)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def aif_service(aif_run: RunContext) -> Iterator[ServiceFactory]:
    """Start private services for one test: ``aif_service("http", cpus=2)``; stopped after it."""
    yield from _factory(aif_run, shared=False)


@pytest.fixture(scope="session")
def aif_shared_service(aif_run: RunContext) -> Iterator[ServiceFactory]:
    """Start a service once for the whole run (once across xdist workers); stopped at the end."""
    yield from _factory(aif_run, shared=True)


@pytest.fixture
def aif_load(request: pytest.FixtureRequest, pytestconfig: pytest.Config, aif_run: RunContext) -> Iterator[LoadRunner]:
    """Drive load and get results: ``aif_load.openai(llm_service, rate=20, count=200)``.

    Every result is recorded for the test's ``slo`` marker and the results table. With
    ``nodes=N`` the load runs as N jobs of the profile (client nodes); they are recorded in
    the run's job registry and cancelled if the test ends before they do.
    """
    item = request.node
    option = pytestconfig.getoption("aif_load_workers")
    workers = option if option is not None else _workers_arg(str(pytestconfig.getini("aif_load_workers")))
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    shard_dir = aif_run.run_dir / "load" / f"{item.name}-{os.getpid()}"
    shards: list[JobRecord] = []

    def record(result: LoadResult) -> None:
        item.stash.setdefault(RESULTS_KEY, []).append(result)
        pytestconfig.stash[HISTORIES_KEY].add(item, result)

    def submit(fn: Callable[..., Any], *args: Any) -> Any:
        folder = shard_dir / f"job-{len(shards)}"
        job = aif_run.backend.submit_function(folder, "load-shard", Resources(cpus=2, time_min=60), fn, *args)
        shards.append(JobRecord(aif_run.backend.name, str(job.job_id), "load-shard", folder))
        aif_run.registry.submitted(shards[-1])
        return job

    factories = [progress_printer(reporter, item.name) if reporter is not None else None]
    factories.append(pytestconfig.stash[RECORDER_KEY].progress(item.name))
    progress = _combined([f for f in factories if f is not None])
    yield LoadRunner(on_result=record, progress=progress, workers=workers, submit=submit, shard_dir=shard_dir)
    for shard in shards:
        aif_run.backend.cancel(shard.job_id, shard.folder)
        aif_run.registry.stopped(shard)


ProgressFactory = Callable[[str], Callable[[Progress], None]]


def _combined(factories: list[ProgressFactory]) -> ProgressFactory | None:
    """One progress factory feeding all of ``factories`` (terminal line, live pushes)."""
    if not factories:
        return None

    def factory(label: str) -> Callable[[Progress], None]:
        callbacks = [f(label) for f in factories]

        def update(progress: Progress) -> None:
            for callback in callbacks:
                callback(progress)

        return update

    return factory


def _named(service: str, doc: str) -> Callable[..., RunningService]:
    def fixture(aif_shared_service: ServiceFactory) -> RunningService:
        return aif_shared_service(service)

    fixture.__doc__ = doc
    return fixture


http_service = pytest.fixture(scope="session", name="http_service")(
    _named("http", "The run's static HTTP server (the 'http' service).")
)
synthetic_llm_service = pytest.fixture(scope="session", name="synthetic_llm_service")(
    _named("synthetic-llm", "The run's synthetic OpenAI-compatible server with known timing.")
)
triton_service = pytest.fixture(scope="session", name="triton_service")(
    _named("triton", "The run's Triton server (pytriton on CPU unless the profile gives a model repository).")
)


def _existing(profile: Profile, service: str, setting: str, variable: str) -> str | None:
    value = os.environ.get(variable) or profile.override(service).settings.get(setting)
    return str(value) if value else None


@pytest.fixture(scope="session")
def postgres_service(aif_shared_service: ServiceFactory, aif_profile: Profile) -> RunningService | str:
    """The run's PostgreSQL: started in a job, or an existing server's DSN.

    An existing server comes from ``AIF_POSTGRES_DSN`` (where a password may live) or the
    profile's ``services.postgres.settings.dsn``; one that does not connect fails naming it.
    """
    dsn = _existing(aif_profile, "postgres", "dsn", "AIF_POSTGRES_DSN")
    if dsn is None:
        return aif_shared_service("postgres")
    try:
        connect_check(dsn)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)
    return dsn


@pytest.fixture(scope="session")
def s3_service(aif_shared_service: ServiceFactory, aif_profile: Profile) -> RunningService | str:
    """The run's S3: SeaweedFS in a job, or an existing endpoint (``AIF_S3_ENDPOINT`` or the profile).

    Credentials always come from ``AIF_S3_ACCESS_KEY`` and ``AIF_S3_SECRET_KEY``.
    """
    return _existing(aif_profile, "s3", "endpoint", "AIF_S3_ENDPOINT") or aif_shared_service("s3")


milvus_service = pytest.fixture(scope="session", name="milvus_service")(
    _named("milvus", "The run's Milvus server (milvus-lite locally).")
)
chroma_service = pytest.fixture(scope="session", name="chroma_service")(_named("chroma", "The run's Chroma server."))


@pytest.fixture(scope="session")
def aif_vector_store(aif_shared_service: ServiceFactory, aif_profile: Profile) -> Callable[[str], VectorStore]:
    """``aif_vector_store("milvus")``: a store client on the run's server of that kind.

    FAISS runs in-process (``faiss-gpu``: on the GPUs, on a profile whose FAISS build sees
    them). Qdrant and Weaviate run from container images, or are existing servers given by
    ``AIF_QDRANT_URL`` / ``AIF_WEAVIATE_URL`` or the profile's ``services.NAME.settings.url``;
    on a profile with neither a container runtime nor a URL the test is skipped, saying why.
    """

    def make(name: str, **options: Any) -> VectorStore:
        if name not in VECTOR_STORES:
            raise pytest.UsageError(f"unknown vector store {name!r}; valid: {', '.join(VECTOR_STORES)}")
        if name in ("faiss", "faiss-gpu"):
            device: Literal["cpu", "gpu"] = "gpu" if name == "faiss-gpu" else "cpu"
            if device == "gpu" and faiss_gpus() == 0:
                pytest.skip(
                    "faiss-gpu: this FAISS build sees no GPU here; run pytest on a GPU node "
                    "(e.g. as a Slurm job) with faiss-gpu-cu12 installed"
                )
            return FaissStore(device=device, **options)
        if name in ("qdrant", "weaviate"):
            url = _existing(aif_profile, name, "url", f"AIF_{name.upper()}_URL")
            if url is None:
                if aif_profile.container is None:
                    spec = build_spec(name, aif_profile)
                    pytest.skip(
                        f"{name}: {spec.meta['local_reason']} (profile {aif_profile.name!r}); "
                        f"set AIF_{name.upper()}_URL to use a running server"
                    )
                url = aif_shared_service(name).url()
            return QdrantStore(url=url, **options) if name == "qdrant" else WeaviateStore(url, **options)
        service = aif_shared_service(name)
        if name == "milvus":
            return MilvusStore(f"http://{service.host}:{service.ports['grpc']}", **options)
        return ChromaStore(service.host, service.port, **options)

    return make


@pytest.fixture(scope="session")
def llm_service(aif_shared_service: ServiceFactory, aif_profile: Profile) -> RunningService:
    """The run's LLM server: the profile's ``llm`` service (llama.cpp locally, vLLM on GPU nodes)."""
    return aif_shared_service(aif_profile.llm)
