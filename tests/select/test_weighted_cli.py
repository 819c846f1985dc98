"""Quality-weighted facility location from the CLI: score files, identity, errors, the example script."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from subsetlm.cli import main
from subsetlm.embed import EmbeddingStore
from subsetlm._io import sha256_file as file_sha256
from subsetlm.select.scores import read_scores
from subsetlm.subsets import read_subset
from subsetlm.subsets.assignment import ASSIGNMENT_FILE, assignment_table, read_assignment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, small_jsonl):
    out = tmp_path / "store"
    assert main(["embed", str(small_jsonl), "--out", str(out), "--model", "hashing", "--id-field", "id", "-q"]) == 0
    return out


def _docs(small_jsonl) -> list[dict]:
    return [json.loads(ln) for ln in open(small_jsonl)]


def _quality(small_jsonl) -> dict[str, float]:
    """A score per document: high for one topic (the 'target'), low for the others."""
    docs = _docs(small_jsonl)
    return {d["id"]: (0.9 if d["topic"] == "cardio" else 0.1) + 0.01 * (i % 7) for i, d in enumerate(docs)}


def _write_jsonl(path: Path, scores: dict[str, float], column: str = "score") -> Path:
    path.write_text("".join(json.dumps({"id": k, column: v}) + "\n" for k, v in scores.items()))
    return path


def _objective_from_assignment(sub: Path, w: np.ndarray, q: np.ndarray, lam: float) -> float:
    a = read_assignment(sub)
    rep = a.column("representative").to_numpy()
    sim = a.column("similarity").to_numpy(zero_copy_only=False).astype(np.float64)
    kept = np.flatnonzero(np.array(a.column("status").to_pylist()) == "kept")
    has = rep >= 0
    return float(w[has] @ np.maximum(sim[has], 0)) + lam * float(q[kept].sum())


def test_quality_file_end_to_end(tmp_path, store, small_jsonl, capsys):
    scores = _quality(small_jsonl)
    qfile = _write_jsonl(tmp_path / "q.jsonl", scores)
    out = tmp_path / "sub"
    args = ["select", str(store), "--budget", "12", "--k", "8", "--quality", str(qfile), "--quality-weight", "3",
            "--out", str(out), "-q"]
    assert main(args) == 0
    assert "mean q" in capsys.readouterr().out
    sub = read_subset(out)
    rec = sub.manifest["weighting"]["quality"]
    assert rec["path"] == str(qfile) and rec["sha256"] == file_sha256(qfile) and rec["quality_weight"] == 3.0
    assert rec["mean_selected"] > rec["mean_ground"]
    assert sub.manifest["config"]["quality"] == str(qfile)
    ids = EmbeddingStore.open(store).doc_ids
    q = np.array([scores[i] for i in ids])
    obj = sub.manifest["certificate"]["objective"]
    assert _objective_from_assignment(out, np.ones(len(q)), q, 3.0) == pytest.approx(obj, rel=1e-5)
    plain = tmp_path / "plain"
    assert main(["select", str(store), "--budget", "12", "--k", "8", "--out", str(plain), "-q"]) == 0
    pm = read_subset(plain).manifest
    assert "weighting" not in pm and not any(k.startswith("quality") for k in pm["config"])  # identity unchanged
    assert q[sub.indices].mean() > q[read_subset(plain).indices].mean()

    # the same values as a .npy aligned with the store rows: the same subset
    npy = tmp_path / "q.npy"
    np.save(npy, q)
    out2 = tmp_path / "sub_npy"
    assert main(args[:7] + [str(npy)] + args[8:-3] + ["--out", str(out2), "-q"]) == 0
    assert read_subset(out2).indices.tolist() == sub.indices.tolist()

    # rerun: skipped; other scores under the same path: refused, then --force rebuilds
    before = (out / "manifest.json").read_text()
    assert main(args) == 0 and (out / "manifest.json").read_text() == before
    _write_jsonl(qfile, {k: 1.0 - v for k, v in scores.items()})
    capsys.readouterr()
    assert main(args) != 0
    assert "weighting.quality" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0 and read_subset(out).manifest["weighting"]["quality"]["sha256"] != \
        rec["sha256"]


def test_coverage_weights_from_parquet(tmp_path, store, small_jsonl):
    docs = _docs(small_jsonl)
    w = {d["id"]: (2.0 if d["topic"] == "onco" else 0.5) for d in docs}
    wfile = tmp_path / "w.parquet"
    pq.write_table(pa.table({"id": list(w), "w": list(w.values()), "other": np.zeros(len(w))}), wfile)
    out = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--coverage-weights", str(wfile),
                 "--coverage-column", "w", "--out", str(out), "-q"]) == 0
    sub = read_subset(out)
    wv = np.array([w[i] for i in EmbeddingStore.open(store).doc_ids])
    obj = sub.manifest["certificate"]["objective"]
    assert _objective_from_assignment(out, wv, np.zeros(len(wv)), 0.0) == pytest.approx(obj, rel=1e-5)
    assert sub.manifest["weighting"]["coverage_weights"]["column"] == "w"
    assert obj <= sub.manifest["certificate"]["upper_bound"]


@pytest.mark.parametrize("make, extra, needle", [
    (lambda p, s: _write_jsonl(p / "q.jsonl", s, column="quality"), [], "no column 'score'"),
    (lambda p, s: _write_jsonl(p / "q.jsonl", dict(list(s.items())[1:])), [], "have no score"),
    (lambda p, s: _write_jsonl(p / "q.jsonl", {k: -v for k, v in s.items()}), [], "negative"),
    (lambda p, s: (np.save(p / "q.npy", np.ones(7)), p / "q.npy")[1], [], "one value per store row (60,)"),
    (lambda p, s: _write_jsonl(p / "q.jsonl", s), ["--function", "log-det"], "through submodlib"),
    (lambda p, s: _write_jsonl(p / "q.jsonl", s), ["--quality-weight", "-1"], "quality_weight=-1.0"),
    (lambda p, s: p / "missing.parquet", [], "no such file"),
])
def test_bad_score_files_are_clear_errors_and_write_nothing(tmp_path, store, small_jsonl, capsys, make, extra,
                                                            needle):
    path = make(tmp_path, _quality(small_jsonl))
    out = tmp_path / "sub"
    rc = main(["select", str(store), "--budget", "10", "--k", "8", "--quality", str(path), "--out", str(out), "-q"]
              + extra)
    err = capsys.readouterr().err
    assert rc != 0 and needle in err.replace("\n", " ")
    if "submodlib" not in needle and "quality_weight" not in needle:
        assert str(path) in err  # the error names the file
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_parquet_missing_column_names_the_file(tmp_path, store, small_jsonl, capsys):
    f = tmp_path / "q.parquet"
    pq.write_table(pa.table({"id": ["a"], "value": [1.0]}), f)
    assert main(["select", str(store), "--budget", "5", "--quality", str(f), "--out", str(tmp_path / "s"), "-q"]) != 0
    err = capsys.readouterr().err
    assert str(f) in err and "no column 'score'" in err and "value" in err


def test_within_weights_need_within(tmp_path, store, capsys):
    assert main(["select", str(store), "--budget", "5", "--within-weights", "group-size",
                 "--out", str(tmp_path / "s"), "-q"]) != 0
    assert "--within" in capsys.readouterr().err


def test_within_dedup_subset_weighted_by_group_size(tmp_path, store):
    """A dedup-like subset (rows 0..29 kept; rows 30..44 duplicates of row 0, rows 45..59 of rows 0..14): the kept rows
    weigh their group sizes, so the objective counts every corpus row once."""
    from subsetlm.subsets import write_subset

    s = EmbeddingStore.open(store)
    n = s.n
    group = np.r_[np.arange(30), np.zeros(15, np.int64), np.arange(15)]
    kept = np.arange(30)
    rep = group.copy()
    sim = np.ones(n, np.float32)
    dedup = tmp_path / "dedup"
    write_subset(dedup, store=s, indices=kept, gains=np.zeros(30), manifest={"function": "dedup", "config": {}},
                 extra_tables={ASSIGNMENT_FILE: assignment_table(
                     n, kept, representative=rep, similarity=sim, group=group,
                     status=np.where(np.arange(n) < 30, "kept", "duplicate").astype(object))})
    out = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "8", "--k", "8", "--within", str(dedup), "--within-weights",
                 "group-size", "--out", str(out), "-q"]) == 0
    sub = read_subset(out)
    w = np.bincount(group, minlength=n).astype(np.float64)
    assert w[0] == 17 and w[1] == 2 and w[29] == 1 and w[kept].sum() == n
    a = read_assignment(out)
    rep2 = a.column("representative").to_numpy()
    sim2 = a.column("similarity").to_numpy(zero_copy_only=False).astype(np.float64)
    ground = np.zeros(n, bool)
    ground[kept] = True
    has = (rep2 >= 0) & ground
    assert float(w[has] @ np.maximum(sim2[has], 0)) == pytest.approx(sub.manifest["certificate"]["objective"],
                                                                     rel=1e-5)
    rec = sub.manifest["weighting"]["coverage_weights"]
    assert rec["within_group_sizes"]["sha256"] == file_sha256(dedup / ASSIGNMENT_FILE)
    assert set(sub.indices.tolist()) <= set(kept.tolist())


def test_read_scores_joins_on_ids_and_document_ids(tmp_path):
    f = _write_jsonl(tmp_path / "q.jsonl", {"a": 1.0, "b": 2.0, "extra": 5.0})
    v, rec = read_scores(f, np.array(["b", "a"], dtype=object), column="score")
    assert v.tolist() == [2.0, 1.0] and rec["column"] == "score"
    v, _ = read_scores(f, np.array(["a#0", "a#1", "b#0"], dtype=object), column="score",
                       doc_ids=np.array(["a", "a", "b"], dtype=object))
    assert v.tolist() == [1.0, 1.0, 2.0]
    gz = tmp_path / "q.jsonl.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    assert read_scores(gz, np.array(["b"], dtype=object), column="score")[0].tolist() == [2.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "score": 1}\n{"id": "b", "score": \n')
    with pytest.raises(ValueError, match="not valid JSON lines"):
        read_scores(bad, np.array(["a"], dtype=object), column="score")
    text = _write_jsonl(tmp_path / "t.jsonl", {"a": "high"})
    with pytest.raises(ValueError, match="not numbers"):
        read_scores(text, np.array(["a"], dtype=object), column="score")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "score": 1}\n{"id": "a", "score": 2}\n')
    with pytest.raises(ValueError, match="duplicate ids"):
        read_scores(dup, np.array(["a"], dtype=object), column="score")


def test_example_quality_scores_smoke(tmp_path):
    """examples/quality_scores.py --smoke: a classifier's scores that select --quality accepts and acts on."""
    out = tmp_path / "qs" / "scores.parquet"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quality_scores.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["scored"] == 400 and report["heldout_auc"] > 0.7
    by_topic = report["mean_score_by_topic"]
    assert by_topic["astro"] > 2 * max(v for t, v in by_topic.items() if t != "astro")
    t = pq.read_table(out)
    assert t.column_names == ["id", "score"] and t.num_rows == 400
    q = t.column("score").to_numpy()
    assert np.all((q >= 0) & (q <= 1))

    corpus, store = tmp_path / "qs" / "corpus.jsonl", tmp_path / "qs" / "store"
    assert main(["embed", str(corpus), "--id-field", "id", "--model", "hashing", "--out", str(store), "-q"]) == 0
    topics = np.array([json.loads(ln)["topic"] for ln in open(corpus)])
    share = {}
    for name, flags in (("plain", []), ("quality", ["--quality", str(out), "--quality-weight", "2"])):
        sub = tmp_path / name
        assert main(["select", str(store), "--budget", "40", "--out", str(sub), "-q"] + flags) == 0
        share[name] = float(np.mean(topics[read_subset(sub).indices] == "astro"))
    assert share["quality"] > share["plain"] + 0.2
