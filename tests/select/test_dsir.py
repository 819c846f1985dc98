"""DSIR: weights against a direct computation, the KL reduction, the stage (budgets, skip/refuse, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _docs import FILLER, TOPICS, make_docs
from scipy import stats

from subsetlm.cli import main
from subsetlm.select.constraints import Knapsack
from subsetlm.select.dsir import (NgramHasher, dsir_importance, dsir_select, fold, kl_divergence, kl_reduction,
                                  overlap)
from subsetlm.select.dsir_run import DSIRConfig, dsir, summary
from subsetlm.select.sampling import gumbel_top_k
from subsetlm.subsets import read_subset
from subsetlm.subsets.assignment import read_assignment


def _cardio(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.choice(TOPICS["cardio"], size=int(rng.integers(12, 40))).tolist()
        words += rng.choice(FILLER, size=len(words) // 2).tolist()
        rng.shuffle(words)
        out.append(" ".join(words).capitalize() + ".")
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path):
    """A 400-document corpus over four topics (a quarter cardio) and a cardio target, as files."""
    docs = make_docs(400, seed=1)
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", docs)
    target = _write_jsonl(tmp_path / "target.jsonl", [{"text": t} for t in _cardio(80, seed=2)])
    topics = np.array([d["topic"] for d in docs])
    return corpus, target, topics, [d["text"] for d in docs]


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not Path(str(out) + ".tmp").exists()


# -- the library: weights, KL ----------------------------------------------------------------------------


def test_weights_equal_a_direct_numpy_computation(data):
    _, target_file, _, raw = data
    target = [json.loads(line)["text"] for line in target_file.read_text().splitlines()]
    N, alpha = 2 ** 16, 0.5
    h = NgramHasher(N)
    C = h.transform(raw).toarray().astype(np.float64)  # (n, N) per-document counts
    ct = h.transform(target).toarray().astype(np.float64).sum(axis=0)
    cr = C.sum(axis=0)
    log_pt = np.log((ct + alpha) / (ct.sum() + N * alpha))
    log_pr = np.log((cr + alpha) / (cr.sum() + N * alpha))
    expected = C @ (log_pt - log_pr)
    got = dsir_importance(raw, target, n_features=N, smoothing=alpha, batch_size=37)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # the selection is the Gumbel top-k of exactly these weights
    np.testing.assert_array_equal(dsir_select(raw, target, 50, seed=4, n_features=N, smoothing=alpha),
                                  gumbel_top_k(expected, 50, 4))


def test_folding_hashed_counts_equals_hashing_into_fewer_buckets(data):
    raw = data[3]
    big, small = NgramHasher(2 ** 18).counts([raw])[0], NgramHasher(2 ** 16).counts([raw])[0]
    np.testing.assert_array_equal(fold(big, 2 ** 16), small)
    with pytest.raises(ValueError, match="power of two"):
        fold(big, 10000)


def test_kl_divergence_equals_scipy_and_overlap_is_one_minus_total_variation():
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 5, 64).astype(float), rng.integers(0, 5, 64).astype(float)
    assert kl_divergence(p, q, 0.3) == pytest.approx(stats.entropy(p + 0.3, q + 0.3), rel=1e-12)
    assert kl_divergence(p, p) == 0.0
    tv = 0.5 * np.abs(p / p.sum() - q / q.sum()).sum()
    assert overlap(p, q) == pytest.approx(1 - tv)
    assert overlap(p, np.zeros(64)) == 0.0


def test_kl_reduction_is_positive_toward_a_shifted_target_and_zero_for_a_random_subset(data):
    _, target_file, topics, raw = data
    target = [json.loads(line)["text"] for line in target_file.read_text().splitlines()]
    h = NgramHasher()
    M = h.transform(raw)
    t, r = h.counts([target])[0], np.asarray(M.sum(axis=0)).ravel()
    chosen = dsir_select(raw, target, 80, seed=0)
    assert (topics[chosen] == "cardio").mean() > 0.95
    rand = np.random.default_rng(1).permutation(len(raw))
    sel_counts = np.asarray(M[chosen].sum(axis=0)).ravel()
    out = kl_reduction(t, sel_counts, raw_counts=r, random_counts=np.asarray(M[rand[:80]].sum(axis=0)).ravel())
    assert out["baseline"] == "random" and out["kl_reduction"] == out["kl_reduction_vs_random"]
    assert out["kl_target_raw"] > 0.5
    assert out["kl_reduction_vs_raw"] > 0.5 * out["kl_target_raw"]  # most of the divergence removed
    assert out["kl_reduction_vs_random"] > 0.5 * out["kl_target_random"]
    assert out["kl_target_selected"] == pytest.approx(kl_divergence(fold(t, 2 ** 14), fold(sel_counts, 2 ** 14)))
    with pytest.raises(ValueError, match="needs a baseline"):
        kl_reduction(t, r)


def test_a_random_subset_has_no_kl_reduction():
    # 4000 documents: a random half's topic mix is within ~1% of the corpus's (the KL follows it)
    raw, h = [d["text"] for d in make_docs(4000, seed=1)], NgramHasher()
    M = h.transform(raw)
    t, r = h.counts([_cardio(80, seed=2)])[0], np.asarray(M.sum(axis=0)).ravel()
    for seed in (1, 2, 3):
        half = np.random.default_rng(seed).permutation(len(raw))[:2000]
        out = kl_reduction(t, np.asarray(M[half].sum(axis=0)).ravel(), raw_counts=r)
        assert out["baseline"] == "raw" and out["kl_target_raw"] > 1.0
        assert abs(out["kl_reduction"]) < 0.05 * out["kl_target_raw"], (seed, out)


# -- the stage -------------------------------------------------------------------------------------------


def test_stage_on_corpus_files_matches_the_library_and_writes_the_assignment(tmp_path, data):
    corpus, target_file, _, raw = data
    target = [json.loads(line)["text"] for line in target_file.read_text().splitlines()]
    out = tmp_path / "sub"
    path = dsir(DSIRConfig(corpus=[str(corpus)], target=[str(target_file)], budget="60", out=str(out), seed=3))
    sub = read_subset(path)
    np.testing.assert_array_equal(sub.indices, dsir_select(raw, target, 60, seed=3))
    w = dsir_importance(raw, target)
    np.testing.assert_allclose(sub.gains, w[sub.indices], rtol=1e-12)  # gain = the log importance weight
    assert np.all(sub.weights == 1.0)
    s = sub.manifest["selection"]
    assert s["target"]["kind"] == "files" and s["target"]["n_docs"] == 80
    assert s["kl_reduction"] == s["kl"]["kl_reduction_vs_random"] > 0 and s["kl"]["kl_reduction_vs_raw"] > 0
    assert s["overlap"] > 0.3
    a = read_assignment(sub)
    status = np.array(a.column("status").to_pylist())
    rep = a.column("representative").to_numpy()
    assert len(status) == 400 and set(status[sub.indices]) == {"kept"}
    assert (status == "not_drawn").sum() == 340 and np.all(rep[status == "not_drawn"] == -1)
    assert np.all(rep[sub.indices] == sub.indices)
    assert "KL reduction" in summary(path) and "60 of 400" in summary(path)


def test_token_budget_draws_along_the_gumbel_order_and_holds(tmp_path, data):
    corpus, target_file, _, raw = data
    target = [json.loads(line)["text"] for line in target_file.read_text().splitlines()]
    cap = 2000
    path = dsir(DSIRConfig(corpus=[str(corpus)], target=[str(target_file)], budget=f"tokens:{cap}",
                           out=str(tmp_path / "sub")))
    sub = read_subset(path)
    costs = np.array([len(t.split()) for t in raw], dtype=float)  # corpus files: whitespace tokens
    assert costs[sub.indices].sum() <= cap
    order = gumbel_top_k(dsir_importance(raw, target), len(raw), 0)
    np.testing.assert_array_equal(sub.indices, Knapsack(costs, cap).draw(order))
    assert sub.manifest["selection"]["constraint"] == {"kind": "tokens", "cap": cap}
    assert sub.manifest["selection"]["random_subset"]["size"] > 0  # drawn under the same token budget


def test_stage_skips_a_rerun_refuses_another_config_or_target_and_force_replaces(tmp_path, data):
    corpus, target_file, _, _ = data
    out = tmp_path / "sub"
    base = {"corpus": [str(corpus)], "target": [str(target_file)], "budget": "0.1", "out": str(out)}
    dsir(DSIRConfig(**base))
    mtime = (out / "subset.parquet").stat().st_mtime_ns
    assert dsir(DSIRConfig(**base, batch_size=7)) == out  # batch_size is volatile: same identity
    assert (out / "subset.parquet").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match=r"different config \(config\.budget: \"0\.1\" != \"0\.2\"\)"):
        dsir(DSIRConfig(**{**base, "budget": "0.2"}))
    other = _write_jsonl(tmp_path / "other.jsonl", [{"text": t} for t in _cardio(30, seed=9)])
    target_file.write_text(other.read_text())  # same path, other texts: the target's fingerprint changes
    with pytest.raises(FileExistsError, match=r"different config \(target: "):
        dsir(DSIRConfig(**base))
    assert (out / "subset.parquet").stat().st_mtime_ns == mtime
    dsir(DSIRConfig(**{**base, "budget": "0.2", "force": True}))
    assert read_subset(out).size == 80


def test_a_store_ground_set_and_a_store_or_task_target(tmp_path, data):
    import pyarrow as pa
    from _stores import write_store_dir

    _, _, topics, raw = data
    store = write_store_dir(tmp_path / "store", n=len(raw), dim=4)
    pq.write_table(pa.table({"text": pa.array(raw, pa.string())}), store / "texts.parquet")
    tstore = write_store_dir(tmp_path / "tstore", n=80, dim=4, seed=5)
    pq.write_table(pa.table({"text": pa.array(_cardio(80, seed=2), pa.string())}), tstore / "texts.parquet")
    a = read_subset(dsir(DSIRConfig(corpus=[str(store)], target_store=str(tstore), budget="tokens:300",
                                    out=str(tmp_path / "a"))))
    n_tokens = np.array([5 + i % 7 for i in range(len(raw))])  # the store's n_tokens column
    assert n_tokens[a.indices].sum() <= 300 and (topics[a.indices] == "cardio").mean() > 0.9
    assert a.manifest["selection"]["target"]["kind"] == "store"
    splits = ["train", "validation", "test"] * 20
    task = _write_jsonl(tmp_path / "task.jsonl", [{"text": t, "label": i % 2, "split": s}
                                                  for i, (t, s) in enumerate(zip(_cardio(60, seed=2), splits))])
    b = read_subset(dsir(DSIRConfig(corpus=[str(store)], task=str(task), budget="40", out=str(tmp_path / "b"))))
    t = b.manifest["selection"]["target"]
    assert (t["kind"], t["spec"], t["n_docs"]) == ("task", str(task), 20) and t["n_ngrams"] > 0  # the train split
    assert (topics[b.indices] == "cardio").mean() > 0.9
    with pytest.raises(ValueError, match="--limit 5 applies to corpus files"):
        dsir(DSIRConfig(corpus=[str(store)], task=str(task), limit=5, out=str(tmp_path / "c")))


def test_bad_inputs_are_refused_and_nothing_is_written(tmp_path, data):
    corpus, target_file, _, _ = data
    out = tmp_path / "sub"
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "   "}) + "\n" + json.dumps({"text": ""}) + "\n")
    with pytest.raises(ValueError, match=r"the target \(files .*empty.jsonl\) is empty: 0 documents"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(empty)], out=str(out)))
    marks = _write_jsonl(tmp_path / "marks.jsonl", [{"text": "!!! ???"}, {"text": "-- ..."}])
    with pytest.raises(ValueError, match=r"is empty: 2 documents, 0 word n-grams"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(marks)], out=str(out)))
    rng = np.random.default_rng(0)
    greek = "αλφα βητα γαμμα δελτα εψιλον ζητα ητα θητα ιωτα καππα λαμδα".split()
    foreign = _write_jsonl(tmp_path / "greek.jsonl",
                           [{"text": " ".join(rng.choice(greek, 20))} for _ in range(50)])
    with pytest.raises(ValueError, match=r"share only 0\.0\d\d of their hashed n-gram distribution .* < min_overlap "
                                         r"0\.1; against PubMed"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(foreign)], out=str(out)))
    with pytest.raises(ValueError, match=r"budget=401 > n=400"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(target_file)], budget="401", out=str(out)))
    with pytest.raises(ValueError, match="give exactly one target.*got --target, --task"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(target_file)], task="x.jsonl", out=str(out)))
    with pytest.raises(ValueError, match=r"n_features=1000 must be in \[2\*\*16, 2\*\*20\]"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(target_file)], n_features=1000, out=str(out)))
    with pytest.raises(ValueError, match="kl_buckets=1000"):
        dsir(DSIRConfig(corpus=[str(corpus)], target=[str(target_file)], kl_buckets=1000, out=str(out)))
    assert _nothing_written(out)
    # the overlap check can be switched off
    dsir(DSIRConfig(corpus=[str(corpus)], target=[str(foreign)], min_overlap=0.0, budget="10", out=str(out)))
    assert read_subset(out).size == 10


def test_cli(tmp_path, data, capsys):
    corpus, target_file, _, _ = data
    out = tmp_path / "sub"
    args = ["dsir", str(corpus), "--target", str(target_file), "--budget", "25", "--out", str(out), "-q"]
    assert main(args) == 0
    assert "25 of 400 rows by DSIR" in capsys.readouterr().out
    man = json.loads((out / "manifest.json").read_text())
    assert man["function"] == "dsir" and man["config"]["budget"] == "25" and "out" not in man["config"]
    assert main(args) == 0  # skipped
    assert main(args[:-3] + ["--seed", "1", "--out", str(out), "-q"]) == 2
    assert "different config (config.seed: 0 != 1); pass --force" in capsys.readouterr().err


# -- against the reference implementation (data-selection on PyPI) -----------------------------------------


def test_rankings_agree_with_the_data_selection_package(tmp_path, data):
    import data_selection as ds  # the reference DSIR, pinned in the dev extra: a missing install is a failure
    _, target_file, _, raw = data
    raw_file = _write_jsonl(tmp_path / "raw.jsonl", [{"text": t} for t in raw])
    ref = ds.HashedNgramDSIR([str(raw_file)], [str(target_file)], cache_dir=str(tmp_path / "cache"), num_proc=1,
                             min_example_length=0)
    ref.fit_importance_estimator(num_tokens_to_fit="all")
    ref.compute_importance_weights()
    theirs = np.load(tmp_path / "cache" / "log_importance_weights" / "0.npy")
    target = [json.loads(line)["text"] for line in target_file.read_text().splitlines()]
    k = len(raw) // 4
    for smoothing, min_rho, min_top in ((1e-6, 0.99, 0.95), (1.0, 0.9, 0.9)):
        ours = dsir_importance(raw, target, smoothing=smoothing)
        rho = stats.spearmanr(ours, theirs).statistic
        top = len(set(np.argsort(-ours)[:k]) & set(np.argsort(-theirs)[:k])) / k
        # the reference smooths by adding 1e-8 to the probabilities and hashes into 10k SHA-256 buckets;
        # tokens agree here (no punctuation inside these texts but the final period, a token of its own there)
        print(f"smoothing={smoothing}: Spearman {rho:.4f}, top-quarter overlap {top:.3f}")
        assert rho > min_rho and top > min_top, (smoothing, rho, top)


def test_the_tasks_held_out_documents_are_never_drawn(tmp_path, data):
    """With --task, the corpus rows that are the task's validation/test texts get weight 0 (as retrieve does)."""
    corpus, _, _, raw = data
    texts = _cardio(30, seed=7)
    held = texts[10:]  # validation and test examples ...
    splits = ["train"] * 10 + ["validation"] * 10 + ["test"] * 10
    task = _write_jsonl(tmp_path / "task.jsonl", [{"text": t, "label": i % 2, "split": s}
                                                  for i, (t, s) in enumerate(zip(texts, splits))])
    docs = [{"text": t} for t in raw] + [{"text": "  " + t.upper()} for t in held]  # ... copied into the corpus
    big = _write_jsonl(tmp_path / "big.jsonl", docs)
    with pytest.raises(ValueError, match="only 400 of the 420 rows may be drawn"):
        dsir(DSIRConfig(corpus=[str(big)], task=str(task), budget="401", out=str(tmp_path / "a")))
    assert _nothing_written(tmp_path / "a")
    sub = read_subset(dsir(DSIRConfig(corpus=[str(big)], task=str(task), budget="400", out=str(tmp_path / "a"))))
    assert sub.size == 400 and sub.manifest["selection"]["n_excluded"] == 20
    assert not np.isin(sub.indices, np.arange(400, 420)).any()
    loose = read_subset(dsir(DSIRConfig(corpus=[str(big)], task=str(task), budget="420", decontaminate=False,
                                        out=str(tmp_path / "b"))))
    assert loose.manifest["selection"]["n_excluded"] == 0 and np.isin(loose.indices, np.arange(400, 420)).any()
