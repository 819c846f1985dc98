"""INGENIOUS Taylor-softmax gain sampling: probabilities, sampling distribution, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from subsetlm.select.sampling import (gumbel_top_k, normalize_gains, taylor_softmax_probs,
                                      taylor_softmax_sample)


def _taylor(x):
    """Oracle: the INGENIOUS code's taylor_softmax_v1 with n=2, written out."""
    w = np.array([1.0 + v + v * v / 2.0 for v in x])
    return w / w.sum()


def test_probs_match_formula_and_normalisations():
    g = np.array([5.0, 3.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(taylor_softmax_probs(g), _taylor(g), rtol=1e-12)
    np.testing.assert_allclose(taylor_softmax_probs(g, temperature=2.0), _taylor(g / 2.0), rtol=1e-12)
    np.testing.assert_allclose(taylor_softmax_probs(g, normalize="max"), _taylor(g / 5.0), rtol=1e-12)
    np.testing.assert_allclose(taylor_softmax_probs(g, normalize="minmax", temperature=0.5),
                               _taylor((g - 0.0) / 5.0 / 0.5), rtol=1e-12)
    g2 = np.array([2.0, 4.0, 6.0])
    np.testing.assert_allclose(normalize_gains(g2, "minmax"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(normalize_gains(-g2, "max"), [-1 / 3, -2 / 3, -1.0])
    # constant gains -> uniform under every normalisation
    for norm in ("none", "max", "minmax"):
        np.testing.assert_allclose(taylor_softmax_probs(np.full(4, 3.0), normalize=norm), 0.25)
    # every weight is positive, even for negative gains (1 + z + z^2/2 >= 1/2)
    p = taylor_softmax_probs(np.array([-1.0, -10.0, 0.0]))
    assert (p > 0).all() and abs(p.sum() - 1) < 1e-12


def test_first_draw_distribution_matches_p():
    g = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    p = taylor_softmax_probs(g)
    n_seeds = 20000
    first = np.array([taylor_softmax_sample(g, 1, seed=s)[0] for s in range(n_seeds)])
    obs = np.bincount(first, minlength=g.size)
    chi2 = stats.chisquare(obs, n_seeds * p)
    assert chi2.pvalue > 1e-4, (obs / n_seeds, p)
    # a sampler that drew proportionally to g (not the Taylor softmax) would be rejected
    wrong = (g + 1e-9) / (g + 1e-9).sum()
    assert stats.chisquare(obs, n_seeds * wrong).pvalue < 1e-10


def test_inclusion_probabilities_match_successive_sampling():
    g = np.array([0.2, 1.0, 2.0, 4.0])
    p = taylor_softmax_probs(g)
    # exact P(i in S) for k=2 successive draws without replacement
    exact = np.array([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(4) if j != i) for i in range(4)])
    n_seeds = 8000
    counts = np.zeros(4)
    for s in range(n_seeds):
        counts[taylor_softmax_sample(g, 2, seed=s)] += 1
    freq = counts / n_seeds
    sd = np.sqrt(exact * (1 - exact) / n_seeds)
    assert (np.abs(freq - exact) < 5 * sd).all(), (freq, exact)


def test_k_equals_n_is_a_permutation_and_k_zero_is_empty():
    g = np.random.default_rng(0).random(50)
    out = taylor_softmax_sample(g, 50, seed=3)
    assert out.dtype == np.int64 and out.shape == (50,)
    np.testing.assert_array_equal(np.sort(out), np.arange(50))
    assert taylor_softmax_sample(g, 0, seed=3).shape == (0,)


def test_deterministic_and_distinct():
    g = np.random.default_rng(1).random(200) * 10
    a = taylor_softmax_sample(g, 60, seed=7)
    np.testing.assert_array_equal(a, taylor_softmax_sample(g, 60, seed=7))
    assert len(np.unique(a)) == 60
    assert not np.array_equal(a, taylor_softmax_sample(g, 60, seed=8))
    # draw order: a k-sample is the prefix of a larger sample with the same seed
    np.testing.assert_array_equal(taylor_softmax_sample(g, 10, seed=7), a[:10])


def test_higher_gain_higher_inclusion():
    g = np.arange(10, dtype=np.float64)
    counts = np.zeros(10)
    for s in range(3000):
        counts[taylor_softmax_sample(g, 3, seed=s)] += 1
    assert (np.diff(counts) > 0).all(), counts


def test_gumbel_top_k_never_draws_zero_weight():
    with np.errstate(divide="ignore"):
        lw = np.log(np.array([0.0, 1.0, 0.0, 2.0, 1.0]))
    for s in range(50):
        out = gumbel_top_k(lw, 3, s)
        assert set(out.tolist()) == {1, 3, 4}
    with pytest.raises(ValueError, match=r"k=4 must be in \[0, 3\]"):
        gumbel_top_k(lw, 4, 0)


@pytest.mark.parametrize("gains, k, kwargs, exc, fragment", [
    (np.ones(3), 4, {}, ValueError, r"k=4 must be in \[0, n=3\]"),
    (np.ones(3), -1, {}, ValueError, r"k=-1 must be in"),
    (np.ones(3), 1.5, {}, TypeError, "k must be an int"),
    (np.array([1.0, np.nan, 2.0]), 1, {}, ValueError, "first at index 1"),
    (np.array([1.0, np.inf]), 1, {}, ValueError, "NaN/inf"),
    (np.ones((2, 2)), 1, {}, ValueError, "1-D"),
    (np.array([]), 0, {}, ValueError, "empty"),
    (np.ones(3), 1, {"normalize": "softmax"}, ValueError, "choose one of none, max, minmax"),
    (np.ones(3), 1, {"temperature": 0.0}, ValueError, "temperature"),
    (np.array([1e200, 0.0]), 1, {}, ValueError, "overflow"),
])
def test_errors(gains, k, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        taylor_softmax_sample(gains, k, seed=0, **kwargs)
