"""benchmarks/selection_quality.py's parts: corpora, token caps, the FL diagnostic, the statistics, one training run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import _quality_data as D  # noqa: E402
from benchmarks._quality_arms import fill_to_cap, fl_objective  # noqa: E402
from benchmarks._quality_report import ci95, paired  # noqa: E402
from benchmarks._quality_train import cap_prefix, random_rows, run_job  # noqa: E402

WORDS = ("cell gene protein tumor patient dose trial blood heart liver renal acute chronic therapy "
         "model data result method study group risk rate level effect").split()


def _texts(n: int, seed: int = 0, length: int = 40) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, length)) for _ in range(n)]


def test_redundant_corpus_has_the_asked_share_of_copies_with_a_heavy_tail():
    pool = _texts(400)
    texts, origin, is_copy = D.redundant("r", pool, 400, 0.75, seed=3)
    assert len(texts) == 400 and int(is_copy.sum()) == 300
    originals = set(origin[~is_copy].tolist())
    assert originals == set(range(100)) and set(origin[is_copy].tolist()) <= originals
    for i in np.flatnonzero(is_copy)[:50]:  # a copy is a light edit of its original: most words shared
        a, b = set(texts[i].split()), set(pool[origin[i]].split())
        assert len(a & b) >= 0.8 * len(b)
    counts = np.bincount(origin[is_copy], minlength=100)
    assert counts.max() >= 5 * max(1, np.median(counts))  # heavy-tailed multiplicities
    again = D.redundant("r", pool, 400, 0.75, seed=3)
    assert again[0] == texts  # seeded: same corpus


def test_cap_prefix_and_random_rows_respect_the_token_cap():
    nt = np.array([5, 1, 7, 3, 2, 9, 4])
    assert cap_prefix(np.array([2, 0, 1, 3]), nt, 13).tolist() == [2, 0, 1]  # 7+5+1 = 13; +3 would exceed
    for seed in range(5):
        rows = random_rows(nt, 12, seed)
        assert nt[rows].sum() <= 12 and len(np.unique(rows)) == len(rows)
    assert random_rows(nt, 12, 1).tolist() == random_rows(nt, 12, 1).tolist()
    assert len({tuple(random_rows(nt, 12, s)) for s in range(8)}) > 1  # the seed changes the draw


def test_fill_to_cap_keeps_the_kept_rows_first():
    nt = np.ones(10, int)
    out = fill_to_cap(np.array([1, 4, 7]), nt, 6, seed=0)
    assert {1, 4, 7} <= set(out.tolist()) and len(out) == 6
    assert set(fill_to_cap(np.array([1, 4, 7, 8]), nt, 2, seed=0).tolist()) <= {1, 4, 7, 8}


def test_fl_objective_matches_brute_force_on_an_exact_graph():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    nb = np.argsort(-S, axis=1)
    graph = (nb.astype(np.int64), np.take_along_axis(S, nb, 1))
    rows = np.array([0, 5, 11, 29])
    want = np.maximum(S[:, rows], 0).max(axis=1).mean()
    assert fl_objective(graph, rows) == pytest.approx(want, rel=1e-6)


def test_paired_statistics_and_the_power_note():
    from scipy import stats

    a, b = [3.0, 2.9, 3.1, 3.05, 2.95], [3.1, 3.0, 3.12, 3.2, 3.0]
    c = paired(a, b)
    d = np.subtract(a, b)
    assert c["mean"] == pytest.approx(d.mean()) and c["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c["ci"] == pytest.approx(stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5))
    assert c["wins"] == 5 and "mde" not in c  # separates: no power note
    # the MDE is what the design detects with 80% power: simulate an effect of exactly the MDE
    rng = np.random.default_rng(0)
    mde = (stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) * 1.0 / np.sqrt(10)
    hits = sum(stats.ttest_1samp(rng.normal(mde, 1.0, 10), 0).pvalue < 0.05 for _ in range(2000))
    assert 0.74 < hits / 2000 < 0.86
    assert ci95([1.0])[1] != ci95([1.0])[1]  # one value: no interval (nan)
    null = paired([0.01, -0.02, 0.015, -0.01], [0.0] * 4)  # covers zero: the power note is given
    assert null["mde"] == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * null["sd"] / 2)


def test_one_run_is_paired_and_deterministic(tmp_path):
    """Two runs of one seed on one subset give identical losses; another subset changes them; tokens are exact."""
    from subsetlm.recipes.tokenizer import train_byte_bpe

    texts = _texts(120, seed=1)
    corpus = D.Corpus("natural", texts, np.arange(120), np.zeros(120, bool), np.full(120, "pubmed"),
                      _texts(20, seed=2), np.full(20, "pubmed"), _texts(10, seed=3))
    corpus.save(tmp_path / "c.json.gz")
    tok = train_byte_bpe(texts, vocab_size=300, model_max_length=32)
    tok.save_pretrained(str(tmp_path / "tok"))
    nt = D.token_counts(tok, texts)
    np.save(tmp_path / "nt.npy", nt)
    np.save(tmp_path / "a.npy", np.arange(0, 60))
    np.save(tmp_path / "b.npy", np.arange(60, 120))
    model = {"hidden": 32, "layers": 1, "heads": 2, "seq_len": 32, "vocab": 300, "batch": 4, "lr": 3e-3,
             "warmup": 0.1, "schedule": "cosine", "precision": "fp32"}

    def job(rows: str, out: str) -> dict:
        return {"corpus": "natural", "budget": 0.5, "arm": "fl-hashing", "seed": 0, "regime": "compute", "steps": 6,
                "cap": int(nt.sum() // 2), "model": model, "ingenious": {}, "corpus_path": str(tmp_path / "c.json.gz"),
                "tokens_path": str(tmp_path / "nt.npy"), "tokenizer": str(tmp_path / "tok"), "eval_rows": 20,
                "rows_path": str(tmp_path / rows), "step0": True, "out": str(tmp_path / out)}

    r1, r2, r3 = run_job(job("a.npy", "1.json")), run_job(job("a.npy", "2.json")), run_job(job("b.npy", "3.json"))
    assert r1["heldout_loss"] == r2["heldout_loss"] and r1["curve"] == r2["curve"]
    assert r3["heldout_loss"] != r1["heldout_loss"]
    assert r1["step0_loss"] == r3["step0_loss"]  # the same initial weights in both arms
    assert r1["tokens_seen"] == 6 * 4 * 32 and r1["passes"] == 0  # exactly steps x batch x seq_len, one pass
    assert json.loads((tmp_path / "1.json").read_text()) == r1 and not (tmp_path / "1.run").exists()
