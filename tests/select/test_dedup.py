"""SemDeDup and D4 (subsetlm/select/dedup.py) against a brute-force pairwise oracle, and the dedup stage."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.sparse.csgraph import connected_components

from subsetlm.cli import main
from subsetlm.select.dedup import KEEP_POLICIES, RULES, d4, default_partitions, semdedup

EPS = 0.02  # duplicates: cosine > 0.98


def planted(n_base: int = 60, d: int = 16, seed: int = 0) -> np.ndarray:
    """Random rows plus near-duplicates and chains (a ~ b ~ c with a !~ c); no cosine within 2e-4 of 1 - EPS."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_base, d))
    rows = [base]
    for i in range(0, n_base, 3):  # a duplicate of every third row, two of every sixth
        rows.append(base[i] + 0.08 * rng.normal(size=(1 + (i % 6 == 0), d)))
    for i in range(1, n_base, 10):  # chains: steps of ~0.13 rad, two steps apart ~0.26 rad (cos ~ 0.966)
        u = rng.normal(size=d)
        u -= u @ base[i] / (base[i] @ base[i]) * base[i]
        u *= np.linalg.norm(base[i]) / np.linalg.norm(u)
        rows.append(np.stack([np.cos(a) * base[i] + np.sin(a) * u for a in (0.13, 0.26)]))
    X = np.concatenate(rows)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    S = X.astype(np.float64) @ X.T.astype(np.float64)
    assert np.abs(S - (1 - EPS)).min() > 2e-4  # the oracle and the code agree on every pair
    return X[rng.permutation(len(X))]


def brute(X, labels, t, rule, key):
    """Per partition: order by key (desc, ties by row), all pairs, the rule by definition."""
    S = X.astype(np.float64) @ X.T.astype(np.float64)
    rep = np.arange(len(X))
    for p in np.unique(labels):
        rows = np.flatnonzero(labels == p)
        order = rows[np.lexsort((rows, -key[rows]))]
        Sp = S[np.ix_(order, order)]
        if rule == "semdedup":  # dropped when any earlier row is a duplicate; group: chain of most similar earlier
            for j in range(1, len(order)):
                if Sp[:j, j].max() > t:
                    rep[order[j]] = rep[order[int(np.argmax(Sp[:j, j]))]]
        else:
            adj = (Sp > t) & ~np.eye(len(order), dtype=bool)
            _, comp = connected_components(adj, directed=False)
            for c in np.unique(comp):
                members = np.flatnonzero(comp == c)  # positions, ascending: the first is kept
                rep[order[members]] = order[members[0]]
    return rep


def keys(X, labels, centroids, keep, n_tokens, scores, seed=0):
    c = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    csim = np.einsum("ij,ij->i", X.astype(np.float64), c[labels])
    return {"farthest": -csim, "centroid": csim, "random": np.random.default_rng([seed, 1]).random(len(X)),
            "longest": n_tokens.astype(float), "score": scores}[keep]


