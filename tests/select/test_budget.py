"""Budget parsing/resolution and per-source splitting."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from subsetlm.select.budget import Budget, parse_budget, split_budget_by_source


@pytest.mark.parametrize("spec, kind, value", [
    ("0.25", "fraction", 0.25),
    (0.25, "fraction", 0.25),
    ("1.0", "fraction", 1.0),
    ("25%", "fraction", 0.25),
    (" 100% ", "fraction", 1.0),
    ("5000", "count", 5000),
    (5000, "count", 5000),
    (np.int64(7), "count", 7),
    ("1", "count", 1),
    ("5e3", "count", 5000),
    ("5_000", "count", 5000),
    (5000.0, "count", 5000),
    ("tokens:2e6", "tokens", 2_000_000),
    ("TOKENS: 1500", "tokens", 1500),
])
def test_parse_accepted_forms(spec, kind, value):
    b = parse_budget(spec)
    assert b == Budget(kind, float(value))
    assert parse_budget(b) is b
    # str() round-trips to the same budget
    assert parse_budget(str(b)) == b


@pytest.mark.parametrize("spec, fragment", [
    ("0", "count must be >= 1"),
    (0, "count must be >= 1"),
    (-3, "count must be >= 1"),
    ("-0.5", "must be > 0"),
    ("1.5", "neither a fraction"),
    ("150%", "percentage must be in (0, 100]"),
    ("0%", "percentage must be in (0, 100]"),
    ("abc", "not understood"),
    ("", "empty"),
    ("tokens:abc", "not a number"),
    ("tokens:0", ">= 1"),
    ("nan", "finite"),
    (float("inf"), "finite"),
])
def test_parse_errors_list_accepted_forms(spec, fragment):
    with pytest.raises(ValueError) as ei:
        parse_budget(spec)
    msg = str(ei.value)
    assert fragment in msg
    assert "accepted forms" in msg and "tokens:2e6" in msg


@pytest.mark.parametrize("spec", [True, None, [1], {"a": 1}])
def test_parse_type_errors(spec):
    with pytest.raises(TypeError):
        parse_budget(spec)


def test_resolve_count_and_fraction():
    r = parse_budget("5000").resolve(6000)
    assert (r.kind, r.count, r.tokens, r.costs, r.covers_all) == ("count", 5000, None, None, False)
    assert parse_budget(10).resolve(10).covers_all
    # fraction: round half up, at least one sample, never more than n
    assert parse_budget(0.25).resolve(10).count == 3          # 2.5 -> 3
    assert parse_budget(0.25).resolve(6).count == 2           # 1.5 -> 2
    assert parse_budget(0.001).resolve(10).count == 1
    assert parse_budget("1.0").resolve(7).count == 7
    for n in range(1, 40):
        for f in (0.1, 0.25, 0.5, 0.9):
            c = parse_budget(f).resolve(n).count
            assert 1 <= c <= n and (abs(c - f * n) <= 0.5 + 1e-9 or (c == 1 and f * n < 0.5))


def test_resolve_count_too_large_message():
    with pytest.raises(ValueError, match=r"budget=5000 > n=3000 samples; lower --budget or use a fraction"):
        parse_budget("5000").resolve(3000)
    with pytest.raises(ValueError, match="empty ground set"):
        parse_budget("0.5").resolve(0)


def test_resolve_tokens_count_bound_is_brute_force_max():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 8))
        tok = rng.integers(1, 50, size=n)
        cap = int(rng.integers(tok.min(), tok.sum()))
        r = parse_budget(f"tokens:{cap}").resolve(n, tok)
        assert r.kind == "tokens" and r.tokens == cap and not r.covers_all
        np.testing.assert_array_equal(r.costs, tok.astype(np.float64))
        # count = the largest number of samples whose tokens fit the cap (brute force)
        best = max(len(s) for m in range(n + 1) for s in itertools.combinations(range(n), m)
                   if tok[list(s)].sum() <= cap)
        assert r.count == best


def test_resolve_tokens_errors_and_warnings():
    tok = np.array([10, 20, 30])
    with pytest.raises(ValueError, match="needs per-sample token counts"):
        parse_budget("tokens:20").resolve(3)
    with pytest.raises(ValueError, match=r"shape \(2,\), expected \(3,\)"):
        parse_budget("tokens:20").resolve(3, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"n_tokens\[1\] = -2 is negative"):
        parse_budget("tokens:20").resolve(3, np.array([1, -2, 3]))
    with pytest.raises(ValueError, match="smaller than the cheapest sample"):
        parse_budget("tokens:5").resolve(3, tok)
    with pytest.warns(UserWarning, match="selects everything"):
        r = parse_budget("tokens:60").resolve(3, tok)
    assert r.covers_all and r.count == 3 and r.tokens == 60
    with pytest.warns(UserWarning, match="n_tokens == 0"):
        r = parse_budget("tokens:2").resolve(3, np.array([0, 5, 5]))
    assert r.costs[0] == 1.0 and r.count == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a budget below the total must not warn
        parse_budget("tokens:59").resolve(3, tok)


def test_split_proportional_to_sizes_sums_exactly():
    rng = np.random.default_rng(1)
    for _ in range(50):
        k = int(rng.integers(1, 6))
        sizes = rng.integers(1, 40, size=k)
        sources = np.repeat([f"s{i}" for i in range(k)], sizes)
        rng.shuffle(sources)
        b = int(rng.integers(0, sources.size + 1))
        out = split_budget_by_source(sources, b, None)
        assert sum(out.values()) == b
        assert list(out) == sorted(out)
        for i in range(k):
            exact = b * sizes[i] / sources.size
            assert abs(out[f"s{i}"] - exact) < 1.0 and out[f"s{i}"] <= sizes[i]


def test_split_golden_and_ties():
    src = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 3)
    assert split_budget_by_source(src, 4, None) == {"a": 2, "b": 1, "c": 1}  # tie -> name order
    assert split_budget_by_source(src, 9, None) == {"a": 3, "b": 3, "c": 3}
    src = np.array(["wiki"] * 60 + ["pubmed"] * 40)
    assert split_budget_by_source(src, 10, {"pubmed": 0.7, "wiki": 0.3}) == {"pubmed": 7, "wiki": 3}
    assert split_budget_by_source(src, 10, {"pubmed": 1.0}) == {"pubmed": 10, "wiki": 0}


def test_split_normalises_with_warning():
    src = np.array(["x"] * 50 + ["y"] * 50)
    with pytest.warns(UserWarning, match="sum to 4"):
        out = split_budget_by_source(src, 8, {"x": 3, "y": 1})
    assert out == {"x": 6, "y": 2}


def test_split_errors():
    src = np.array(["wiki"] * 5 + ["pubmed"] * 5)
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['arxiv'\]; known sources: \['pubmed', 'wiki'\]"):
        split_budget_by_source(src, 4, {"arxiv": 0.5, "wiki": 0.5})
    with pytest.raises(ValueError, match="finite and >= 0"):
        split_budget_by_source(src, 4, {"wiki": -0.5, "pubmed": 1.5})
    with pytest.raises(ValueError, match="positive share"):
        split_budget_by_source(src, 4, {"wiki": 0.0})
    with pytest.raises(ValueError, match=r"outside \[0, n=10\]"):
        split_budget_by_source(src, 11, None)
    with pytest.raises(ValueError, match="'pubmed' would get 8 samples .* has only 5"):
        split_budget_by_source(src, 8, {"pubmed": 1.0})
