"""Baselines: uniform random subsets and DSIR hashed n-gram importance resampling."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from subsetlm.select.baselines import dsir_importance, dsir_select, random_subset


def test_random_subset_basic_properties():
    out = random_subset(100, 30, seed=5)
    assert out.dtype == np.int64 and out.shape == (30,)
    assert len(set(out.tolist())) == 30 and out.min() >= 0 and out.max() < 100
    np.testing.assert_array_equal(out, random_subset(100, 30, seed=5))
    assert not np.array_equal(out, random_subset(100, 30, seed=6))
    # draw order: a smaller budget with the same seed is a prefix
    np.testing.assert_array_equal(random_subset(100, 10, seed=5), out[:10])
    np.testing.assert_array_equal(np.sort(random_subset(20, 20, seed=1)), np.arange(20))
    assert random_subset(0, 0).shape == (0,)


def test_random_subset_is_uniform():
    n, b, runs = 10, 3, 4000
    counts = np.zeros(n)
    for s in range(runs):
        counts[random_subset(n, b, seed=s)] += 1
    assert stats.chisquare(counts, np.full(n, runs * b / n)).pvalue > 1e-4


@pytest.mark.parametrize("n, budget, exc, fragment", [
    (10, 11, ValueError, r"budget=11 must be in \[0, 10\]"),
    (10, -1, ValueError, "budget=-1"),
    (10, 2.0, TypeError, "budget must be an int"),
    (-1, 0, ValueError, "n=-1"),
])
def test_random_subset_errors(n, budget, exc, fragment):
    with pytest.raises(exc, match=fragment):
        random_subset(n, budget, seed=0)


def _ngrams(text):
    toks = re.findall(r"\b\w+\b", text.lower())
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


def test_dsir_log_weights_match_exact_ngram_models():
    target = ["heart artery blood", "blood pressure heart", "artery stent"]
    raw = ["heart blood pressure", "tumor cancer biopsy", "artery tumor", "stent stent heart"]
    N = 2 ** 16
    ct = Counter(g for t in target for g in _ngrams(t))
    cr = Counter(g for t in raw for g in _ngrams(t))
    Tt, Tr = sum(ct.values()), sum(cr.values())

    def logp(c, total, g):  # add-one smoothing over N hash buckets (no collisions at this size)
        return math.log(c[g] + 1) - math.log(total + N)

    expected = [sum(logp(ct, Tt, g) - logp(cr, Tr, g) for g in _ngrams(doc)) for doc in raw]
    got = dsir_importance(raw, target, n_features=N)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # a one-shot iterator gives the same weights as a list
    np.testing.assert_allclose(dsir_importance(iter(raw), iter(target), n_features=N), got, rtol=1e-12)
    # batching does not change anything
    np.testing.assert_allclose(dsir_importance(raw, target, n_features=N, batch_size=1), got, rtol=1e-12)


def _corpus(seed=0):
    rng = np.random.default_rng(seed)
    med = "heart artery blood pressure cardiac infarction statin hypertension vessel stent".split()
    sport = "football match goal striker league referee penalty keeper season coach".split()
    filler = "the a of in with and was for to on".split()

    def doc(words):
        w = rng.choice(words, size=int(rng.integers(8, 20))).tolist() + rng.choice(filler, size=5).tolist()
        rng.shuffle(w)
        return " ".join(w)

    topics = np.array([i % 2 for i in range(400)])  # 0 = medical (on target), 1 = sport
    raw = [doc(med if t == 0 else sport) for t in topics]
    target = [doc(med) for _ in range(40)]
    return raw, target, topics


def test_dsir_selects_on_target_documents():
    raw, target, topics = _corpus()
    sel = dsir_select(raw, target, 100, seed=0)
    assert sel.shape == (100,) and len(set(sel.tolist())) == 100
    on_target = float((topics[sel] == 0).mean())
    assert on_target >= 0.95, on_target  # a random subset would give ~0.5
    w = dsir_importance(raw, target)
    assert w[topics == 0].min() > w[topics == 1].max()


def test_dsir_deterministic_for_seed():
    raw, target, _ = _corpus(1)
    a = dsir_select(raw, target, 250, seed=3)
    np.testing.assert_array_equal(a, dsir_select(raw, target, 250, seed=3))
    np.testing.assert_array_equal(a, dsir_select(iter(raw), target, 250, seed=3))
    assert not np.array_equal(a, dsir_select(raw, target, 250, seed=4))


def test_dsir_errors():
    raw, target, _ = _corpus()
    with pytest.raises(ValueError, match=r"budget=401 must be in \[0, 400\]"):
        dsir_select(raw, target, 401)
    with pytest.raises(ValueError, match="target_texts is empty"):
        dsir_select(raw, [], 5)
    with pytest.raises(ValueError, match="texts is empty"):
        dsir_select([], target, 0)
    with pytest.raises(ValueError, match=r"n_features=1000 must be in \[2\*\*16, 2\*\*20\]"):
        dsir_select(raw, target, 5, n_features=1000)
    with pytest.raises(ValueError, match="smoothing"):
        dsir_select(raw, target, 5, smoothing=0.0)
    with pytest.raises(TypeError, match="text 1 is int"):
        dsir_select(["a", 3], target, 1)
