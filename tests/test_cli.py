"""Every subcommand on a 60-document corpus, through ``subsetlm.cli.main``."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from subsetlm.cli import main


@pytest.fixture
def store(tmp_path, small_jsonl):
    out = tmp_path / "store"
    assert main(["embed", str(small_jsonl), "--out", str(out), "--model", "hashing", "-q"]) == 0
    return out


def test_embed_index_select_export(tmp_path, store, capsys):
    assert (store / "_SUCCESS").exists()
    assert main(["index", str(store), "--k", "8", "--partitions", "3", "-q"]) == 0
    assert "kNN graph (k=8)" in capsys.readouterr().out

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


@pytest.mark.parametrize("extra", [["--partitions", "3"], ["--sampling", "taylor-softmax"],
                                   ["--optimizer", "lazier-than-lazy"], ["--kernel", "dense"],
                                   ["--function", "log-det"], ["--budget", "tokens:300"]])
def test_select_variants_write_valid_subsets(tmp_path, store, extra):
    sub = tmp_path / "sub"
    args = ["select", str(store), "--k", "8", "--out", str(sub), "-q"]
    if "--budget" not in extra:
        args += ["--budget", "12"]
    assert main(args + extra) == 0
    table = pq.read_table(sub / "subset.parquet")
    idx = table.column("index").to_pylist()
    assert len(set(idx)) == len(idx) > 0 and max(idx) < 60
    if "--budget" not in extra:
        assert len(idx) == 12
    if extra[0] == "--partitions":
        assert set(table.column("partition").to_pylist()) <= {0, 1, 2}


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
    assert man["kind"] == "flat" and man["config"]["graph_method"] == "auto"
