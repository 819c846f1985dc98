"""Partitioned selection: budget split, per-partition oracle, n_jobs independence, sampling mode."""

from __future__ import annotations


import numpy as np
import pytest

from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation
from subsetlm.select.greedy import greedy
from subsetlm.select.partitioned import partitioned_greedy, split_budget

from _select_data import clustered, knn


class BruteGraph:
    """Picklable graph builder: exact kNN over the given rows of X (local indexing)."""

    def __init__(self, X: np.ndarray, k: int):
        self.X, self.k = X, k

    def __call__(self, rows: np.ndarray):
        return knn(self.X[rows], min(self.k, len(rows)))


def test_split_budget_examples():
    assert split_budget([5, 3, 2], 5).tolist() == [3, 1, 1]  # quotas 2.5, 1.5, 1.0
    assert split_budget([1, 1, 1], 2).tolist() == [1, 1, 0]  # ties -> lower index
    assert split_budget([4, 6], 10).tolist() == [4, 6]
    assert split_budget([4, 6], 0).tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        split_budget([4, 6], 11)


def test_split_budget_properties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(1, 50, rng.integers(1, 12))
        b = int(rng.integers(0, sizes.sum() + 1))
        out = split_budget(sizes, b)
        assert out.sum() == b
        assert np.all(out <= sizes) and np.all(out >= 0)
        quota = sizes * b / sizes.sum()
        assert np.all(np.abs(out - quota) < 1.0 + 1e-9)  # largest remainder: within one of the quota


