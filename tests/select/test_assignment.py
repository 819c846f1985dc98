"""Why was this kept: the assignment file is the objective sample by sample; --within composes; inspect reports it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from subsetlm.cli import main
from subsetlm.select.api import select_array
from subsetlm.subsets.assignment import assignment_table, read_assignment


def _X(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("kw", [{}, {"kernel": "dense"}, {"partitions": 4, "n_jobs": 1},
                                {"function": "fl-mi", "queries": "q"}, {"sampling": "taylor-softmax"}])
def test_assigned_similarities_sum_to_the_objective(kw):
    X = _X()
    if kw.get("queries") == "q":
        kw = dict(kw, queries=X[:5])
    sel = select_array(X, 40, k=10, **kw)
    rep, sim = sel.representative, sel.similarity
    assert np.all(rep[sel.indices] == sel.indices)  # a kept sample represents itself
    assert set(rep[rep >= 0].tolist()) <= set(sel.indices.tolist())
    total = float(np.sum(np.maximum(sim[rep >= 0], 0).astype(np.float64)))
    assert total == pytest.approx(sel.certificate["objective"], rel=1e-5)  # fl-mi too: its capped coverage


def test_rows_restrict_the_ground_set():
    X = _X()
    rows = np.arange(0, 400, 3)
    sel = select_array(X, 0.1, k=8, rows=rows)
    assert len(sel.indices) == round(0.1 * len(rows)) and np.isin(sel.indices, rows).all()
    assert np.all(sel.representative[np.setdiff1d(np.arange(400), rows)] == -1)
    alone = select_array(X[rows], 0.1, k=8)
    assert rows[alone.indices].tolist() == sel.indices.tolist()


def test_assignment_table_checks_its_input():
    with pytest.raises(ValueError, match="one value per ground row"):
        assignment_table(3, np.array([0]), representative=np.zeros(2), similarity=np.zeros(3))
    with pytest.raises(ValueError, match="unknown assignment status"):
        assignment_table(2, np.array([0]), representative=np.zeros(2), similarity=np.zeros(2),
                         status=np.array(["kept", "gone"], dtype=object))


def test_select_writes_the_assignment_and_within_composes(tmp_path, store, capsys):
    first = tmp_path / "first"
    assert main(["select", str(store), "--budget", "30", "--k", "8", "--out", str(first), "-q"]) == 0
    a = read_assignment(first)
    assert a.num_rows == 60 and a.column("status").to_pylist().count("kept") == 30
    man = json.loads((first / "manifest.json").read_text())
    sim = a.column("similarity").to_numpy(zero_copy_only=False)
    rep = a.column("representative").to_numpy()
    assert float(np.sum(np.maximum(sim[rep >= 0], 0))) == pytest.approx(man["certificate"]["objective"], rel=1e-5)

    second = tmp_path / "second"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--within", str(first), "--out", str(second),
                 "-q"]) == 0
    sub = json.loads((second / "manifest.json").read_text())
    assert sub["provenance"]["within"]["size"] == 30 and sub["size"] == 10
    kept1 = set(np.flatnonzero(np.array(a.column("status").to_pylist()) == "kept").tolist())
    b = read_assignment(second)
    kept2 = np.flatnonzero(np.array(b.column("status").to_pylist()) == "kept")
    assert set(kept2.tolist()) <= kept1
    rep2 = b.column("representative").to_numpy()
    assert set(rep2[rep2 >= 0].tolist()) <= set(kept2.tolist())
    # a changed --within subset changes the identity: refused without --force
    assert main(["select", str(store), "--budget", "31", "--k", "8", "--out", str(first), "--force", "-q"]) == 0
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--within", str(first), "--out", str(second),
                 "-q"]) == 2
    assert "within" in capsys.readouterr().err

    capsys.readouterr()
    assert main(["inspect", str(second), "--examples", "2", "--plot", str(tmp_path / "p.png"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "status: covered" in out and "kept 10" in out and "least covered (2)" in out and "per source" in out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
