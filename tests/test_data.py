"""Data workloads against real servers: wrong answers are caught, bad input is named."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_pytest
from qdrant_receiver import VERSION as QDRANT_VERSION
from qdrant_receiver import QdrantReceiver
from weaviate_receiver import WeaviateReceiver

from pytest_aifactory.core.profiles import load_profile
from pytest_aifactory.services.catalog import build_spec
from pytest_aifactory.services.connect import dsn_of, s3_client_for
from pytest_aifactory.services.readiness import milvus_ready
from pytest_aifactory.workloads.files import FioJob, direct_io_supported, run_fio
from pytest_aifactory.workloads.runner import LoadRunner
from pytest_aifactory.workloads.s3 import object_bytes, parse_size
from pytest_aifactory.workloads.sql import connect_check, redact_dsn
from pytest_aifactory.workloads.vectors.datasets import VectorDataset
from pytest_aifactory.workloads.vectors.search import SearchClient
from pytest_aifactory.workloads.vectors.stores.faiss import FaissStore, faiss_gpus
from pytest_aifactory.workloads.vectors.stores.milvus import MilvusStore
from pytest_aifactory.workloads.vectors.stores.qdrant import QdrantStore
from pytest_aifactory.workloads.vectors.stores.weaviate import WeaviateStore

pytestmark = pytest.mark.timeout(300)


def test_corrupted_s3_object_is_an_error(s3_service) -> None:  # type: ignore[no-untyped-def]
    runner = LoadRunner()
    runner.s3(s3_service, op="put", size="64KiB", objects=4, concurrency=2, count=4)
    client = s3_client_for(s3_service.url(port="s3").rstrip("/"))
    key = "obj-65536-000002"
    body = bytearray(object_bytes(key, 65536))
    body[1000] ^= 0xFF  # one wrong byte, same length
    client.put_object(Bucket="aif-bench", Key=key, Body=bytes(body))
    result = runner.s3(s3_service, op="get", size="64KiB", objects=4, concurrency=2, count=40)
    records = result.records
    bad = [r for r in records if r.error]
    assert bad, "the corrupted object was never detected"
    assert all(r.error == f"checksum mismatch on GET {key} (65536 bytes)" for r in bad)
    assert all("mib" not in r.extra for r in bad)
    assert 0 < result.metrics()["error_rate"] < 1


def test_s3_credentials_stay_out_of_results(s3_service) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    result = LoadRunner().s3(s3_service, op="put", size="4KiB", concurrency=1, count=2)
    text = json.dumps(result.to_json(with_records=True))
    assert os.environ["AIF_S3_SECRET_KEY"] not in text
    assert os.environ["AIF_S3_ACCESS_KEY"] not in text


def test_recall_slo_fails_for_a_store_returning_wrong_neighbours(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_aifactory.workloads.vectors.datasets import VectorDataset
        from pytest_aifactory.workloads.vectors.stores.faiss import FaissStore

        class Shifted(FaissStore):
            def search(self, vector, k, category=None):
                return [i + 1 for i in super().search(vector, k, category)]  # plausible ids, wrong ones

        @pytest.mark.slo("recall_at_10 >= 0.95")
        def test_wrong(aif_load, tmp_path):
            data = VectorDataset("random", count=2000, dim=16, queries=50)
            aif_load.vector_search(Shifted("Flat"), data, k=10, concurrency=2, count=50, cache_dir=tmp_path)

        @pytest.mark.slo("recall_at_10 >= 0.95", "min_recall_at_10 == 1")
        def test_right(aif_load, tmp_path):
            data = VectorDataset("random", count=2000, dim=16, queries=50)
            store = FaissStore(index_type="Flat")
            aif_load.vector_search(store, data, k=10, concurrency=2, count=50, cache_dir=tmp_path)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*1 SLO breach(es):", "*  recall_at_10=0, expected >= 0.95"])


def test_ground_truth_is_exact_and_cached(tmp_path: Path) -> None:
    import numpy as np

    data = VectorDataset("clustered", count=500, dim=8, queries=20)
    truth = data.ground_truth(5, tmp_path)
    base, queries = data.base(), data.query_vectors()
    brute = np.argsort(((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1), axis=1)[:, :5]
    assert (truth == brute).mean() > 0.99  # ties aside
    assert len(list(tmp_path.glob("gt-*.npy"))) == 1
    assert (data.ground_truth(5, tmp_path) == truth).all()


def test_unknown_dataset_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'sift1m'; valid datasets: random, clustered, digits"):
        VectorDataset("sift1m", count=10, dim=4)
    with pytest.raises(ValueError, match=r"dataset 'digits' has 1797 vectors of dim 64: asked for dim 32"):
        VectorDataset("digits", count=1000, dim=32)


def test_digits_is_real_data_split_into_base_and_queries(tmp_path: Path) -> None:
    data = VectorDataset("digits", count=1597, dim=64, queries=200)
    base, queries = data.base(), data.query_vectors()
    assert base.shape == (1597, 64)
    assert queries.shape == (200, 64)
    assert set(np.unique(base).tolist()) <= set(range(17))  # 4x4 blocks of an 8x8 image: counts 0-16
    assert not (queries[:, None, :] == base[None, :, :]).all(axis=2).all(axis=1).any()  # no query is a base row
    result = LoadRunner().vector_search(
        FaissStore(index_type="Flat"), data, k=10, concurrency=1, count=200, cache_dir=tmp_path
    )
    assert result.metrics()["min_recall_at_10"] == 1.0


def test_recall_counts_ties_and_respects_the_filter() -> None:
    """An equally near neighbour is not a miss; a neighbour outside the category is."""
    base = np.array([[0.0], [2.0], [-2.0], [9.0], [0.5]], dtype=np.float32)
    queries = np.array([[0.0]], dtype=np.float32)
    client = SearchClient(FaissStore(), queries, np.array([[0, 4, 1]]), k=3, threads=1, base=base, metric="l2")
    assert client.recall(0, [0, 4, 1]) == 1.0
    assert client.recall(0, [0, 4, 2]) == 1.0  # -2 is as near as 2
    assert client.recall(0, [0, 4, 3]) == pytest.approx(2 / 3)
    assert client.recall(0, [0, 0, 0]) == pytest.approx(1 / 3)  # repeats count once
    filtered = SearchClient(
        FaissStore(), queries, np.array([[2, 1, 3]]), k=3, threads=1, base=base, metric="l2", categories=[2]
    )
    assert filtered.recall(0, [2]) == pytest.approx(1 / 3)
    assert filtered.recall(0, [0, 4, 1]) == 0.0  # nearer, but not in category 2


def test_fio_block_size_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=re.escape("block size '4kb': expected a number of bytes with an optional k, m or g")
    ):
        FioJob("read", bs="4kb")
    if not direct_io_supported(tmp_path):
        pytest.skip("O_DIRECT is not supported here, so fio accepts unaligned blocks")
    with pytest.raises(ValueError, match=r"fio refused block size 3000 .*direct=1"):
        run_fio(FioJob("read", bs="3000", size="1M", runtime_s=1), tmp_path)


def test_fio_result_and_cached_label(tmp_path: Path) -> None:
    result = run_fio(FioJob("randread", bs="4k", size="4M", runtime_s=1), tmp_path)
    assert result.metrics()["iops"] > 0
    assert result.metrics()["p99_latency_ms"] > 0
    assert result.config["cached"] is not direct_io_supported(tmp_path)
    assert result.label.endswith("(cached)") is result.config["cached"]
    assert list(tmp_path.iterdir()) == []  # fio's files are removed


def test_dsn_that_does_not_connect_names_it_without_password() -> None:
    dsn = "postgresql://aif:hunter2@127.0.0.1:1/postgres"
    with pytest.raises(
        ValueError, match=re.escape("cannot connect to PostgreSQL at postgresql://aif:***@127.0.0.1:1/postgres")
    ) as info:
        connect_check(dsn)
    assert "hunter2" not in str(info.value)
    assert redact_dsn("postgresql://u@h/db") == "postgresql://u@h/db"


def test_postgres_transactions_keep_the_books(postgres_service) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    result = LoadRunner().sql(postgres_service, mode="tpcb", scale=1, concurrency=4, count=200)
    assert result.metrics()["completed"] == 200
    with psycopg.connect(dsn_of(postgres_service)) as conn:
        history = conn.execute("SELECT count(*), sum(delta) FROM pgbench_history").fetchone()
        accounts = conn.execute("SELECT sum(abalance) FROM pgbench_accounts").fetchone()
        branches = conn.execute("SELECT sum(bbalance) FROM pgbench_branches").fetchone()
    assert history is not None
    assert accounts is not None
    assert branches is not None
    assert history[0] >= 200
    assert accounts[0] == history[1] == branches[0]  # every transaction applied whole


def test_size_parsing() -> None:
    assert parse_size("4KiB") == 4096
    assert parse_size("256MiB") == 256 << 20
    assert parse_size(10) == 10
    with pytest.raises(ValueError, match="object size '4 parsecs'"):
        parse_size("4 parsecs")


def test_metadata_load(tmp_path: Path) -> None:
    result = LoadRunner().metadata(tmp_path, files_count=200, threads=2)
    m = result.metrics()
    assert min(m["create_s"], m["stat_s"], m["remove_s"]) > 0
    assert m["requests"] == 600
    assert list(tmp_path.iterdir()) == []


def test_faiss_store_is_exact_with_flat_index(tmp_path: Path) -> None:
    data = VectorDataset("random", count=1000, dim=8, queries=30)
    result = LoadRunner().vector_search(
        FaissStore(index_type="Flat"), data, k=10, concurrency=1, count=30, cache_dir=tmp_path
    )
    assert result.metrics()["recall_at_10"] == 1.0
    assert result.metrics()["insert_vec_s"] > 0


def test_existing_postgres_by_dsn(pytester: pytest.Pytester, postgres_service) -> None:  # type: ignore[no-untyped-def]
    """AIF_POSTGRES_DSN points the suite at a server it did not start."""
    dsn = dsn_of(postgres_service)
    pytester.makepyfile(
        f"""
        def test_existing(postgres_service, aif_load, aif_run):
            assert postgres_service == {dsn!r}
            result = aif_load.sql(postgres_service, mode="select", scale=1, concurrency=2, count=50)
            assert result.completed == 50
            assert not aif_run.registry.records()  # no service job was started
        """
    )
    done = run_pytest(pytester.path, env={"AIF_POSTGRES_DSN": dsn})
    assert done.returncode == 0, done.stdout[-2000:]
    bad = run_pytest(pytester.path, env={"AIF_POSTGRES_DSN": "postgresql://aif:pw-not-shown@127.0.0.1:1/postgres"})
    assert bad.returncode == 1
    assert "cannot connect to PostgreSQL at postgresql://aif:***@127.0.0.1:1/postgres" in bad.stdout
    assert "pw-not-shown" not in bad.stdout


def test_filtered_search_has_its_own_ground_truth(tmp_path: Path) -> None:
    data = VectorDataset("clustered", count=2000, dim=8, queries=40)
    truth = data.ground_truth(10, tmp_path, filtered=True)
    categories = data.categories()
    assert all((categories[truth[q]] == data.query_category(q)).all() for q in range(40))
    assert not (truth == data.ground_truth(10, tmp_path)).all()
    result = LoadRunner().vector_search(
        FaissStore(index_type="Flat"), data, k=10, filtered=True, concurrency=1, count=40, cache_dir=tmp_path
    )
    assert result.metrics()["recall_at_10"] == 1.0
    assert result.config["filtered"] is True


def test_qdrant_store_against_qdrant_client_local_mode(tmp_path: Path) -> None:
    """The Qdrant store's calls, checked against qdrant-client's in-process implementation (no server here)."""

    data = VectorDataset("clustered", count=1000, dim=8, queries=30)
    for filtered in (False, True):
        store = QdrantStore(location=":memory:")
        result = LoadRunner().vector_search(
            store, data, k=10, filtered=filtered, concurrency=1, count=30, cache_dir=tmp_path
        )
        assert result.metrics()["recall_at_10"] >= 0.99, filtered  # exact search in local mode
        assert result.metrics()["error_rate"] == 0


def test_faiss_ivf_trains_at_build_and_gpu_is_refused_without_gpus(tmp_path: Path) -> None:
    """IVF indexes train on the inserted vectors; nprobe trades recall; no GPU: a clear error."""
    data = VectorDataset("clustered", count=3000, dim=16, queries=50)

    def recall(store: FaissStore, filtered: bool = False) -> float:
        result = LoadRunner().vector_search(
            store, data, k=10, filtered=filtered, concurrency=1, count=50, cache_dir=tmp_path
        )
        assert result.metrics()["error_rate"] == 0
        return float(result.metrics()["recall_at_10"])

    assert recall(FaissStore(index_type="IVF32,Flat", nprobe=32)) == 1.0  # every list probed: exact
    assert recall(FaissStore(index_type="IVF32,Flat", nprobe=32), filtered=True) == 1.0
    assert recall(FaissStore(index_type="IVF32,Flat", nprobe=1)) < 1.0
    with pytest.raises(ValueError, match="FAISS device 'tpu'; valid: cpu, gpu"):
        FaissStore(device="tpu")  # type: ignore[arg-type]
    if faiss_gpus() == 0:
        with pytest.raises(RuntimeError, match="FAISS device 'gpu': this FAISS build sees no GPU"):
            FaissStore(device="gpu").create(16, "l2")


def test_faiss_gpu_path_with_the_gpu_copy_stubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path (exact Flat by default, copied to the GPUs) with the copy made a no-op: no GPU here."""
    import faiss

    from pytest_aifactory.workloads.vectors.stores import faiss as faiss_store

    copies: list[object] = []
    monkeypatch.setattr(faiss_store, "faiss_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: copies.append(index) or index, raising=False)
    data = VectorDataset("clustered", count=2000, dim=16, queries=30)
    store = FaissStore(device="gpu")
    result = LoadRunner().vector_search(store, data, k=10, concurrency=1, count=30, cache_dir=tmp_path)
    assert result.metrics()["recall_at_10"] == 1.0
    assert store.name == "faiss-gpu"
    assert len(copies) == 1
    store.create(16, "l2")
    with pytest.raises(RuntimeError, match="FAISS GPU indexes ignore IDSelector filters"):
        store.search(data.query_vectors()[0], 10, category=3)


@pytest.fixture
def weaviate() -> Iterator[WeaviateReceiver]:
    receiver = WeaviateReceiver()
    yield receiver
    receiver.close()


def test_weaviate_store_speaks_the_documented_api(weaviate: WeaviateReceiver, tmp_path: Path) -> None:
    """Schema, batch import and GraphQL nearVector (plain and filtered), against a strict receiver."""
    data = VectorDataset("clustered", count=2000, dim=16, queries=40, metric="cosine")
    for filtered in (False, True):
        result = LoadRunner().vector_search(
            WeaviateStore(weaviate.url), data, k=10, filtered=filtered, concurrency=2, count=40, cache_dir=tmp_path
        )
        assert result.metrics()["recall_at_10"] == 1.0, filtered  # the receiver searches exactly
        assert result.metrics()["error_rate"] == 0
    assert weaviate.errors == []
    assert ("POST", "/v1/batch/objects") in weaviate.requests
    assert weaviate.classes == {}  # dropped at the end
    bad = WeaviateStore(weaviate.url, collection="lowercase")
    with pytest.raises(RuntimeError, match=r"HTTP 422: .*'lowercase' is not a valid class name"):
        LoadRunner().vector_search(bad, data, k=10, concurrency=1, count=1, cache_dir=tmp_path)
    assert bad._client.is_closed  # a store whose load failed is still dropped

    store = WeaviateStore(weaviate.url, index_type="flat")
    store.create(16, "l2")
    assert weaviate.classes["AifBench"].schema["vectorIndexConfig"] == {"distance": "l2-squared"}
    ids, categories = np.arange(3, dtype=np.int64), np.zeros(3, dtype=np.int64)
    store.insert(ids, np.ones((3, 16), dtype=np.float32), categories)
    with pytest.raises(RuntimeError, match=r"weaviate refused object .*vector with length 8"):
        store.insert(ids + 3, np.ones((3, 8), dtype=np.float32), categories)
    weaviate.classes.clear()
    with pytest.raises(RuntimeError, match='weaviate GraphQL: Cannot query field "AifBench"'):
        store.search(np.ones(16, dtype=np.float32), 10)
    store.drop()


@pytest.fixture
def qdrant() -> Iterator[QdrantReceiver]:
    receiver = QdrantReceiver()
    yield receiver
    receiver.close()


def test_qdrant_store_speaks_the_rest_api(qdrant: QdrantReceiver, tmp_path: Path) -> None:
    """The Qdrant store through qdrant-client's REST path, against a strict stand-in of the server."""
    assert build_spec("qdrant", load_profile("meluxina-cpu")).image == f"docker://qdrant/qdrant:v{QDRANT_VERSION}"
    data = VectorDataset("clustered", count=2000, dim=16, queries=40)
    for filtered in (False, True):
        result = LoadRunner().vector_search(
            QdrantStore(url=qdrant.url), data, k=10, filtered=filtered, concurrency=2, count=40, cache_dir=tmp_path
        )
        assert result.metrics()["recall_at_10"] == 1.0, filtered
        assert result.metrics()["error_rate"] == 0
    assert qdrant.errors == []
    assert ("PUT", "/collections/aif_bench/index") in qdrant.requests  # the category filter is indexed
    assert qdrant.collections == {}


def test_vector_suite_on_existing_qdrant_and_weaviate(
    qdrant: QdrantReceiver, weaviate: WeaviateReceiver, tmp_path: Path
) -> None:
    """AIF_QDRANT_URL / AIF_WEAVIATE_URL point the shipped suite at servers it did not start."""
    root = Path(__file__).resolve().parent.parent
    env = {"AIF_QDRANT_URL": qdrant.url, "AIF_WEAVIATE_URL": weaviate.url}
    done = run_pytest(
        root,
        "benchmarks/vectordb",
        "-k",
        "(qdrant or weaviate) and not real_embeddings and not capacity",
        f"--aif-results-dir={tmp_path}",
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert re.search(r"8 passed, \d+ deselected", done.stdout), done.stdout[-2000:]
    for name in ("qdrant", "weaviate"):
        assert f"{name} concurrency=4" in done.stdout
    assert qdrant.errors == []
    assert weaviate.errors == []


def test_milvus_index_choice_is_applied(milvus_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The index named is the index built: FLAT is exact, IVF with one probed list of 64 is not."""

    uri = f"http://{milvus_service.host}:{milvus_service.ports['grpc']}"
    data = VectorDataset("clustered", count=3000, dim=16, queries=40)

    def run(filtered: bool = False, **options: Any) -> dict[str, float]:
        store = MilvusStore(uri, **options)
        result = LoadRunner().vector_search(
            store, data, k=10, filtered=filtered, concurrency=2, count=40, cache_dir=tmp_path
        )
        assert result.metrics()["error_rate"] == 0
        return result.metrics()

    assert run(index_type="FLAT")["recall_at_10"] == 1.0
    assert run(filtered=True, index_type="FLAT")["recall_at_10"] == 1.0
    coarse = run(index_type="IVF_FLAT", index_params={"nlist": 64}, search_params={"nprobe": 1})
    assert coarse["recall_at_10"] < 0.9
    assert coarse["index_build_s"] > 0


def _open_grpc_channels() -> set[int]:
    """The gRPC channels of this process that are still open."""
    import grpc._channel

    gc.collect()
    found = set()
    for thing in gc.get_objects():
        if isinstance(thing, grpc._channel.Channel):
            try:
                thing._channel.check_connectivity_state(False)
            except ValueError:  # "Channel closed!"
                continue
            found.add(id(thing))
    return found


def test_milvus_clients_close_their_channels(milvus_service) -> None:  # type: ignore[no-untyped-def]
    """The readiness check (run when the service started) and a store leave no gRPC channel open:
    pymilvus 3 would keep a shared one per URI open for the process's life, pinging the server
    after it stopped. (No other client of this suite speaks gRPC from the test process.)"""
    assert milvus_ready(milvus_service) is None
    store = MilvusStore(f"http://{milvus_service.host}:{milvus_service.ports['grpc']}")
    store.create(dim=4, metric="l2")
    store.drop()  # (drops the collection and closes the client)
    assert _open_grpc_channels() == set()
