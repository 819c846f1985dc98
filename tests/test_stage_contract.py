"""The stage contract (subsetlm._stage) and the CLI built on it: skip, refuse, force, resume, --config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from subsetlm._stage import IDENTITY_FILE, Output, diff, identity
from subsetlm.cli import main


def test_skip_when_identical_refuse_when_different(tmp_path):
    out = Output(tmp_path / "o", {"a": 1}, what="thing")
    assert out.up_to_date(force=False) is False
    with out.writing(force=False) as d:
        (d / "x").write_text("1")
    assert (tmp_path / "o" / "_SUCCESS").is_file() and (tmp_path / "o" / IDENTITY_FILE).is_file()
    assert not (tmp_path / "o.tmp").exists()
    assert out.up_to_date(force=False) is True
    other = Output(tmp_path / "o", {"a": 2}, what="thing")
    with pytest.raises(FileExistsError, match=r"holds a thing with a different config \(a: 1 != 2\); pass --force"):
        other.up_to_date(force=False)
    assert other.up_to_date(force=True) is False
    with other.writing(force=True) as d:
        (d / "x").write_text("2")
    assert (tmp_path / "o" / "x").read_text() == "2" and other.up_to_date(force=False)


def test_a_failed_write_leaves_the_old_output_and_no_tmp(tmp_path):
    out = Output(tmp_path / "o", {"a": 1})
    with out.writing(force=False) as d:
        (d / "x").write_text("old")
    new = Output(tmp_path / "o", {"a": 2})
    with pytest.raises(RuntimeError):
        with new.writing(force=True) as d:
            (d / "x").write_text("new")
            raise RuntimeError("killed")
    assert (tmp_path / "o" / "x").read_text() == "old"
    assert not (tmp_path / "o.tmp").exists()


def test_resume_keeps_an_unfinished_run_of_the_same_identity_only(tmp_path):
    out = Output(tmp_path / "o", {"a": 1})
    with pytest.raises(RuntimeError):
        with out.writing(force=False, resume=True) as d:
            (d / "part-0").write_text("done")
            raise RuntimeError("killed")
    with out.writing(force=False, resume=True) as d:
        assert (d / "part-0").read_text() == "done"  # resumed
    other = Output(tmp_path / "p", {"a": 1})
    (tmp_path / "p.tmp").mkdir()
    (tmp_path / "p.tmp" / IDENTITY_FILE).write_text(json.dumps({"a": 9}))
    with pytest.raises(FileExistsError, match="unfinished .* different config"):
        with other.writing(force=False, resume=True):
            pass
    with other.writing(force=True, resume=True) as d:
        assert not (d / "part-0").exists()


def test_something_else_in_the_way_is_refused(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a complete subset"):
        Output(tmp_path / "o", {}, what="subset").up_to_date(force=False)
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"  # nothing lost


def test_caches_are_rebuilt_when_stale(tmp_path):
    out = Output(tmp_path / "g", {"k": 8}, on_mismatch="rebuild")
    with out.writing(force=False) as d:
        (d / "x").write_text("8")
    stale = Output(tmp_path / "g", {"k": 16}, on_mismatch="rebuild")
    assert stale.up_to_date(force=False) is False  # no error: a cache
    with stale.writing(force=False) as d:  # ... written anew over the stale one, without --force
        (d / "x").write_text("16")
    assert (tmp_path / "g" / "x").read_text() == "16"  # replaced
    assert stale.recorded() == {"k": 16} and stale.up_to_date(force=False) is True


def test_file_outputs_and_identity(tmp_path):
    @dataclass
    class Cfg:
        VOLATILE: ClassVar[tuple] = ("out", "force")
        out: str = "x"
        force: bool = False
        budget: tuple = (1, 2)

    assert identity(Cfg()) == {"budget": [1, 2]}
    f = Output(tmp_path / "r.json", identity(Cfg()), kind="file")
    f.write_json({"score": 1})
    assert f.up_to_date(force=False) and json.loads((tmp_path / "r.json").read_text())["score"] == 1
    assert diff({"a": {"b": 1}}, {"a": {"b": 2}}) == "a.b: 1 != 2"


# ------------------------------------------------------------------------------------- CLI on the contract
@pytest.mark.parametrize("command", ["embed", "index", "select", "retrieve", "export", "train", "eval", "demo"])
def test_config_files_are_read_by_every_command(tmp_path, command, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("no_such_field: 1\n")
    assert main([command, "--config", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown" in err and "'no_such_field'" in err and "valid fields" in err


def test_config_file_supplies_positionals_and_numbers(tmp_path, store):
    cfg = tmp_path / "sel.yaml"
    cfg.write_text(f"store: {store}\nout: {tmp_path / 'sub'}\nbudget: 0.25\nk: 8\n")
    assert main(["select", "--config", str(cfg), "-q"]) == 0
    man = json.loads((tmp_path / "sub" / "manifest.json").read_text())
    assert man["size"] == 15 and man["config"]["budget"] == "0.25" and man["config"]["k"] == 8
    cfg.write_text(f"store: {store}\nout: {tmp_path / 'sub85'}\nbudget: 20\nk: 8\n")
    assert main(["select", "--config", str(cfg), "-q"]) == 0
    assert json.loads((tmp_path / "sub85" / "manifest.json").read_text())["size"] == 20


def test_index_force_rebuilds_partitions(tmp_path, store):
    assert main(["index", str(store), "--partitions", "3", "--partitions-only", "-q"]) == 0
    labels = next((store / "partitions").glob("kmeans-3-seed0")) / "labels.npy"
    good = np.load(labels)
    np.save(labels, np.zeros_like(good))  # a stale cache the manifest still vouches for
    assert main(["index", str(store), "--partitions", "3", "--partitions-only", "--no-verify", "-q"]) == 0
    assert not np.load(labels).any()  # up to date by its identity, its checksums not checked: skipped
    assert main(["index", str(store), "--partitions", "3", "--partitions-only", "--force", "-q"]) == 0
    assert np.array_equal(np.load(labels), good)


def test_select_options_reach_the_manifest(tmp_path, store, capsys):
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(sub), "--source-proportions",
                 "corpus=1", "-q"]) == 0
    man = json.loads((sub / "manifest.json").read_text())
    assert man["config"]["source_proportions"] == {"corpus": 1.0} and man["selection"]["quotas"] == {"corpus": 10}
    assert man["config"]["kernel"] == "sparse"  # auto, resolved for facility location
    other = tmp_path / "other"
    capsys.readouterr()
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(other), "--source-proportions",
                 "nope=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown source(s) ['nope']" in err and "known sources: ['corpus']" in err, err
    assert not other.exists()


def test_select_refuses_a_different_config_and_a_changed_store(tmp_path, store, capsys):
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(sub), "-q"]) == 0
    assert main(["select", str(store), "--budget", "12", "--k", "8", "--out", str(sub), "-q"]) == 2
    assert "budget: \"10\" != \"12\"" in capsys.readouterr().err
    assert json.loads((sub / "manifest.json").read_text())["size"] == 10  # nothing lost
    assert main(["select", str(store), "--budget", "12", "--k", "8", "--out", str(sub), "--force", "-q"]) == 0
    assert json.loads((sub / "manifest.json").read_text())["size"] == 12


def test_export_suffix_format_and_force(tmp_path, store, capsys):
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(sub), "-q"]) == 0
    assert main(["export", str(sub), "--out", str(tmp_path / "x.csv"), "-q"]) == 2
    assert ".jsonl, .jsonl.gz or .parquet" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main(["export", str(sub), "--out", str(tmp_path / "x.jsonl"), "--format", "parquet", "-q"]) == 2
    out = tmp_path / "x.parquet"
    assert main(["export", str(sub), "--out", str(out), "--fields", "id", "rank", "--order", "index", "-q"]) == 0
    import pyarrow.parquet as pq

    t = pq.read_table(out)
    assert t.column_names == ["id", "rank"] and t.num_rows == 10
    assert sorted(t.column("rank").to_pylist()) == list(range(10)) and t.column("rank").to_pylist() != list(range(10))
    assert main(["export", str(sub), "--out", str(out), "-q"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["export", str(sub), "--out", str(out), "--force", "-q"]) == 0
    assert pq.read_table(out).num_columns == 10


def test_unused_new_select_fields_leave_the_recorded_config_as_before(tmp_path, store):
    """Subsets written before --within / --quality / --coverage-weights existed keep their identity."""
    sub = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(sub), "-q"]) == 0
    config = json.loads((sub / "manifest.json").read_text())["config"]
    assert not {"within", "within_weights", "quality", "quality_column", "quality_weight", "coverage_weights",
                "coverage_column", "merge"} & set(config)
