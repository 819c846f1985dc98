"""Smoke and oracle tests of benchmarks/selection.py (the selection benchmark harness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import _selection_data as data  # noqa: E402
from benchmarks import _selection_methods as methods  # noqa: E402
from benchmarks._selection_methods import split_budget  # noqa: E402


def _brute_fl(X, S):
    K = np.maximum(X @ X.T, 0)
    return float(K[:, S].max(axis=1).sum())


def test_evaluator_matches_dense_brute_force():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((700, 12)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = rng.choice(700, 37, replace=False)
    got = data.facility_objective(X, S, ground_block=64, cand_block=5)
    assert got["value"] == pytest.approx(_brute_fl(X, S), rel=1e-5)
    assert not got["sampled"]
    # a sample of ground points estimates the same value (the mean best similarity)
    est = data.facility_objective(X, S, sample=500, seed=3)
    assert est["sampled"] and est["n_ground"] == 500
    assert est["value"] == pytest.approx(got["value"], rel=0.05)
    # the ground sample must not coincide with a random subset drawn from the same seed
    R = np.random.default_rng(0).choice(700, 100, replace=False)
    assert data.facility_objective(X, R, sample=100, seed=0)["mean"] < 0.9
    with pytest.raises(ValueError, match="subset indices"):
        data.facility_objective(X, [700])


def test_synthetic_is_seeded_normalised_and_clustered(tmp_path):
    a = np.load(data.synthetic_embeddings(tmp_path / "a.npy", n=3000, d=32, seed=5, block=1000))
    b = np.load(data.synthetic_embeddings(tmp_path / "b.npy", n=3000, d=32, seed=5, block=1000))
    c = np.load(data.synthetic_embeddings(tmp_path / "c.npy", n=3000, d=32, seed=6, block=1000))
    assert a.dtype == np.float32 and a.shape == (3000, 32)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    S = a[:300] @ a.T
    np.fill_diagonal(S[:, :300], -1)
    assert S.max(axis=1).mean() > 0.5 > S.mean()  # tight neighbours, loose background


def test_split_budget_is_exact_and_proportional():
    sizes = np.array([20011, 19876, 20113, 19999, 1])
    for budget in (1, 7, 8000, 10000, int(sizes.sum())):
        out = split_budget(sizes, budget)
        assert out.sum() == budget and np.all(out <= sizes)
        assert np.all(np.abs(out - sizes / sizes.sum() * budget) < 1)


@pytest.mark.parametrize("sizes,budget", [([3, 1], 4), ([5, 1, 1], 6), ([1, 1, 8], 9), ([4, 4], 8)])
def test_split_budget_sums_when_partitions_are_taken_whole(sizes, budget):
    """Regression: the benchmark's old copy capped each partition at size - 1, so a budget that
    takes a partition whole summed to less than the budget."""
    out = split_budget(np.array(sizes), budget)
    assert out.sum() == budget and np.all(out <= np.array(sizes))


def test_submodlib_partitioned_run_selects_exactly_the_budget(monkeypatch):
    """Per-partition submodlib runs return ``budget`` distinct points, also when the budget
    takes a partition whole (the old split returned fewer)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    monkeypatch.setattr(methods, "PARTITION_SIZE", 20)  # 3 random partitions of ~20
    for budget in (9, 59, 60):
        order, _phases, variant, extra = methods.submodlib_run(X, budget, k=8, seed=0)
        assert extra["partitions"] == 3 and "per partition" in variant
        assert len(order) == budget == len(np.unique(order)) and order.max() < 60


def test_quick_run_writes_expected_methods(tmp_path):
    methods = ["subsetlm-lazy", "submodlib", "apricot-dense", "apricot-sparse"]
    res_path = tmp_path / "res.json"
    env = dict(os.environ, SUBSETLM_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "selection.py"), "--quick", "--sizes", "1000",
         "--methods", ",".join(methods), "--results", str(res_path), "--max-seconds", "120"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(res_path.read_text())
    (ds,) = res["datasets"].values()
    assert ds["n"] == 1000 and ds["budget"] == 100
    runs = {r["method"]: r for r in ds["runs"]}
    assert sorted(runs) == sorted(methods)
    for m, r in runs.items():
        assert r["status"] == "ok", (m, r.get("note"))
        assert r["valid"] and r["n_selected"] == 100
        assert r["rss_gb"] > 0.01 and r["wall_s"] > 0
        idx = np.load(r["indices"])
        assert len(np.unique(idx)) == 100
    obj = {m: r["objective"]["mean"] for m, r in runs.items()}
    assert obj["subsetlm-lazy"] >= 0.99 * obj["apricot-dense"]
    assert min(obj.values()) > ds["random"]["mean"]  # every method beats a random subset
    assert "| subsetlm-lazy |" in proc.stdout  # the markdown table was produced