@pytest.fixture(scope="module")
def data():
    X = planted()
    n = len(X)
    rng = np.random.default_rng(1)
    labels = (np.arange(n) % 3).astype(np.int32)
    labels[rng.permutation(n)[: n // 5]] = 0  # uneven partitions
    centroids = rng.normal(size=(3, X.shape[1]))
    return SimpleNamespace(X=X, labels=labels, centroids=centroids, n_tokens=rng.integers(5, 50, n),
                           scores=rng.normal(size=n))


def _run(data, **kw):
    return semdedup(data.X, data.labels, centroids=data.centroids, n_tokens=data.n_tokens, scores=data.scores, **kw)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("keep", KEEP_POLICIES)
def test_groups_equal_brute_force(data, rule, keep):
    r = _run(data, eps=EPS, rule=rule, keep=keep)
    want = brute(data.X, data.labels, 1 - EPS, rule, keys(data.X, data.labels, data.centroids, keep, data.n_tokens,
                                                          data.scores))
    np.testing.assert_array_equal(r.representative, want)
    np.testing.assert_array_equal(r.group, want)
    np.testing.assert_array_equal(r.kept, want == np.arange(len(want)))
    assert 0 < r.info["n_duplicate"] < len(want) // 2
    direct = np.einsum("ij,ij->i", data.X, data.X[want])
    np.testing.assert_allclose(r.similarity, direct, atol=1e-6)
    assert (r.status == "duplicate").sum() == r.info["n_duplicate"]


def test_the_rules_differ_on_chains(data):
    ang = np.array([0.0, 0.13, 0.26])  # a ~ b ~ c, a !~ c; kept in the order a, c, b
    X = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    r = {rule: semdedup(X, eps=EPS, rule=rule, keep="score", scores=[3, 1, 2]) for rule in RULES}
    assert r["semdedup"].kept.tolist() == [True, False, True]  # b falls to a; c has no duplicate before it
    assert r["components"].kept.tolist() == [True, False, False] and r["components"].group.tolist() == [0, 0, 0]
    assert r["components"].similarity[2] < 1 - EPS  # chained: recorded, below the threshold
    for r in (_run(data, eps=EPS, rule=rule) for rule in RULES):  # no duplicate pair left among the kept rows
        k = r.indices
        S = data.X[k] @ data.X[k].T
        same = data.labels[k][:, None] == data.labels[k][None, :]
        assert not ((S > 1 - EPS) & same & ~np.eye(len(k), dtype=bool)).any()


def test_default_centroids_are_the_partition_means(data):
    means = np.stack([data.X[data.labels == p].mean(0) for p in range(3)])
    a = semdedup(data.X, data.labels, eps=EPS, keep="centroid")
    b = semdedup(data.X, data.labels, eps=EPS, keep="centroid", centroids=means)
    np.testing.assert_array_equal(a.representative, b.representative)


@pytest.mark.parametrize("rule", RULES)
def test_blocked_equals_dense(data, rule):
    dense = _run(data, eps=EPS, rule=rule)
    for elems in (1, 7, 300):  # 1 column (semdedup) / 1 row (components) per block, and a few
        blocked = _run(data, eps=EPS, rule=rule, block_elems=elems)
        np.testing.assert_array_equal(blocked.representative, dense.representative)


def _knn(X, k):
    S = X.astype(np.float64) @ X.T.astype(np.float64)
    nb = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return SimpleNamespace(neighbors=nb.astype(np.int32), similarities=np.take_along_axis(S, nb, 1).astype(np.float32))


@pytest.mark.parametrize("rule", RULES)
def test_knn_graph_path_equals_brute_force_and_falls_back(data, rule):
    want = _run(data, eps=EPS, rule=rule).representative
    full = _run(data, eps=EPS, rule=rule, graph=_knn(data.X, 12))
    assert full.info["graph_partitions"] == 3 and full.info["block_partitions"] == 0
    np.testing.assert_array_equal(full.representative, want)
    short = _run(data, eps=EPS, rule=rule, graph=_knn(data.X, 2))  # rows with 2+ duplicates overflow k=2
    assert short.info["block_partitions"] >= 1
    np.testing.assert_array_equal(short.representative, want)


@pytest.mark.parametrize("rule", RULES)
def test_target_keeps_exactly_n(data, rule):
    n = len(data.X)
    for target in (n, n - 1, n - 7, n // 2, 3):
        r = _run(data, target=target, rule=rule)
        assert r.kept.sum() == target and r.info["target"]["exact"], (target, r.info["target"])
        again = _run(data, eps=r.eps, rule=rule)  # the eps found reproduces the subset
        np.testing.assert_array_equal(again.kept, r.kept)
    r = _run(data, target=2, rule=rule)  # each of the 3 partitions keeps a row
    assert r.kept.sum() == 3 and not r.info["target"]["exact"] and "at most" in r.info["target"]["note"]


@pytest.mark.parametrize("rule", RULES)
def test_target_ties_are_reported(rule):
    X = np.eye(5, dtype=np.float32)[[0, 0, 0, 1, 2, 2, 3, 4]]  # exact duplicates: cosine 1 ties
    r = semdedup(X, target=7, rule=rule)  # dropping 1 of {row 1, row 2, row 5} is not a threshold
    t = r.info["target"]
    assert not t["exact"] and t["kept"] == r.kept.sum() and r.kept.sum() in (5, 8) and "tie" in t["note"]
    assert semdedup(X, target=5, rule=rule).info["target"]["exact"]


def test_bad_input():
    X = np.eye(3, dtype=np.float32)
    for kw in ({"eps": 0}, {"eps": 2}, {"eps": -0.1}, {"target": 4}, {"target": 0}, {}, {"eps": 0.1, "target": 2},
               {"eps": 0.1, "keep": "score"}, {"eps": 0.1, "keep": "nope"}, {"eps": 0.1, "rule": "nope"}):
        with pytest.raises(ValueError):
            semdedup(X, **kw)
    with pytest.raises(ValueError, match="dedup_ratio"):
        d4(X, dedup_ratio=0.3, ratio=0.5)


def test_d4_ratios_hold():
    X = planted(n_base=150, seed=3)
    n = len(X)
    r = d4(X, (np.arange(n) % 4).astype(np.int32), dedup_ratio=0.75, ratio=0.25, proto_partitions=5)
    assert r.info["d4"]["kept_after_dedup"] == round(0.75 * n)
    assert r.kept.sum() == round(0.25 * n)
    assert (r.status == "duplicate").sum() == n - round(0.75 * n)
    assert (r.status == "pruned").sum() == round(0.75 * n) - round(0.25 * n)
    pruned, kept = r.status == "pruned", r.kept
    assert r.proto_similarity[pruned].min() >= r.proto_similarity[kept].max()  # the most prototypical go
    assert (r.representative[pruned] == -1).all() and np.isnan(r.proto_similarity[r.status == "duplicate"]).all()
    has = r.representative >= 0
    assert r.kept[r.representative[has]].all()


# ---------------------------------------------------------------------------- the stage, through the CLI


def _check_assignment(sub, store):
    """assignment.parquet against the subset, the manifest and the store's embeddings (the method's own rules)."""
    from subsetlm.embed import EmbeddingStore

    t = pq.read_table(sub / "assignment.parquet").to_pydict()
    st, rep, sim, grp, dof = (np.asarray(t[c]) for c in ("status", "representative", "similarity", "group",
                                                            "duplicate_of"))
    sel = json.loads((sub / "manifest.json").read_text())["selection"]
    kept = np.sort(pq.read_table(sub / "subset.parquet").column("index").to_numpy())
    np.testing.assert_array_equal(np.flatnonzero(st == "kept"), kept)
    has = rep >= 0
    assert (st[rep[has]] == "kept").all() and (grp[has] == grp[rep[has]]).all()  # kept representative, same group
    dup = np.flatnonzero(st == "duplicate")
    assert len(dup) > 0 and (grp[dup] != dup).all()  # a duplicate never heads its group
    if sel["method"] == "semdedup":
        assert set(st) == {"kept", "duplicate"}
        assert (grp[kept] == kept).all() and (rep[kept] == kept).all() and has.all()
    else:  # d4: SemDeDup's survivors head their groups; the pruned ones represent nobody, not even themselves
        assert set(st) == {"kept", "duplicate", "pruned"}
        heads = np.flatnonzero(st != "duplicate")
        assert (grp[heads] == heads).all() and (rep[kept] == kept).all()
        assert (rep[st == "pruned"] == -1).all() and np.isnan(sim[st == "pruned"]).all()
    assert (dof[st != "duplicate"] == -1).all()
    if sel["rule"] == "semdedup":  # each duplicate names the sample it matched above the threshold
        X = np.asarray(EmbeddingStore.open(store).embeddings, dtype=np.float64)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        assert (dof[dup] >= 0).all() and (dof[dup] != dup).all()
        cos = np.einsum("ij,ij->i", X[dup], X[dof[dup]])
        assert (cos > sel["threshold"] - 1e-6).all(), cos.min()
        assert sel["threshold"] == pytest.approx(1 - sel["eps"])
    else:  # components: a chain, no single cause
        assert (dof == -1).all()
    return st, rep, sim


def test_cli_dedup_end_to_end(tmp_path, store):
    sub = tmp_path / "dedup"
    argv = ["dedup", str(store), "--eps", "0.6", "--out", str(sub), "-q"]
    assert main(argv) == 0
    st, _, _ = _check_assignment(sub, store)
    man = json.loads((sub / "manifest.json").read_text())
    sel = man["selection"]
    assert sel["counts"]["kept"] == (st == "kept").sum() and sel["counts"]["duplicate"] > 0
    assert sel["eps"] == pytest.approx(0.6) and sel["rule"] == "semdedup" and sel["keep"] == "farthest"
    table = pq.read_table(sub / "subset.parquet")
    assert table.column("weight").to_numpy().sum() == 60  # group sizes cover every row
    mtime = (sub / "subset.parquet").stat().st_mtime_ns
    assert main(argv) == 0 and (sub / "subset.parquet").stat().st_mtime_ns == mtime  # skipped
    assert main(argv[:-1] + ["--keep", "centroid", "-q"]) == 2  # another config is refused ...
    assert (sub / "subset.parquet").stat().st_mtime_ns == mtime
    assert main(argv[:-1] + ["--keep", "centroid", "--force", "-q"]) == 0  # ... unless --force

    tgt = tmp_path / "target"
    assert main(["dedup", str(store), "--target", "41", "--rule", "components", "--out", str(tgt), "-q"]) == 0
    assert pq.read_table(tgt / "subset.parquet").num_rows == 41
    _check_assignment(tgt, store)


def test_cli_d4_and_scores(tmp_path, store):
    sub = tmp_path / "d4"
    assert main(["dedup", str(store), "--method", "d4", "--partitions", "2", "--out", str(sub), "-q"]) == 0
    st, _, _ = _check_assignment(sub, store)
    assert (st == "kept").sum() == 15 and (st == "pruned").sum() == 45 - 15 and (st == "duplicate").sum() == 15
    gains = pq.read_table(sub / "subset.parquet").column("gain").to_numpy()
    assert (np.diff(gains) <= 0).all()  # least prototypical first

    from subsetlm.embed import EmbeddingStore

    ids = EmbeddingStore.open(store).ids
    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": list(ids)[::-1], "quality": np.arange(60.0)}), scores)
    sc = tmp_path / "scored"
    assert main(["dedup", str(store), "--eps", "0.6", "--keep", "score", "--scores", str(scores),
                 "--score-column", "quality", "--out", str(sc), "-q"]) == 0
    st, rep, _ = _check_assignment(sc, store)
    q = np.arange(60.0)[::-1]  # the score of store row i
    dup = np.flatnonzero(st == "duplicate")
    assert (q[rep[dup]] > q[dup]).all()  # the kept member of a group has the highest score in it


@pytest.mark.parametrize("extra, needle", [
    (["--eps", "2.5"], "eps"), (["--eps", "0"], "eps"), (["--target", "61"], "target"), (["--target", "0"], "target"),
    ([], "exactly one"), (["--eps", "0.5", "--keep", "score", "--scores", "SCORES", "--score-column", "nope"],
                          "no column"),
    (["--method", "d4", "--ratio", "0.9"], "dedup_ratio"),
])
def test_cli_bad_input_writes_nothing(tmp_path, store, capsys, extra, needle):
    scores = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": ["a"], "quality": [1.0]}), scores)
    out = tmp_path / "bad"
    argv = ["dedup", str(store), "--out", str(out), "-q"] + [str(scores) if a == "SCORES" else a for a in extra]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bad.tmp").exists()


def test_default_partitions():
    assert [default_partitions(n) for n in (1, 5000, 10_000, 10_001, 1_000_000)] == [1, 1, 1, 2, 100]


def test_duplicate_of_names_the_sample_each_drop_matched(data):
    """Why a duplicate was dropped: an earlier sample above the threshold (the reference rule's max_id)."""
    X, labels = data.X, data.labels
    res = _run(data, eps=0.05)
    dropped = np.flatnonzero(~res.kept)
    assert dropped.size and np.all(res.duplicate_of[res.kept] == -1)
    cause = res.duplicate_of[dropped]
    assert np.all(cause >= 0) and np.all(labels[cause] == labels[dropped])
    cos = np.einsum("ij,ij->i", X[dropped].astype(np.float64), X[cause].astype(np.float64))
    assert np.all(cos > 1 - 0.05 - 1e-6)
    assert np.all(_run(data, eps=0.05, rule="components").duplicate_of == -1)


def test_a_cached_graph_without_edges_above_the_threshold_keeps_every_row(tmp_path, store):
    """Regression: with the store's exact kNN graph cached (select builds it) and no pair above 1 - eps,
    max_earlier indexed an empty edge list (IndexError); every row is kept."""
    assert main(["select", str(store), "--budget", "10", "--k", "32", "--out", str(tmp_path / "sel"), "-q"]) == 0
    assert list((store / "graphs").glob("knn-k32"))
    out = tmp_path / "dd"
    assert main(["dedup", str(store), "--eps", "0.001", "--out", str(out), "-q"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["size"] == man["n_ground"] and man["selection"]["graph_partitions"] >= 1
