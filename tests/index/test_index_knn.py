"""kNN graph: exact oracle, approximate recall, dtype/blocking invariance, CSR, I/O, errors."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from subsetlm.index import IndexConfig, KNNGraph, build_index, estimate_recall, knn_graph, resolve_params

from _data import brute_topk, clustered, gaussian

FLAT = IndexConfig(kind="flat")


@pytest.fixture(scope="module")
def small():
    return gaussian(600, 24, seed=1)


@pytest.fixture(scope="module")
def clustered20k():
    return clustered(20_000, d=32, n_centres=200, sigma=0.6, seed=3)[0]


def test_flat_matches_brute_force(small):
    k = 10
    g = knn_graph(small, k=k, cfg=FLAT)
    ids, sims = brute_topk(small, k)
    assert g.neighbors.dtype == np.int32 and g.similarities.dtype == np.float32
    assert g.neighbors.shape == (600, k) and (g.n, g.k) == (600, k)
    for a, b in zip(g.neighbors, ids):
        assert set(a.tolist()) == set(b.tolist())
    np.testing.assert_allclose(g.similarities, sims, atol=1e-5)


def test_self_first_and_rows_sorted(small):
    g = knn_graph(small, k=7, cfg=FLAT)
    assert (g.neighbors[:, 0] == np.arange(600)).all()
    np.testing.assert_allclose(g.similarities[:, 0], 1.0, atol=1e-5)
    assert (np.diff(g.similarities, axis=1) <= 0).all()


def test_duplicates_keep_self_first():
    X = gaussian(50, 8, seed=2)
    X = np.concatenate([X, X])  # row i and i+50 are identical: a tie at sim 1
    g = knn_graph(X, k=3, cfg=FLAT)
    assert (g.neighbors[:, 0] == np.arange(100)).all()
    assert (g.neighbors[:, 1] == (np.arange(100) + 50) % 100).all()


@pytest.mark.parametrize("kind, storage", [("ivf", "fp16"), ("ivf", "float32"), ("hnsw", "fp16")])
def test_approximate_recall(clustered20k, kind, storage):
    X = clustered20k if kind == "ivf" else clustered20k[:10_000]  # HNSW construction is slower
    cfg = IndexConfig(kind=kind, k=16, seed=0, ivf_storage=storage)
    g = knn_graph(X, cfg=cfg)
    assert g.params["kind"] == kind
    assert (g.neighbors == np.arange(len(X))[:, None]).any(axis=1).all()  # self present
    assert (np.diff(g.similarities, axis=1) <= 0).all()
    rec = estimate_recall(X, g, n_queries=300, seed=0)
    assert rec >= 0.9, f"{kind} recall@16 = {rec:.3f}"


def test_ivf_join_recall_and_exact_sims(clustered20k):
    X = clustered20k[:8000]
    g = knn_graph(X, cfg=IndexConfig(kind="ivf", k=16, graph_method="join", nlist=100, nprobe=12))
    assert g.params["method"] == "ivf-join"
    assert (g.neighbors[:, 0] == np.arange(len(X))).all()
    rec = estimate_recall(X, g, n_queries=300)
    assert rec >= 0.9, rec
    # similarities are exact inner products of the listed pairs
    rows = np.arange(0, len(X), 97)
    exact = np.einsum("rkd,rd->rk", X[g.neighbors[rows]], X[rows])
    np.testing.assert_allclose(g.similarities[rows], exact, atol=1e-5)


def test_ivfpq_reranked_sims_are_exact(clustered20k):
    X = clustered20k[:4000]
    g = knn_graph(X, cfg=IndexConfig(kind="ivfpq", k=8, nlist=32, nprobe=12, n_threads=1))
    rows = np.arange(0, len(X), 61)
    exact = np.einsum("rkd,rd->rk", X[g.neighbors[rows]], X[rows])
    np.testing.assert_allclose(g.similarities[rows], exact, atol=1e-5)
    assert estimate_recall(X, g, n_queries=200) >= 0.7


def test_estimate_recall_detects_a_bad_graph(small):
    g = knn_graph(small, k=5, cfg=FLAT)
    assert estimate_recall(small, g, n_queries=100) == 1.0
    bad = KNNGraph(np.roll(g.neighbors, 1, axis=0), g.similarities)
    assert estimate_recall(small, bad, n_queries=100) < 0.5


def test_float16_memmap_equals_float32(tmp_path, small):
    path = tmp_path / "x.npy"
    np.save(path, small.astype(np.float16))
    X16 = np.load(path, mmap_mode="r")
    g16 = knn_graph(X16, k=6, cfg=IndexConfig(kind="flat", block_size=128))
    g32 = knn_graph(X16.astype(np.float32), k=6, cfg=FLAT)
    np.testing.assert_array_equal(g16.neighbors, g32.neighbors)
    np.testing.assert_allclose(g16.similarities, g32.similarities, atol=1e-6)
    g_orig = knn_graph(small, k=6, cfg=FLAT)  # half precision moves sims by < 1e-3
    np.testing.assert_allclose(g16.similarities, g_orig.similarities, atol=2e-3)


@pytest.mark.parametrize("block_size", [1, 37, 600, 5000])
def test_block_size_does_not_change_flat_result(small, block_size):
    ref = knn_graph(small, k=5, cfg=FLAT)
    g = knn_graph(small, k=5, cfg=IndexConfig(kind="flat", block_size=block_size))
    np.testing.assert_array_equal(g.neighbors, ref.neighbors)
    np.testing.assert_allclose(g.similarities, ref.similarities, atol=1e-6)


def test_self_inserted_when_index_misses_it():
    # HNSW with a tiny search breadth can miss a row itself; the graph must still contain it
    X = gaussian(3000, 16, seed=4)
    g = knn_graph(X, k=4, cfg=IndexConfig(kind="hnsw", hnsw_m=4, ef_search=4))
    assert g.params["self_inserted"] > 0  # the case under test actually happened
    assert (g.neighbors == np.arange(3000)[:, None]).any(axis=1).all()
    assert (np.diff(g.similarities, axis=1) <= 0).all()


def test_csr_orientation():
    nb = np.array([[0, 2, -1], [1, 0, 2], [2, 1, -1]], dtype=np.int32)
    sim = np.array([[1.0, 0.5, 0.0], [1.0, 0.4, 0.3], [1.0, 0.2, 0.0]], dtype=np.float32)
    A = KNNGraph(nb, sim).to_csr()
    assert A.shape == (3, 3) and A.dtype == np.float32 and A.nnz == 7
    dense = A.toarray()
    assert dense[0, 2] == pytest.approx(0.5) and dense[2, 0] == 0.0  # row i = neighbours of i
    assert dense[1, 2] == pytest.approx(0.3) and dense[2, 1] == pytest.approx(0.2)
    np.testing.assert_array_equal(A.indptr, [0, 2, 5, 7])


def test_csr_matches_graph(small):
    g = knn_graph(small, k=5, cfg=FLAT)
    A = g.to_csr()
    for i in (0, 17, 599):
        row = A.getrow(i)
        assert dict(zip(row.indices, row.data)) == pytest.approx(dict(zip(g.neighbors[i], g.similarities[i])))


def test_save_load_round_trip(tmp_path, small):
    g = knn_graph(small, k=5, cfg=FLAT)
    out = g.save(tmp_path / "g")
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "manifest.json", "neighbors.npy", "similarities.npy"]
    man = json.loads((out / "manifest.json").read_text())
    assert (man["n"], man["k"], man["kind"]) == (600, 5, "flat")
    for mmap in (True, False):
        h = KNNGraph.load(out, mmap=mmap)
        np.testing.assert_array_equal(h.neighbors, g.neighbors)
        np.testing.assert_array_equal(h.similarities, g.similarities)
    with pytest.raises(FileExistsError):
        g.save(tmp_path / "g")
    g2 = knn_graph(small, k=5, cfg=FLAT)  # same inputs -> byte-identical files
    g2.save(tmp_path / "g2")
    for name in ("neighbors.npy", "similarities.npy", "manifest.json"):
        assert (tmp_path / "g" / name).read_bytes() == (tmp_path / "g2" / name).read_bytes()


def test_load_incomplete_dir_errors(tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(FileNotFoundError, match="subsetlm index"):
        KNNGraph.load(tmp_path / "g")


@pytest.mark.parametrize("k, match", [(0, "positive"), (-3, "positive"), (11, "k=11 > n=10")])
def test_bad_k(k, match):
    with pytest.raises(ValueError, match=match):
        knn_graph(gaussian(10, 4), k=k, cfg=FLAT)


def test_nan_row_is_named():
    X = gaussian(100, 8)
    X[42, 3] = np.nan
    with pytest.raises(ValueError, match=r"row 42 contains NaN.*Fix"):
        knn_graph(X, k=3, cfg=FLAT)


def test_wrong_dtype_and_ndim():
    with pytest.raises(TypeError, match="dtype int64"):
        knn_graph(np.ones((5, 3), dtype=np.int64), k=2)
    with pytest.raises(ValueError, match="ndim=1"):
        knn_graph(np.ones(5, dtype=np.float32), k=2)
    with pytest.raises(TypeError, match="list"):
        knn_graph([[1.0, 0.0]], k=1)


def test_bad_config_field():
    with pytest.raises(ValueError, match="IndexConfig.kind='annoy'"):
        knn_graph(gaussian(10, 4), k=2, cfg=IndexConfig(kind="annoy"))
    with pytest.raises(ValueError, match="IndexConfig.nprobe=0"):
        IndexConfig(nprobe=0).validate()


def test_unnormalised_input_warns_once(caplog):
    X = gaussian(200, 8) * 3.0
    with caplog.at_level(logging.WARNING, logger="subsetlm.index"):
        knn_graph(X, k=3, cfg=FLAT)
    assert sum("not L2-normalised" in r.getMessage() for r in caplog.records) == 1


def test_auto_kind_selection():
    assert resolve_params(1000, 384, IndexConfig())["kind"] == "flat"
    p = resolve_params(1_000_000, 384, IndexConfig(memory_gb=8))
    assert p["kind"] == "ivf" and p["nlist"] == 4000 and p["nprobe"] == 12 and p["train_size"] == 65536
    p = resolve_params(1_000_000, 384, IndexConfig(memory_gb=0.5))
    assert p["kind"] == "ivfpq" and 384 % p["pq_m"] == 0


def test_use_gpu_true_without_gpu_errors():
    from subsetlm.index import num_gpus

    if num_gpus() > 0:
        pytest.skip("a GPU is visible")
    with pytest.raises(ValueError, match="use_gpu=True"):
        knn_graph(gaussian(20, 4), k=2, cfg=IndexConfig(kind="flat", use_gpu=True))


@pytest.mark.gpu
def test_gpu_flat_matches_cpu(small):
    from subsetlm.index import num_gpus

    if num_gpus() == 0:
        pytest.skip("FAISS sees no GPU")
    g = knn_graph(small, k=5, cfg=IndexConfig(kind="flat", use_gpu=True))
    ref = knn_graph(small, k=5, cfg=IndexConfig(kind="flat", use_gpu=False))
    assert g.params["device"] == "gpu"
    np.testing.assert_array_equal(g.neighbors, ref.neighbors)
    np.testing.assert_allclose(g.similarities, ref.similarities, atol=1e-4)


def test_build_index_kinds_and_search(small):
    flat = build_index(small, IndexConfig(kind="flat"))
    assert type(flat).__name__ == "IndexFlatIP" and flat.ntotal == 600
    D, I = flat.search(small[:5], 3)
    np.testing.assert_array_equal(I, brute_topk(small, 3)[0][:5])
    # auto with a tiny memory budget beyond flat_max -> IVF-PQ; a generous one -> IVF (fp16 storage)
    pq = build_index(small, IndexConfig(flat_max=100, memory_gb=1e-6, nlist=8))
    assert "IVFPQ" in type(pq).__name__ and pq.ntotal == 600
    ivf = build_index(small, IndexConfig(flat_max=100, memory_gb=8, nlist=8, nprobe=8))
    assert "ScalarQuantizer" in type(ivf).__name__ and ivf.nprobe == 8
    np.testing.assert_array_equal(ivf.search(small[:5], 3)[1], I)  # nprobe = nlist: exhaustive


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "flat"])
def test_search_on_an_executor_gives_the_same_graph_as_local(tmp_path, kind):
    """The executor path (index saved beside the .npy, read back memory-mapped, 16 blocks per task)."""
    from subsetlm.index.faiss_index import IndexConfig

    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    np.save(tmp_path / "embeddings.npy", X.astype(np.float16))
    Xm = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    cfg = IndexConfig(kind=kind, nlist=16, nprobe=4, train_size=3000, block_size=64) if kind != "flat" \
        else IndexConfig(kind="flat", block_size=64)
    calls = []

    def run(func, tasks):
        calls.append(len(tasks))
        return [func(t) for t in tasks]

    a = knn_graph(Xm, 8, cfg)
    b = knn_graph(Xm, 8, cfg, executor=run)
    assert calls == [3]  # 3000 rows / (16 x 64) -> 3 tasks
    assert np.array_equal(a.neighbors, b.neighbors) and np.array_equal(a.similarities, b.similarities)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npy"]  # the index copy is removed
