"""Task-driven retrieval: BM25 / dense search, merging, decontamination, the subset file, sparse FL-MI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from subsetlm.select.mutual_information import flmi_select, query_focused_graph, query_relevance
from subsetlm.select.retrieval import (Hits, RetrieveConfig, auto_k, bm25_search, dense_search, merge_hits,
                                       read_provenance, retrieve)

TOPICS = {
    "cardio": "heart artery cardiac infarction statin hypertension",
    "onco": "tumor chemotherapy metastasis carcinoma biopsy lymphoma",
    "neuro": "brain neuron cortex seizure dementia synapse",
    "econ": "market inflation tariff budget deficit treasury",
}


def _corpus(tmp: Path) -> tuple[Path, list[dict]]:
    """24 documents: 6 per topic, and one 'zebra' document that only a test example mentions."""
    rng = np.random.default_rng(0)
    docs = []
    for t, words in sorted(TOPICS.items()):
        w = words.split()
        for j in range(6):
            docs.append({"id": f"{t}-{j}", "text": " ".join(rng.choice(w, size=12)) + f" note {j}"})
    docs.append({"id": "zebra-doc", "text": "zebra savanna stripes herd grazing"})
    docs.append({"id": "t-held", "text": "heart artery cardiac infarction statin heart artery"})  # = a test doc id
    p = tmp / "corpus.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return p, docs


def _task(tmp: Path) -> Path:
    rows = [{"id": "q0", "text": "heart artery infarction", "label": "cardio", "split": "train"},
            {"id": "q1", "text": "tumor biopsy carcinoma", "label": "onco", "split": "train"},
            {"id": "q2", "text": "brain seizure cortex", "label": "neuro", "split": "train"},
            {"id": "v0", "text": "statin hypertension", "label": "cardio", "split": "validation"},
            {"id": "v1", "text": "lymphoma metastasis", "label": "onco", "split": "validation"},
            {"id": "t-held", "text": "zebra savanna stripes", "label": "neuro", "split": "test"},
            {"id": "t1", "text": "dementia synapse", "label": "neuro", "split": "test"}]
    p = tmp / "task.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


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


def test_retrieve_on_a_plain_corpus_uses_train_queries_only_and_decontaminates(tmp_path):
    from subsetlm.subsets import read_subset

    corpus, docs = _corpus(tmp_path)
    task = _task(tmp_path)
    out = retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(tmp_path / "sub"), k=5))
    sub = read_subset(out)
    ids = set(sub.ids.tolist())
    assert "zebra-doc" not in ids  # only a test example mentions it: test texts are never queries
    assert "t-held" not in ids  # the task's test document itself is never retrieved
    assert {i.split("-")[0] for i in ids} <= {"cardio", "onco", "neuro"}
    prov = read_provenance(out).to_pydict()
    assert prov["index"] == sub.indices.tolist()
    assert set(prov["query"]) <= {0, 1, 2} and set(prov["query_id"]) <= {"q0", "q1", "q2"}
    np.testing.assert_allclose(sub.gains, prov["score"])  # gain = best retrieval score
    assert sub.manifest["selection"]["n_excluded"] == 1
    # the same config again is skipped; a different one refuses without --force
    assert retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(out), k=5)) == out
    with pytest.raises(FileExistsError):
        retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(out), k=3))
    # without decontamination the held document is retrievable (a train query matches it)
    out2 = retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(tmp_path / "sub2"), k=10,
                                   decontaminate=False))
    assert "t-held" in set(read_subset(out2).ids.tolist())


def test_budget_cap_takes_every_querys_first_hit_first(tmp_path):
    from subsetlm.subsets import read_subset

    corpus, _ = _corpus(tmp_path)
    out = retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(_task(tmp_path)), out=str(tmp_path / "s"), k=6,
                                  budget="4"))
    prov = read_provenance(out).to_pydict()
    assert read_subset(out).size == 4
    assert prov["rank"][:3] == [0, 0, 0] and sorted(prov["query"][:3]) == [0, 1, 2]


def test_dense_needs_a_store(tmp_path):
    corpus, _ = _corpus(tmp_path)
    with pytest.raises(ValueError, match="needs embeddings"):
        retrieve(RetrieveConfig(corpus=[str(corpus)], task=str(_task(tmp_path)), out=str(tmp_path / "s"),
                                method="dense"))


# ------------------------------------------------------------------- query-focused facility location

def test_sparse_flmi_equals_submodlib_on_a_full_graph():
    import submodlib

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = rng.normal(size=(4, 6)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    K = np.maximum(X @ X.T, 0)
    ref = submodlib.FacilityLocationMutualInformationFunction(n=40, num_queries=4, data_sijs=K,
                                                              query_sijs=np.maximum(X @ Q.T, 0),
                                                              magnificationEta=1.0)
    from subsetlm.index import knn_graph
    from subsetlm.select.facility_location import SparseFacilityLocation

    fn = SparseFacilityLocation(query_focused_graph(knn_graph(X, k=40), query_relevance(X, Q)))
    for size in (1, 3, 10):
        S = rng.choice(40, size=size, replace=False)
        assert fn.evaluate(S) == pytest.approx(ref.evaluate(set(S.tolist())), rel=1e-5)
    res = flmi_select(X, query_relevance(X, Q), 8, k=40)
    greedy_ref = ref.maximize(budget=8, optimizer="NaiveGreedy", stopIfZeroGain=False, stopIfNegativeGain=False)
    assert res.objective == pytest.approx(ref.evaluate({i for i, _ in greedy_ref}), rel=1e-4)
    assert res.objective <= res.upper_bound + 1e-6


def test_flmi_prefers_relevant_and_skips_near_duplicates():
    rng = np.random.default_rng(4)
    q = np.ones(8, np.float32) / np.sqrt(8)
    dup = q + 0.01 * rng.normal(size=(20, 8)).astype(np.float32)  # 20 near-copies of the query
    other = rng.normal(size=(40, 8)).astype(np.float32)  # unrelated points
    mid = q + 0.6 * rng.normal(size=(10, 8)).astype(np.float32)  # relevant, but different from each other
    X = np.vstack([dup, other, mid]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    rel = query_relevance(X, q[None])
    top = np.argsort(-rel, kind="stable")[:6]
    assert np.sum(top < 20) == 6  # plain top-K: all near-duplicates
    res = flmi_select(X, rel, 6, k=32, eta=2.0)  # k > the 20 copies, so one pick covers them all
    assert np.sum(res.order < 20) <= 2  # FL-MI: one or two copies, then other relevant points
    assert rel[res.order].mean() > np.median(rel)  # and still relevant
    # eta = 1 saturates: a copy of the query covers every point up to its whole relevance,
    # so after it the gains are ~0 (why retrieval's default is eta = 2)
    flat = flmi_select(X, rel, 6, k=32, eta=1.0)
    assert flat.gains[1:].max() < 0.3 * res.gains[1:].max()


def test_diverse_retrieval_on_a_store_is_less_redundant_than_bm25(tmp_path):
    from subsetlm.cli import main
    from subsetlm.subsets import read_subset

    rows = [{"id": f"dup{i}", "text": "angioplasty stent heart artery infarction " + f"copy{i % 2}"} for i in range(12)]
    rng = np.random.default_rng(5)
    for t, words in sorted(TOPICS.items()):
        for j in range(10):
            rows.append({"id": f"{t}{j}", "text": " ".join(rng.choice(words.split(), size=8))})
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "t.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{i}", "text": t, "label": lab, "split": "train"}) + "\n"
                            for i, (t, lab) in enumerate([("angioplasty stent heart artery infarction", "c"),
                                                          ("cardiac hypertension artery", "c"),
                                                          ("tumor biopsy", "o")]))
                    + json.dumps({"id": "x", "text": "brain", "label": "o", "split": "test"}) + "\n")
    store = tmp_path / "store"
    assert main(["embed", str(corpus), "--out", str(store), "--model", "hashing", "--id-field", "id", "-q"]) == 0
    from subsetlm.embed import EmbeddingStore

    st = EmbeddingStore.open(store)
    outs = {}
    for m in ("bm25", "diverse"):
        assert main(["retrieve", str(store), "--task", str(task), "--method", m, "--k", "30", "--budget", "8",
                     "--out", str(tmp_path / m), "-q"]) == 0
        outs[m] = read_subset(tmp_path / m, store=st)
    copies = {m: sum(str(d).startswith("dup") for d in st.doc_ids[s.indices]) for m, s in outs.items()}
    assert copies["bm25"] >= 3  # the 12 copies (2 distinct texts) are the first query's best hits
    assert copies["diverse"] <= 2 and copies["diverse"] < copies["bm25"]
    assert len(set(st.texts(outs["diverse"].indices))) > len(set(st.texts(outs["bm25"].indices)))
    assert outs["diverse"].manifest["certificate"]["ratio"] > 0.5
    assert read_provenance(tmp_path / "diverse").num_rows == 8


def test_dense_retrieval_on_a_store_and_a_token_budget(tmp_path):
    from subsetlm.cli import main
    from subsetlm.embed import EmbeddingStore
    from subsetlm.subsets import read_subset

    corpus, docs = _corpus(tmp_path)
    store = tmp_path / "store"
    assert main(["embed", str(corpus), "--out", str(store), "--model", "hashing", "--id-field", "id", "-q"]) == 0
    st = EmbeddingStore.open(store)
    task = _task(tmp_path)
    out = retrieve(RetrieveConfig(corpus=[str(store)], task=str(task), out=str(tmp_path / "d"), method="dense", k=3))
    sub = read_subset(out, store=st)
    prov = read_provenance(out).to_pydict()
    first = {q: st.doc_ids[i] for q, i, r in zip(prov["query"], prov["index"], prov["rank"]) if r == 0}
    assert first[0].startswith("cardio") and first[1].startswith("onco") and first[2].startswith("neuro")
    assert sub.gains.max() <= 1.0 + 1e-6  # cosine scores
    tok = retrieve(RetrieveConfig(corpus=[str(store)], task=str(task), out=str(tmp_path / "t"), k=10,
                                  budget="tokens:40"))
    n_tok = st.n_tokens[read_subset(tok).indices]
    assert n_tok.sum() <= 40 and read_subset(tok).size >= 2


def test_write_subset_refuses_extra_tables_that_would_clobber_its_files(tmp_path):
    import pyarrow as pa

    from subsetlm.corpus.rows import CorpusRows
    from subsetlm.subsets import write_subset
    from subsetlm.subsets.format import SubsetError

    rows = CorpusRows.from_texts(["a", "b"], ["x", "y"])
    with pytest.raises(SubsetError, match="extra table name"):
        write_subset(tmp_path / "s", store=rows, indices=np.array([1]), gains=np.ones(1), manifest={},
                     extra_tables={"subset.parquet": pa.table({"a": [1]})})
    assert not (tmp_path / "s").exists()  # nothing half-written
