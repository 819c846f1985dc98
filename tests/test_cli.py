"""Every subcommand on a 60-document corpus, through ``subsetlm.cli.main``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from subsetlm.cli import main
from subsetlm.embed import EmbeddingStore


def test_embed_index_select_export(tmp_path, store):
    assert (store / "_SUCCESS").exists()
    assert main(["index", str(store), "--k", "8", "--partitions", "3", "-q"]) == 0
    man = json.loads((store / "graphs" / "knn-k8" / "manifest.json").read_text())
    assert man["config"]["k"] == 8 and (store / "graphs" / "knn-k8" / "_SUCCESS").exists()
    labels = np.load(store / "partitions" / "kmeans-3-seed0" / "labels.npy")
    assert labels.shape == (60,) and set(labels.tolist()) == {0, 1, 2}

    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "0.25", "--k", "8", "--out", str(sub), "-q"]) == 0
    table = pq.read_table(sub / "subset.parquet")
    assert table.num_rows == 15
    assert table.column("rank").to_pylist() == list(range(15))
    manifest = json.loads((sub / "manifest.json").read_text())
    cert = manifest["certificate"]
    assert cert["upper_bound"] >= cert["objective"] > cert["random_objective"] > 0
    assert 0 < cert["ratio"] <= 1

    out = tmp_path / "sub.jsonl"
    assert main(["export", str(sub), "--out", str(out), "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == table.column("id").to_pylist()
    assert all(r["text"] for r in rows)


def test_select_is_reproducible_and_skips_finished_work(tmp_path, store):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert main(["select", str(store), "--budget", "20", "--k", "8", "--out", str(d), "--seed", "3", "-q"]) == 0
    assert (a / "subset.parquet").read_bytes() == (b / "subset.parquet").read_bytes()
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    mtime = (a / "subset.parquet").stat().st_mtime_ns
    assert main(["select", str(store), "--budget", "20", "--k", "8", "--out", str(a), "--seed", "3", "-q"]) == 0
    assert (a / "subset.parquet").stat().st_mtime_ns == mtime  # skipped, not rewritten


def _selected(sub):
    return pq.read_table(sub / "subset.parquet").column("index").to_numpy()


def _check_partitions(store, sub, base):
    """Each row's partition is its k-means cell, and the cells share the budget by size."""
    from subsetlm.index import build_store_partitions
    from subsetlm.select.partitioned import split_budget

    labels = build_store_partitions(EmbeddingStore.open(store), 3, seed=0)  # the cached cells
    idx = _selected(sub)
    assert pq.read_table(sub / "subset.parquet").column("partition").to_pylist() == labels[idx].tolist()
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3),
                                  split_budget(np.bincount(labels, minlength=3), 12))


def _check_differs(store, sub, base):
    """A different optimizer / sampling picks another subset than the default lazy top-k greedy."""
    assert set(_selected(sub)) != set(_selected(base))


def _check_dense(store, sub, base):
    """The recorded objective is facility location on exact (dense) cosines, not on the k=8 graph."""
    X = np.asarray(EmbeddingStore.open(store).embeddings, dtype=np.float64)
    exact = np.maximum(X @ X[_selected(sub)].T, 0).max(axis=1).sum()
    objective = json.loads((sub / "manifest.json").read_text())["certificate"]["objective"]
    assert objective == pytest.approx(exact, rel=1e-5)


def _check_log_det(store, sub, base):
    X = np.asarray(EmbeddingStore.open(store).embeddings, dtype=np.float64)[_selected(sub)]
    objective = json.loads((sub / "manifest.json").read_text())["certificate"]["objective"]
    assert objective == pytest.approx(np.linalg.slogdet(np.eye(len(X)) + X @ X.T)[1], rel=1e-3)


def _check_tokens(store, sub, base):
    n_tokens = EmbeddingStore.open(store).n_tokens
    idx = _selected(sub)
    rest = np.setdiff1d(np.arange(len(n_tokens)), idx)
    assert n_tokens[idx].sum() <= 300 < n_tokens[idx].sum() + n_tokens[rest].min()  # filled: nothing else fits
    assert json.loads((sub / "manifest.json").read_text())["selection"]["cost_budget"] == 300


