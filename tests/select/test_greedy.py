"""Greedy optimizers: lazy == naive, certificates vs brute-force OPT, stochastic, cost-aware, torch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from subsetlm.registry import names
from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation
from subsetlm.select.greedy import GreedyResult, greedy

from _select_data import clustered, knn

OPTIMIZERS = ["naive", "lazy", "stochastic", "lazier-than-lazy"]


def make_fn(kind: str, n: int, k: int, seed: int):
    X = clustered(n, seed=seed)
    return SparseFacilityLocation(knn(X, k)) if kind == "sparse" else DenseFacilityLocation(X, block_size=64)


def test_registry_has_the_four_optimizers():
    assert set(OPTIMIZERS) <= set(names("optimizer"))
    with pytest.raises(ValueError, match="lazier-than-lazy"):
        greedy(make_fn("sparse", 20, 3, 0), 3, optimizer="fastest")


@pytest.mark.parametrize("kind,n,k,b", [("sparse", 50, 3, 10), ("sparse", 200, 8, 60), ("sparse", 300, 20, 300),
                                        ("dense", 60, 0, 15), ("dense", 150, 0, 40)])
def test_lazy_picks_exactly_what_naive_picks(kind, n, k, b):
    fn = make_fn(kind, n, k, seed=n + k)
    a, z = greedy(fn, b, optimizer="naive"), greedy(fn, b, optimizer="lazy")
    np.testing.assert_array_equal(a.order, z.order)
    np.testing.assert_array_equal(a.gains, z.gains)
    assert a.objective == z.objective
    assert z.n_evaluations < a.n_evaluations
    for r in (a, z):
        assert np.all(np.diff(r.gains) <= 0), "greedy gains must be non-increasing"
        assert fn.evaluate(r.order) == r.objective
        assert r.gains.sum() == pytest.approx(r.objective, rel=1e-5)
        assert r.upper_bound >= r.objective
        assert len(set(r.order.tolist())) == b
        assert r.order.dtype == np.int64 and r.gains.dtype == np.float64


def test_lazy_equals_naive_with_exact_ties():
    # duplicated points give exactly tied gains: both must take the smallest index
    X = clustered(30, seed=9)
    X = np.concatenate([X, X])
    for fn in (SparseFacilityLocation(knn(X, 6)), DenseFacilityLocation(X)):
        a, z = greedy(fn, 12, optimizer="naive"), greedy(fn, 12, optimizer="lazy")
        np.testing.assert_array_equal(a.order, z.order)


def brute_opt(fn, n: int, b: int) -> float:
    return max(fn.evaluate(list(S)) for S in itertools.combinations(range(n), b))


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_certificate_bounds_brute_force_opt(kind, optimizer):
    for seed in range(3):
        fn = make_fn(kind, 10, 3, seed=seed)
        opt = brute_opt(fn, 10, 3)
        r = greedy(fn, 3, optimizer=optimizer, seed=seed)
        assert r.upper_bound >= opt - 1e-9
        assert r.objective <= opt + 1e-9
        if optimizer in ("naive", "lazy"):
            assert r.objective >= (1 - 1 / math.e) * opt


def test_certificate_is_useful_on_clustered_data():
    fn = make_fn("sparse", 2000, 16, seed=1)
    r = greedy(fn, 500, optimizer="lazy")
    assert r.ratio > 0.9
    assert greedy(fn, 500, optimizer="lazy", record_bound=False).upper_bound == math.inf


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_stochastic_optimizers_are_seeded_and_close_to_lazy(kind):
    fn = make_fn(kind, 400, 10, seed=3)
    lazy = greedy(fn, 80, optimizer="lazy")
    s1 = greedy(fn, 80, optimizer="stochastic", seed=5)
    s2 = greedy(fn, 80, optimizer="stochastic", seed=5)
    ltl = greedy(fn, 80, optimizer="lazier-than-lazy", seed=5)
    other = greedy(fn, 80, optimizer="stochastic", seed=6)
    np.testing.assert_array_equal(s1.order, s2.order)
    np.testing.assert_array_equal(s1.order, ltl.order)  # same samples, lazily scanned
    assert ltl.n_evaluations < s1.n_evaluations
    assert s1.order.tolist() != other.order.tolist()
    for r in (s1, ltl, other):
        assert r.objective >= 0.95 * lazy.objective
        assert r.upper_bound >= lazy.objective - 1e-9 or r.upper_bound >= r.objective


def test_candidates_restrict_the_selection():
    fn = make_fn("sparse", 100, 5, seed=2)
    cands = np.arange(0, 100, 3)
    for opt in OPTIMIZERS:
        r = greedy(fn, 10, optimizer=opt, candidates=cands)
        assert set(r.order.tolist()) <= set(cands.tolist())
    np.testing.assert_array_equal(greedy(fn, 10, "naive", candidates=cands).order,
                                  greedy(fn, 10, "lazy", candidates=cands).order)


@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_cost_aware_greedy_respects_budget_and_bounds_opt(optimizer):
    rng = np.random.default_rng(0)
    for seed in range(4):
        fn = make_fn("dense", 10, 0, seed=seed)
        costs = rng.integers(1, 6, 10).astype(float)
        B = 7.0
        r = greedy(fn, None, optimizer=optimizer, costs=costs, cost_budget=B)
        assert r.cost <= B and r.cost == pytest.approx(costs[r.order].sum())
        opt = max(fn.evaluate(list(S)) for m in range(1, 11) for S in itertools.combinations(range(10), m)
                  if costs[list(S)].sum() <= B)
        assert r.objective >= 0.5 * (1 - 1 / math.e) * opt
        assert r.upper_bound >= opt - 1e-9
        assert fn.evaluate(r.order) == pytest.approx(r.objective)


def test_cost_aware_falls_back_to_best_singleton():
    # element 0 covers everything but costs the whole budget; the cheap ones cover little
    K = np.eye(5, dtype=np.float32)  # row j = candidate j's similarity to every point
    K[0, :] = 1.0
    fn = DenseFacilityLocation(kernel=K)
    costs = np.array([10.0, 1.0, 1.0, 1.0, 1.0])
    r = greedy(fn, None, costs=costs, cost_budget=10.0)
    assert r.order.tolist() == [0] and r.info["best_singleton_won"]
    assert r.objective == 5.0 and greedy(fn, 4).objective == 5.0
    capped = greedy(fn, 2, costs=costs, cost_budget=10.0)  # count cap also applies
    assert len(capped.order) <= 2


def test_budget_and_cost_errors():
    fn = make_fn("sparse", 20, 3, seed=0)
    with pytest.raises(ValueError, match="budget=0 must be >= 1"):
        greedy(fn, 0)
    with pytest.raises(ValueError, match="budget=21 > 20"):
        greedy(fn, 21)
    with pytest.raises(TypeError, match="int count"):
        greedy(fn, 0.5)
    with pytest.raises(ValueError, match=r"costs: expected shape \(20,\)"):
        greedy(fn, 3, costs=np.ones(5), cost_budget=2)
    with pytest.raises(ValueError, match="> 0"):
        greedy(fn, 3, costs=-np.ones(20), cost_budget=2)
    with pytest.raises(ValueError, match="cost_budget"):
        greedy(fn, 3, costs=np.ones(20))
    with pytest.raises(ValueError, match="epsilon"):
        greedy(fn, 3, optimizer="stochastic", epsilon=0)
    with pytest.raises(ValueError, match="candidates"):
        greedy(fn, 3, candidates=[25])


def test_torch_greedy_matches_naive_on_cpu():
    from subsetlm.select.torch_greedy import torch_greedy

    X = clustered(200, seed=11)
    ref = greedy(DenseFacilityLocation(X), 30, optimizer="naive")
    for dtype in ("float64", "float32"):
        r = torch_greedy(X, 30, device="cpu", dtype=dtype, batch=8)
        assert isinstance(r, GreedyResult)
        # a valid greedy order for the reference objective: every pick is the best one up to
        # float rounding (torch and numpy may break a near-tie differently)
        fn = DenseFacilityLocation(X)
        for j, gj in zip(r.order, r.gains):
            g = fn.gains()
            assert g[j] >= g.max() - 1e-5 * g.max() and gj == pytest.approx(g[j], rel=1e-4)
            fn.update(j)
        assert np.mean(r.order == ref.order) > 0.9
        assert r.objective == pytest.approx(ref.objective, rel=1e-5)
        assert r.upper_bound >= r.objective
    with pytest.raises(ValueError, match="budget"):
        torch_greedy(X, 0, device="cpu")
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        torch_greedy(bad, 3, device="cpu")


@pytest.mark.gpu
def test_torch_greedy_on_gpu_matches_cpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from subsetlm.select.torch_greedy import torch_greedy

    X = clustered(5000, d=64, seed=12)
    cpu = torch_greedy(X, 500, device="cpu", dtype="float64")
    gpu = torch_greedy(X, 500, device="cuda", dtype="float64")
    np.testing.assert_array_equal(cpu.order, gpu.order)
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-9)
