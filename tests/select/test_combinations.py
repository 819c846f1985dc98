"""The combination matrix: every selection option is honoured or refused, never dropped.

function × optimizer × sampling × kernel × budget kind × partitions × merge: each either
returns a subset that satisfies its constraint exactly (count = k; token sum <= cap; quotas
met) and shows the options took effect, or raises a ValueError that names the valid
choices. Which one is decided by this file's own table (``expected_error``), written from
the documentation, not from the code: a silent fallback in the library fails the test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from subsetlm.select.api import select_array

FUNCTIONS = ["facility-location", "fl-mi", "graph-cut", "log-det", "disparity-min", "disparity-sum"]
OPTIMIZERS = ["naive", "lazy", "stochastic", "lazier-than-lazy"]
SAMPLINGS = ["topk", "taylor-softmax"]
KERNELS = ["auto", "sparse", "dense"]
BUDGETS = ["count", "fraction", "tokens", "quotas"]
PARTITIONS = [0, 3]
MERGES = [0.0, 2.0]

N = 45
OURS_DENSE = {"facility-location"}  # our greedy on the dense kernel
OURS_SPARSE = {"facility-location", "fl-mi"}
SUBMODLIB_ONLY = {"graph-cut", "log-det", "disparity-min", "disparity-sum"}


def expected_errors(function, optimizer, sampling, kernel, budget, partitions, merge) -> list[str]:
    """Fragments of the errors the combination may raise (any one of them); [] when it must succeed."""
    errors = []
    if function in SUBMODLIB_ONLY and kernel == "sparse":
        errors.append("runs on a dense kernel")
    if merge and not partitions:
        errors.append("GreeDi merge combines partitions")
    ours = function in OURS_SPARSE and kernel in ("auto", "sparse") or function in OURS_DENSE
    if budget in ("tokens", "quotas"):
        if not ours:
            errors.append("takes a count or fraction budget only")
        if optimizer not in ("naive", "lazy"):
            errors.append(f"optimizer='{optimizer}' does not take")
    if merge and sampling != "topk":
        errors.append("merge_factor")
    if merge and budget == "tokens":
        errors.append("takes a count or fraction budget")
    if budget == "quotas" and partitions:
        errors.append("cannot be combined with partitions")
    return errors


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 8))
    X = (centers[rng.integers(0, 6, N)] + 0.3 * rng.normal(size=(N, 8))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tokens = rng.integers(5, 40, N)
    sources = np.array(["a"] * 25 + ["b"] * 20)
    labels = np.arange(N) % 3
    return X, tokens, sources, labels


def _run(data, function, optimizer, sampling, kernel, budget, partitions, merge):
    X, tokens, sources, labels = data
    spec = {"count": 9, "fraction": 0.2, "tokens": "tokens:150", "quotas": 10}[budget]
    kw = dict(function=function, optimizer=optimizer, sampling=sampling, kernel=kernel, k=6, n_jobs=1, seed=1,
              partitions=labels if partitions else 0, merge=merge, n_tokens=tokens)
    if function == "fl-mi":
        Q = X[:4] * 0.9 + X[4:8] * 0.1
        kw["queries"] = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    if budget == "quotas":
        kw.update(sources=sources, source_proportions={"a": 0.3, "b": 0.7})
    return select_array(X, spec, **kw), tokens, sources


def _check(sel, budget, tokens, sources, partitions, merge, function, kernel):
    idx = sel.indices
    assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < N
    if budget == "count":
        assert len(idx) == 9
    elif budget == "fraction":
        assert len(idx) == 9  # round(0.2 * 45)
    elif budget == "tokens":
        assert 1 <= len(idx) and tokens[idx].sum() <= 150
    else:
        assert np.bincount((sources[idx] == "b").astype(int), minlength=2).tolist() == [3, 7]
    assert len(sel.gains) == len(sel.weights) == len(sel.partitions) == len(idx)
    if partitions and not merge:
        assert len(np.unique(sel.partitions)) > 1  # the partitions took effect
    if merge:
        assert "merge" in sel.info
    c = sel.certificate
    ours = function in OURS_SPARSE and kernel in ("auto", "sparse") or function in OURS_DENSE
    if ours:
        assert c["upper_bound"] is not None and c["upper_bound"] >= c["objective"] - 1e-6
    else:
        assert c["upper_bound"] is None


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_combination_is_honoured_or_refused(data, function):
    bad = []
    n_ok = n_refused = 0
    for combo in itertools.product(OPTIMIZERS, SAMPLINGS, KERNELS, BUDGETS, PARTITIONS, MERGES):
        optimizer, sampling, kernel, budget, partitions, merge = combo
        want = expected_errors(function, *combo)
        try:
            sel, tokens, sources = _run(data, function, *combo)
        except ValueError as e:
            if not any(w in str(e) for w in want):
                bad.append(f"{combo}: raised {e!r}, expected {want or 'success'}")
            n_refused += 1
            continue
        if want:
            bad.append(f"{combo}: succeeded, expected an error containing one of {want}")
            continue
        try:
            _check(sel, budget, tokens, sources, partitions, merge, function, kernel)
        except AssertionError as e:
            bad.append(f"{combo}: constraint or option not honoured: {e}")
        n_ok += 1
    assert not bad, f"{len(bad)} combinations misbehave:\n" + "\n".join(bad[:20])
    assert n_ok > 0 and n_refused > 0


def test_errors_list_the_valid_choices(data):
    X = data[0]
    for kw, choices in [({"kernel": "sparce"}, "auto, sparse, dense"), ({"sampling": "topK"}, "topk, taylor-softmax"),
                        ({"optimizer": "greedy"}, "naive, lazy, stochastic, lazier-than-lazy"),
                        ({"function": "facility_location"}, "facility-location, fl-mi")]:
        with pytest.raises(ValueError, match=choices):
            select_array(X, 5, **kw)


def test_token_budget_is_a_cap_on_every_path(data):
    """The bug of issue 14: partitioned and Taylor-softmax runs read tokens:N as a count."""
    X, tokens, _, labels = data
    for kw in [{}, {"partitions": labels}, {"sampling": "taylor-softmax"},
               {"partitions": labels, "sampling": "taylor-softmax"}, {"kernel": "dense", "partitions": labels}]:
        sel = select_array(X, "tokens:120", n_tokens=tokens, n_jobs=1, k=6, **kw)
        assert tokens[sel.indices].sum() <= 120, kw
        assert len(sel.indices) >= 2, kw


def test_source_proportions_set_each_sources_share(data):
    X, _, sources, _ = data
    for share_a, want in [(0.2, (2, 8)), (0.5, (5, 5)), (0.9, (9, 1))]:
        sel = select_array(X, 10, k=6, sources=sources, source_proportions={"a": share_a, "b": 1 - share_a})
        got = (int((sources[sel.indices] == "a").sum()), int((sources[sel.indices] == "b").sum()))
        assert got == want


def test_quota_greedy_certificate_bounds_the_brute_force_optimum():
    """Greedy under a partition matroid: f >= OPT / 2 and the certificate >= OPT (brute force)."""
    from itertools import combinations

    from subsetlm.select.constraints import Quotas
    from subsetlm.select.facility_location import DenseFacilityLocation
    from subsetlm.select.greedy import greedy

    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    groups = np.array([0] * 7 + [1] * 5)
    con = Quotas(groups, np.array([2, 1]))
    fn = DenseFacilityLocation(X)
    for opt in ("naive", "lazy"):
        res = greedy(fn, None, optimizer=opt, constraint=con)
        assert con.satisfied(res.order)
        best = max(fn.evaluate(list(a) + [b]) for a in combinations(range(7), 2) for b in range(7, 12))
        assert res.objective >= best / 2 - 1e-9
        assert res.upper_bound >= best - 1e-6
    lazy, naive = greedy(fn, None, optimizer="lazy", constraint=con), greedy(fn, None, optimizer="naive", constraint=con)
    assert lazy.order.tolist() == naive.order.tolist()


def test_graph_must_fit_the_embeddings(data):
    from subsetlm.index import knn_graph

    X = data[0]
    g = knn_graph(X, k=5)
    with pytest.raises(ValueError, match="graph has 45 rows but X has 20"):
        select_array(X[:20], 5, graph=g)


def test_the_random_baseline_obeys_the_same_constraint(data):
    """The certificate's random subset is drawn under the budget (a token cap is not a count)."""
    from subsetlm.select.baselines import random_subset
    from subsetlm.select.constraints import Count, Knapsack, Quotas
    from subsetlm.select.selector import random_feasible

    X, tokens, sources, _ = data
    assert random_feasible(N, 7, 3, Count(7)).tolist() == random_subset(N, 7, 3).tolist()
    cap = Knapsack(tokens, 150.0)
    r = random_feasible(N, 0, 3, cap)
    assert cap.satisfied(r) and len(r) >= 3  # 150 tokens hold at least 3 samples of < 40 tokens
    q = Quotas((sources == "b").astype(int), np.array([3, 7]))
    assert q.satisfied(random_feasible(N, 0, 3, q))
    sel = select_array(X, "tokens:150", n_tokens=tokens, k=6)
    rand = random_feasible(N, len(sel.indices), 0, cap)
    from subsetlm.select.facility_location import SparseFacilityLocation
    from subsetlm.index import knn_graph

    assert sel.certificate["random_objective"] == pytest.approx(SparseFacilityLocation(knn_graph(X, k=6)).evaluate(rand))
