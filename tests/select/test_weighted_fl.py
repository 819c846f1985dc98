"""Weighted facility location with a quality term: oracles against brute force and the unweighted kernels.

f(S) = Σ_i w_i max_{j∈S} max(s_ij, 0) + Σ_{j∈S} m_j, m = λ q. The certificate must bound the
brute-force optimum under every constraint; lazy == naive; sparse == dense on the full graph;
ones / zeros change nothing, bit for bit; the assignment is the objective sample by sample.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from subsetlm.select.api import select_array
from subsetlm.select.constraints import Knapsack, Quotas
from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation
from subsetlm.select.greedy import OPTIMIZERS, greedy
from subsetlm.select.partitioned import _seed_for
from subsetlm.select.selector import Selector

from _select_data import clustered, knn


def graph_matrix(g, n: int) -> np.ndarray:
    """(n, n) float64 similarities the graph implies (0 where i does not list j), clipped at 0."""
    M = np.zeros((n, n))
    for i in range(n):
        for j, s in zip(g.neighbors[i], g.similarities[i]):
            if j >= 0:
                M[i, j] = max(M[i, j], float(s), 0.0)
    return M


def brute_f(M: np.ndarray, w: np.ndarray, m: np.ndarray, S) -> float:
    S = list(S)
    return float(w @ M[:, S].max(axis=1) + m[S].sum()) if S else 0.0


def brute_opt(M, w, m, feasible) -> float:
    n = len(w)
    return max(brute_f(M, w, m, S) for r in range(1, n + 1) for S in itertools.combinations(range(n), r)
               if feasible(S))


def weighting(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random weights (some 0, some large) and a quality term comparable to a gain."""
    rng = np.random.default_rng(seed)
    w = rng.choice([0.0, 0.25, 1.0, 3.0], n) * rng.uniform(0.5, 1.5, n)
    m = 0.8 * rng.uniform(0, 1, n) * (rng.uniform(size=n) < 0.7)
    return w, m


def objectives(kind: str, X: np.ndarray, w, m):
    """(fn, M): the objective and the similarity matrix a brute force uses for it."""
    n = len(X)
    if kind == "dense":
        X64 = X.astype(np.float64)
        M = np.maximum((X64 @ X64.T).astype(np.float32), 0).astype(np.float64)
        return DenseFacilityLocation(X, weights=w, modular=m), M
    g = knn(X, 4)
    return SparseFacilityLocation(g, weights=w, modular=m), graph_matrix(g, n)


N = 11


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_and_gains_match_brute_force(kind, seed):
    X = clustered(N, seed=seed)
    w, m = weighting(N, seed)
    fn, M = objectives(kind, X, w, m)
    S = [3, 7, 1]
    assert fn.evaluate(S) == pytest.approx(brute_f(M, w, m, S), rel=1e-6)
    for j in S:
        fn.update(j)
    assert fn.value == pytest.approx(brute_f(M, w, m, S), rel=1e-6)
    expect = [brute_f(M, w, m, S + [j]) - brute_f(M, w, m, S) for j in range(N)]
    got = fn.gains()
    np.testing.assert_allclose(np.delete(got, S), np.delete(expect, S), rtol=1e-5, atol=1e-6)
    assert [fn.gain(j) for j in range(N)] == got.tolist()  # alone or in a block: the same number


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("lam", [1.0, 8.0])  # the quality term comparable to a gain, or dominant
def test_certificate_bounds_brute_force_opt_under_a_count(kind, seed, lam):
    X = clustered(N, seed=10 + seed)
    w, m = weighting(N, seed)
    m = lam * m
    fn, M = objectives(kind, X, w, m)
    b = 4
    opt = brute_opt(M, w, m, lambda S: len(S) == b)
    for optimizer in OPTIMIZERS:
        res = greedy(fn, b, optimizer=optimizer, seed=seed)
        assert res.objective == pytest.approx(brute_f(M, w, m, res.order), rel=1e-6)
        assert res.objective <= opt * (1 + 1e-6)
        assert res.upper_bound >= opt * (1 - 1e-6), optimizer
        if optimizer in ("naive", "lazy"):
            assert res.objective >= (1 - 1 / np.e) * opt


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certificate_bounds_brute_force_opt_under_tokens_and_quotas(kind, seed):
    X = clustered(N, seed=20 + seed)
    w, m = weighting(N, seed)
    fn, M = objectives(kind, X, w, m)
    rng = np.random.default_rng(seed)
    costs = rng.integers(1, 6, N).astype(np.float64)
    cap = 9.0
    groups = np.arange(N) % 3
    caps = np.array([2, 1, 1])
    cases = [(Knapsack(costs, cap), lambda S: costs[list(S)].sum() <= cap),
             (Quotas(groups, caps), lambda S: np.all(np.bincount(groups[list(S)], minlength=3) <= caps))]
    for con, feasible in cases:
        opt = brute_opt(M, w, m, feasible)
        for optimizer in ("naive", "lazy"):
            res = greedy(fn, None, optimizer=optimizer, constraint=con)
            assert feasible(res.order) and con.satisfied(res.order)
            assert res.objective == pytest.approx(brute_f(M, w, m, res.order), rel=1e-6)
            assert res.objective <= opt * (1 + 1e-6)
            assert res.upper_bound >= opt * (1 - 1e-6), (con.kind, optimizer)
            assert res.objective >= opt / 2 * (1 - 1 / np.e) - 1e-9


