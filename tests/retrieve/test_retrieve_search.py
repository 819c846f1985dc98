"""Retrieval search and merge: BM25 key terms, dense search vs brute force, the best-rank merge, K presets."""

from __future__ import annotations

import numpy as np

from _retrieve_data import _corpus
from subsetlm.retrieve import Hits, auto_k, bm25_search, dense_search, merge_hits



def test_auto_k_follows_the_paper_presets():
    assert [auto_k(n) for n in (2_000, 25_000, 200_000)] == [5000, 500, 50]


def test_bm25_finds_the_documents_of_the_query_topic(tmp_path):
    _, docs = _corpus(tmp_path)
    texts = [d["text"] for d in docs]
    h = bm25_search(texts, ["cardiac infarction in the heart", "stock market inflation"], k=6)
    first = h.index[h.query == 0]
    second = h.index[h.query == 1]
    assert {docs[i]["id"] for i in first} <= {f"cardio-{j}" for j in range(6)} | {"t-held"}
    assert len(first) == 6
    assert {docs[i]["id"].split("-")[0] for i in second} == {"econ"}
    assert np.all(np.diff(h.score[h.query == 0]) <= 0)  # sorted by score
    assert np.array_equal(h.rank[h.query == 1], np.arange(len(second)))


def test_bm25_key_terms_keep_the_rare_words_of_a_long_query(tmp_path):
    _, docs = _corpus(tmp_path)
    texts = [d["text"] for d in docs]
    long_q = "note " * 50 + "zebra"  # 'note' is in 24 documents, 'zebra' in one
    h = bm25_search(texts, [long_q], k=1, max_query_terms=1)
    assert docs[int(h.index[0])]["id"] == "zebra-doc"


def test_dense_search_equals_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = X[:7] + 0.05 * rng.normal(size=(7, 16)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    h = dense_search(X, Q, k=10, index_kind="flat")
    S = Q @ X.T
    for q in range(7):
        want = np.argsort(-S[q], kind="stable")[:10]
        assert np.array_equal(np.sort(h.index[h.query == q]), np.sort(want))
        np.testing.assert_allclose(h.score[h.query == q], np.sort(S[q])[::-1][:10], rtol=1e-5)
    ex = np.zeros(300, bool)
    ex[h.index[h.rank == 0]] = True  # excluding rows drops them and still returns k hits
    h2 = dense_search(X, Q, k=10, exclude=ex, index_kind="flat")
    assert not ex[h2.index].any() and len(h2.index) == 70
    many = np.zeros(300, bool)
    many[::2] = True  # more excluded rows than k: the index holds only the others
    h3 = dense_search(X, Q, k=10, exclude=many, index_kind="flat")
    S_kept = np.where(many[None], -np.inf, S)
    for q in range(7):
        assert np.array_equal(np.sort(h3.index[h3.query == q]), np.sort(np.argsort(-S_kept[q])[:10]))


def test_merge_keeps_each_rows_best_rank_like_a_naive_merge():
    rng = np.random.default_rng(2)
    q, r, i, s = [], [], [], []
    for qi in range(30):
        rows = rng.choice(50, size=8, replace=False)
        sc = np.sort(rng.random(8))[::-1]
        q += [qi] * 8
        r += list(range(8))
        i += list(rows)
        s += list(sc)
    h = Hits(np.array(q), np.array(r), np.array(i), np.array(s))
    u = merge_hits(h)
    best: dict[int, tuple] = {}
    for qq, rr, ii, ss in zip(q, r, i, s):
        cur = best.get(ii)
        if cur is None or (rr, -ss, qq) < (cur[0], -cur[1], cur[2]):
            best[ii] = (rr, ss, qq)
    assert sorted(u.index.tolist()) == sorted(best) and len(set(u.index.tolist())) == len(u.index)
    for row, rank, score, query in zip(u.index, u.rank, u.score, u.query):
        assert best[int(row)] == (rank, score, query)
    assert np.all(np.diff(u.rank) >= 0)  # everyone's first hit before anyone's second
    assert int(u.n_queries.sum()) == len(i)
