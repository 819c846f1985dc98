"""IVF self-join kNN graph: the top-k kernel against a sort, the join against exact search,
the auto choice between exact / join / search, determinism and errors."""

from __future__ import annotations

import numpy as np
import pytest

from subsetlm.index import IndexConfig, estimate_recall, knn_graph
from subsetlm.index._topk import empty_rows, finish_rows, merge_block
from subsetlm.index.faiss_index import resolve_graph_params
from subsetlm.index.ivf_join import ivf_join_knn

from _data import clustered, gaussian


def _reference_topk(S, cand_ids, rows, k):
    """Sort each row by (similarity desc, self first, id asc); pad with -1 / 0."""
    nb = np.full((len(rows), k), -1, np.int64)
    sm = np.zeros((len(rows), k), np.float32)
    for r, me in enumerate(rows):
        tie = np.where(cand_ids == me, -1, cand_ids)
        order = np.lexsort((tie, -S[r].astype(np.float64)))[:k]
        nb[r, :len(order)], sm[r, :len(order)] = cand_ids[order], S[r, order]
    return nb, sm


@pytest.mark.parametrize("m, c, k", [(50, 300, 8), (7, 5, 8), (30, 64, 64), (1, 1, 3)])
def test_topk_merge_matches_a_full_sort_in_any_block_order(m, c, k):
    rng = np.random.default_rng(m + c)
    # few distinct values: many ties, which must break by self first, then the smaller id
    S = rng.integers(0, 6, (m, c)).astype(np.float32) / 5
    cand_ids = rng.permutation(10 * c)[:c].astype(np.int64)
    rows = np.where(rng.random(m) < 0.5, cand_ids[rng.integers(0, c, m)], 10 * c + np.arange(m))
    rows = np.unique(rows)[:m].astype(np.int64)  # distinct graph rows, some of them candidates
    S = S[:len(rows)]
    n = int(max(rows.max(), cand_ids.max())) + 1
    ref_nb, ref_sm = _reference_topk(S, cand_ids, rows, k)
    for pieces in (1, 3):  # the candidates in one block, or in three merged in reverse order
        nb, sm = empty_rows(n, k)
        for cols in reversed(np.array_split(np.arange(c), pieces)):
            merge_block(np.ascontiguousarray(S[:, cols]), rows, cand_ids[cols], nb, sm)
        finish_rows(nb, sm, 0, n)
        np.testing.assert_array_equal(nb[rows], ref_nb)
        np.testing.assert_array_equal(sm[rows], ref_sm)
        untouched = np.setdiff1d(np.arange(n), rows)
        assert (nb[untouched] == -1).all() and (sm[untouched] == 0).all()
    # a transposed view merges the block into the candidates' rows
    nb, sm = empty_rows(n, k)
    merge_block(S.T, cand_ids, rows, nb, sm)
    finish_rows(nb, sm, 0, n)
    ref_nb, ref_sm = _reference_topk(np.ascontiguousarray(S.T), rows, cand_ids, k)
    np.testing.assert_array_equal(nb[cand_ids], ref_nb)
    np.testing.assert_array_equal(sm[cand_ids], ref_sm)


def test_join_probing_every_list_is_exact_search():
    X = gaussian(3000, 32, seed=4)
    X[10] = X[20]  # a duplicate: the tie at similarity 1 goes to self first
    exact = knn_graph(X, k=16, cfg=IndexConfig(kind="flat"))
    join = knn_graph(X, k=16, cfg=IndexConfig(kind="ivf", graph_method="join", nlist=20, nprobe=20))
    np.testing.assert_array_equal(join.neighbors, exact.neighbors)
    np.testing.assert_allclose(join.similarities, exact.similarities, atol=1e-5)
    assert join.neighbors[10, :2].tolist() == [10, 20] and join.neighbors[20, :2].tolist() == [20, 10]
    assert join.params["graph_method"] == "join" and join.params["self_inserted"] == 0


