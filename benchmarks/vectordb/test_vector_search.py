"""Vector databases side by side: same dataset, same k, same metric, recall checked."""

from __future__ import annotations

import pytest

from pytest_aifactory.workloads.embeddings import corpus_vectors
from pytest_aifactory.workloads.vectors.datasets import DATASETS, VectorDataset
from pytest_aifactory.workloads.vectors.stores.faiss import GPU_FILTER_UNSUPPORTED

# faiss-gpu runs where pytest runs (a GPU node); qdrant and weaviate need images or AIF_*_URL.
STORES = ["faiss", "faiss-gpu", "milvus", "chroma", "qdrant", "weaviate"]


@pytest.fixture(scope="module")
def dataset(aif_vars):
    return VectorDataset(
        aif_vars("vec_dataset", "clustered", choices=DATASETS),
        count=aif_vars("vec_count", 5000),
        dim=aif_vars("vec_dim", 64),
        queries=aif_vars("vec_queries", 200),
        metric="l2",
    )


@pytest.mark.parametrize("store_name", STORES)
@pytest.mark.slo("error_rate == 0", "recall_at_10 >= {vec_min_recall}", "p99_latency_ms <= {vec_p99_latency_ms}")
def test_search_concurrency_sweep(aif_vector_store, aif_load, aif_run, dataset, store_name, aif_vars):
    """Insert throughput, index build time, then search QPS and recall@10 at rising concurrency."""
    for concurrency in aif_vars("vec_concurrency", [1, 4]):
        aif_load.vector_search(
            aif_vector_store(store_name),
            dataset,
            k=10,
            concurrency=concurrency,
            count=aif_vars("vec_searches", 400),
            cache_dir=aif_run.run_dir.parent / "cache",
            label=f"{store_name} concurrency={concurrency}",
        )


@pytest.mark.parametrize("store_name", STORES)
@pytest.mark.slo("error_rate == 0", "recall_at_10 >= {vec_min_recall}")
def test_search_open_loop(aif_vector_store, aif_load, aif_run, dataset, store_name, aif_vars):
    """Searches at a set arrival rate: latency from the scheduled time (VectorDBBench lacks this)."""
    aif_load.vector_search(
        aif_vector_store(store_name),
        dataset,
        k=10,
        rate=aif_vars("vec_rate", 100),
        count=aif_vars("vec_searches", 400),
        cache_dir=aif_run.run_dir.parent / "cache",
    )


@pytest.mark.parametrize("store_name", STORES)
@pytest.mark.slo("error_rate == 0", "recall_at_10 >= {vec_min_recall}")
def test_filtered_search(aif_vector_store, aif_load, aif_run, dataset, store_name, aif_vars):
    """Search within one category (a tenth of the data), scored against filtered ground truth."""
    if store_name == "faiss-gpu":
        pytest.skip(GPU_FILTER_UNSUPPORTED)
    aif_load.vector_search(
        aif_vector_store(store_name),
        dataset,
        k=10,
        filtered=True,
        concurrency=2,
        count=aif_vars("vec_searches", 400),
        cache_dir=aif_run.run_dir.parent / "cache",
    )


@pytest.mark.parametrize("store_name", STORES)
@pytest.mark.slo("error_rate == 0", "recall_at_10 >= {vec_min_recall}")
def test_search_real_data(aif_vector_store, aif_load, aif_run, store_name):
    """A small real dataset (scikit-learn's handwritten digits): real data has ties and duplicates."""
    aif_load.vector_search(
        aif_vector_store(store_name),
        VectorDataset("digits", count=1597, dim=64, queries=200),
        k=10,
        concurrency=2,
        count=200,
        cache_dir=aif_run.run_dir.parent / "cache",
    )


@pytest.mark.parametrize("store_name", STORES)
@pytest.mark.slo("error_rate == 0", "recall_at_10 >= {vec_min_recall}")
def test_search_real_embeddings(aif_vector_store, aif_load, aif_run, embedding_service, store_name):
    """Real embeddings (all-MiniLM-L6-v2, 384 wide) of a real text corpus: 331 documents, 100 as queries."""
    cache = aif_run.run_dir.parent / "cache"
    aif_load.vector_search(
        aif_vector_store(store_name),
        VectorDataset(
            "embedded", count=331, dim=384, queries=100, source=str(corpus_vectors(embedding_service, cache))
        ),
        k=10,
        concurrency=2,
        count=200,
        cache_dir=cache,
    )


@pytest.mark.parametrize("store_name", STORES)
@pytest.mark.slo("error_rate == 0", "capacity_rate >= {vec_min_capacity_qps}")
def test_search_capacity_under_slo(aif_vector_store, aif_load, aif_run, dataset, store_name, aif_vars):
    """The highest search rate (QPS) at which p99 latency holds with recall@10 above its floor."""
    if store_name not in aif_vars("vec_capacity_stores", ["faiss"]):
        pytest.skip(f"{store_name} is not in the profile's vec_capacity_stores")
    aif_load.capacity(
        "rate",
        aif_load.vector_search,
        aif_vector_store(store_name),
        dataset,
        slo=[
            f"p99_latency_ms <= {aif_vars('vec_p99_latency_ms', 200)}",
            f"recall_at_10 >= {aif_vars('vec_min_recall', 0.9)}",
        ],
        low=aif_vars("vec_capacity_low", 50),
        precision=0.25,
        budget_s=aif_vars("vec_capacity_budget_s", 15),
        k=10,
        duration_s=aif_vars("vec_capacity_probe_s", 1.5),
        warmup=5,
        cache_dir=aif_run.run_dir.parent / "cache",
    )
