"""The diverse method: sparse FL mutual information (an objective of select) and diverse retrieval on a store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _retrieve_data import TOPICS
from subsetlm.retrieve import read_provenance
from subsetlm.select.mutual_information import flmi_select, query_focused_graph, query_relevance



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
