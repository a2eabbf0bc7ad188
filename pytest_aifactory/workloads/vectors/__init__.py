"""Vector search: seeded datasets, exact ground truth (FAISS flat, cached), stores, recall.

The same dataset, the same k and the same metric for Milvus, Chroma, FAISS, Qdrant and
Weaviate, so that they compare side by side; filtered search (an integer ``category``
attribute, ``id % 10``) with its own exact ground truth. Every search request records its
recall@k against the ground truth (a neighbour as near as the k-th true one counts: ties are
not misses); the result reports the mean (``recall_at_K``) and the worst query
(``min_recall_at_K``).

Modules: ``datasets`` (datasets, ground truth), ``stores`` (the ``VectorStore`` protocol in
``stores.base``, one module per database), ``search`` (loading, the search client, recall).
"""

__all__: list[str] = []
