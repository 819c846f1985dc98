"""The blocked kNN (bfloat16 / float32 products, k' candidates re-scored exactly) against brute force."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from subsetlm.index import IndexConfig, build_store_graph, knn_graph
from subsetlm.index import blocked
from subsetlm.index.blocked import blocked_knn
from subsetlm.index.faiss_index import resolve_graph_params
from subsetlm.index.ivf_blocked import choose_nprobe, ivf_blocked_knn

from _data import brute_topk, clustered, gaussian

FLAT = IndexConfig(kind="flat")
BLOCKED = IndexConfig(graph_method="blocked")


@pytest.fixture(scope="module")
def small():
    return gaussian(700, 24, seed=5)


@pytest.fixture(scope="module")
def tied():
    """Clustered rows plus exact duplicates (40 copies of one row: more than k' = k + 16; 3 of another)
    and all-zero rows."""
    X, _ = clustered(900, d=16, n_centres=30, sigma=0.5, seed=2)
    X[100:140] = X[99]
    X[500:503] = X[7]
    X[600:605] = 0.0  # all-zero rows: every similarity 0, a tie across all rows
    return X


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_blocked_equals_brute_force(small, precision):
    k = 12
    nb, sims, info = blocked_knn(small, k, precision=precision, block_rows=128, block_cols=96)  # 700: ragged blocks
    ids, ref = brute_topk(small, k)
    assert nb.dtype == np.int32 and sims.dtype == np.float32 and nb.shape == (700, k)
    np.testing.assert_array_equal(nb, ids)
    np.testing.assert_allclose(sims, ref, atol=1e-6)
    assert (nb[:, 0] == np.arange(700)).all() and (np.diff(sims, axis=1) <= 0).all()
    assert info["precision"] == precision and info["margin"] == blocked.MARGIN and info["recall"] == 1.0


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_blocked_equals_the_exact_graph_bit_for_bit_with_ties(tied, precision):
    """Duplicates end rows in ties at the k-th place: resolved as the exact FAISS path resolves them
    (self first, then smaller ids), the same similarities to the bit."""
    ref = knn_graph(tied, 10, FLAT)
    nb, sims, _ = blocked_knn(tied, 10, precision=precision, block_rows=256, block_cols=200)
    np.testing.assert_array_equal(nb, ref.neighbors)
    np.testing.assert_array_equal(sims, ref.similarities)
    assert nb[120, 0] == 120 and set(nb[120].tolist()) <= set(range(99, 140))


def test_negative_scores_and_k_close_to_n():
    """k' reaches below zero similarity (raw bits no longer order as the keys), and k' capped at n."""
    X = gaussian(150, 4, seed=9)
    for k in (100, 150):
        ids, ref = brute_topk(X, k)
        nb, sims, info = blocked_knn(X, k, block_rows=64, block_cols=48)
        assert info["margin"] == min(150, k + blocked.MARGIN) - k
        np.testing.assert_array_equal(nb, ids)
        np.testing.assert_allclose(sims, ref, atol=1e-6)


def test_knn_graph_blocked_params_and_errors(small):
    g = knn_graph(small, k=8, cfg=BLOCKED)
    assert g.params["kind"] == "blocked" and g.params["graph_method"] == "blocked"
    assert g.params["recall"] == 1.0 and g.params["recall_queries"] == 700 and g.params["self_inserted"] == 0
    np.testing.assert_array_equal(g.neighbors, knn_graph(small, k=8, cfg=FLAT).neighbors)
    with pytest.raises(ValueError, match="k=701 > n=700"):
        knn_graph(small, k=701, cfg=BLOCKED)
    with pytest.raises(ValueError, match="approximate index"):
        knn_graph(small, k=8, cfg=IndexConfig(kind="ivf", graph_method="blocked"))
    with pytest.raises(ValueError, match="CPU only"):
        knn_graph(small, k=8, cfg=IndexConfig(graph_method="blocked", use_gpu=True))
    with pytest.raises(ValueError, match="precision"):
        IndexConfig(precision="int4").validate()


def test_float16_input_gives_the_same_graph(small):
    X16 = small.astype(np.float16)
    g = knn_graph(X16, k=6, cfg=BLOCKED)
    ref = knn_graph(X16, k=6, cfg=FLAT)
    np.testing.assert_array_equal(g.neighbors, ref.neighbors)
    np.testing.assert_array_equal(g.similarities, ref.similarities)


def test_cpu_without_bf16_falls_back_to_fp32(small, monkeypatch):
    monkeypatch.setattr(blocked, "cpu_bf16", lambda: False)
    assert blocked.resolve_precision("auto") == "fp32"
    g = knn_graph(small, k=6, cfg=BLOCKED)
    assert g.params["precision"] == "fp32"
    np.testing.assert_array_equal(g.neighbors, knn_graph(small, k=6, cfg=FLAT).neighbors)


def test_auto_picks_by_estimated_time(monkeypatch):
    cfg = IndexConfig(use_gpu=False, memory_gb=64)
    monkeypatch.setattr(blocked, "torch_available", lambda: True)
    monkeypatch.setattr(blocked, "cpu_bf16", lambda: True)
    monkeypatch.setattr(blocked, "torch_imported", lambda: False)
    assert resolve_graph_params(2000, 384, cfg)["kind"] == "flat"  # torch's import costs more than FAISS here
    p = resolve_graph_params(50_000, 384, cfg)
    assert (p["kind"], p["precision"], p["margin"]) == ("blocked", "bf16", blocked.MARGIN)
    assert resolve_graph_params(50_000, 384, IndexConfig(kind="flat", use_gpu=False))["kind"] == "flat"
    assert resolve_graph_params(1_000_000, 384, cfg)["kind"] == "ivf"  # all pairs cost more than FAISS IVF
    monkeypatch.setattr(blocked, "torch_imported", lambda: True)  # no import to pay: blocked from smaller n
    assert resolve_graph_params(20_000, 384, cfg)["kind"] == "blocked"
    monkeypatch.setattr(blocked, "torch_available", lambda: False)
    assert resolve_graph_params(50_000, 384, cfg)["kind"] == "flat"


def test_store_graph_records_the_measured_recall(tmp_path, store):
    from subsetlm.embed import EmbeddingStore

    s = EmbeddingStore.open(store)
    out = build_store_graph(s, IndexConfig(k=5, graph_method="blocked"))
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "blocked" and man["recall"] == 1.0 and man["params"]["recall_queries"] == s.n
    assert man["config"] == {"kind": "blocked", "k": 5, "precision": blocked.resolve_precision("auto"),
                             "margin": blocked.MARGIN}


def test_auto_on_small_data_never_imports_torch():
    code = ("import sys, numpy as np\n"
            "from subsetlm.index import IndexConfig, knn_graph\n"
            "X = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)\n"
            "X /= np.linalg.norm(X, axis=1, keepdims=True)\n"
            "g = knn_graph(X, k=5, cfg=IndexConfig(use_gpu=False))\n"
            "print(g.params['kind'], 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["flat", "False"]


def test_choose_nprobe_takes_the_smallest_that_reaches_the_target():
    ranks = np.array([[0, 1, 2, 3], [1, 0, 3, 2]], dtype=np.int32)  # rank of each list for 2 sampled rows
    truth_lists = np.array([[0, 0, 1, 2], [1, 1, 0, -1]])            # lists of their true neighbours
    # ranks of the neighbours: row 0 -> 0 0 1 2, row 1 -> 0 0 1 (one missing): 7 in all
    assert choose_nprobe(ranks, truth_lists, 4 / 7) == (1, 4 / 7)
    assert choose_nprobe(ranks, truth_lists, 0.8) == (2, 6 / 7)
    assert choose_nprobe(ranks, truth_lists, 1.0) == (3, 1.0)


def test_ivf_blocked_reaches_its_target_and_says_so():
    X, _ = clustered(4000, d=24, n_centres=40, sigma=0.4, seed=4)
    nb, sims, info = ivf_blocked_knn(X, 10, target_recall=0.95, nlist=40, recall_queries=500)
    assert info["method"] == "ivf" and 1 <= info["nprobe"] < 40 and info["recall_queries"] == 500
    assert info["probe_recall"] >= 0.95 + 0.003 - 1e-9 and info["recall"] >= 0.9
    assert (nb[:, 0] == np.arange(4000)).all() and (np.diff(sims, axis=1) <= 0).all()
    ref = knn_graph(X, 10, FLAT)
    hit = np.mean([len(np.intersect1d(a, b)) for a, b in zip(nb, ref.neighbors)]) / 10
    assert abs(hit - info["recall"]) < 0.03  # the sampled check is close to the whole graph's recall
    exact = np.einsum("ijd,id->ij", X[nb].astype(np.float64), X.astype(np.float64))  # re-scored exactly
    np.testing.assert_allclose(sims, exact, atol=1e-6)


def test_ivf_blocked_compares_all_pairs_when_the_probes_cover_most():
    X = gaussian(1500, 16, seed=1)  # no clusters: the target needs most lists
    nb, sims, info = ivf_blocked_knn(X, 8, target_recall=0.99, nlist=10, recall_queries=300)
    assert info["method"] == "all-pairs" and info["recall"] == 1.0
    np.testing.assert_array_equal(nb, brute_topk(X, 8)[0])


def test_blocked_above_the_ivf_size_goes_through_ivf_lists(monkeypatch):
    monkeypatch.setattr(blocked, "IVF_MIN_ROWS", 1000)
    X, _ = clustered(3000, d=24, n_centres=30, sigma=0.4, seed=6)
    g = knn_graph(X, k=8, cfg=IndexConfig(graph_method="blocked", nlist=30))
    p = g.params
    assert (p["kind"], p["partition"], p["method"], p["nlist"]) == ("blocked", "ivf", "ivf", 30)
    assert p["recall"] >= 0.98 and p["recall_queries"] == 1000 and p["target_recall"] == 0.99
    assert (g.neighbors[:, 0] == np.arange(3000)).all()
