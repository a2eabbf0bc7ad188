"""The loads of each service family, as ``aif_load`` methods: LLM, Triton, PostgreSQL, S3, vector search, files.

``LoadRunner`` inherits these; each builds its client and workload and hands them to
``LoadRunner.run`` (or records a result measured by an outside tool, fio).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pytest_aifactory.core.metrics import LoadResult
from pytest_aifactory.load.engine import LoadPlan, RequestClient, Workload
from pytest_aifactory.services.connect import dsn_of
from pytest_aifactory.services.spec import RunningService
from pytest_aifactory.workloads import files, s3, sql
from pytest_aifactory.workloads.energy import REQUESTS, TOKENS
from pytest_aifactory.workloads.plans import make_plan, plan_label
from pytest_aifactory.workloads.production_loads import openai_client, watching
from pytest_aifactory.workloads.prompts import prompts_from_spec
from pytest_aifactory.workloads.triton import RandomTensors, TritonGenerateClient, TritonInferClient
from pytest_aifactory.workloads.vectors.datasets import VectorDataset
from pytest_aifactory.workloads.vectors.search import QueryIndices, SearchClient, load_store
from pytest_aifactory.workloads.vectors.stores.base import VectorStore

__all__ = ["ServiceLoads", "service_identity"]


class _Runner(Protocol):
    run: Callable[..., LoadResult]
    record: Callable[[LoadResult], LoadResult]

    def openai(self, service: RunningService | str, **kwargs: Any) -> LoadResult: ...


class ServiceLoads:
    """One method per service family's load."""

    def openai(
        self: _Runner,
        service: RunningService | str,
        *,
        api: Literal["completions", "chat"] = "completions",
        prompts: str = "synthetic:in=128,out=64",
        model: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        label: str | None = None,
        workers: int | None = None,
        goodput: Mapping[str, float] | None = None,
        nodes: int = 1,
        **plan: Any,
    ) -> LoadResult:
        """Stream completions from an OpenAI-compatible server (a service or a base URL)."""
        client = openai_client(service, api, model, extra_body)
        seed = int(plan.get("seed", 0))
        return self.run(
            client,
            prompts_from_spec(prompts, seed),
            make_plan(**plan),
            label=label,
            workers=workers,
            goodput=goodput,
            nodes=nodes,
            config=service_identity(service),
            **watching(service, TOKENS),
        )

    def openai_chat(self: _Runner, service: RunningService | str, **kwargs: Any) -> LoadResult:
        """``openai(..., api="chat")``: ``/v1/chat/completions``."""
        return self.openai(service, api="chat", **kwargs)

    def triton_infer(
        self: _Runner,
        service: RunningService,
        *,
        protocol: Literal["http", "grpc"] = "http",
        model: str | None = None,
        batch: int = 1,
        label: str | None = None,
        workers: int | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Tensor ``infer`` requests (random FP32 inputs) to a Triton model over HTTP or gRPC."""
        meta = service.spec.meta
        address = f"{service.host}:{service.ports[protocol]}"
        client = TritonInferClient(address, model or meta["infer_model"], protocol)
        tensors = RandomTensors(int(meta.get("dim", "256")), batch, int(plan.get("seed", 0)))
        return self.run(client, tensors, make_plan(**plan), label=label, workers=workers, **watching(service, REQUESTS))

    def triton_generate(
        self: _Runner,
        service: RunningService,
        *,
        prompts: str = "synthetic:in=32,out=16",
        model: str | None = None,
        label: str | None = None,
        workers: int | None = None,
        goodput: Mapping[str, float] | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Triton's ``generate_stream`` (one event per token)."""
        client = TritonGenerateClient(service.url(), model or service.spec.meta["generate_model"])
        workload = prompts_from_spec(prompts, int(plan.get("seed", 0)))
        return self.run(
            client,
            workload,
            make_plan(**plan),
            label=label,
            workers=workers,
            goodput=goodput,
            **watching(service, TOKENS),
        )

    def sql(
        self: _Runner,
        service: RunningService | str,
        *,
        mode: Literal["tpcb", "select"] = "tpcb",
        scale: int = 1,
        connections: int | None = None,
        label: str | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Pgbench's TPC-B-like transaction or point selects on PostgreSQL (a service or a DSN).

        The pool has ``connections`` connections (default: the concurrency); the tables are
        created at ``scale`` first if they are not there.
        """
        dsn = dsn_of(service) if isinstance(service, RunningService) else service
        load = make_plan(**plan)
        sql.init_tpcb(dsn, scale)
        pool = connections or load.concurrency or 8
        client = sql.PostgresClient(dsn, pool, mode)
        workload = sql.TpcbWorkload(scale, mode, int(plan.get("seed", 0)))
        return _data_load(self, service, client, workload, load, label or f"{mode} {plan_label(load)}", "transaction")

    def s3(
        self: _Runner,
        service: RunningService | str,
        *,
        op: Literal["put", "get", "mixed", "list"] = "get",
        size: str | int = "64KiB",
        objects: int = 64,
        bucket: str = "aif-bench",
        label: str | None = None,
        **plan: Any,
    ) -> LoadResult:
        """PUT / GET / mixed / LIST on S3 (a service or an endpoint URL); GETs are checked byte for byte."""
        endpoint = service.url(port="s3").rstrip("/") if isinstance(service, RunningService) else service
        nbytes = s3.parse_size(size)
        load = make_plan(**plan)
        client = s3.S3Client(endpoint, bucket, nbytes, threads=load.concurrency or 16)
        if op in ("get", "mixed", "list"):
            client.upload_objects(objects)  # not prepare(): that name is the engine's PreparingClient hook
        workload = s3.ObjectOps(op, nbytes, objects, seed=int(plan.get("seed", 0)))
        return _data_load(self, service, client, workload, load, label or f"{op} {size} {plan_label(load)}", "gib")

    def vector_search(
        self: _Runner,
        store: VectorStore,
        dataset: VectorDataset,
        *,
        k: int = 10,
        cache_dir: Path,
        filtered: bool = False,
        label: str | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Load ``dataset`` into ``store`` (timed), then search it under ``plan``, scoring recall@k.

        ``filtered``: every search keeps to one category (the query number modulo 10).
        """
        load = make_plan(**plan)
        truth = dataset.ground_truth(k, cache_dir, filtered)
        categories = [dataset.query_category(q) for q in range(dataset.queries)] if filtered else None
        base = dataset.base()
        client = SearchClient(
            store,
            dataset.query_vectors(),
            truth,
            k,
            threads=load.concurrency or 8,
            base=base,
            metric=dataset.metric,
            categories=categories,
        )
        try:
            loading = load_store(store, dataset, base)
            result = self.run(
                client,
                QueryIndices(dataset.queries),
                load,
                label=label or f"{store.name}{' filtered' if filtered else ''} {plan_label(load)}",
                workers=1,
                config={**dataset.describe(), "store": store.name},
                scalars=loading,
                energy=(store.service or store.name, ("query",)),
            )
        finally:
            store.drop()
        return result

    def fio(self: _Runner, job: files.FioJob, directory: Path) -> LoadResult:
        """One fio job in ``directory`` (O_DIRECT where supported)."""
        return self.record(files.run_fio(job, directory))

    def metadata(self: _Runner, directory: Path, files_count: int = 2000, threads: int = 4) -> LoadResult:
        """Create, stat and remove files per second in ``directory`` (mdtest-style)."""
        return self.record(files.metadata_load(directory, files_count, threads))


def service_identity(service: RunningService | str) -> dict[str, Any]:
    """The service's name, version and image, which runs must share to be compared."""
    if not isinstance(service, RunningService):
        return {}
    spec = service.spec
    return {"service": spec.name, "service_version": spec.meta.get("version"), "service_image": spec.image}


def _data_load(
    runner: _Runner,
    service: RunningService | str,
    client: RequestClient,
    workload: Workload,
    load: LoadPlan,
    label: str,
    unit: str,
) -> LoadResult:
    """A load on a data service in this process: the service in its configuration, energy per ``unit``."""
    return runner.run(
        client, workload, load, label=label, workers=1, config=service_identity(service), energy=(service, (unit,))
    )