@pytest.mark.parametrize("sampling", ["topk", "taylor-softmax"])
def test_selector_certificate_bounds_brute_force(sampling):
    X = clustered(N, seed=5)
    w, m = weighting(N, 5)
    q, lam = m / 0.8, 0.8  # m = λ q
    sel = Selector(budget=4, kernel="dense", sampling=sampling, coverage_weights=w, quality=q,
                   quality_weight=lam).fit(X)
    _, M = objectives("dense", X, w, lam * q)
    opt = brute_opt(M, w, lam * q, lambda S: len(S) == 4)
    assert sel.objective_ == pytest.approx(brute_f(M, w, lam * q, sel.indices_), rel=1e-6)
    assert sel.upper_bound_ >= opt * (1 - 1e-6)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_lazy_picks_exactly_what_naive_picks(kind):
    X = clustered(300, seed=7)
    w, m = weighting(300, 7)
    fn = DenseFacilityLocation(X, weights=w, modular=m) if kind == "dense" else \
        SparseFacilityLocation(knn(X, 10), weights=w, modular=m)
    tokens = np.random.default_rng(0).integers(1, 20, 300).astype(np.float64)
    for kw in ({"budget": 40}, {"budget": None, "constraint": Knapsack(tokens, 200.0)},
               {"budget": None, "constraint": Quotas(np.arange(300) % 4, np.array([10, 5, 5, 0]))}):
        a, b = greedy(fn, optimizer="naive", **kw), greedy(fn, optimizer="lazy", **kw)
        assert a.order.tolist() == b.order.tolist()
        assert a.gains.tolist() == b.gains.tolist()
        assert a.objective == b.objective


@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_sparse_on_the_full_graph_is_dense(optimizer):
    X = clustered(70, seed=4)
    w, m = weighting(70, 4)
    sparse = SparseFacilityLocation(knn(X, 70), weights=w, modular=m)
    for dense in (DenseFacilityLocation(X, weights=w, modular=m),
                  DenseFacilityLocation(X, kernel="precompute", weights=w, modular=m)):
        a, b = greedy(sparse, 20, optimizer=optimizer), greedy(dense, 20, optimizer=optimizer)
        assert a.order.tolist() == b.order.tolist()
        assert a.objective == pytest.approx(b.objective, rel=1e-6)
        if optimizer == "naive":  # the sparse lazy greedy checks its bound at other prefixes than the dense one
            assert a.upper_bound == pytest.approx(b.upper_bound, rel=1e-6)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_unit_weights_and_zero_quality_change_nothing_bit_for_bit(kind):
    X = clustered(200, seed=3)
    plain = DenseFacilityLocation(X) if kind == "dense" else SparseFacilityLocation(knn(X, 8))
    same = DenseFacilityLocation(X, weights=np.ones(200), modular=np.zeros(200)) if kind == "dense" else \
        SparseFacilityLocation(knn(X, 8), weights=np.ones(200), modular=np.zeros(200))
    for optimizer in OPTIMIZERS:
        a, b = greedy(plain, 25, optimizer=optimizer, seed=1), greedy(same, 25, optimizer=optimizer, seed=1)
        assert (a.order.tolist(), a.gains.tolist(), a.objective, a.upper_bound) == \
            (b.order.tolist(), b.gains.tolist(), b.objective, b.upper_bound)


def test_integer_weights_equal_repeated_points():
    # w_i = 2 counts point i twice: facility location on a ground set where i appears twice as a point
    X = clustered(40, seed=8)
    w = np.random.default_rng(0).integers(0, 3, 40).astype(np.float64)
    Xrep = np.repeat(X, w.astype(int), axis=0)
    fn = DenseFacilityLocation(X, weights=w)
    S = [0, 5, 17]
    expect = float(np.maximum(Xrep.astype(np.float64) @ X[S].T.astype(np.float64), 0).max(axis=1).sum())
    assert fn.evaluate(S) == pytest.approx(expect, rel=1e-6)


def test_a_large_quality_weight_picks_the_top_scores():
    X = clustered(300, seed=9)
    q = np.random.default_rng(2).uniform(size=300)
    sel = select_array(X, 20, k=10, quality=q, quality_weight=1e6)
    assert sorted(sel.indices.tolist()) == sorted(np.argsort(-q)[:20].tolist())
    base = select_array(X, 20, k=10)
    mid = select_array(X, 20, k=10, quality=q, quality_weight=2.0)
    assert q[base.indices].mean() < q[mid.indices].mean() < q[sel.indices].mean() + 1e-12