def test_join_default_params_recall_and_exact_similarities():
    X = clustered(30_000, d=32, n_centres=300, sigma=0.6, seed=5)[0]
    g = knn_graph(X, k=16, cfg=IndexConfig(graph_method="join"))
    assert (g.params["kind"], g.params["graph_method"]) == ("ivf", "join")
    assert (g.params["nlist"], g.params["nprobe"], g.params["train_size"]) == (173, 4, 32 * 173)
    assert (g.neighbors[:, 0] == np.arange(len(X))).all()
    assert (np.diff(g.similarities, axis=1) <= 0).all()
    assert estimate_recall(X, g, n_queries=500) >= 0.95
    rows = np.arange(0, len(X), 101)
    exact = np.einsum("rkd,rd->rk", X[g.neighbors[rows]], X[rows])
    np.testing.assert_allclose(g.similarities[rows], exact, atol=1e-5)


def test_join_same_bytes_for_any_thread_count_and_float16_path():
    X = clustered(6000, d=24, n_centres=60, seed=6)[0].astype(np.float16)
    a = ivf_join_knn(X, 8, nlist=40, nprobe=4, train_size=1280, n_threads=1)
    b = ivf_join_knn(X, 8, nlist=40, nprobe=4, train_size=1280, n_threads=3)
    # float16 sorted copy converted list by list instead of one float32 copy
    c = ivf_join_knn(X, 8, nlist=40, nprobe=4, train_size=1280, float32_max_bytes=0)
    for other in (b, c):
        assert a[0].tobytes() == other[0].tobytes() and a[1].tobytes() == other[1].tobytes()
    assert a[2] == c[2]


def test_join_with_fewer_candidates_than_k_pads_rows():
    X = gaussian(40, 8, seed=7)
    nb, sims, _ = ivf_join_knn(X, 30, nlist=8, nprobe=1, train_size=40)
    short = (nb < 0).any(axis=1)
    assert short.all()  # no list (and its one probe) holds 30 rows
    for row, sim in zip(nb, sims):
        miss = row < 0
        assert miss[np.argmax(miss):].all() and (sim[miss] == 0).all()  # padding last


def test_join_names_a_nan_row():
    X = gaussian(500, 8, seed=8)
    X[123, 4] = np.nan
    with pytest.raises(ValueError, match="row 123"):
        knn_graph(X, k=4, cfg=IndexConfig(kind="ivf", graph_method="join", nlist=5))


@pytest.mark.parametrize("n, kind, method", [(50_000, "flat", None), (50_001, "ivf", "search")])
def test_auto_graph_choice_is_build_index_choice(n, kind, method, monkeypatch):
    from subsetlm.index import blocked

    monkeypatch.setattr(blocked, "torch_available", lambda: False)  # (with torch: tests/index/test_blocked.py)
    p = resolve_graph_params(n, 384, IndexConfig(use_gpu=False, memory_gb=64))
    assert p["kind"] == kind and p.get("graph_method") == method


def test_join_params_and_explicit_choices():
    p = resolve_graph_params(500, 64, IndexConfig(graph_method="join"))  # join asked even for tiny n
    assert (p["kind"], p["graph_method"], p["nlist"], p["nprobe"], p["train_size"]) == ("ivf", "join", 22, 4, 500)
    p = resolve_graph_params(20_000, 64, IndexConfig(kind="ivf", graph_method="join", nlist=50, nprobe=7))
    assert (p["nlist"], p["nprobe"], p["train_size"]) == (50, 7, 1600)
    p = resolve_graph_params(20_000, 64, IndexConfig(kind="ivf"))
    assert p["graph_method"] == "search" and p["nlist"] == 512  # min(4 sqrt n, n / 39)
    assert resolve_graph_params(20_000, 64, IndexConfig(kind="flat", graph_method="join"))["kind"] == "flat"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_graph_params(20_000, 64, IndexConfig(graph_method="join", use_gpu=True))
