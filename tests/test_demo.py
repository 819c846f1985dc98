"""`subsetlm demo` end to end on real PubMed abstracts (hashing embedder to stay fast)."""

import json

import pytest

from subsetlm.demo import DemoConfig, coverage, run_demo


@pytest.mark.network
def test_demo_runs_end_to_end_and_beats_random(tmp_path):
    report = run_demo(DemoConfig(out=str(tmp_path), n_docs=300, model="hashing", k=16))
    sub = tmp_path / "subset-0.25"
    manifest = json.loads((sub / "manifest.json").read_text())
    cert = manifest["certificate"]
    assert manifest["size"] == round(0.25 * manifest["n_ground"])
    assert cert["random_objective"] < cert["objective"] <= cert["upper_bound"]
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "certificate" in report and (tmp_path / "report.md").read_text() == report
    # a re-run skips every stage and reports the same selection
    assert run_demo(DemoConfig(out=str(tmp_path), n_docs=300, model="hashing", k=16)).split("- seconds")[0] == \
        report.split("- seconds")[0]


def test_coverage_prefers_a_spread_subset():
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    X = np.concatenate([c + 0.05 * rng.normal(size=(50, 8)) for c in centres]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    spread = np.array([0, 50, 100, 150])  # one per cluster
    clumped = np.array([0, 1, 2, 3])      # all in cluster 0
    assert coverage(X, spread)["mean_best_sim"] > coverage(X, clumped)["mean_best_sim"] + 0.1