@pytest.mark.parametrize("kw", [{}, {"kernel": "dense"}, {"partitions": 3, "n_jobs": 1},
                                {"budget": "tokens:300"}, {"rows": "even"}, {"function": "fl-mi"},
                                {"sampling": "taylor-softmax"}])
def test_the_assignment_sums_to_the_objective(kw):
    X = clustered(240, seed=11)
    w, m = weighting(240, 11)
    q, lam = m, 1.5
    kw = dict(kw)
    budget = kw.pop("budget", 24)
    tokens = np.random.default_rng(1).integers(5, 30, 240)
    if kw.get("rows") == "even":
        kw["rows"] = np.arange(0, 240, 2)
    if kw.get("function") == "fl-mi":  # the similarities capped by each row's query relevance: still f(S)
        kw["queries"] = X[:5]
    sel = select_array(X, budget, k=10, n_tokens=tokens, coverage_weights=w, quality=q, quality_weight=lam, **kw)
    rep, sim = sel.representative, sel.similarity
    has = rep >= 0
    total = float(w[has] @ np.maximum(sim[has], 0).astype(np.float64)) + lam * float(q[sel.indices].sum())
    assert total == pytest.approx(sel.certificate["objective"], rel=1e-5)
    assert sel.certificate["objective"] <= sel.certificate["upper_bound"]


def test_partitions_restrict_the_arrays():
    X = clustered(150, seed=12)
    w, m = weighting(150, 12)
    labels = np.arange(150) % 3
    both = select_array(X, 30, k=8, partitions=labels, n_jobs=1, coverage_weights=w, quality=m, quality_weight=1.0)
    for p in range(3):
        rows = np.flatnonzero(labels == p)
        picked = both.indices[both.partitions == p]
        alone = Selector(budget=10, k=8, seed=_seed_for(0, p), coverage_weights=w[rows], quality=m[rows],
                         quality_weight=1.0).fit(X[rows])
        assert picked.tolist() == rows[alone.indices_].tolist()


def test_greedi_merge_with_weights_and_quality():
    X = clustered(300, seed=13)
    w, m = weighting(300, 13)
    q = m / m.max()
    sel = select_array(X, 20, k=8, partitions=4, n_jobs=1, merge=2.0, coverage_weights=w, quality=q,
                       quality_weight=3.0)
    assert len(sel.indices) == 20 and sel.certificate["objective"] <= sel.certificate["upper_bound"]
    assert sel.weights.sum() <= 300 and np.all(sel.weights == np.rint(sel.weights))  # counts of points
    plain = select_array(X, 20, k=8, partitions=4, n_jobs=1, merge=2.0)
    assert q[sel.indices].mean() > q[plain.indices].mean()


@pytest.mark.parametrize("kw, exc, needle", [
    ({"coverage_weights": -np.ones(50)}, ValueError, "negative"),
    ({"coverage_weights": np.r_[np.ones(49), np.nan]}, ValueError, "NaN or inf"),
    ({"coverage_weights": np.ones(49)}, ValueError, r"shape \(50,\)"),
    ({"coverage_weights": np.ones((50, 1))}, ValueError, "1-D"),
    ({"quality": np.array(["a"] * 50)}, TypeError, "expected numbers"),
    ({"quality": np.r_[np.ones(49), np.inf], "quality_weight": 1.0}, ValueError, "NaN or inf"),
    ({"quality": np.ones(50), "quality_weight": -1.0}, ValueError, "quality_weight=-1.0"),
    ({"quality": np.ones(50), "quality_weight": float("nan")}, ValueError, "finite number >= 0"),
    ({"quality_weight": 1.0}, ValueError, "no quality scores"),
    ({"quality": np.ones(50), "quality_weight": 1.0, "objective": "log-det"}, ValueError, "through submodlib"),
    ({"coverage_weights": np.ones(50), "objective": "graph-cut"}, ValueError, "takes no coverage weights"),
])
def test_bad_weighting_is_refused(kw, exc, needle):
    X = clustered(50, seed=1)
    with pytest.raises(exc, match=needle):
        Selector(budget=5, k=5, **kw).fit(X)


def test_bad_weighting_through_partitions_and_rows():
    X = clustered(60, seed=2)
    with pytest.raises(ValueError, match=r"shape \(60,\)"):
        select_array(X, 6, k=5, partitions=np.arange(60) % 2, n_jobs=1, quality=np.ones(30), quality_weight=1.0)
    with pytest.raises(ValueError, match="restricted to rows"):
        select_array(X, 6, k=5, rows=np.arange(30), coverage_weights=np.ones(30))
    with pytest.raises(ValueError, match="negative"):
        SparseFacilityLocation(knn(X, 5), modular=-np.ones(60))


def test_quality_without_weight_warns():
    X = clustered(50, seed=1)
    with pytest.warns(UserWarning, match="quality term is off"):
        sel = Selector(budget=5, k=5, quality=np.ones(50)).fit(X)
    assert sel.indices_.tolist() == Selector(budget=5, k=5).fit(X).indices_.tolist()