def test_partitioned_equals_per_partition_greedy():
    X = clustered(240, seed=1)
    labels = np.random.default_rng(2).integers(0, 3, 240) * 10  # labels need not be 0..P-1
    builder = BruteGraph(X, 8)
    res = partitioned_greedy(builder, labels, 48, k=8, n_jobs=1)
    sizes = np.bincount(labels // 10)
    np.testing.assert_array_equal(res.budgets, split_budget(sizes, 48))
    assert res.labels.tolist() == [0, 10, 20]
    start = 0
    for p, lbl in enumerate(res.labels):
        rows = np.flatnonzero(labels == lbl)
        fn = SparseFacilityLocation(builder(rows))
        r = greedy(fn, int(res.budgets[p]))
        got = res.indices[start:start + len(r.order)]
        np.testing.assert_array_equal(got, rows[r.order])
        assert np.all(res.partitions[start:start + len(r.order)] == lbl)
        assert res.objectives[p] == pytest.approx(r.objective)
        assert res.upper_bounds[p] >= res.objectives[p]
        np.testing.assert_array_equal(res.weights[start:start + len(r.order)], fn.assign(r.order))
        start += len(r.order)
    assert res.objective == pytest.approx(res.objectives.sum())
    assert res.upper_bound >= res.objective
    assert res.weights.sum() == 240 - res.n_unassigned
    assert 0 < res.random_objective < res.objective


def test_partitioned_from_array_uses_exact_knn_and_dense_kernel():
    X = clustered(150, seed=3)
    labels = np.arange(150) % 2
    res = partitioned_greedy(X, labels, 20, k=10, n_jobs=1)
    ref = partitioned_greedy(BruteGraph(X, 10), labels, 20, k=10, n_jobs=1)
    np.testing.assert_array_equal(res.indices, ref.indices)
    dense = partitioned_greedy(X, labels, 20, kernel="dense", n_jobs=1)
    rows0 = np.flatnonzero(labels == 0)
    r0 = greedy(DenseFacilityLocation(X[rows0]), 10)
    np.testing.assert_array_equal(dense.indices[:10], rows0[r0.order])


@pytest.mark.parametrize("sampling", ["topk", "taylor-softmax"])
def test_result_does_not_depend_on_n_jobs(tmp_path, sampling):
    X = clustered(300, seed=4)
    labels = np.random.default_rng(5).integers(0, 4, 300)
    path = tmp_path / "X.npy"
    np.save(path, X)
    one = partitioned_greedy(X, labels, 60, k=8, n_jobs=1, seed=3, sampling=sampling)
    two = partitioned_greedy(path, labels, 60, k=8, n_jobs=2, seed=3, sampling=sampling)
    np.testing.assert_array_equal(one.indices, two.indices)
    np.testing.assert_array_equal(one.gains, two.gains)
    np.testing.assert_array_equal(one.partitions, two.partitions)
    assert one.objective == two.objective and one.upper_bound == two.upper_bound


def test_taylor_softmax_sampling_mode():
    X = clustered(400, seed=6)
    labels = np.arange(400) % 4
    a = partitioned_greedy(X, labels, 40, k=8, n_jobs=1, sampling="taylor-softmax", seed=1)
    b = partitioned_greedy(X, labels, 40, k=8, n_jobs=1, sampling="taylor-softmax", seed=1)
    c = partitioned_greedy(X, labels, 40, k=8, n_jobs=1, sampling="taylor-softmax", seed=2)
    top = partitioned_greedy(X, labels, 40, k=8, n_jobs=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.indices.tolist() != c.indices.tolist()
    assert len(np.unique(a.indices)) == 40
    assert np.all(labels[a.indices] == a.partitions)
    assert a.budgets.tolist() == [10, 10, 10, 10]
    assert a.objective <= top.objective + 1e-9  # sampling trades objective for diversity
    assert a.upper_bound >= a.objective
    for p in range(4):  # the certificate is the top-k one for the same budget
        assert a.upper_bounds[p] >= top.objectives[p] - 1e-9


def test_partitioned_errors():
    X = clustered(50)
    labels = np.zeros(50, int)
    with pytest.raises(ValueError, match=r"labels: expected shape \(50,\)"):
        partitioned_greedy(X, labels[:10], 5)
    with pytest.raises(ValueError, match="budget=51"):
        partitioned_greedy(X, labels, 51)
    with pytest.raises(ValueError, match="budget=0"):
        partitioned_greedy(X, labels, 0)
    with pytest.raises(ValueError, match="sampling"):
        partitioned_greedy(X, labels, 5, sampling="random")
    with pytest.raises(ValueError, match="n_jobs"):
        partitioned_greedy(X, labels, 5, n_jobs=0)
    bad = X.copy()
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="row 7"):
        partitioned_greedy(bad, labels, 5, n_jobs=1)


def test_greedi_merge_removes_cross_partition_redundancy():
    """Random partitions split every cluster; without a merge each partition re-picks the same clusters."""
    from subsetlm.select.facility_location import DenseFacilityLocation
    from subsetlm.select.partitioned import partitioned_greedy

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 16)).astype(np.float32)
    X = np.repeat(centers, 50, axis=0) + 0.05 * rng.normal(size=(400, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cluster = np.repeat(np.arange(8), 50)
    labels = rng.permutation(np.arange(400) % 4)
    plain = partitioned_greedy(X, labels, 8, k=16, n_jobs=1, seed=0)
    merged = partitioned_greedy(X, labels, 8, k=16, n_jobs=1, seed=0, merge_factor=2)
    assert len(merged.indices) == 8 and len(set(merged.indices.tolist())) == 8
    assert len(set(cluster[merged.indices])) == 8 > len(set(cluster[plain.indices]))
    full = DenseFacilityLocation(X)
    assert full.evaluate(merged.indices) > full.evaluate(plain.indices)
    assert merged.objective <= merged.upper_bound + 1e-9
    assert merged.weights.sum() <= 400 and merged.info["merge"]["union"] == 16


def test_greedi_merge_factor_validation():
    from subsetlm.select.partitioned import partitioned_greedy

    X = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="merge_factor"):
        partitioned_greedy(X, np.array([0, 0, 1, 1]), 2, k=2, n_jobs=1, merge_factor=0.5)