@pytest.mark.parametrize("extra,check,field,value", [
    (["--partitions", "3", "--n-jobs", "1"], _check_partitions, "partitions", 3),  # in process: no spawn cost
    (["--sampling", "taylor-softmax"], _check_differs, "sampling", "taylor-softmax"),
    (["--optimizer", "lazier-than-lazy"], _check_differs, "optimizer", "lazier-than-lazy"),
    (["--kernel", "dense"], _check_dense, "kernel", "dense"),
    (["--function", "log-det"], _check_log_det, "function", "log-det"),
    (["--budget", "tokens:300"], _check_tokens, "budget", "tokens:300"),
])
def test_select_options_take_effect(tmp_path, store, extra, check, field, value):
    """Each option reaches the selection: it is recorded in the subset's config and changes the
    written subset the way it should (checked against the store, not the printed summary)."""
    base = tmp_path / "base"
    assert main(["select", str(store), "--k", "8", "--budget", "12", "--out", str(base), "-q"]) == 0
    sub = tmp_path / "sub"
    args = ["select", str(store), "--k", "8", "--out", str(sub), "-q"]
    if "--budget" not in extra:
        args += ["--budget", "12"]
    assert main(args + extra) == 0
    idx = _selected(sub).tolist()
    assert len(set(idx)) == len(idx) > 0 and max(idx) < 60
    if "--budget" not in extra:
        assert len(idx) == 12
    assert json.loads((sub / "manifest.json").read_text())["config"][field] == value
    check(store, sub, base)


@pytest.mark.parametrize("budget,needle", [("0", "budget"), ("500", "500"), ("-3", "budget"), ("lots", "budget")])
def test_select_bad_budget_is_a_clear_error_and_writes_nothing(tmp_path, store, capsys, budget, needle):
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", budget, "--out", str(sub), "-q"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and needle in err
    assert not sub.exists() and not (tmp_path / "sub.tmp").exists()


def test_select_refuses_to_overwrite_a_different_subset(tmp_path, store, capsys):
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(sub), "-q"]) == 0
    assert main(["select", str(store), "--budget", "11", "--k", "8", "--out", str(sub), "-q"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["select", str(store), "--budget", "11", "--k", "8", "--out", str(sub), "--force", "-q"]) == 0
    assert pq.read_table(sub / "subset.parquet").num_rows == 11


def test_select_on_a_missing_store_is_a_clear_error(tmp_path, capsys):
    assert main(["select", str(tmp_path / "nope"), "--out", str(tmp_path / "s"), "-q"]) == 2
    assert "nope" in capsys.readouterr().err


def test_config_file_and_unknown_field(tmp_path, store, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("budget: '9'\nk: 8\n")
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--config", str(cfg), "--out", str(sub), "-q"]) == 0
    assert pq.read_table(sub / "subset.parquet").num_rows == 9
    cfg.write_text("budgett: 3\n")
    assert main(["select", str(store), "--config", str(cfg), "--out", str(tmp_path / "s2"), "-q"]) == 2
    assert "budgett" in capsys.readouterr().err


def test_index_graph_method_flag_reaches_the_graph(store):
    assert main(["index", str(store), "--k", "4", "--graph-method", "join", "-q"]) == 0
    man = json.loads((store / "graphs" / "knn-k4" / "manifest.json").read_text())
    assert man["params"]["graph_method"] == "join" and man["config"]["graph_method"] == "join"
    # the default (60 samples: exact) is another config, so the graph is rebuilt
    assert main(["index", str(store), "--k", "4", "-q"]) == 0
    man = json.loads((store / "graphs" / "knn-k4" / "manifest.json").read_text())
    assert man["kind"] == "flat" and man["config"] == {"kind": "flat", "k": 4}  # exact: keyed on k alone
