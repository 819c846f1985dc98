"""Facility location objectives: oracles vs brute force, dense vs sparse, submodlib parity."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation
from subsetlm.select.greedy import greedy

from _select_data import clustered, knn


def graph_matrix(g, n: int) -> np.ndarray:
    """Dense (n, n) sim matrix implied by a graph (0 where i does not list j), clipped at 0."""
    M = np.zeros((n, n))
    for i in range(n):
        for j, s in zip(g.neighbors[i], g.similarities[i]):
            if j >= 0:
                M[i, j] = max(float(s), 0.0)
    return M


def brute_f(M: np.ndarray, S) -> float:
    S = list(S)
    return float(M[:, S].max(axis=1).sum()) if S else 0.0


@pytest.mark.parametrize("k", [1, 3, 10])
def test_sparse_evaluate_and_gains_match_brute_force(k):
    X = clustered(60, seed=k)
    g = knn(X, k)
    g.neighbors[5, -1] = -1  # a missing neighbour
    M = graph_matrix(g, 60)
    fn = SparseFacilityLocation(g)
    rng = np.random.default_rng(1)
    S = rng.choice(60, 7, replace=False)
    assert fn.evaluate(S) == pytest.approx(brute_f(M, S), rel=1e-6)
    for j in S[:4]:
        fn.update(j)
    base = brute_f(M, S[:4])
    expect = np.array([brute_f(M, list(S[:4]) + [j]) - base for j in range(60)])
    np.testing.assert_allclose(fn.gains(), expect, rtol=1e-5, atol=1e-6)
    assert fn.gain(10) == fn.gains([10])[0]
    assert fn.value == pytest.approx(base, rel=1e-6)


def test_gain_uses_reverse_lists():
    # point 0 lists {0, 1}, point 2 lists {2, 1}, point 1 lists only itself:
    # candidate 1 covers 0 and 2 (they list it), candidate 0 covers only point 0.
    g = SimpleNamespace(neighbors=np.array([[0, 1], [1, -1], [2, 1]], np.int32),
                        similarities=np.array([[1.0, 0.5], [1.0, 0.0], [1.0, 0.25]], np.float32))
    fn = SparseFacilityLocation(g)
    np.testing.assert_allclose(fn.gains(), [1.0, 1.75, 1.0])
    fn.update(1)
    np.testing.assert_allclose(fn.gains(), [0.5, 0.0, 0.75])


def test_duplicate_neighbours_count_once():
    g = SimpleNamespace(neighbors=np.array([[0, 1, 1], [1, 0, -1]], np.int32),
                        similarities=np.array([[1.0, 0.5, 0.25], [1.0, 0.5, 0.0]], np.float32))
    fn = SparseFacilityLocation(g)
    np.testing.assert_allclose(fn.gains(), [1.5, 1.5])
    assert fn.evaluate([1]) == 1.5
    fn.update(1)
    assert fn.gain(0) == pytest.approx(fn.evaluate([0, 1]) - fn.evaluate([1]))


def test_negative_similarities_are_clipped():
    g = SimpleNamespace(neighbors=np.array([[0, 1], [1, 0]], np.int32),
                        similarities=np.array([[1.0, -0.5], [1.0, -0.5]], np.float32))
    fn = SparseFacilityLocation(g)
    assert fn.evaluate([0]) == 1.0
    X = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    assert DenseFacilityLocation(X).evaluate([0]) == 1.0


def test_csr_input_equals_graph_input():
    X = clustered(50, seed=3)
    g = knn(X, 6)
    rows = np.repeat(np.arange(50), 6)
    csr = sp.csr_matrix((g.similarities.ravel(), (rows, g.neighbors.ravel())), shape=(50, 50))
    a, b = SparseFacilityLocation(g), SparseFacilityLocation(csr)
    np.testing.assert_array_equal(a.gains(), b.gains())
    assert greedy(a, 10).order.tolist() == greedy(b, 10).order.tolist()


@pytest.mark.parametrize("kernel", [None, "precompute"])
def test_dense_matches_brute_force(kernel):
    X = clustered(80, seed=2)
    M = np.maximum(X.astype(np.float64) @ X.T.astype(np.float64), 0)
    fn = DenseFacilityLocation(X, kernel=kernel, block_size=16)
    S = [3, 40, 77]
    assert fn.evaluate(S) == pytest.approx(brute_f(M, S), rel=1e-6)
    for j in S:
        fn.update(j)
    expect = np.array([brute_f(M, S + [j]) - brute_f(M, S) for j in range(80)])
    np.testing.assert_allclose(fn.gains(), expect, rtol=1e-5, atol=1e-5)
    # a gain is the same number alone or inside a block
    assert [fn.gain(j) for j in range(80)] == fn.gains().tolist()


@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_sparse_with_k_equal_n_is_dense(optimizer):
    X = clustered(70, seed=4)
    sparse = SparseFacilityLocation(knn(X, 70))
    for dense in (DenseFacilityLocation(X), DenseFacilityLocation(X, kernel="precompute")):
        a, b = greedy(sparse, 20, optimizer=optimizer), greedy(dense, 20, optimizer=optimizer)
        assert a.order.tolist() == b.order.tolist()
        assert a.objective == pytest.approx(b.objective, rel=1e-5)


def test_dense_kernel_array_and_size_limit():
    X = clustered(30, seed=5)
    K = X @ X.T
    a, b = DenseFacilityLocation(kernel=K), DenseFacilityLocation(X)
    assert greedy(a, 8).order.tolist() == greedy(b, 8).order.tolist()
    with pytest.raises(ValueError, match="max_kernel_bytes.*sparse|SparseFacilityLocation"):
        DenseFacilityLocation(X, kernel="precompute", max_kernel_bytes=1000)
    with pytest.raises(ValueError, match="square"):
        DenseFacilityLocation(kernel=np.zeros((3, 4)))


@pytest.mark.parametrize("sparse", [True, False])
def test_assign_weights(sparse):
    X = clustered(90, seed=6)
    g = knn(X, 5)
    fn = SparseFacilityLocation(g) if sparse else DenseFacilityLocation(X)
    order = np.array([4, 17, 60, 2])
    w, un = fn.assignment(order)
    M = graph_matrix(g, 90) if sparse else np.maximum(X @ X.T, 0)
    listed = (np.isin(g.neighbors, order)).any(axis=1) if sparse else np.ones(90, bool)
    assert un == int((~listed).sum())
    assert w.sum() == 90 - un
    owner = np.argmax(M[:, order], axis=1)  # first (earliest) on ties
    expect = np.bincount(owner[listed], minlength=len(order))
    np.testing.assert_array_equal(w, expect)
    np.testing.assert_array_equal(fn.assign(order), w)
    assert fn.n_unassigned_ == un


def test_parity_with_submodlib():
    import submodlib  # a core dependency: missing it must fail, not skip
    X = clustered(120, seed=7)
    K = np.maximum(X @ X.T, 0).astype(np.float32)
    ours = greedy(DenseFacilityLocation(kernel=K), 15, optimizer="naive")
    for opt in ("NaiveGreedy", "LazyGreedy"):
        obj = submodlib.FacilityLocationFunction(n=120, mode="dense", sijs=K, separate_rep=False)
        picked = obj.maximize(budget=15, optimizer=opt, stopIfZeroGain=False, stopIfNegativeGain=False,
                              show_progress=False)
        theirs = [int(j) for j, _ in picked]
        f_theirs = DenseFacilityLocation(kernel=K).evaluate(theirs)
        assert f_theirs == pytest.approx(ours.objective, rel=1e-5)
        assert sorted(theirs) == sorted(ours.order.tolist())
        np.testing.assert_allclose([g for _, g in picked], ours.gains, rtol=1e-4)


def test_input_errors():
    X = clustered(20)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        DenseFacilityLocation(bad)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        DenseFacilityLocation(X[0])
    with pytest.raises(TypeError, match="float"):
        DenseFacilityLocation(np.ones((3, 2), np.int64))
    g = knn(X, 4)
    with pytest.raises(ValueError, match="must both be"):
        SparseFacilityLocation(SimpleNamespace(neighbors=g.neighbors, similarities=g.similarities[:, :2]))
    with pytest.raises(ValueError, match=r"\[-1, 19\]"):
        SparseFacilityLocation(SimpleNamespace(neighbors=g.neighbors + 5, similarities=g.similarities))
    with pytest.raises(TypeError, match="KNNGraph"):
        SparseFacilityLocation(np.zeros((3, 3)))
    fn = SparseFacilityLocation(g)
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        fn.evaluate([0, 20])
