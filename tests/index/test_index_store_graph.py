"""Store-level graph and partition caching, on small real embedding stores (``write_store_dir``)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from _data import clustered
from _stores import write_store_dir
from subsetlm._io import dumps_json, sha256_file
from subsetlm.embed import EmbeddingStore
from subsetlm.index import (IndexConfig, KNNGraph, build_store_graph, build_store_partitions,
                            knn_graph, load_store_graph)


@pytest.fixture
def store(tmp_path):
    X = clustered(1500, d=16, n_centres=10, seed=0)[0]
    return EmbeddingStore.open(write_store_dir(tmp_path / "s.store", embeddings=X))


def test_build_then_load(store):
    out = build_store_graph(store, IndexConfig(k=8))
    assert out == store.path / "graphs" / "knn-k8" and (out / "_SUCCESS").exists()
    man = json.loads((out / "manifest.json").read_text())
    assert man["store_fingerprint"] == store.fingerprint and man["config"]["k"] == 8
    g = load_store_graph(store, 8)
    ref = knn_graph(store.embeddings, 8, IndexConfig(kind="flat"))
    np.testing.assert_array_equal(g.neighbors, ref.neighbors)
    # a smaller k is served from the larger graph's first columns
    g4 = load_store_graph(store, 4)
    np.testing.assert_array_equal(g4.neighbors, ref.neighbors[:, :4])


def test_second_call_skips_and_force_rebuilds(store, monkeypatch):
    build_store_graph(store, IndexConfig(k=8))
    import subsetlm.index.store_graph as sg

    calls = []
    real = sg.knn_graph
    monkeypatch.setattr(sg, "knn_graph", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    build_store_graph(store, IndexConfig(k=8))
    assert calls == []
    build_store_graph(store, IndexConfig(k=8), force=True)
    assert calls == [1]
    build_store_graph(store, IndexConfig(k=8, kind="hnsw"))  # other config -> rebuilt
    assert calls == [1, 1]
    assert json.loads((store.path / "graphs/knn-k8/manifest.json").read_text())["kind"] == "hnsw"


def test_approximate_graph_records_recall(store):
    out = build_store_graph(store, IndexConfig(k=8, kind="ivf", nlist=8, nprobe=4), recall_queries=200)
    man = json.loads((out / "manifest.json").read_text())
    assert 0.5 <= man["recall"] <= 1.0 and man["params"]["recall"] == man["recall"]
    assert json.loads((out / "stats.json").read_text())["seconds_total"] >= 0


def test_missing_graph_tells_how_to_build(store):
    with pytest.raises(FileNotFoundError, match=r"subsetlm index .* --k 16"):
        load_store_graph(store, 16)


def test_fingerprint_mismatch(store, caplog):
    build_store_graph(store, IndexConfig(k=8))
    # the store is re-embedded in place: other vectors, a new fingerprint, the old graphs/ kept
    np.save(store.path / "embeddings.npy", clustered(1500, d=16, n_centres=10, seed=1)[0].astype(np.float16))
    man = json.loads((store.path / "manifest.json").read_text())
    man["embedding_fingerprint"] = sha256_file(store.path / "embeddings.npy")
    (store.path / "manifest.json").write_text(dumps_json(man))
    store = EmbeddingStore.open(store.path)
    with pytest.raises(ValueError, match="fingerprint.*--force"):
        load_store_graph(store, 8)
    with caplog.at_level(logging.WARNING, logger="subsetlm.index"):
        build_store_graph(store, IndexConfig(k=8))  # stale graph is rebuilt, not reused
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert isinstance(load_store_graph(store, 8), KNNGraph)


def test_partitions_cached(store, monkeypatch):
    a = build_store_partitions(store, 10, seed=1)
    d = store.path / "partitions" / "kmeans-10-seed1"
    assert (d / "_SUCCESS").exists() and np.load(d / "centroids.npy").shape[1] == 16
    import subsetlm.index.store_graph as sg

    monkeypatch.setattr(sg, "kmeans_partitions", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_array_equal(build_store_partitions(store, 10, seed=1), a)
    assert a.dtype == np.int32 and len(np.unique(a)) == 10


def test_real_embedding_store(small_jsonl, tmp_path):
    """End to end with a real EmbeddingStore (hashing embedder: no model download)."""
    from subsetlm.embed import EmbedConfig, EmbeddingStore, embed_corpus

    embed_corpus(EmbedConfig(inputs=[str(small_jsonl)], out=str(tmp_path / "s"), model="hashing",
                             max_tokens=8, embedder_options={"dim": 16}))
    store = EmbeddingStore.open(tmp_path / "s")
    out = build_store_graph(tmp_path / "s", IndexConfig(k=5))  # a path is opened as a store
    assert out == store.path / "graphs" / "knn-k5"
    g = load_store_graph(store, 5)
    assert g.n == store.n and (g.neighbors[:, 0] == np.arange(store.n)).all()
    ref = knn_graph(store.embeddings, 5, IndexConfig(kind="flat"))
    np.testing.assert_array_equal(g.neighbors, ref.neighbors)
    labels = build_store_partitions(store, 3, seed=0)
    assert labels.shape == (store.n,) and set(np.unique(labels)) <= {0, 1, 2}
